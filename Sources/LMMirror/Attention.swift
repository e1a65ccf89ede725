import Foundation
import ParityCore
import ParityTensor

// mirrors mlx_lm/models/qwen3_next.py Qwen3NextAttention (gated full attention), text path.
// Shapes: B batch, L tokens in this call, T cached tokens, D hidden, H/Hkv heads, hd head dim.

/// Which keys a query may see, as mlx-lm builds it for the full-attention layers.
enum AttentionMask {
    /// Every key (a single-token call on a plain cache).
    case none
    /// Query `i` sees key `j` iff `j ≤ i + (T − L)`.
    case causal
    /// `[B, L, T]`, from a left-padded batch cache.
    case explicit([Bool])
}

struct Attention {
    let qProj: LinearWeight, kProj: LinearWeight, vProj: LinearWeight, oProj: LinearWeight
    let qBias: Tensor?, kBias: Tensor?, vBias: Tensor?, oBias: Tensor?
    let qNorm: Tensor, kNorm: Tensor
    let heads: Int, kvHeads: Int, headDim: Int, eps: Float
    let rope: Rope

    init(weights w: some WeightProvider, layer i: Int, config c: TextConfig) {
        let name = { WeightNames.layer(i, "self_attn." + $0) }
        qProj = w.linear(name("q_proj.weight")); kProj = w.linear(name("k_proj.weight"))
        vProj = w.linear(name("v_proj.weight")); oProj = w.linear(name("o_proj.weight"))
        qBias = c.attentionBias ? w[name("q_proj.bias")] : nil
        kBias = c.attentionBias ? w[name("k_proj.bias")] : nil
        vBias = c.attentionBias ? w[name("v_proj.bias")] : nil
        oBias = c.attentionBias ? w[name("o_proj.bias")] : nil
        qNorm = w[name("q_norm.weight")]; kNorm = w[name("k_norm.weight")]
        heads = c.numAttentionHeads; kvHeads = c.numKeyValueHeads; headDim = c.headDim; eps = c.eps
        rope = Rope(dims: c.rotaryDims, base: c.ropeTheta)
    }

    /// `x` `[B, L, D]` (already input-normed) → `[B, L, D]`.
    func callAsFunction(_ x: Tensor, mask: AttentionMask, cache: inout AttentionCache?,
                        trace: SubStepTrace) -> Tensor {
        let (B, L) = (x.shape[0], x.shape[1])
        let hd = headDim
        // q_proj packs [query(hd) ‖ gate(hd)] per head. Each sub-step goes through a tap that
        // records it (ParityCore/SubSteps.swift names them) and hands back what the layer uses.
        let packed = trace.tap("q_proj", x.linear(qProj, bias: qBias)).reshaped([B, L, heads, 2 * hd])
        let queries = packed.slice(axis: 3, start: 0, length: hd)
        let gate = trace.tap("gate", packed.slice(axis: 3, start: hd, length: hd).reshaped([B, L, heads * hd]))
        let keys = trace.tap("k_proj", x.linear(kProj, bias: kBias)).reshaped([B, L, kvHeads, hd])
        let v = trace.tap("v", x.linear(vProj, bias: vBias).reshaped([B, L, kvHeads, hd]).permuted([0, 2, 1, 3]))
        var q = trace.tap("q_normed", queries.rmsNorm(weight: qNorm, eps: eps)).permuted([0, 2, 1, 3])  // [B, H, L, hd]
        var k = trace.tap("k_normed", keys.rmsNorm(weight: kNorm, eps: eps)).permuted([0, 2, 1, 3])     // [B, Hkv, L, hd]

        let offsets = BookkeepingSteps.cacheOffsets(cache?.offsets(batch: B) ?? [Int](repeating: 0, count: B), trace: trace)
        trace("rope_positions", BookkeepingSteps.textRopePositions(offsets: offsets, length: L))   // recorded, not rewritten
        rope.apply(&q, offsets: offsets)
        rope.apply(&k, offsets: offsets)
        q = trace.tap("q_rope", q)
        k = trace.tap("k_rope", k)

        var allKeys = k, allValues = v
        if var c = cache {
            allKeys = c.keys.map { Tensor.concatenate([$0, k], axis: 2) } ?? k
            allValues = c.values.map { Tensor.concatenate([$0, v], axis: 2) } ?? v
            c.keys = allKeys; c.values = allValues; c.length += L
            cache = c
        }
        let visible = Self.intervals(mask, batch: B, queries: L, keys: allKeys.shape[2]).tapped(trace)
        let attended = trace.tap("sdpa", scaledDotProductAttention(q, allKeys, allValues, visible: visible))   // [B, H, L, hd]
        var gated = attended.permuted([0, 2, 1, 3]).reshaped([B, L, heads * hd])
        for i in gated.data.indices { gated.data[i] *= Activation.sigmoid(gate.data[i]) }
        return trace.tap("o_proj", trace.tap("gated", gated).linear(oProj, bias: oBias))
    }

