internal import ParityKernels

// The GatedDeltaNet's two elementwise kernels, shared by the lm and vlm mirrors: both libraries'
// step-by-step recurrence (gated_delta.py's ops path) and conv1d + silu are the same float32
// operations in the same order, so one kernel serves both with the same bits.

/// The sequential gated delta recurrence through ParityKernels (`pk_gated_delta_heads`): every
/// (batch row, value head) on the state in the cache's own layout `[dv, dk]`, 16 state rows at a
/// time. Heads are independent, so they split across the pool's threads without changing a bit.
public enum DeltaRuleKernel {
    public struct Shape: Sendable {
        public var batch: Int, steps: Int, keyHeads: Int, keyDim: Int, valueHeads: Int, valueDim: Int

        public init(batch: Int, steps: Int, keyHeads: Int, keyDim: Int, valueHeads: Int, valueDim: Int) {
            (self.batch, self.steps, self.keyHeads, self.keyDim, self.valueHeads, self.valueDim) =
                (batch, steps, keyHeads, keyDim, valueHeads, valueDim)
        }
    }

    /// Per step: S ← g·S; m = S·k; δ = β(v − m); S ← S + k·δ; y = S·q, every sum over dk in
    /// order. A step with `keep[t] == 0` restores the old state but still writes its y.
    public static func run(q: [Float], k: [Float], v: [Float], g: [Float], beta: [Float], keep: [UInt8]?,
                           state: inout [Float], y: inout [Float], shape s: Shape) {
        let work = s.batch * s.valueHeads * s.steps * s.keyDim * s.valueDim
        let parallel: Int32 = work >= 1 << 17 && MatrixProduct.threads > 1 ? 1 : 0
        MatrixProduct.startPool()
        q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
        g.withUnsafeBufferPointer { gp in beta.withUnsafeBufferPointer { bp in
        state.withUnsafeMutableBufferPointer { sp in y.withUnsafeMutableBufferPointer { yp in
            let (statePointer, yPointer) = (sp.baseAddress!, yp.baseAddress!)
            let call = { (keepPointer: UnsafePointer<UInt8>?) in
                pk_gated_delta_heads(statePointer, Int32(s.batch), Int32(s.steps), Int32(s.keyHeads), Int32(s.keyDim),
                                     Int32(s.valueHeads), Int32(s.valueDim), qp.baseAddress!, kp.baseAddress!,
                                     vp.baseAddress!, yPointer, gp.baseAddress!, bp.baseAddress!, keepPointer, parallel)
            }
            if let keep { keep.withUnsafeBufferPointer { call($0.baseAddress!) } } else { call(nil) }
        } } } } } } }
    }
}

/// A depthwise conv1d followed by silu, `out[t, c] = silu(Σ_j in[t + j, c] · w[c, j])`:
/// cross-correlation, no kernel flip, summed over j in order from 0 (ParityKernels, vectorised
/// across channels; the silu bits are MLXMath.silu's).
public struct DepthwiseConvSilu: Sendable {
    public let channels: Int, taps: Int
    private let weightByTap: [Float]   // [K, Cc]: the conv weight `[Cc, K, 1]` transposed

    public init(weight: Tensor) {
        let (channels, taps) = (weight.shape[0], weight.shape[1])
        (self.channels, self.taps) = (channels, taps)
        weightByTap = (0..<(taps * channels)).map { i in weight.data[(i % channels) * taps + i / channels] }
    }

    /// `input` `[B, K−1+S, Cc]` → `[B, S, Cc]`.
    public func callAsFunction(_ input: Tensor, steps S: Int) -> Tensor {
        let (B, span, Cc) = (input.shape[0], input.shape[1], input.shape[2])
        precondition(Cc == channels && span == S + taps - 1, "[DepthwiseConvSilu] input \(input.shape) for \(S) steps")
        let out = [Float](unsafeUninitializedCapacity: B * S * Cc) { buffer, initialized in
            input.data.withUnsafeBufferPointer { x in
                weightByTap.withUnsafeBufferPointer { w in
                    for b in 0..<B {
                        pk_conv_silu(x.baseAddress! + b * span * Cc, w.baseAddress!, buffer.baseAddress! + b * S * Cc,
                                     Int32(S), Int32(Cc), Int32(taps))
                    }
                }
            }
            initialized = B * S * Cc
        }
        return Tensor(shape: [B, S, Cc], data: out)
    }
}
