import ParityCore
import ParityTensor

// mirrors mlx_vlm/models/qwen3_5/language.py (Qwen3_5DecoderLayer, Qwen3_5Model, LanguageModel)
// and qwen3_5_moe/language.py, as they run on CPU: MRoPE cos/sin computed once per forward,
// left-padded multi-token calls split into rows run on their unpadded suffixes, and the
// LanguageModel's stored position ids and rope deltas deciding each call's positions.
// Shapes: B batch, L tokens in this call, D hidden, V vocab; positions [B, L] or [3, B, L].

enum Mixer {
    case linear(GatedDeltaNet)
    case full(Attention)
}

/// Pre-norm block: `h = x + mixer(norm(x))`, `out = h + ffn(norm(h))`.
struct DecoderLayer {
    let index: Int
    let mixer: Mixer
    let feedForward: FeedForward
    let inputNorm: Tensor, postAttentionNorm: Tensor
    let eps: Float

    init(weights w: Weights, layer i: Int, kind: LayerKind, config c: TextConfig) {
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
                        rope: (positions: VLMPositions, angles: RotaryAngles)?,
                        cache: inout LayerCache?, trace: TraceSink?) -> Tensor {
        let steps = SubStepTrace(sink: trace, layer: index)
        let normed = x.rmsNorm(weight: inputNorm, eps: eps)
        steps("input_norm", normed)
        let mixed: Tensor
        switch mixer {
        case .linear(let gdn):
            var c: DeltaNetCache?
            if case .deltaNet(let s) = cache { c = s }
            mixed = gdn(normed, mask: ssmMask, cache: &c, trace: steps)
            if let c { cache = .deltaNet(c) }
        case .full(let attention):
            var c: AttentionCache?
            if case .attention(let s) = cache { c = s }
            mixed = attention(normed, mask: attentionMask, cache: &c, rope: rope, trace: steps)
            if let c { cache = .attention(c) }
        }
        let h = x + mixed
        let ffnInput = steps.tap("post_norm", h.rmsNorm(weight: postAttentionNorm, eps: eps))
        let ffn = steps.tap("mlp_out", feedForward(ffnInput, trace: steps))
        return h + ffn
    }
}

/// `Qwen3_5Model`: embed (unless embeddings are given) → layers → final norm.
struct InnerModel {
    let config: TextConfig
    /// The embedding `[V, D]`, read a row at a time; tied, the lm head's own copy.
    let embedTable: LinearWeight
    let layers: [DecoderLayer]
    let finalNorm: Tensor
    let faIndex: Int, ssmIndex: Int
    let rotary: MRoPE

    /// `tiedHead`: the packed lm head when embeddings are tied; its rows are the embedding's bits.
    init(config c: TextConfig, weights w: Weights, tiedHead: LinearWeight?) {
        config = c
        embedTable = tiedHead ?? w.linear(WeightNames.embedTokens)
        layers = c.layerKinds.enumerated().map { DecoderLayer(weights: w, layer: $0, kind: $1, config: c) }
        finalNorm = w[WeightNames.finalNorm]
        faIndex = c.fullAttentionInterval - 1
        ssmIndex = 0
        rotary = MRoPE(dims: c.rotaryDims, base: c.ropeTheta, mropeSection: c.mropeSection)
    }

    func embed(_ ids: [[Int]]) throws -> Tensor {
        let D = config.hiddenSize
        var data: [Float] = []
        data.reserveCapacity(ids.count * (ids.first?.count ?? 0) * D)
        for (r, row) in ids.enumerated() {
            for (t, id) in row.enumerated() {
                guard id >= 0, id < config.vocabSize else {
                    throw ForwardError.tokenOutOfRange(row: r, position: t, id: id, vocabSize: config.vocabSize)
                }
                data.append(contentsOf: embedTable.row(id))
            }
        }
        return Tensor(shape: [ids.count, ids.first?.count ?? 0, D], data: data)
    }

