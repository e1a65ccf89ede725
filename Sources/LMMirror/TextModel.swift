import ParityCore
import ParityTensor

// mirrors mlx_lm/models/qwen3_5.py (DecoderLayer, Qwen3_5TextModel, TextModel), text path:
// plain RoPE from the cache offset, the sequential GatedDeltaNet, masks from the caches.
// Shapes: B batch, L tokens in this call, D hidden, V vocab.

enum Mixer {
    case linear(GatedDeltaNet)
    case full(Attention)
}

/// Pre-norm block with two residuals: `u = x + mixer(norm(x))`, `out = u + ffn(norm(u))`.
struct DecoderLayer {
    let index: Int
    let mixer: Mixer
    let feedForward: FeedForward
    let inputNorm: Tensor, postAttentionNorm: Tensor
    let eps: Float

    init(weights w: some WeightProvider, layer i: Int, kind: LayerKind, config c: TextConfig) {
        index = i
        switch kind {
        case .linearAttention: mixer = .linear(GatedDeltaNet(weights: w, layer: i, config: c))
        case .fullAttention: mixer = .full(Attention(weights: w, layer: i, config: c))
        }
        feedForward = c.isMoE ? .moe(SparseMoE(weights: w, layer: i, config: c))
                              : .dense(MLP(weights: w, prefix: WeightNames.layer(i, "mlp.")))
        inputNorm = w[WeightNames.layer(i, "input_layernorm.weight")]
        postAttentionNorm = w[WeightNames.layer(i, "post_attention_layernorm.weight")]
        eps = c.eps
    }

    func callAsFunction(_ x: Tensor, attentionMask: AttentionMask, ssmMask: [Bool]?,
                        cache: inout LayerCache?, trace: TraceSink?) -> Tensor {
        let steps = SubStepTrace(sink: trace, layer: index)
        let normed = steps.tap("input_norm", x.rmsNorm(weight: inputNorm, eps: eps))
        let mixed: Tensor
        switch mixer {
        case .linear(let gdn):
            var c: DeltaNetCache?
            if case .deltaNet(let state) = cache { c = state; cache = nil }   // c holds the only copy
            mixed = gdn(normed, mask: ssmMask, cache: &c, trace: steps)
            if let c { cache = .deltaNet(c) }
        case .full(let attention):
            var c: AttentionCache?
            if case .attention(let state) = cache { c = state }
            mixed = attention(normed, mask: attentionMask, cache: &c, trace: steps)
            if let c { cache = .attention(c) }
        }
        let h = x + mixed
        let ffnInput = steps.tap("post_norm", h.rmsNorm(weight: postAttentionNorm, eps: eps))
        return h + steps.tap("mlp_out", feedForward(ffnInput, trace: steps))
    }
}

/// The mlx-lm text model: embed → decoder layers → final norm → lm head (or tied embeddings).
public final class LMTextModel: QwenLanguageModel {
    public let config: TextConfig
    /// The embedding `[V, D]`, read a row at a time; tied, the lm head's own copy.
    private let embedTable: LinearWeight
    let layers: [DecoderLayer]
    private let finalNorm: Tensor
    let lmHead: LinearWeight

    /// Tensors are taken one at a time and packed as they arrive; the lm head (with tied
    /// embeddings, the embedding itself) comes first, so no raw copy outlives its packing.
    public init(config: TextConfig, weights: some WeightProvider) {
        self.config = config
        if config.tieWordEmbeddings {
            lmHead = weights.linear(WeightNames.embedTokens)
            embedTable = lmHead
        } else {
            lmHead = weights.linear(WeightNames.lmHead)
            embedTable = weights.linear(WeightNames.embedTokens)
        }
        layers = config.layerKinds.enumerated().map { i, kind in
            DecoderLayer(weights: weights, layer: i, kind: kind, config: config)
        }
        finalNorm = weights[WeightNames.finalNorm]
    }

    public func makeCache(leftPadding: [Int]?) -> PromptCache {
        PromptCache(config: config, leftPadding: leftPadding)
    }

    public func forward(_ input: ModelInput, positionIds: PositionIDs?, cache: PromptCache?,
                        trace: TraceSink?) throws -> Tensor {
        guard positionIds == nil else {
            throw ForwardError.unsupported("the mlx-lm text path takes no MRoPE position ids")
        }
        return try hiddenStates(input, cache: cache, trace: trace).linear(lmHead)
    }

