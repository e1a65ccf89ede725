import Foundation
import ParityCore
import ParityTensor
internal import ParityKernels

// mirrors mlx_lm/models/qwen3_5.py GatedDeltaNet with gated_delta.py's ops path (the sequential
// recurrence mlx-lm always runs on CPU).
// Shapes: B batch, S tokens, D hidden, Hk/dk key heads and dim, Hv/dv value heads and dim,
// K conv kernel, Kd = Hk·dk, Vd = Hv·dv, Cc = 2·Kd + Vd.

struct GatedDeltaNet {
    let inProjQKV: LinearWeight, inProjZ: LinearWeight, inProjB: LinearWeight, inProjA: LinearWeight
    let convWeight: Tensor        // [Cc, K, 1]
    let convWeightByTap: [Float]  // the same, transposed to [K, Cc] for the vectorised kernel
    let dtBias: Tensor, aLog: Tensor
    let normWeight: Tensor        // [dv], no +1 shift
    let outProj: LinearWeight
    let keyHeads: Int, valueHeads: Int, keyDim: Int, valueDim: Int, kernel: Int, eps: Float

    init(weights w: some WeightProvider, layer i: Int, config c: TextConfig) {
        let name = { WeightNames.layer(i, "linear_attn." + $0) }
        inProjQKV = LinearWeight(w[name("in_proj_qkv.weight")]); inProjZ = LinearWeight(w[name("in_proj_z.weight")])
        inProjB = LinearWeight(w[name("in_proj_b.weight")]); inProjA = LinearWeight(w[name("in_proj_a.weight")])
        convWeight = w[name("conv1d.weight")]
        let (channels, taps) = (convWeight.shape[0], convWeight.shape[1])
        convWeightByTap = (0..<(taps * channels)).map { [convWeight] i in convWeight.data[(i % channels) * taps + i / channels] }
        dtBias = w[name("dt_bias")]; aLog = w[name("A_log")]
        normWeight = w[name("norm.weight")]; outProj = LinearWeight(w[name("out_proj.weight")])
        keyHeads = c.linearNumKeyHeads; valueHeads = c.linearNumValueHeads
        keyDim = c.linearKeyHeadDim; valueDim = c.linearValueHeadDim
        kernel = c.linearConvKernelDim; eps = c.eps
    }

    /// `x` `[B, S, D]` (already input-normed) → `[B, S, D]`. `mask` `[B, S]` marks real tokens.
    func callAsFunction(_ x: Tensor, mask: [Bool]?, cache: inout DeltaNetCache?, trace: SubStepTrace) -> Tensor {
        let (B, S) = (x.shape[0], x.shape[1])
        let (Hk, dk, Hv, dv) = (keyHeads, keyDim, valueHeads, valueDim)
        let Kd = Hk * dk, Cc = 2 * Kd + Hv * dv, window = kernel - 1

        var qkv = x.linear(inProjQKV)                     // [B, S, Cc]
        let z = x.linear(inProjZ)                         // [B, S, Vd]
        let b = x.linear(inProjB)                         // [B, S, Hv]
        let a = x.linear(inProjA)                         // [B, S, Hv]
        trace("qkv", qkv); trace("z", z); trace("b", b); trace("a", a)

        // Masked (padding) steps feed zeros to the convolution.
        if let mask {
            for r in 0..<(B * S) where !mask[r] {
                for ch in 0..<Cc { qkv.data[r * Cc + ch] = 0 }
            }
        }
        let state = cache?.convState ?? Tensor(zeros: [B, window, Cc])
        let convInput = Tensor.concatenate([state, qkv], axis: 1)   // [B, K−1+S, Cc]
        if var c = cache {
            c.convState = nextConvState(convInput, lengths: c.lengths, steps: S)
            cache = c
        }
        let convOut = depthwiseConvSilu(convInput, steps: S)        // [B, S, Cc]
        trace("conv_out", convOut)

        // Split channels into q ‖ k ‖ v and l2-normalise q and k (the dk^-½ readout scale folded into q).
        let inverseScale = 1 / Double(dk).squareRoot()
        let rmsEps = Float(1e-6 * inverseScale * inverseScale)
        let q = convOut.slice(axis: 2, start: 0, length: Kd).reshaped([B, S, Hk, dk])
            .rmsNorm(weight: nil, eps: rmsEps) * Float(inverseScale * inverseScale)
        let k = convOut.slice(axis: 2, start: Kd, length: Kd).reshaped([B, S, Hk, dk])
            .rmsNorm(weight: nil, eps: rmsEps) * Float(inverseScale)
        let v = convOut.slice(axis: 2, start: 2 * Kd, length: Hv * dv).reshaped([B, S, Hv, dv])
        trace("q_normed", q); trace("k_normed", k); trace("v", v)

        let beta = b.map(Activation.sigmoid)
        var g = a
        for r in 0..<(B * S) {
            for h in 0..<Hv {
                let i = r * Hv + h
                g.data[i] = MLXMath.exp(-MLXMath.exp(aLog.data[h]) * Activation.softplus(a.data[i] + dtBias.data[h]))
            }
        }
        trace("beta", beta); trace("g", g)

        var recurrent = cache?.recurrentState ?? Tensor(zeros: [B, Hv, dv, dk])
        let y = deltaRule(q: q, k: k, v: v, g: g, beta: beta, state: &recurrent, mask: mask)   // [B, S, Hv, dv]
        trace("core_out", y); trace("final_state", recurrent)
        if var c = cache {
            c.recurrentState = recurrent
            // ArraysCache.advance: padding bookkeeping moves with every call.
            c.leftPadding = c.leftPadding?.map { $0 - S }
            c.lengths = c.lengths?.map { $0 - S }
            cache = c
        }

        // Gated RMSNorm per value head: norm(y)·w, then silu(z) times it in float32.
        let normed = y.rmsNorm(weight: normWeight, eps: eps)
        var gatedOut = normed.reshaped([B, S, Hv * dv])
        gatedOut.data = Activation.siluTimes(z.data, gatedOut.data)
        trace("gated_norm_out", gatedOut)
        let out = gatedOut.linear(outProj)
        trace("out_proj", out)
        return out
    }