    /// The final-normed hidden states `[B, L, D]` of one call. `cache` entries may be replaced
    /// (a row-split call merges per-row caches back into batch caches).
    func callAsFunction(_ h: Tensor, cache: PromptCache?, positions: VLMPositions?, trace: TraceSink?) throws -> Tensor {
        let (B, L) = (h.shape[0], h.shape[1])
        trace?.record(.embeddings, h)
        if let cache, case .attention(let fa) = cache.layers[faIndex], let pads = fa.leftPadding {
            if B == 1 && pads.count == 1 {
                // Qwen3_5Model's single-row batch-cache shortcut (extract, run, merge) is not mirrored.
                throw ForwardError.unsupported("a one-row left-padded batch cache (mlx-vlm re-merges it into a BatchKVCache)")
            }
            if L > 1 {
                let queryPadding = fa.offsets(batch: B).map { min(max(-$0, 0), L) }
                if (pads.max() ?? 0) > 0 || (queryPadding.max() ?? 0) > 0 {
                    return try rowSplit(h, cache: cache, positions: positions, queryPadding: queryPadding, trace: trace)
                }
            }
        }
        return try run(h, cache: cache, positions: positions, trace: trace, recordEmbeddings: false)
    }

    private func run(_ input: Tensor, cache: PromptCache?, positions: VLMPositions?, trace: TraceSink?,
                     recordEmbeddings: Bool) throws -> Tensor {
        var h = input
        let (B, L) = (h.shape[0], h.shape[1])
        if recordEmbeddings { trace?.record(.embeddings, h) }
        var faCache: AttentionCache?, ssmCache: DeltaNetCache?
        if let cache {
            if case .attention(let c) = cache.layers[faIndex] { faCache = c }
            if case .deltaNet(let c) = cache.layers[ssmIndex] { ssmCache = c }
        }
        let attentionMask = try attentionMask(faCache, batch: B, length: L, cached: cache != nil)
        let ssmMask = ssmMask(ssmCache, batch: B, length: L)
        // On CPU the first attention layer's rotary module computes cos/sin once for all layers.
        let rope = positions.map { (positions: $0, angles: rotary.angles($0)) }
        if let positions, positions.batch != B || positions.length != L {
            throw ForwardError.badInputShape("position ids \(positions.axes == 1 ? [positions.batch, positions.length] : [3, positions.batch, positions.length]) for a [\(B), \(L)] call")
        }
        for layer in layers {
            var c = cache?.layers[layer.index]
            h = layer(h, attentionMask: attentionMask, ssmMask: ssmMask, rope: rope, cache: &c, trace: trace)
            if let c { cache?.layers[layer.index] = c }
            trace?.record(.layerOutput(layer.index), h)
        }
        let normed = h.rmsNorm(weight: finalNorm, eps: config.eps)
        trace?.record(.finalNorm, normed)
        return normed
    }

    /// `_create_qwen3_5_attention_mask`: no cache → causal for several tokens; a one-token call
    /// on a batch cache with left padding → "left_padded_decode"; otherwise the cache's mask
    /// (KVCache: causal or none; BatchKVCache: `(_idx + i ≥ j) ∧ (j ≥ left_padding)`).
    private func attentionMask(_ c: AttentionCache?, batch B: Int, length L: Int, cached: Bool) throws -> AttentionMask {
        guard let c, let pads = c.leftPadding else { return L == 1 ? .none : .causal }
        guard pads.count == B else { throw ForwardError.cacheMismatch("left padding has \(pads.count) rows, the input \(B)") }
        if L == 1 { return (pads.max() ?? 0) > 0 ? .leftPaddedDecode(pads) : .none }
        let T = c.length + L
        var mask = [Bool](repeating: false, count: B * L * T)
        for b in 0..<B { for i in 0..<L { for j in 0..<T { mask[(b * L + i) * T + j] = c.length + i >= j && j >= pads[b] } } }
        return .explicit(mask)
    }

