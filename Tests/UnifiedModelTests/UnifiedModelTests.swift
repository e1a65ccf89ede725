import Testing
import ParityCore
import ParityTensor
@testable import LMMirror
@testable import VLMMirror
@testable import UnifiedModel

let tokenConfig = MultimodalConfig(imageTokenId: 47, videoTokenId: 48, visionStartTokenId: 45,
                                   visionEndTokenId: 46, spatialMergeSize: 2)
let (VS, VE, I) = (45, 46, 47)

func unified(_ kind: String = "dense", weights: Weights? = nil) throws -> UnifiedTextModel {
    let (lm, vlm) = try tinyConfigs(kind)
    return try UnifiedTextModel(config: lm, vlmConfig: vlm, multimodal: tokenConfig, weights: weights ?? randomWeights(lm))
}

/// A prompt with one 4×4 image (2×2 tokens after the merge) and text on both sides.
let imagePrompt = [3, 9, VS, I, I, I, I, VE, 12, 30, 7]

@Suite struct UnifiedRouteTests {
    static let kinds = ["dense", "moe"]

    /// Without stored positions every call is the mlx-lm mirror's, bit for bit, and the vlm
    /// mirror is never consulted.
    @Test(arguments: kinds)
    func textCallsAreTheLMMirrorsBitForBit(kind: String) throws {
        let (lmConfig, _) = try tinyConfigs(kind)
        let weights = try randomWeights(lmConfig)
        let m = try unified(kind, weights: weights)
        let lm = LMTextModel(config: lmConfig, weights: weights)
        let prompt = (0..<13).map { ($0 * 17 + 5) % 50 }
        for calls in [[13], [5, 4, 3, 1], [12, 1]] {
            let run = try m.predict(UnifiedPrompt(input: .tokens([prompt]), positions: .text), calls: calls, decode: [[[4]], [[8]]])
            #expect(run.calls.allSatisfy { $0.route == .text && $0.positions == nil })
            let cache = lm.makeCache(leftPadding: nil)
            var start = 0
            var expected: [Tensor] = []
            for n in calls {
                expected.append(try lm.forward(.tokens([Array(prompt[start..<(start + n)])]), cache: cache))
                start += n
            }
            expected.append(try lm.forward(.tokens([[4]]), cache: cache))
            expected.append(try lm.forward(.tokens([[8]]), cache: cache))
            let differing = differingElements(run.logits, Tensor.concatenate(expected, axis: 1))
            #expect(differing == 0, "calls \(calls): \(differing) logits differ")
            #expect(run.cache.layers == cache.layers)
        }
        #expect(m.vision.state == VLMPositionState())
    }

    /// With stored positions every call is the vlm mirror's as mlx-vlm's generate drives it (the
    /// whole prompt's position_ids and rope_deltas with every chunk, then decodes by token id).
    @Test(arguments: kinds)
    func mropeCallsAreTheVLMMirrorDrivenLikeGenerate(kind: String) throws {
        let (lmConfig, vlmConfig) = try tinyConfigs(kind)
        let weights = try randomWeights(lmConfig)
        let m = try unified(kind, weights: weights)
        let vlm = VLMTextModel(config: vlmConfig, multimodal: tokenConfig, weights: weights)
        let (full, deltas) = try vlm.ropeIndex([imagePrompt], imageGrid: [[1, 4, 4]])
        for calls in [[11], [3, 3, 4, 1], [10, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]] {
            let run = try m.predict(UnifiedPrompt(input: .tokens([imagePrompt]), positions: .images(tokens: [imagePrompt], imageGrid: [[1, 4, 4]])),
                                    calls: calls, decode: [[[5]], [[6]]])
            #expect(run.calls.allSatisfy { $0.route == .mrope })
            vlm.resetPositionState()
            let cache = vlm.makeCache(leftPadding: nil)
            var start = 0
            var expected: [Tensor] = []
            for n in calls {
                let chunk = [Array(imagePrompt[start..<(start + n)])]
                expected.append(try vlm(VLMCall(inputs: chunk, positionIds: full, ropeDeltas: deltas), cache: cache).logits)
                start += n
            }
            expected.append(try vlm(VLMCall(inputs: [[5]]), cache: cache).logits)
            expected.append(try vlm(VLMCall(inputs: [[6]]), cache: cache).logits)
            let differing = differingElements(run.logits, Tensor.concatenate(expected, axis: 1))
            #expect(differing == 0, "calls \(calls): \(differing) logits differ")
        }
        #expect(m.vision.state == VLMPositionState(), "the unified model passes L positions: the vlm mirror stores nothing")
    }

