import Foundation
import ParityCore
import ParityTensor

// mirrors mlx_vlm/models/qwen3_5/language.py Qwen3_5Attention (gated full attention with MRoPE)
// and the CPU side of its left-padded decode (per-pad-group attention over each row's real keys).
// Shapes: B batch, L tokens in this call, T keys after the cache update, D hidden, H/Hkv heads,
// hd head dim, r rotary dims.

/// Which keys a query sees, as Qwen3_5Model builds it for the full-attention layers.
enum AttentionMask {
    /// Every key (one token on a plain cache, or no cache).
    case none
    /// `"causal"`: query i sees key j iff j ≤ i + (T − L).
    case causal
    /// A boolean `[B, L, T]` array (a batch cache without padding to split away).
    case explicit([Bool])
    /// `"left_padded_decode"`: row b attends to its keys from column `pads[b]` on, unmasked.
    case leftPaddedDecode([Int])
}

struct Attention {
    let qProj: LinearWeight, kProj: LinearWeight, vProj: LinearWeight, oProj: LinearWeight
    let qBias: Tensor?, kBias: Tensor?, vBias: Tensor?, oBias: Tensor?
    let qNorm: Tensor, kNorm: Tensor
    let heads: Int, kvHeads: Int, headDim: Int, eps: Float
    let rotary: MRoPE

    init(weights w: Weights, layer i: Int, config c: TextConfig) {
        let name = { WeightNames.layer(i, "self_attn." + $0) }
        qProj = w.linear(name("q_proj.weight")); kProj = w.linear(name("k_proj.weight"))
        vProj = w.linear(name("v_proj.weight")); oProj = w.linear(name("o_proj.weight"))
        qBias = c.attentionBias ? w[name("q_proj.bias")] : nil
        kBias = c.attentionBias ? w[name("k_proj.bias")] : nil
        vBias = c.attentionBias ? w[name("v_proj.bias")] : nil
        oBias = c.attentionBias ? w[name("o_proj.bias")] : nil
        qNorm = w[name("q_norm.weight")]; kNorm = w[name("k_norm.weight")]
        heads = c.numAttentionHeads; kvHeads = c.numKeyValueHeads; headDim = c.headDim; eps = c.eps
        rotary = MRoPE(dims: c.rotaryDims, base: c.ropeTheta, mropeSection: c.mropeSection)
    }

    /// `x` `[B, L, D]` (input-normed) → `[B, L, D]`. `angles` are the model's shared cos/sin; without
    /// them the layer builds positions from the cache offset (Qwen3_5Model called directly).
    func callAsFunction(_ x: Tensor, mask: AttentionMask, cache: inout AttentionCache?,
                        rope given: (positions: VLMPositions, angles: RotaryAngles)?, trace: SubStepTrace) -> Tensor {
        let (B, L, hd) = (x.shape[0], x.shape[1], headDim)
        // Traced with the shapes the golden probes use (ParityCore SubSteps).
        // Each sub-step goes through a tap: recorded, and what the layer continues with.
        let queryProjection = trace.tap("q_proj", x.linear(qProj, bias: qBias))
        let packed = queryProjection.reshaped([B, L, heads, 2 * hd])   // per head [query ‖ gate]
        let gate = trace.tap("gate", packed.slice(axis: 3, start: hd, length: hd).reshaped([B, L, heads * hd]))
        let keyProjection = trace.tap("k_proj", x.linear(kProj, bias: kBias))
        let qNormed = trace.tap("q_normed", packed.slice(axis: 3, start: 0, length: hd).rmsNorm(weight: qNorm, eps: eps))
        let kNormed = trace.tap("k_normed", keyProjection.reshaped([B, L, kvHeads, hd]).rmsNorm(weight: kNorm, eps: eps))
        var q = qNormed.permuted([0, 2, 1, 3])
        var k = kNormed.permuted([0, 2, 1, 3])
        let v = trace.tap("v", x.linear(vProj, bias: vBias).reshaped([B, L, kvHeads, hd]).permuted([0, 2, 1, 3]))

        let offsets = BookkeepingSteps.cacheOffsets(cache?.offsets(batch: B) ?? [Int](repeating: 0, count: B), trace: trace)
        var positions = given?.positions.threeAxes ?? positionsFromOffset(offsets, padded: cache?.leftPadding != nil, length: L)
        var angles = given?.angles
        if trace.isActive {   // the positions as the layer uses them; a rewritten one gets its own angles
            let recorded = BookkeepingSteps.ropePositions(batch: B, length: L) { positions.at(axis: $0, row: $1, t: $2) }
            let tapped = trace.tap("rope_positions", recorded)
            if tapped.data != recorded.data {
                positions = VLMPositions(axes: 3, batch: B, length: L, values: (0..<3).flatMap { axis in
                    (0..<(B * L)).map { Int(tapped.data[$0 * 3 + axis].rounded(.down)) } })
                angles = nil
            }
        }
        let rope = angles ?? rotary.angles(positions)
        MRoPE.apply(&q, rope)
        MRoPE.apply(&k, rope)
        q = trace.tap("q_rope", q)
        k = trace.tap("k_rope", k)

        var keys = k, values = v
        if var c = cache {
            keys = c.keys.map { Tensor.concatenate([$0, k], axis: 2) } ?? k
            values = c.values.map { Tensor.concatenate([$0, v], axis: 2) } ?? v
            c.keys = keys; c.values = values; c.length += L
            cache = c
        }
        let visible = Self.intervals(mask, batch: B, queries: L, keys: keys.shape[2]).tapped(trace)
        let attended = trace.tap("sdpa", attend(q, keys, values, mask: mask, visible: visible))     // [B, H, L, hd]
        var out = attended.permuted([0, 2, 1, 3]).reshaped([B, L, heads * hd])
        for i in out.data.indices { out.data[i] *= Activation.sigmoid(gate.data[i]) }
        return trace.tap("o_proj", trace.tap("gated", out).linear(oProj, bias: oBias))
    }

