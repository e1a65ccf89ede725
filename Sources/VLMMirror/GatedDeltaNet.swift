import Foundation
import ParityCore
import ParityTensor

// mirrors mlx_vlm/models/qwen3_5/language.py Qwen3_5GatedDeltaNet with gated_delta.py as it runs
// without Metal: gated_delta_chunked (the chunked WY scan, C = 64) for calls of S > 1 tokens,
// the sequential ops step for S = 1.
// Shapes: B batch, S tokens, D hidden, Hk/dk key heads and dim, Hv/dv value heads and dim,
// K conv kernel, Kd = Hk·dk, Cc = 2·Kd + Hv·dv, C chunk length, Tp = S padded to a multiple of C.

struct GatedDeltaNet {
    static let chunk = 64                 // C
    static let decayFloor: Float = 1e-6   // g is clipped to [1e-6, 1] before its log

    let inProjQKV: LinearWeight, inProjZ: LinearWeight, inProjB: LinearWeight, inProjA: LinearWeight
    let convWeight: Tensor        // [Cc, K, 1]
    let convSilu: DepthwiseConvSilu
    let dtBias: Tensor, aLog: Tensor
    let normWeight: Tensor        // [dv], plain weight
    let outProj: LinearWeight
    let keyHeads: Int, valueHeads: Int, keyDim: Int, valueDim: Int, kernel: Int, eps: Float