    @Test func explicitPositionsTakeTheMRoPERouteWithoutState() throws {
        let m = try unified()
        let p = PositionIDs(batch: 1, length: 4, values: [0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1])
        let cache = m.makeCache(leftPadding: nil)
        _ = try m.forward(.tokens([[0, 1, 2]]), positionIds: p, cache: cache, trace: nil)
        #expect(m.lastCall?.route == .mrope && axes(m.lastCall?.positions) == [[0, 1, 0], [0, 0, 1], [0, 1, 1]])
        _ = try m.forward(.tokens([[3]]), positionIds: p, cache: cache, trace: nil)   // sliced at offset 3
        #expect(axes(m.lastCall?.positions) == [[1], [1], [1]])
        _ = try m.forward(.tokens([[4]]), positionIds: nil, cache: cache, trace: nil)
        #expect(m.lastCall?.route == .text)
        #expect(m.state.isEmpty)
    }
}

/// `_compute_position_ids`: the stored slice at the cache offset, the stitched tail, then
/// `offset + delta`; every number checked.
@Suite struct UnifiedPositionTests {
    /// The upstream chunk-boundary vector: the image span crosses the boundary of 2-token chunks.
    let stored = PositionIDs(batch: 1, length: 6, values: [0, 1, 1, 1, 1, 3, 0, 1, 1, 2, 2, 3, 0, 1, 2, 1, 2, 3])

    func run(_ calls: [Int], tokens: Int = 6, decode: Int = 0) throws -> [UnifiedCall] {
        let m = try unified()
        let prompt = UnifiedPrompt(input: .tokens([Array(0..<tokens)]), positions: .precomputed(stored, ropeDeltas: [-2]))
        return try m.predict(prompt, calls: calls, decode: (0..<decode).map { [[10 + $0]] }).calls
    }

    @Test func chunksTakeTheStoredSliceAtTheCacheOffset() throws {
        let calls = try run([2, 2, 1, 1], decode: 2)
        #expect(calls.map(\.cacheOffset) == [0, 2, 4, 5, 6, 7])
        #expect(axes(calls[0].positions) == [[0, 1], [0, 1], [0, 1]])
        #expect(axes(calls[1].positions) == [[1, 1], [1, 2], [2, 1]])
        #expect(axes(calls[2].positions) == [[1], [2], [2]])
        #expect(axes(calls[3].positions) == [[3], [3], [3]])
        // Past the stored positions: offset + delta on all three axes.
        #expect(axes(calls[4].positions) == [[4], [4], [4]])
        #expect(axes(calls[5].positions) == [[5], [5], [5]])
    }

    @Test func aChunkRunningPastTheStoredEndIsStitched() throws {
        let calls = try run([4, 4], tokens: 8)
        #expect(axes(calls[1].positions) == [[1, 3, 4, 5], [2, 3, 4, 5], [2, 3, 4, 5]])
        let whole = try run([8], tokens: 8)
        #expect(axes(whole[0].positions) == [[0, 1, 1, 1, 1, 3, 4, 5], [0, 1, 1, 2, 2, 3, 4, 5], [0, 1, 2, 1, 2, 3, 4, 5]])
    }