    /// `_create_qwen3_5_ssm_mask`: with left padding whose maximum is ≤ 0 there is no mask; with
    /// lengths all ≥ L neither; otherwise ArraysCache.make_mask, where left padding takes
    /// precedence over lengths.
    private func ssmMask(_ c: DeltaNetCache?, batch B: Int, length L: Int) -> [Bool]? {
        guard let c else { return nil }
        if let pads = c.leftPadding, (pads.max() ?? 0) <= 0 { return nil }
        if let lengths = c.lengths, (lengths.min() ?? 0) >= L { return nil }
        if let pads = c.leftPadding {
            return (0..<B).flatMap { b in (0..<L).map { $0 >= pads[b] } }
        }
        if let lengths = c.lengths {
            return (0..<B).flatMap { b in (0..<L).map { $0 < lengths[b] } }
        }
        return nil
    }

    /// The row split of Qwen3_5Model: each row runs alone on its unpadded suffix with caches
    /// extracted from the batch caches, padded outputs are zero, and the row caches are merged
    /// back (BatchKVCache.merge left-pads them to the longest; ArraysCache.merge stacks them and
    /// drops the padding bookkeeping); the attention caches' offsets become old offset + L.
    private func rowSplit(_ h: Tensor, cache: PromptCache, positions: VLMPositions?, queryPadding: [Int],
                          trace: TraceSink?) throws -> Tensor {
        let (B, L, D) = (h.shape[0], h.shape[1], h.shape[2])
        let oldOffsets: [[Int]?] = cache.layers.map { layer in
            if case .attention(let c) = layer, c.leftPadding != nil { return c.offsets(batch: B) }
            return nil
        }
        var rowCaches: [[LayerCache]] = []
        var outputs: [Tensor] = []
        var recorders: [TraceRecorder] = []
        for b in 0..<B {
            let pad = queryPadding[b]
            let rowCache = PromptCache(layers: cache.layers.map { Self.extractRow($0, b) })
            let recorder = TraceRecorder()
            recorders.append(recorder)
            if pad == L {
                outputs.append(Tensor(zeros: [1, L, D]))
            } else {
                let rowInput = h.slice(axis: 0, start: b, length: 1).slice(axis: 1, start: pad, length: L - pad)
                let out = try run(rowInput, cache: rowCache, positions: positions?.row(b, from: pad),
                                  trace: recorder, recordEmbeddings: false)
                outputs.append(Tensor.concatenate([Tensor(zeros: [1, pad, D]), out], axis: 1))
            }
            rowCaches.append(rowCache.layers)
        }
        if let trace {
            // Per-layer outputs assembled like the output: zeros at padded positions.
            func assembled(_ key: TraceKey) -> Tensor {
                Tensor.concatenate((0..<B).map { b in
                    let pad = queryPadding[b]
                    guard let t = recorders[b].joined(key) else { return Tensor(zeros: [1, L, D]) }
                    return Tensor.concatenate([Tensor(zeros: [1, pad, D]), t], axis: 1)
                }, axis: 0)
            }
            for i in layers.indices { trace.record(.layerOutput(i), assembled(.layerOutput(i))) }
            trace.record(.finalNorm, assembled(.finalNorm))
        }
        for i in cache.layers.indices {
            cache.layers[i] = Self.merge(rowCaches.map { $0[i] }, oldOffsets: oldOffsets[i], steps: L)
        }
        return Tensor.concatenate(outputs, axis: 0)
    }

    /// `_extract_row_cache`: ArraysCache rows keep their states (and lengths), not the padding;
    /// a non-empty BatchKVCache gives a KVCache of the row's real keys; an empty one a fresh KVCache.
    static func extractRow(_ layer: LayerCache, _ b: Int) -> LayerCache {
        switch layer {
        case .deltaNet(let c):
            var row = DeltaNetCache()
            row.convState = c.convState?.slice(axis: 0, start: b, length: 1)
            row.recurrentState = c.recurrentState?.slice(axis: 0, start: b, length: 1)
            row.lengths = c.lengths.map { [$0[b]] }
            return .deltaNet(row)
        case .attention(let c):
            var row = AttentionCache()
            if let keys = c.keys, let values = c.values {
                let pad = c.leftPadding?[b] ?? 0
                row.keys = keys.slice(axis: 0, start: b, length: 1).slice(axis: 2, start: pad, length: c.length - pad)
                row.values = values.slice(axis: 0, start: b, length: 1).slice(axis: 2, start: pad, length: c.length - pad)
                row.length = c.length - pad
            }
            return .attention(row)
        }
    }