    /// Logits `[B, 1, V]` of the last position only: every token runs through the layers and
    /// updates the cache, but the lm head (a quarter of the 0.8B model's weights) runs once per
    /// row, as a generator's prompt step needs. The same bits as the last row of `forward`.
    public func lastLogits(_ input: ModelInput, cache: PromptCache?) throws -> Tensor {
        let normed = try hiddenStates(input, cache: cache, trace: nil)
        let (B, L, D) = (normed.shape[0], normed.shape[1], normed.shape[2])
        var last = normed
        if L > 1 {
            var rows = [Float]()
            rows.reserveCapacity(B * D)
            for b in 0..<B { rows.append(contentsOf: normed.data[((b * L + L - 1) * D)..<((b * L + L) * D)]) }
            last = Tensor(shape: [B, 1, D], data: rows)
        }
        return last.linear(lmHead)
    }

    /// Embeddings through every layer and the final norm: `[B, L, D]`.
    private func hiddenStates(_ input: ModelInput, cache: PromptCache?, trace: TraceSink?) throws -> Tensor {
        var h = try embed(input)
        let (B, L) = (h.shape[0], h.shape[1])
        if let cache, cache.layers.count != layers.count {
            throw ForwardError.cacheMismatch("cache has \(cache.layers.count) layers, the model \(layers.count)")
        }
        trace?.record(.embeddings, h)
        let attentionMask = try makeAttentionMask(cache?.firstAttention, batch: B, length: L)
        let ssmMask = makeSSMMask(cache?.firstDeltaNet, batch: B, length: L)
        for layer in layers {
            // Taken out of the cache while the layer runs, so its recurrent state is the only
            // copy and is updated in place (a shared one would be copied, 1 MB a layer at 0.8B).
            var layerCache = cache?.layers[layer.index]
            if case .deltaNet? = layerCache { cache?.layers[layer.index] = .deltaNet(DeltaNetCache()) }
            h = layer(h, attentionMask: attentionMask, ssmMask: ssmMask, cache: &layerCache, trace: trace)
            if let layerCache { cache?.layers[layer.index] = layerCache }
            trace?.record(.layerOutput(layer.index), h)
        }
        let normed = h.rmsNorm(weight: finalNorm, eps: config.eps)
        trace?.record(.finalNorm, normed)
        return normed
    }

    private func embed(_ input: ModelInput) throws -> Tensor {
        let D = config.hiddenSize
        switch input {
        case .embeddings(let e):
            guard e.rank == 3, e.shape[2] == D, e.shape[1] > 0 else {
                throw ForwardError.badInputShape("input embeddings \(e.shape), expected [B, L, \(D)] with L > 0")
            }
            return e
        case .tokens(let rows):
            guard let L = rows.first?.count, L > 0, rows.allSatisfy({ $0.count == L }) else {
                throw ForwardError.badInputShape("token rows must be non-empty and of equal length")
            }
            var data = [Float]()
            data.reserveCapacity(rows.count * L * D)
            for (r, row) in rows.enumerated() {
                for (t, id) in row.enumerated() {
                    guard id >= 0, id < config.vocabSize else {
                        throw ForwardError.tokenOutOfRange(row: r, position: t, id: id, vocabSize: config.vocabSize)
                    }
                    data.append(contentsOf: embedTable.row(id))
                }
            }
            return Tensor(shape: [rows.count, L, D], data: data)
        }
    }

    /// `create_attention_mask`: causal for several tokens, nothing for one; a batch cache
    /// always gives an explicit mask that also hides each row's left padding.
    private func makeAttentionMask(_ cache: AttentionCache?, batch B: Int, length L: Int) throws -> AttentionMask {
        guard let cache, let padding = cache.leftPadding else { return L == 1 ? .none : .causal }
        guard padding.count == B else {
            throw ForwardError.cacheMismatch("left padding has \(padding.count) rows, the input \(B)")
        }
        let T = cache.length + L
        var mask = [Bool](repeating: false, count: B * L * T)
        for b in 0..<B {
            for i in 0..<L {
                for j in 0..<T { mask[(b * L + i) * T + j] = cache.length + i >= j && j >= padding[b] }
            }
        }
        return .explicit(mask)
    }

    /// `ArraysCache.make_mask`: position `t` is real iff `t ≥ left_padding` and `t < lengths`.
    private func makeSSMMask(_ cache: DeltaNetCache?, batch B: Int, length L: Int) -> [Bool]? {
        guard let cache, cache.leftPadding != nil || cache.lengths != nil else { return nil }
        var mask = [Bool](repeating: true, count: B * L)
        for b in 0..<B {
            for t in 0..<L {
                if let p = cache.leftPadding, t < p[b] { mask[b * L + t] = false }
                if let n = cache.lengths, t >= n[b] { mask[b * L + t] = false }
            }
        }
        return mask
    }
}