    /// `position_ids is None`: `offset + arange(L)` on all three axes, per row (clamped at 0)
    /// when the cache offset is a vector.
    /// Text positions from the cache offsets; a left-padded batch cache clamps them at 0.
    private func positionsFromOffset(_ offsets: [Int], padded: Bool, length L: Int) -> VLMPositions {
        VLMPositions(rows: offsets.map { o in (0..<L).map { (padded ? max(o, 0) : o) + $0 } }).threeAxes
    }

    /// `mx.fast.scaled_dot_product_attention` on CPU: q·scale, S = qKᵀ, the mask, a float32
    /// softmax, P·V; query head h reads KV head h / (H/Hkv). A left-padded decode attends
    /// over each row's keys from its padding on, as the per-pad-group fallback slices them.
    private func attend(_ q: Tensor, _ k: Tensor, _ v: Tensor, mask: AttentionMask, visible: KeyIntervals) -> Tensor {
        let (B, L, hd, T) = (q.shape[0], q.shape[2], headDim, k.shape[2])
        let perKV = heads / kvHeads
        let scale = Float(1 / Double(hd).squareRoot())
        var out = [Float](repeating: 0, count: q.count)
        for b in 0..<B {
            let first: Int
            // A left-padded decode attends over the keys from the row's padding on (a slice, as mlx-vlm).
            if case .leftPaddedDecode = mask { first = min(max(visible[b, 0].0, 0), T) } else { first = 0 }
            let span = T - first
            var scores = [Float](repeating: 0, count: L * span)
            var scaled = [Float](repeating: 0, count: L * hd)
            for h in 0..<heads {
                let qBase = (b * heads + h) * L * hd
                let kBase = ((b * kvHeads + h / perKV) * T + first) * hd
                for i in 0..<(L * hd) { scaled[i] = q.data[qBase + i] * scale }
                scaled.withUnsafeBufferPointer { sq in
                    k.data.withUnsafeBufferPointer { kp in
                        scores.withUnsafeMutableBufferPointer { sp in
                            MatrixProduct.timesTransposed(sq.baseAddress!, kp.baseAddress! + kBase,
                                                          into: sp.baseAddress!, m: L, n: span, k: hd)
                        }
                    }
                }
                for i in 0..<L {
                    let row = i * span
                    let (lo, hi) = visible[b, i]
                    for j in 0..<span where first + j < lo || first + j >= hi {
                        scores[row + j] = -Float.greatestFiniteMagnitude
                    }
                    var peak = -Float.infinity
                    for j in 0..<span { peak = max(peak, scores[row + j]) }
                    var total: Float = 0
                    for j in 0..<span {
                        let e = MLXMath.exp(scores[row + j] - peak)
                        scores[row + j] = e
                        total += e
                    }
                    let inverse = 1 / total   // mlx's precise softmax multiplies by 1/Σ
                    for j in 0..<span { scores[row + j] *= inverse }
                }
                scores.withUnsafeBufferPointer { sp in
                    v.data.withUnsafeBufferPointer { vp in
                        out.withUnsafeMutableBufferPointer { op in
                            MatrixProduct.times(sp.baseAddress!, vp.baseAddress! + kBase,
                                                into: op.baseAddress! + qBase, m: L, n: hd, k: span)
                        }
                    }
                }
            }
        }
        return Tensor(shape: q.shape, data: out)
    }

    /// The keys each query sees, one interval per query as mlx-vlm builds its masks.
    static func intervals(_ mask: AttentionMask, batch B: Int, queries L: Int, keys T: Int) -> KeyIntervals {
        var v = KeyIntervals(batch: B, queries: L)
        for b in 0..<B {
            for i in 0..<L {
                switch mask {
                case .none: v[b, i] = (0, T)
                case .leftPaddedDecode(let pads): v[b, i] = (pads[b], T)
                case .causal: v[b, i] = (0, min(T, i + (T - L) + 1))
                case .explicit(let m): v.set(b, i, explicit: m, keys: T)
                }
            }
        }
        return v
    }
}