    static func merge(_ rows: [LayerCache], oldOffsets: [Int]?, steps L: Int) -> LayerCache {
        switch rows[0] {
        case .deltaNet:
            let caches = rows.map { row -> DeltaNetCache in
                if case .deltaNet(let c) = row { return c }
                preconditionFailure("[merge] mixed cache kinds")
            }
            var merged = DeltaNetCache()
            if caches.allSatisfy({ $0.convState == nil && $0.recurrentState == nil }) {
                merged.leftPadding = [Int](repeating: 0, count: rows.count)
                return .deltaNet(merged)
            }
            func stack(_ pick: (DeltaNetCache) -> Tensor?) -> Tensor? {
                guard let shape = caches.lazy.compactMap(pick).first?.shape else { return nil }
                return Tensor.concatenate(caches.map { pick($0) ?? Tensor(zeros: shape) }, axis: 0)
            }
            merged.convState = stack { $0.convState }
            merged.recurrentState = stack { $0.recurrentState }
            return .deltaNet(merged)
        case .attention:
            let caches = rows.map { row -> AttentionCache in
                if case .attention(let c) = row { return c }
                preconditionFailure("[merge] mixed cache kinds")
            }
            let longest = caches.map(\.length).max() ?? 0
            var merged = AttentionCache(leftPadding: caches.map { longest - $0.length })
            if longest > 0, let sample = caches.first(where: { $0.keys != nil })?.keys {
                let (Hkv, hd) = (sample.shape[1], sample.shape[3])
                func stack(_ pick: (AttentionCache) -> Tensor?) -> Tensor {
                    Tensor.concatenate(caches.map { c in
                        let pad = Tensor(zeros: [1, Hkv, longest - c.length, hd])
                        guard let t = pick(c) else { return pad }
                        return Tensor.concatenate([pad, t], axis: 2)
                    }, axis: 0)
                }
                merged.keys = stack { $0.keys }
                merged.values = stack { $0.values }
                merged.length = longest
            }
            // _restore_batch_padding_metadata: offset = old offset + L, left_padding = _idx − offset.
            if let oldOffsets { merged.leftPadding = oldOffsets.map { merged.length - ($0 + L) } }
            return .attention(merged)
        }
    }
}

/// The keyword arguments of one `LanguageModel.__call__` that matter to the text path.
public struct VLMCall: Sendable {
    /// `inputs` `[B, L]`: embedded unless `inputEmbeddings` are given; get_rope_index reads them.
    public var inputs: [[Int]]
    public var inputEmbeddings: Tensor?
    /// `position_ids`: sliced at the cache offset when longer than L (generate passes the whole prompt's).
    public var positionIds: VLMPositions?
    /// `rope_deltas` `[R, 1]` (one value per row, R = 1 or B); stored on the model when given.
    public var ropeDeltas: [Int]?
    public var imageGrid: [[Int]]?
    public var videoGrid: [[Int]]?
    /// `attention_mask` `[B, L]` of 0/1; used for positions only.
    public var attentionMask: [[Int]]?
    /// `pixel_values` was passed: the stored positions and deltas are cleared first.
    public var pixelValues: Bool

    public init(inputs: [[Int]], inputEmbeddings: Tensor? = nil, positionIds: VLMPositions? = nil,
                ropeDeltas: [Int]? = nil, imageGrid: [[Int]]? = nil, videoGrid: [[Int]]? = nil,
                attentionMask: [[Int]]? = nil, pixelValues: Bool = false) {
        self.inputs = inputs
        self.inputEmbeddings = inputEmbeddings
        self.positionIds = positionIds
        self.ropeDeltas = ropeDeltas
        self.imageGrid = imageGrid
        self.videoGrid = videoGrid
        self.attentionMask = attentionMask
        self.pixelValues = pixelValues
    }
}

/// What a call produced: logits `[B, L, V]` and the position ids the model resolved for it.
public struct VLMCallResult {
    public var logits: Tensor
    public var positionIds: VLMPositions?
}