    init(weights w: Weights, layer i: Int, config c: TextConfig) {
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

    /// `x` `[B, S, D]` (input-normed) → `[B, S, D]`. `mask` `[B, S]` marks real tokens.
    func callAsFunction(_ x: Tensor, mask: [Bool]?, cache: inout DeltaNetCache?, trace: SubStepTrace) -> Tensor {
        let (B, S) = (x.shape[0], x.shape[1])
        let (Hk, dk, Hv, dv) = (keyHeads, keyDim, valueHeads, valueDim)
        let Kd = Hk * dk, Cc = 2 * Kd + Hv * dv, window = kernel - 1

        // Each sub-step goes through a tap: recorded, and what the layer continues with (a fault
        // injected there acts on everything after it).
        var mixed = trace.tap("qkv", x.linear(inProjQKV))   // [B, S, Cc]
        let z = trace.tap("z", x.linear(inProjZ))           // [B, S, Hv·dv]
        let b = trace.tap("b", x.linear(inProjB))           // [B, S, Hv]
        let a = trace.tap("a", x.linear(inProjA))           // [B, S, Hv]

        // A conv state of another batch size is replaced by zeros; so is a mask.
        let state = cache?.convState.flatMap { $0.shape[0] == B ? $0 : nil } ?? Tensor(zeros: [B, window, Cc])
        let mask = BookkeepingSteps.ssmMask(mask.flatMap { $0.count == B * S ? $0 : nil }, batch: B, steps: S, trace: trace)
        if let mask {
            for r in 0..<(B * S) where !mask[r] { for ch in 0..<Cc { mixed.data[r * Cc + ch] = 0 } }
        }
        let convInput = Tensor.concatenate([state, mixed], axis: 1)   // [B, K−1+S, Cc]
        if var c = cache {
            c.convState = trace.tap("conv_state", trailingWindow(convInput, lengths: c.lengths, steps: S))
            cache = c
        }
        // conv_out is traced before silu; untraced, conv and silu run fused (the same bits).
        let convOut = trace.isActive
            ? trace.tap("conv_out", depthwiseConv(convInput, steps: S)).map(Activation.silu)
            : convSilu(convInput, steps: S)   // [B, S, Cc]

        // _normalize_qk: eps written 1e-6 / dk; the dk^-½ readout scale folded into q.
        let invScale = Double(dk).squareRoot().reciprocal
        let normEps = Float(1e-6 / Double(dk))
        let q = trace.tap("q_normed", convOut.slice(axis: 2, start: 0, length: Kd).reshaped([B, S, Hk, dk])
            .rmsNorm(weight: nil, eps: normEps) * Float(invScale * invScale))
        let k = trace.tap("k_normed", convOut.slice(axis: 2, start: Kd, length: Kd).reshaped([B, S, Hk, dk])
            .rmsNorm(weight: nil, eps: normEps) * Float(invScale))
        let v = trace.tap("v", convOut.slice(axis: 2, start: 2 * Kd, length: Hv * dv).reshaped([B, S, Hv, dv]))

        // _compute_g_beta: g = exp(−exp(A_log)·softplus(a + dt_bias)) (float32), β = sigmoid(b).
        let beta = trace.tap("beta", b.map(Activation.sigmoid))
        var g = a
        for r in 0..<(B * S) {
            for h in 0..<Hv {
                let i = r * Hv + h
                g.data[i] = MLXMath.exp(-MLXMath.exp(aLog.data[h]) * Activation.softplus(a.data[i] + dtBias.data[h]))
            }
        }
        g = trace.tap("g", g)

        // Taken out of the cache while the layer runs: the local copy is then the only one and is
        // stepped in place (1 MB a layer per token copied, and as much zeroed, otherwise).
        var recurrent: Tensor
        if let s = cache?.recurrentState, s.shape[0] == B { recurrent = s } else { recurrent = Tensor(zeros: [B, Hv, dv, dk]) }
        cache?.recurrentState = nil
        let y = trace.tap("core_out", S > 1
            ? chunkedDeltaRule(q: q, k: k, v: v, g: g, beta: beta, state: &recurrent, mask: mask)
            : sequentialDeltaRule(q: q, k: k, v: v, g: g, beta: beta, state: &recurrent, mask: mask))
        recurrent = trace.tap("final_state", recurrent)
        if var c = cache {
            c.recurrentState = recurrent
            c.leftPadding = c.leftPadding?.map { $0 - S }   // ArraysCache.advance
            c.lengths = c.lengths?.map { $0 - S }
            cache = c
        }

        // Qwen3_5RMSNormGated: rms_norm(y)·w per value head, then silu(z)·that in float32.
        var gated = y.rmsNorm(weight: normWeight, eps: eps)   // [B, S, Hv, dv]
        gated.data = Activation.siluTimes(z.data, gated.data)
        gated = trace.tap("gated_norm_out", gated).reshaped([B, S, Hv * dv])
        return trace.tap("out_proj", gated.linear(outProj))
    }

    /// `ArraysCache.update_window`: the last K−1 inputs, or with `lengths` each row's K−1 inputs
    /// ending at its last real one.
    func trailingWindow(_ input: Tensor, lengths: [Int]?, steps S: Int) -> Tensor {
        let width = kernel - 1
        guard let lengths else { return input.slice(axis: 1, start: S, length: width) }
        return Tensor.concatenate((0..<input.shape[0]).map { r in
            input.slice(axis: 0, start: r, length: 1).slice(axis: 1, start: min(max(lengths[r], 0), S), length: width)
        }, axis: 0)
    }

    /// `nn.Conv1d(groups = Cc)` then silu: `out[t, c] = silu(Σ_j in[t + j, c]·w[c, j])`.
    /// The conv1d module's output, before silu (what the golden probes record as conv_out).
    func depthwiseConvSilu(_ input: Tensor, steps S: Int) -> Tensor { convSilu(input, steps: S) }

    func depthwiseConv(_ input: Tensor, steps S: Int) -> Tensor {
        let (B, span, Cc) = (input.shape[0], input.shape[1], input.shape[2])
        var out = Tensor(zeros: [B, S, Cc])
        for b in 0..<B {
            for t in 0..<S {
                for c in 0..<Cc {
                    var acc: Float = 0
                    for j in 0..<kernel { acc += input.data[(b * span + t + j) * Cc + c] * convWeight.data[c * kernel + j] }
                    out.data[(b * S + t) * Cc + c] = acc
                }
            }
        }
        return out
    }

    /// `_gated_delta_step_ops` applied token by token: S ← g·S; m = S·k; δ = β(v − m);
    /// S ← S + δ ⊗ k; y = S·q. A masked step restores the old state but keeps its y.
    /// State `[B, Hv, dv, dk]`; value head h reads key head h / (Hv / Hk). mlx-lm's step is the
    /// same ops, so ParityTensor's DeltaRuleKernel (shared with the lm mirror) runs it.
    func sequentialDeltaRule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                             state: inout Tensor, mask: [Bool]?) -> Tensor {
        let (B, S, Hk, dk) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (Hv, dv) = (v.shape[2], v.shape[3])
        var y = [Float](repeating: 0, count: B * S * Hv * dv)
        DeltaRuleKernel.run(q: q.data, k: k.data, v: v.data, g: g.data, beta: beta.data,
                            keep: mask.map { $0.map { $0 ? 1 : 0 } }, state: &state.data, y: &y,
                            shape: .init(batch: B, steps: S, keyHeads: Hk, keyDim: dk, valueHeads: Hv, valueDim: dv))
        return Tensor(shape: [B, S, Hv, dv], data: y)
    }

