import Foundation
import ParityCore
import ParityTensor

// mirrors mlx_lm/models/qwen3_5.py GatedDeltaNet with gated_delta.py's ops path (the sequential
// recurrence mlx-lm always runs on CPU).
// Shapes: B batch, S tokens, D hidden, Hk/dk key heads and dim, Hv/dv value heads and dim,
// K conv kernel, Kd = Hk·dk, Vd = Hv·dv, Cc = 2·Kd + Vd.

struct GatedDeltaNet {
    let inProjQKV: LinearWeight, inProjZ: LinearWeight, inProjB: LinearWeight, inProjA: LinearWeight
    let convWeight: Tensor        // [Cc, K, 1]
    let convSilu: DepthwiseConvSilu
    let dtBias: Tensor, aLog: Tensor
    let normWeight: Tensor        // [dv], no +1 shift
    let outProj: LinearWeight
    let keyHeads: Int, valueHeads: Int, keyDim: Int, valueDim: Int, kernel: Int, eps: Float

    init(weights w: some WeightProvider, layer i: Int, config c: TextConfig) {
        let name = { WeightNames.layer(i, "linear_attn." + $0) }
        inProjQKV = w.linear(name("in_proj_qkv.weight")); inProjZ = w.linear(name("in_proj_z.weight"))
        inProjB = w.linear(name("in_proj_b.weight")); inProjA = w.linear(name("in_proj_a.weight"))
        convWeight = w[name("conv1d.weight")]
        convSilu = DepthwiseConvSilu(weight: convWeight)
        dtBias = w[name("dt_bias")]; aLog = w[name("A_log")]
        normWeight = w[name("norm.weight")]; outProj = w.linear(name("out_proj.weight"))
        keyHeads = c.linearNumKeyHeads; valueHeads = c.linearNumValueHeads
        keyDim = c.linearKeyHeadDim; valueDim = c.linearValueHeadDim
        kernel = c.linearConvKernelDim; eps = c.eps
    }

    /// `x` `[B, S, D]` (already input-normed) → `[B, S, D]`. `mask` `[B, S]` marks real tokens.
    func callAsFunction(_ x: Tensor, mask realTokens: [Bool]?, cache: inout DeltaNetCache?, trace: SubStepTrace) -> Tensor {
        let (B, S) = (x.shape[0], x.shape[1])
        let mask = BookkeepingSteps.ssmMask(realTokens, batch: B, steps: S, trace: trace)
        let (Hk, dk, Hv, dv) = (keyHeads, keyDim, valueHeads, valueDim)
        let Kd = Hk * dk, Cc = 2 * Kd + Hv * dv, window = kernel - 1

        // Every sub-step goes through a tap that records it (ParityCore/SubSteps.swift names
        // them) and hands back what the layer computes on with.
        var qkv = trace.tap("qkv", x.linear(inProjQKV))   // [B, S, Cc]
        let z = trace.tap("z", x.linear(inProjZ))         // [B, S, Vd]
        let b = trace.tap("b", x.linear(inProjB))         // [B, S, Hv]
        let a = trace.tap("a", x.linear(inProjA))         // [B, S, Hv]

        // Masked (padding) steps feed zeros to the convolution.
        if let mask {
            for r in 0..<(B * S) where !mask[r] {
                for ch in 0..<Cc { qkv.data[r * Cc + ch] = 0 }
            }
        }
        let state = cache?.convState ?? Tensor(zeros: [B, window, Cc])
        let convInput = Tensor.concatenate([state, qkv], axis: 1)   // [B, K−1+S, Cc]
        if var c = cache {
            c.convState = trace.tap("conv_state", nextConvState(convInput, lengths: c.lengths, steps: S))
            cache = c
        }
        // conv_out is traced before silu: what mlx-lm's conv1d module returns. Untraced, the
        // convolution and silu run fused in ParityKernels (the same sums and the same silu bits).
        let convOut = trace.isActive
            ? trace.tap("conv_out", depthwiseConv(convInput, steps: S)).map(Activation.silu)
            : depthwiseConvSilu(convInput, steps: S)   // [B, S, Cc]

        // Split channels into q ‖ k ‖ v and l2-normalise q and k (the dk^-½ readout scale folded into q).
        let inverseScale = 1 / Double(dk).squareRoot()
        let rmsEps = Float(1e-6 * inverseScale * inverseScale)
        let q = trace.tap("q_normed", convOut.slice(axis: 2, start: 0, length: Kd).reshaped([B, S, Hk, dk])
            .rmsNorm(weight: nil, eps: rmsEps) * Float(inverseScale * inverseScale))
        let k = trace.tap("k_normed", convOut.slice(axis: 2, start: Kd, length: Kd).reshaped([B, S, Hk, dk])
            .rmsNorm(weight: nil, eps: rmsEps) * Float(inverseScale))
        let v = trace.tap("v", convOut.slice(axis: 2, start: 2 * Kd, length: Hv * dv).reshaped([B, S, Hv, dv]))

        let beta = trace.tap("beta", b.map(Activation.sigmoid))
        var g = a
        for r in 0..<(B * S) {
            for h in 0..<Hv {
                let i = r * Hv + h
                g.data[i] = MLXMath.exp(-MLXMath.exp(aLog.data[h]) * Activation.softplus(a.data[i] + dtBias.data[h]))
            }
        }
        g = trace.tap("g", g)

        var recurrent = cache?.recurrentState ?? Tensor(zeros: [B, Hv, dv, dk])
        cache?.recurrentState = nil   // the local copy is then the only one and is stepped in place
        let y = trace.tap("core_out", deltaRule(q: q, k: k, v: v, g: g, beta: beta, state: &recurrent, mask: mask))   // [B, S, Hv, dv]
        recurrent = trace.tap("final_state", recurrent)
        if var c = cache {
            c.recurrentState = recurrent
            // ArraysCache.advance: padding bookkeeping moves with every call.
            c.leftPadding = c.leftPadding?.map { $0 - S }
            c.lengths = c.lengths?.map { $0 - S }
            cache = c
        }

        // Gated RMSNorm per value head: norm(y)·w, then silu(z) times it in float32.
        var gatedOut = y.rmsNorm(weight: normWeight, eps: eps)      // [B, S, Hv, dv]; z is [B, S, Vd]
        gatedOut.data = Activation.siluTimes(z.data, gatedOut.data)
        gatedOut = trace.tap("gated_norm_out", gatedOut)
        return trace.tap("out_proj", gatedOut.reshaped([B, S, Hv * dv]).linear(outProj))
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

    /// `out[t, c] = silu(Σ_j in[t + j, c] · w[c, j])` (ParityTensor's DepthwiseConvSilu).
    func depthwiseConvSilu(_ input: Tensor, steps S: Int) -> Tensor { convSilu(input, steps: S) }

    /// `out[t, c] = Σ_j in[t + j, c] · w[c, j]`, summed in order in float32.
    func depthwiseConv(_ input: Tensor, steps S: Int) -> Tensor {
        let (B, span, Cc) = (input.shape[0], input.shape[1], input.shape[2])
        var out = [Float](repeating: 0, count: B * S * Cc)
        for b in 0..<B {
            for t in 0..<S {
                for c in 0..<Cc {
                    var sum: Float = 0
                    for j in 0..<kernel { sum += input.data[(b * span + t + j) * Cc + c] * convWeight.data[c * kernel + j] }
                    out[(b * S + t) * Cc + c] = sum
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