/// The state `LanguageModel` keeps between calls.
public struct VLMPositionState: Equatable, Sendable {
    /// `_position_ids`: the last positions computed by get_rope_index (not ones passed in).
    public var positionIds: VLMPositions?
    /// `_rope_deltas` `[R, 1]`.
    public var ropeDeltas: [Int]?

    public init(positionIds: VLMPositions? = nil, ropeDeltas: [Int]? = nil) {
        self.positionIds = positionIds
        self.ropeDeltas = ropeDeltas
    }
}

/// mlx-vlm's `LanguageModel`: the inner model, the lm head (or tied embeddings), and the stored
/// position state that decides every call's positions (numerics spec §3.2, hazards included).
public final class VLMTextModel: QwenLanguageModel {
    public let config: TextConfig
    public let multimodal: MultimodalConfig
    public private(set) var state = VLMPositionState()
    let model: InnerModel
    let lmHead: LinearWeight
    public let ropeIndex: RopeIndex

    public init(config: TextConfig, multimodal: MultimodalConfig = .libraryDefault, weights: Weights) {
        self.config = config
        self.multimodal = multimodal
        // The lm head first: with tied embeddings it is the only copy of the embedding, so a
        // loader reading on demand never holds the raw table beside its packing.
        lmHead = weights.linear(config.tieWordEmbeddings ? WeightNames.embedTokens : WeightNames.lmHead)
        model = InnerModel(config: config, weights: weights, tiedHead: config.tieWordEmbeddings ? lmHead : nil)
        ropeIndex = RopeIndex(multimodal)
    }

    /// The rotary inverse frequencies, `1 / base^(2i/r)` in float32.
    public var inverseFrequencies: [Float] { model.rotary.inverseFrequencies }
    /// The MRoPE axis feeding each frequency (0 T, 1 H, 2 W).
    public var positionSelector: [Int] { model.rotary.axisOfFrequency }

    /// Forgets the stored positions and deltas, as a fresh LanguageModel (or mlx-engine's
    /// clear_prediction_state) would.
    public func resetPositionState() { state = VLMPositionState() }

    public func makeCache(leftPadding: [Int]?) -> PromptCache {
        PromptCache(config: config, leftPadding: leftPadding)
    }

    /// The protocol's call: token ids or embeddings, optional `[3, B, L]` position ids.
    public func forward(_ input: ModelInput, positionIds: PositionIDs?, cache: PromptCache?,
                        trace: TraceSink?) throws -> Tensor {
        var call: VLMCall
        switch input {
        case .tokens(let rows): call = VLMCall(inputs: rows)
        case .embeddings(let e):
            guard e.rank == 3 else { throw ForwardError.badInputShape("input embeddings \(e.shape), expected [B, L, D]") }
            call = VLMCall(inputs: [[Int]](repeating: [Int](repeating: 0, count: e.shape[1]), count: e.shape[0]),
                           inputEmbeddings: e)
        }
        if let p = positionIds {
            call.positionIds = VLMPositions(axes: 3, batch: p.batch, length: p.length, values: p.values)
        }
        return try self(call, cache: cache, trace: trace).logits
    }

    public func callAsFunction(_ call: VLMCall, cache: PromptCache?, trace: TraceSink? = nil) throws -> VLMCallResult {
        let B = call.inputs.count
        guard let L = call.inputs.first?.count, L > 0, call.inputs.allSatisfy({ $0.count == L }) else {
            throw ForwardError.badInputShape("token rows must be non-empty and of equal length")
        }
        if let e = call.inputEmbeddings, e.shape != [B, L, config.hiddenSize] {
            throw ForwardError.badInputShape("input embeddings \(e.shape), expected [\(B), \(L), \(config.hiddenSize)]")
        }
        if let cache, cache.layers.count != model.layers.count {
            throw ForwardError.cacheMismatch("cache has \(cache.layers.count) layers, the model \(model.layers.count)")
        }
        let positions = try resolvePositions(call, cache: cache)
        let h = try call.inputEmbeddings ?? model.embed(call.inputs)
        let normed = try model(h, cache: cache, positions: positions, trace: trace)
        return VLMCallResult(logits: normed.linear(lmHead), positionIds: positions)
    }

