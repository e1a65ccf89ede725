import ParityCore
import ParityTensor
import LMMirror
import VLMMirror

// mirrors mlx-engine's patched Qwen 3.5 text model (PatchedQwen3_5TextModel with
// PatchedDecoderLayer; numerics spec §3.6, docs: upstream-change.md): one set of weights, the
// mlx-lm maths for calls without 3-D positions and mlx-vlm's MRoPE attention and GatedDeltaNet
// for calls with them, and the prompt's positions kept on the model with an explicit lifecycle.
//
// Nothing is re-implemented here: the two routes are the two mirrors, built from one `Weights`
// (so they share every packed projection), and the vlm mirror is always given the call's own
// positions, exactly L of them, which bypasses its stored state (it stays empty).
// Shapes: B batch, L tokens in this call, Lp stored prompt positions, D hidden, V vocab.

public final class UnifiedTextModel: QwenLanguageModel {
    /// mlx-lm's resolution of the config (the text route).
    public let config: TextConfig
    /// mlx-vlm's resolution of the same config (the MRoPE route: rotary dims, mrope_section).
    public let vlmConfig: TextConfig
    public let multimodal: MultimodalConfig
    public let ropeIndex: RopeIndex
    let text: LMTextModel
    let vision: VLMTextModel
    /// Read a row at a time; the same copy the two routes hold.
    private let embedTable: LinearWeight

    /// The prompt's MRoPE positions and rope deltas; empty for a text-only prediction.
    public private(set) var state = MultimodalPositionState()
    /// The last forward call: its route, cache offset and the positions it ran with.
    public private(set) var lastCall: UnifiedCall?
    /// Deliberate mistakes for the fault tests (see `UnifiedFault`); empty in real use.
    var faults: Set<UnifiedFault> = []

    public init(config: TextConfig, vlmConfig: TextConfig, multimodal: MultimodalConfig, weights: Weights) throws {
        var differences: [String] = []
        let lmNames = WeightNames.expected(for: config), vlmNames = WeightNames.expected(for: vlmConfig)
        if !lmNames.elementsEqual(vlmNames, by: { $0.name == $1.name && $0.shape == $1.shape }) {
            differences.append("they expect different weights")
        }
        if config.layerKinds != vlmConfig.layerKinds { differences.append("layer kinds \(config.layerKinds) vs \(vlmConfig.layerKinds)") }
        if config.eps != vlmConfig.eps { differences.append("rms eps \(config.eps) vs \(vlmConfig.eps)") }
        if config.tieWordEmbeddings != vlmConfig.tieWordEmbeddings { differences.append("tie_word_embeddings") }
        guard differences.isEmpty else { throw UnifiedModelError.incompatibleConfigs(differences) }
        self.config = config
        self.vlmConfig = vlmConfig
        self.multimodal = multimodal
        ropeIndex = RopeIndex(multimodal)
        text = LMTextModel(config: config, weights: weights)
        vision = VLMTextModel(config: vlmConfig, multimodal: multimodal, weights: weights)
        embedTable = weights.linear(WeightNames.embedTokens)
    }

    // MARK: - Prediction state (mlx-engine's VisionAddOn.clear_prediction_state and friends)

    /// Forgets the stored positions and deltas. Called at the start of every prediction, so that
    /// nothing of an image prompt reaches the next (text) prompt.
    public func clearPredictionState() {
        if faults.contains(.skipClearPredictionState) { return }
        state = MultimodalPositionState()
    }

    /// Stores the MRoPE positions `[3, B, Lp]` and rope deltas of a prompt with images, computed
    /// by get_rope_index from its token ids (vision_start, image tokens) and image grids `(t, h, w)`.
    public func setMultimodalPrompt(tokens: [[Int]], imageGrid: [[Int]]) throws {
        guard !imageGrid.isEmpty else {
            throw UnifiedModelError.invalidState("a multimodal prompt needs at least one image grid; a text prompt stores nothing")
        }
        let (positions, deltas) = try ropeIndex(tokens, imageGrid: imageGrid)
        state = MultimodalPositionState(positionIds: PositionIDs(positions), ropeDeltas: deltas)
    }