    /// `gated_delta_chunked`: the same recurrence as a chunked WY scan, in float32. Masked steps
    /// get g = 1, β = 0; the time axis is padded to a multiple of C with q = k = v = 0, g = 1,
    /// β = 0. Per chunk (i, j ∈ [0, C)):
    ///   λᵢ = Σ_{j≤i} ln clip(gⱼ, 1e-6, 1), γᵢ = e^{λᵢ}, Γᵢⱼ = e^{λᵢ−λⱼ} (j ≤ i, else 0)
    ///   A = diag(β)(Γ ⊙ KKᵀ) strictly lower; T⁻¹ = (I + A)⁻¹ by forward substitution
    ///   U₀ = T⁻¹(β ⊙ V), K̃ = T⁻¹((βγ) ⊙ K), M = Γ ⊙ QKᵀ (lower, incl.), Q̃ = γ ⊙ Q − M K̃
    /// and across chunks Y = M U₀ + Q̃ Sᵀ, U = U₀ − K̃ Sᵀ, S ← γ_last S + (ρ ⊙ U)ᵀ K with
    /// ρᵢ = e^{λ_last − λᵢ}.
    func chunkedDeltaRule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                          state: inout Tensor, mask: [Bool]?) -> Tensor {
        let (B, S, Hk, dk) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (Hv, dv) = (v.shape[2], v.shape[3])
        let C = Self.chunk
        let chunks = (S + C - 1) / C
        var y = [Float](repeating: 0, count: B * S * Hv * dv)
        // Heads never interact: each runs its chunks on its own thread, writing its own y columns
        // and state; every number is computed as it would be one head after another.
        y.withUnsafeMutableBufferPointer { yBuffer in
            state.data.withUnsafeMutableBufferPointer { stateBuffer in
                let (yOut, stateOut) = (yBuffer.baseAddress!, stateBuffer.baseAddress!)
                MatrixProduct.parallel(B * Hv) { flat in
                    let (b, h) = (flat / Hv, flat % Hv)
                    let kh = h / (Hv / Hk)
                    let stateBase = stateOut + flat * dv * dk
                    var carried = Matrix(rows: dv, columns: dk, Array(UnsafeBufferPointer(start: stateBase, count: dv * dk)))
                    for c in 0..<chunks {
                        // This chunk's rows, zero-padded past the end of the call.
                        var Q = Matrix(rows: C, columns: dk), K = Matrix(rows: C, columns: dk), V = Matrix(rows: C, columns: dv)
                        var decay = [Float](repeating: 1, count: C), rate = [Float](repeating: 0, count: C)
                        for i in 0..<C {
                            let t = c * C + i
                            guard t < S else { continue }
                            let row = b * S + t
                            for j in 0..<dk {
                                Q[i, j] = q.data[(row * Hk + kh) * dk + j]
                                K[i, j] = k.data[(row * Hk + kh) * dk + j]
                            }
                            for j in 0..<dv { V[i, j] = v.data[(row * Hv + h) * dv + j] }
                            if mask.map({ $0[row] }) ?? true {
                                decay[i] = g.data[row * Hv + h]
                                rate[i] = beta.data[row * Hv + h]
                            }
                        }
                        let (Y, next) = Self.scanChunk(Q: Q, K: K, V: V, g: decay, beta: rate, state: carried)
                        carried = next
                        for i in 0..<C where c * C + i < S {
                            let row = b * S + c * C + i
                            for j in 0..<dv { yOut[(row * Hv + h) * dv + j] = Y[i, j] }
                        }
                    }
                    _ = UnsafeMutableBufferPointer(start: stateBase, count: dv * dk).update(fromContentsOf: carried.values)
                }
            }
        }
        return Tensor(shape: [B, S, Hv, dv], data: y)
    }

    /// One chunk of `gated_delta_chunked` for one head: outputs `[C, dv]` and the next state `[dv, dk]`.
    static func scanChunk(Q: Matrix, K: Matrix, V: Matrix, g: [Float], beta: [Float], state S: Matrix) -> (Matrix, Matrix) {
        let C = Q.rows
        // λ: running sum of ln clip(g, 1e-6, 1); γ = e^λ; Γᵢⱼ = e^{λᵢ − λⱼ} below and on the diagonal.
        var lambda = [Float](repeating: 0, count: C)
        var running: Float = 0
        for i in 0..<C {
            running += Foundation.log(min(max(g[i], decayFloor), 1))
            lambda[i] = running
        }
        let gamma = lambda.map { MLXMath.exp($0) }
        var Gamma = Matrix(rows: C, columns: C)
        for i in 0..<C { for j in 0...i { Gamma[i, j] = MLXMath.exp(lambda[i] - lambda[j]) } }

        // Products sharing an operand run as one (rows stacked or columns side by side): every
        // element of the in-order product depends only on its own row and column, so the bits
        // are those of the separate products, with one packing and one dispatch fewer each.
        let KQK = Matrix.stacked(K, Q).timesTransposed(K)   // [KKᵀ; QKᵀ]
        let KK = KQK.rows(0, C), QK = KQK.rows(C, C)
        var A = Matrix(rows: C, columns: C)
        for i in 0..<C { for j in 0..<i { A[i, j] = beta[i] * Gamma[i, j] * KK[i, j] } }
        let inverse = Self.unitLowerInverse(A)
        var scaledV = V, scaledK = K
        for i in 0..<C {
            for j in 0..<V.columns { scaledV[i, j] = beta[i] * V[i, j] }
            let w = beta[i] * gamma[i]
            for j in 0..<K.columns { scaledK[i, j] = w * K[i, j] }
        }
        let UK = inverse.times(Matrix.sideBySide(scaledV, scaledK))
        let U0 = UK.columns(0, V.columns)                 // [C, dv]
        let Kt = UK.columns(V.columns, K.columns)         // [C, dk]
        var M = Matrix(rows: C, columns: C)
        for i in 0..<C { for j in 0...i { M[i, j] = Gamma[i, j] * QK[i, j] } }
        let MKU = M.times(Matrix.sideBySide(Kt, U0))
        let MKt = MKU.columns(0, Kt.columns), MU0 = MKU.columns(Kt.columns, U0.columns)
        var Qeff = Q
        for i in 0..<C { for j in 0..<Q.columns { Qeff[i, j] = gamma[i] * Q[i, j] - MKt[i, j] } }

        let QKS = Matrix.stacked(Qeff, Kt).timesTransposed(S)   // · Sᵀ [dk, dv]
        let QS = QKS.rows(0, C), KS = QKS.rows(C, C)
        var Y = MU0, U = U0
        for i in 0..<C {
            let ratio = MLXMath.exp(lambda[C - 1] - lambda[i])
            for j in 0..<U.columns {
                Y[i, j] = MU0[i, j] + QS[i, j]
                U[i, j] = ratio * (U0[i, j] - KS[i, j])
            }
        }
        let update = U.transposed().times(K)   // [dv, dk]
        var next = S
        for i in 0..<next.values.count { next.values[i] = gamma[C - 1] * S.values[i] + update.values[i] }
        return (Y, next)
    }
}