    /// `LanguageModel.__call__` up to the inner model: which positions this call runs with, and
    /// what it leaves stored (numerics spec §3.2).
    func resolvePositions(_ call: VLMCall, cache: PromptCache?) throws -> VLMPositions? {
        let (B, L) = (call.inputs.count, call.inputs[0].count)
        // 1. The attention mask stands in for `mask` when it covers this call.
        var mask: [[Int]]? = call.attentionMask.flatMap { m in m.first?.count == L ? m : nil }
        if call.pixelValues { state = VLMPositionState() }
        if let deltas = call.ropeDeltas { state.ropeDeltas = deltas }

        // 2. cache_position_offset of the first attention layer: offset (KVCache) or _idx
        //    (BatchKVCache); with several rows, the per-row offsets clamped at 0 as well.
        var cacheOffset = 0
        var rowOffsets: [Int]?
        var faCache: AttentionCache?
        if let cache, case .attention(let c) = cache.layers[model.faIndex] {
            faCache = c
            cacheOffset = c.length
            if let pads = c.leftPadding, pads.count > 1 { rowOffsets = c.offsets(batch: pads.count).map { max($0, 0) } }
        }

        // 3. Explicit positions longer than the call are sliced at the cache offset.
        var positions = call.positionIds
        if let p = positions, rowOffsets == nil, p.length > L {
            positions = p.sliced(from: cacheOffset, count: L)
        }
        // 4. A batch cache at offset 0 with left padding and no mask makes its own mask.
        if mask == nil, let c = faCache, rowOffsets == nil, cacheOffset == 0, let pads = c.leftPadding, pads.count >= B {
            mask = (0..<B).map { b in (0..<L).map { $0 >= pads[b] ? 1 : 0 } }
        }
        guard positions == nil else { return positions }

        // 5. No explicit positions.
        let fresh = (cache != nil && faCache != nil && rowOffsets == nil && cacheOffset == 0)
            || state.ropeDeltas == nil || cache == nil
        if fresh {
            // (a) Reuse the stored positions when they cover this call, else compute and store.
            if let stored = state.positionIds {
                if stored.batch == B && stored.length >= cacheOffset + L {
                    return stored.sliced(from: cacheOffset, count: L)
                }
                let (p, deltas) = try ropeIndex(call.inputs, imageGrid: call.imageGrid, videoGrid: call.videoGrid,
                                                attentionMask: mask)
                state = VLMPositionState(positionIds: p, ropeDeltas: deltas)
                return p
            }
            var (p, deltas) = try ropeIndex(call.inputs, imageGrid: call.imageGrid, videoGrid: call.videoGrid,
                                            attentionMask: mask)
            if call.imageGrid == nil && call.videoGrid == nil { deltas = [Int](repeating: 0, count: B) }
            state = VLMPositionState(positionIds: p, ropeDeltas: deltas)
            return p
        }
        // (b) Sequential positions from the cache offset plus the (passed or stored) deltas.
        guard let source = call.ropeDeltas ?? state.ropeDeltas, source.count == 1 || source.count >= B else {
            throw ForwardError.unsupported("rope deltas of \((call.ropeDeltas ?? state.ropeDeltas)?.count ?? 0) rows for a batch of \(B)")
        }
        let delta: [Int]
        if let rowOffsets, rowOffsets.count >= B {
            delta = (0..<B).map { rowOffsets[$0] + source[source.count == 1 ? 0 : $0] }
        } else {
            let base = cache != nil ? cacheOffset : 0
            delta = (0..<B).map { base + (cache != nil ? source[source.count == 1 ? 0 : $0] : 0) }
        }
        let rows = VLMPositions(rows: delta.map { d in (0..<L).map { d + $0 } })
        let threeAxes = call.ropeDeltas != nil || state.positionIds?.axes == 3
        return threeAxes ? rows.threeAxes : rows
    }
}