    /// The op-level SDPA of mlx on CPU: `q·scale`, `S = q Kᵀ`, mask, float32 softmax, `P V`.
    /// Query head `h` reads KV head `h / (H / Hkv)`.
    private func scaledDotProductAttention(_ q: Tensor, _ k: Tensor, _ v: Tensor, visible: KeyIntervals) -> Tensor {
        let (B, L, hd) = (q.shape[0], q.shape[2], headDim)
        let T = k.shape[2]
        let group = heads / kvHeads
        let scale = Float(1 / Double(hd).squareRoot())
        var out = [Float](repeating: 0, count: q.count)
        var scores = [Float](repeating: 0, count: L * T)
        var scaledQ = [Float](repeating: 0, count: L * hd)
        for b in 0..<B {
            for h in 0..<heads {
                let kvh = h / group
                let qBase = (b * heads + h) * L * hd
                let kBase = (b * kvHeads + kvh) * T * hd
                for i in 0..<(L * hd) { scaledQ[i] = q.data[qBase + i] * scale }
                scaledQ.withUnsafeBufferPointer { qp in
                    k.data.withUnsafeBufferPointer { kp in
                        scores.withUnsafeMutableBufferPointer { sp in
                            MatrixProduct.timesTransposed(qp.baseAddress!, kp.baseAddress! + kBase,
                                                          into: sp.baseAddress!, m: L, n: T, k: hd)
                        }
                    }
                }
                for i in 0..<L {
                    let row = i * T
                    let (first, end) = visible[b, i]
                    for j in 0..<T where j < first || j >= end {
                        scores[row + j] = -Float.greatestFiniteMagnitude
                    }
                    var m = -Float.infinity
                    for j in 0..<T { m = max(m, scores[row + j]) }
                    var sum: Float = 0
                    for j in 0..<T { scores[row + j] = MLXMath.exp(scores[row + j] - m); sum += scores[row + j] }
                    let inverse = 1 / sum
                    for j in 0..<T { scores[row + j] *= inverse }
                }
                scores.withUnsafeBufferPointer { sp in
                    v.data.withUnsafeBufferPointer { vp in
                        out.withUnsafeMutableBufferPointer { op in
                            MatrixProduct.times(sp.baseAddress!, vp.baseAddress! + kBase,
                                                into: op.baseAddress! + qBase, m: L, n: hd, k: T)
                        }
                    }
                }
            }
        }
        return Tensor(shape: q.shape, data: out)
    }

    /// The keys each query sees: mlx-lm's masks are always one interval of keys per query
    /// (left padding below, causality above).
    static func intervals(_ mask: AttentionMask, batch B: Int, queries L: Int, keys T: Int) -> KeyIntervals {
        var v = KeyIntervals(batch: B, queries: L)
        for b in 0..<B {
            for i in 0..<L {
                switch mask {
                case .none: v[b, i] = (0, T)
                case .causal: v[b, i] = (0, min(T, i + (T - L) + 1))
                case .explicit(let m): v.set(b, i, explicit: m, keys: T)
                }
            }
        }
        return v
    }
}