extension GatedDeltaNet {
    /// `(I + A)⁻¹` for a strictly lower `A` `[C, C]`, row by row: Xᵢ = eᵢ − Σ_{p<i} Aᵢₚ Xₚ, each
    /// sum from 0 over p in order (the row-vector product the reference BLAS computes), written
    /// as plain loops: one pass, no copies of the rows above.
    static func unitLowerInverse(_ A: Matrix) -> Matrix {
        let C = A.rows
        var inverse = Matrix(rows: C, columns: C)
        var combination = [Float](repeating: 0, count: C)
        A.values.withUnsafeBufferPointer { a in
            inverse.values.withUnsafeMutableBufferPointer { x in
                combination.withUnsafeMutableBufferPointer { sum in
                    x[0] = 1
                    for i in 1..<C {
                        for j in 0..<C { sum[j] = 0 }
                        for p in 0..<i {
                            let coefficient = a[i * C + p]
                            for j in 0..<C { sum[j] = sum[j] + coefficient * x[p * C + j] }
                        }
                        for j in 0..<C { x[i * C + j] = (i == j ? 1 : 0) - sum[j] }
                    }
                }
            }
        }
        return inverse
    }
}

/// A small row-major float32 matrix for the chunked scan; products go through MatrixProduct,
/// which sums over k in order like the reference BLAS under mlx's batched matmul.
struct Matrix {
    let rows: Int, columns: Int
    var values: [Float]