    /// Stores precomputed positions and deltas, as mlx-engine does with the ones its vision add-on
    /// computed. Nothing is checked here: an inconsistent pair is an error at the next call.
    public func setPositionState(positionIds: PositionIDs?, ropeDeltas: [Int]?) {
        state = MultimodalPositionState(positionIds: positionIds, ropeDeltas: ropeDeltas)
    }

    // MARK: - Forward

    public func makeCache(leftPadding: [Int]?) -> PromptCache {
        PromptCache(config: config, leftPadding: leftPadding)
    }

    /// The token embeddings of `rows` (`[B, L, D]`), as either route embeds them.
    public func embeddings(of rows: [[Int]]) throws -> Tensor {
        let D = config.hiddenSize
        guard let L = rows.first?.count, L > 0, rows.allSatisfy({ $0.count == L }) else {
            throw ForwardError.badInputShape("token rows must be non-empty and of equal length")
        }
        var data: [Float] = []
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

    /// One call. `positionIds` (explicit `[3, B, L]`, or the whole prompt's, sliced at the cache
    /// offset) take precedence; otherwise the stored state decides; with neither the call is
    /// exactly the mlx-lm text model's.
    public func forward(_ input: ModelInput, positionIds: PositionIDs?, cache: PromptCache?,
                        trace: TraceSink?) throws -> Tensor {
        let (B, L) = (input.batchSize, input.length)
        guard B > 0, L > 0 else { throw ForwardError.badInputShape("an empty call (\(B) rows of \(L) tokens)") }
        if let cache, cache.layers.count != config.numHiddenLayers {
            throw ForwardError.cacheMismatch("cache has \(cache.layers.count) layers, the model \(config.numHiddenLayers)")
        }
        let offset = cache?.firstAttention?.length ?? 0
        let positions = try resolvePositions(positionIds, batch: B, length: L, offset: offset)
        if positions != nil, let cache {
            guard let attention = cache.firstAttention else {
                throw ForwardError.unsupported("MRoPE positions need an attention layer's cache offset")
            }
            if attention.leftPadding != nil {
                throw ForwardError.unsupported("MRoPE positions with a left-padded batch cache (text prompts only, as upstream)")
            }
        }
        let before = faults.contains(.cacheDoesNotAdvance) ? cache?.layers : nil
        defer { if let before { cache?.layers = before } }

        let logits: Tensor
        if let positions {
            var call: VLMCall
            switch input {
            case .tokens(let rows): call = VLMCall(inputs: rows)
            case .embeddings(let e):
                guard e.rank == 3, e.shape[2] == config.hiddenSize else {
                    throw ForwardError.badInputShape("input embeddings \(e.shape), expected [B, L, \(config.hiddenSize)]")
                }
                // The ids only matter to get_rope_index, which explicit positions skip.
                call = VLMCall(inputs: [[Int]](repeating: [Int](repeating: 0, count: L), count: B), inputEmbeddings: e)
            }
            call.positionIds = positions.vlm      // exactly L: the vlm mirror's own state is bypassed
            logits = try vision(call, cache: cache, trace: trace).logits
        } else {
            logits = try text.forward(input, positionIds: nil, cache: cache, trace: trace)
        }
        lastCall = UnifiedCall(route: positions == nil ? .text : .mrope, cacheOffset: offset, length: L, positions: positions)
        return logits
    }

    private func resolvePositions(_ explicit: PositionIDs?, batch B: Int, length L: Int, offset: Int) throws -> PositionIDs? {
        guard let explicit else { return try state.positions(batch: B, length: L, offset: offset, faults: faults) }
        guard explicit.batch == B else { throw UnifiedModelError.batchMismatch(state: explicit.batch, call: B) }
        if explicit.length == L { return explicit }
        guard explicit.length >= offset + L else {
            throw ForwardError.badInputShape("\(explicit.length) position ids for a call of \(L) tokens at offset \(offset)")
        }
        return explicit.sliced(from: offset, count: L)
    }
}