    /// Numerics spec §3.3's example: two images, text between and after.
    @Test func multimodalPromptPositionsComeFromGetRopeIndex() throws {
        let m = try unified()
        let tokens = [1, 2, VS] + [Int](repeating: I, count: 6) + [VE, 3, 4, VS] + [Int](repeating: I, count: 6) + [VE, 5, 6, 7]
        try m.setMultimodalPrompt(tokens: [tokens], imageGrid: [[1, 4, 6], [1, 6, 4]])
        #expect(m.state.ropeDeltas == [-6])
        #expect(axes(m.state.positionIds) == [
            [0, 1, 2, 3, 3, 3, 3, 3, 3, 6, 7, 8, 9, 10, 10, 10, 10, 10, 10, 13, 14, 15, 16],
            [0, 1, 2, 3, 3, 3, 4, 4, 4, 6, 7, 8, 9, 10, 10, 11, 11, 12, 12, 13, 14, 15, 16],
            [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10, 11, 10, 11, 10, 11, 13, 14, 15, 16],
        ])
        #expect(throws: UnifiedModelError.self) { try m.setMultimodalPrompt(tokens: [tokens], imageGrid: []) }
    }

    /// A text prompt after an image prompt runs exactly as before it, because every prediction
    /// starts by clearing the state.
    @Test func clearingTheStateReturnsToTheTextRoute() throws {
        let m = try unified()
        let text = UnifiedPrompt(input: .tokens([[4, 8, 15, 16, 23, 42]]), positions: .text)
        let before = try m.predict(text, calls: [3, 3], decode: [[[1]]])
        _ = try m.predict(UnifiedPrompt(input: .tokens([imagePrompt]), positions: .images(tokens: [imagePrompt], imageGrid: [[1, 4, 4]])),
                          calls: [11], decode: [[[2]]])
        #expect(!m.state.isEmpty)
        let after = try m.predict(text, calls: [3, 3], decode: [[[1]]])
        #expect(after.calls.allSatisfy { $0.route == .text })
        #expect(differingElements(before.logits, after.logits) == 0)
    }

    @Test func inconsistentStateIsAThrownError() throws {
        let m = try unified()
        let cache = m.makeCache(leftPadding: nil)
        m.setPositionState(positionIds: stored, ropeDeltas: nil)
        #expect(throws: UnifiedModelError.positionsWithoutRopeDeltas(length: 6)) {
            try m.forward(.tokens([[1, 2]]), positionIds: nil, cache: cache, trace: nil)
        }
        m.setPositionState(positionIds: nil, ropeDeltas: [-2])
        #expect(throws: UnifiedModelError.ropeDeltasWithoutPositions(deltas: [-2])) {
            try m.forward(.tokens([[1, 2]]), positionIds: nil, cache: cache, trace: nil)
        }
        #expect(cache.firstAttention?.length == 0, "a refused call leaves the cache alone")
        m.setPositionState(positionIds: stored, ropeDeltas: [-2])
        #expect(throws: UnifiedModelError.batchMismatch(state: 1, call: 2)) {
            try m.forward(.tokens([[1, 2], [3, 4]]), positionIds: nil, cache: cache, trace: nil)
        }
        m.setPositionState(positionIds: stored, ropeDeltas: [-2, 0, 1])
        #expect(throws: UnifiedModelError.self) {
            try m.forward(.tokens([[1, 2]]), positionIds: nil, cache: cache, trace: nil)
        }
        m.setPositionState(positionIds: stored, ropeDeltas: [-2])
        #expect(throws: ForwardError.self) {
            try m.forward(.tokens([[1, 2]]), positionIds: nil, cache: m.makeCache(leftPadding: [0]), trace: nil)
        }
        #expect(throws: ForwardError.self) {   // 6 explicit positions cannot cover 2 tokens at offset 5
            let c = m.makeCache(leftPadding: nil)
            _ = try m.forward(.tokens([[1, 2, 3, 4, 5]]), positionIds: nil, cache: c, trace: nil)
            _ = try m.forward(.tokens([[1, 2]]), positionIds: stored, cache: c, trace: nil)
        }
        m.clearPredictionState()
        _ = try m.forward(.tokens([[1, 2]]), positionIds: nil, cache: cache, trace: nil)
        #expect(m.lastCall?.route == .text)
    }

    @Test func configsOfDifferentModelsAreRefused() throws {
        let (lm, _) = try tinyConfigs()
        let (_, other) = try tinyConfigs { $0["num_hidden_layers"] = 2 }
        #expect(throws: UnifiedModelError.self) {
            try UnifiedTextModel(config: lm, vlmConfig: other, multimodal: tokenConfig, weights: try randomWeights(lm))
        }
    }
}