    init(rows: Int, columns: Int, _ values: [Float]? = nil) {
        self.rows = rows
        self.columns = columns
        self.values = values ?? [Float](repeating: 0, count: rows * columns)
        precondition(self.values.count == rows * columns, "[Matrix] \(self.values.count) values for \(rows)×\(columns)")
    }

    subscript(i: Int, j: Int) -> Float {
        get { values[i * columns + j] }
        set { values[i * columns + j] = newValue }
    }

    func times(_ other: Matrix) -> Matrix {
        precondition(columns == other.rows, "[Matrix.times] \(rows)×\(columns) · \(other.rows)×\(other.columns)")
        var out = Matrix(rows: rows, columns: other.columns)
        values.withUnsafeBufferPointer { a in
            other.values.withUnsafeBufferPointer { b in
                out.values.withUnsafeMutableBufferPointer { c in
                    MatrixProduct.times(a.baseAddress!, b.baseAddress!, into: c.baseAddress!,
                                        m: rows, n: other.columns, k: columns)
                }
            }
        }
        return out
    }

    /// `self · otherᵀ`: the kernel packs `other` transposed, the same panels `other.transposed()`
    /// would give, so the same bits without the copy.
    func timesTransposed(_ other: Matrix) -> Matrix {
        precondition(columns == other.columns, "[Matrix.timesTransposed] \(rows)×\(columns) · (\(other.rows)×\(other.columns))ᵀ")
        var out = Matrix(rows: rows, columns: other.rows)
        values.withUnsafeBufferPointer { a in
            other.values.withUnsafeBufferPointer { b in
                out.values.withUnsafeMutableBufferPointer { c in
                    MatrixProduct.timesTransposed(a.baseAddress!, b.baseAddress!, into: c.baseAddress!,
                                                  m: rows, n: other.rows, k: columns)
                }
            }
        }
        return out
    }

    /// `top` over `bottom` (the same column count).
    static func stacked(_ top: Matrix, _ bottom: Matrix) -> Matrix {
        precondition(top.columns == bottom.columns, "[Matrix.stacked] \(top.columns) vs \(bottom.columns) columns")
        return Matrix(rows: top.rows + bottom.rows, columns: top.columns, top.values + bottom.values)
    }

    /// `left` then `right`, row by row (the same row count).
    static func sideBySide(_ left: Matrix, _ right: Matrix) -> Matrix {
        precondition(left.rows == right.rows, "[Matrix.sideBySide] \(left.rows) vs \(right.rows) rows")
        var out = Matrix(rows: left.rows, columns: left.columns + right.columns)
        for i in 0..<left.rows {
            for j in 0..<left.columns { out[i, j] = left[i, j] }
            for j in 0..<right.columns { out[i, left.columns + j] = right[i, j] }
        }
        return out
    }

    /// Rows `start ..< start + count`.
    func rows(_ start: Int, _ count: Int) -> Matrix {
        Matrix(rows: count, columns: columns, Array(values[(start * columns)..<((start + count) * columns)]))
    }

    /// Columns `start ..< start + count`.
    func columns(_ start: Int, _ count: Int) -> Matrix {
        var out = Matrix(rows: rows, columns: count)
        for i in 0..<rows { for j in 0..<count { out[i, j] = self[i, start + j] } }
        return out
    }

    func transposed() -> Matrix {
        var out = Matrix(rows: columns, columns: rows)
        for i in 0..<rows { for j in 0..<columns { out[j, i] = self[i, j] } }
        return out
    }
}

private extension Double {
    var reciprocal: Double { 1 / self }
}