    /// The last `K−1` inputs of the window; with `lengths`, the last `K−1` real ones of each row.
    func nextConvState(_ convInput: Tensor, lengths: [Int]?, steps S: Int) -> Tensor {
        let window = kernel - 1
        guard let lengths else {
            return convInput.slice(axis: 1, start: convInput.shape[1] - window, length: window)
        }
        let rows = (0..<convInput.shape[0]).map { r -> Tensor in
            let end = min(max(lengths[r], 0), S)
            return convInput.slice(axis: 0, start: r, length: 1).slice(axis: 1, start: end, length: window)
        }
        return Tensor.concatenate(rows, axis: 0)
    }

    /// `out[t, c] = silu(Σ_j in[t + j, c] · w[c, j])`: cross-correlation, no kernel flip, summed
    /// over j in order (ParityKernels, vectorised across channels).
    func depthwiseConvSilu(_ input: Tensor, steps S: Int) -> Tensor {
        let (B, span, Cc) = (input.shape[0], input.shape[1], input.shape[2])
        var out = [Float](repeating: 0, count: B * S * Cc)
        input.data.withUnsafeBufferPointer { x in
            convWeightByTap.withUnsafeBufferPointer { w in
                out.withUnsafeMutableBufferPointer { y in
                    for b in 0..<B {
                        pk_conv_silu(x.baseAddress! + b * span * Cc, w.baseAddress!, y.baseAddress! + b * S * Cc,
                                     Int32(S), Int32(Cc), Int32(kernel))
                    }
                }
            }
        }
        return Tensor(shape: [B, S, Cc], data: out)
    }

    /// The sequential gated delta rule with a float32 state `[B, Hv, dv, dk]`. Value head `h`
    /// reads key head `h / (Hv / Hk)`. A masked step keeps the old state but still emits `y`.
    /// The steps run in ParityKernels (`pk_gated_delta`) on the state transposed to `[dk, dv]`,
    /// elementwise across dv with every sum over dk in order; heads are split across threads.
    func deltaRule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                   state: inout Tensor, mask: [Bool]?) -> Tensor {
        let (B, S, Hk, dk) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (Hv, dv) = (v.shape[2], v.shape[3])
        var y = [Float](repeating: 0, count: B * S * Hv * dv)
        let keep: [UInt8]? = mask.map { $0.map { $0 ? 1 : 0 } }
        DeltaRuleKernel.run(q: q.data, k: k.data, v: v.data, g: g.data, beta: beta.data, keep: keep,
                            state: &state.data, y: &y,
                            shape: .init(batch: B, steps: S, keyHeads: Hk, keyDim: dk, valueHeads: Hv, valueDim: dv))
        return Tensor(shape: [B, S, Hv, dv], data: y)
    }
}