/// The bytes of a packed projection's value: two values hold the same packed copy iff equal.
/// Which buffer holds the packed elements (the struct's own bytes include padding).
func storageBytes(_ w: LinearWeight) -> UInt { w.storageAddress }

@Suite struct SharedWeightTests {
    /// Both routes hold one packed copy of every projection: building the vlm route packs nothing new.
    @Test(arguments: ["dense", "moe"])
    func bothRoutesShareEveryPackedProjection(kind: String) throws {
        let (lmConfig, _) = try tinyConfigs(kind)
        let alone = try randomWeights(lmConfig)
        _ = LMTextModel(config: lmConfig, weights: alone)
        let weights = try randomWeights(lmConfig)
        let m = try unified(kind, weights: weights)
        #expect(weights.packedCount == alone.packedCount, "the vlm route packed \(weights.packedCount - alone.packedCount) extra projection(s)")

        var pairs: [(String, LinearWeight, LinearWeight)] = [("lm head", m.text.lmHead, m.vision.lmHead)]
        for (a, b) in zip(m.text.layers, m.vision.model.layers) {
            switch (a.mixer, b.mixer) {
            case let (.full(x), .full(y)):
                pairs += [("q_proj \(a.index)", x.qProj, y.qProj), ("k_proj \(a.index)", x.kProj, y.kProj),
                          ("v_proj \(a.index)", x.vProj, y.vProj), ("o_proj \(a.index)", x.oProj, y.oProj)]
            case let (.linear(x), .linear(y)):
                pairs += [("in_proj_qkv \(a.index)", x.inProjQKV, y.inProjQKV), ("in_proj_z \(a.index)", x.inProjZ, y.inProjZ),
                          ("in_proj_b \(a.index)", x.inProjB, y.inProjB), ("in_proj_a \(a.index)", x.inProjA, y.inProjA),
                          ("out_proj \(a.index)", x.outProj, y.outProj)]
            default: Issue.record("layer \(a.index): the routes disagree on the layer kind")
            }
            switch (a.feedForward, b.feedForward) {
            case let (.dense(x), .dense(y)):
                pairs += [("gate \(a.index)", x.gateProj, y.gate), ("up \(a.index)", x.upProj, y.up), ("down \(a.index)", x.downProj, y.down)]
            case let (.moe(x), .moe(y)):
                pairs += [("router \(a.index)", x.router, y.router), ("shared gate \(a.index)", x.sharedExpertGate, y.sharedGate)]
                for e in x.experts.indices {
                    pairs += [("expert \(e) gate \(a.index)", x.experts[e].gateProj, y.experts[e].gate),
                              ("expert \(e) down \(a.index)", x.experts[e].downProj, y.experts[e].down)]
                }
            default: Issue.record("layer \(a.index): the routes disagree on the feed-forward kind")
            }
        }
        let separate = pairs.filter { storageBytes($0.1) != storageBytes($0.2) }.map(\.0)
        #expect(separate.isEmpty, "held twice: \(separate)")
        // Control: the same tensor packed twice is two copies, and the check sees it.
        let name = WeightNames.lmHead
        #expect(storageBytes(LinearWeight(weights[name])) != storageBytes(m.text.lmHead))
    }
}
