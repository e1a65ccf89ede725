import TestSupport
import Testing
import ParityCore
import ParityTensor
@testable import VLMMirror

/// The branches of LanguageModel.__call__ that pick each call's positions (numerics spec §3.2).
@Suite struct PositionStateTests {
    static let tokens = MultimodalConfig(imageTokenId: 47, videoTokenId: 48, visionStartTokenId: 45,
                                         visionEndTokenId: 46, spatialMergeSize: 2)
    let VS = 45, VE = 46, I = 47

    func model(_ kind: String = "dense") throws -> VLMTextModel {
        let c = try tinyConfig { object in
            if kind == "moe" {
                object["model_type"] = "qwen3_5_moe"; object["num_experts"] = 4; object["num_experts_per_tok"] = 2
                object["moe_intermediate_size"] = 24; object["shared_expert_intermediate_size"] = 24
            }
        }
        return VLMTextModel(config: c, multimodal: Self.tokens, weights: try randomWeights(c))
    }

    func rows(_ p: VLMPositions?) -> [[Int]] {
        guard let p else { return [] }
        return (0..<p.axes).flatMap { a in (0..<p.batch).map { b in (0..<p.length).map { p.at(axis: a, row: b, t: $0) } } }
    }

    /// Fresh text prompt: branch (a) computes arange, stores it and zero deltas; decode is
    /// branch (b), offset + delta, two-dimensional.
    @Test func textPromptThenDecode() throws {
        let m = try model()
        let cache = m.makeCache(leftPadding: nil)
        let first = try m(VLMCall(inputs: [[1, 2, 3, 4]]), cache: cache)
        #expect(rows(first.positionIds) == [[0, 1, 2, 3]])
        #expect(m.state == VLMPositionState(positionIds: VLMPositions(rows: [[0, 1, 2, 3]]), ropeDeltas: [0]))
        let next = try m(VLMCall(inputs: [[5]]), cache: cache)
        #expect(next.positionIds == VLMPositions(rows: [[4]]))
    }

    /// Generate style: full-prompt positions are sliced at the cache offset, the rope_deltas
    /// kwarg is stored, positions passed in are never stored; decode adds the stored delta.
    @Test func explicitPositionsAreSlicedAtTheCacheOffset() throws {
        let m = try model()
        let full = VLMPositions(axes: 3, batch: 1, length: 4, values: [0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1])
        let cache = m.makeCache(leftPadding: nil)
        let prefix = try m(VLMCall(inputs: [[0, 1, 2]], positionIds: full, ropeDeltas: [-2]), cache: cache)
        #expect(prefix.positionIds == full.sliced(from: 0, count: 3))
        let last = try m(VLMCall(inputs: [[3]], positionIds: full, ropeDeltas: [-2]), cache: cache)
        #expect(rows(last.positionIds) == [[1], [1], [1]])
        #expect(m.state == VLMPositionState(positionIds: nil, ropeDeltas: [-2]))
        let decode = try m(VLMCall(inputs: [[4]]), cache: cache)
        #expect(decode.positionIds == VLMPositions(rows: [[2]]))          // 4 + (−2), text rank
    }

    /// Hazard 1: positions the model computed for an image prompt are reused, sliced, by a text
    /// prompt on a new cache; the stored delta shifts its decode. Clearing the state fixes both.
    @Test func stalePositionsLeakIntoALaterTextPrompt() throws {
        let m = try model()
        let image = [1, VS, I, I, I, I, VE, 2]
        _ = try m(VLMCall(inputs: [image], imageGrid: [[1, 4, 4]]), cache: m.makeCache(leftPadding: nil))
        let stored = try #require(m.state.positionIds)
        #expect(stored.axes == 3 && m.state.ropeDeltas == [-2])
        let cache = m.makeCache(leftPadding: nil)
        let text = try m(VLMCall(inputs: [[3, 4, 5, 6, 7]]), cache: cache)
        #expect(text.positionIds == stored.sliced(from: 0, count: 5))      // T row [0, 1, 2, 2, 2]
        let decode = try m(VLMCall(inputs: [[8]]), cache: cache)
        #expect(rows(decode.positionIds) == [[3], [3], [3]])               // 5 − 2, three axes
        m.resetPositionState()
        let clean = try m(VLMCall(inputs: [[3, 4, 5, 6, 7]]), cache: m.makeCache(leftPadding: nil))
        #expect(clean.positionIds == VLMPositions(rows: [[0, 1, 2, 3, 4]]))
    }

    /// Hazard 2: chunk 1 computes positions from its own ids; chunk 2 gets offset + that delta.
    @Test func chunkedImagePrefillWithoutPositionsGoesSequential() throws {
        let m = try model()
        let image = [1, 2, VS, I, I, I, I, VE, 3]
        let cache = m.makeCache(leftPadding: nil)
        let first = try m(VLMCall(inputs: [Array(image[0..<4])], imageGrid: [[1, 4, 4]]), cache: cache)
        #expect(rows(first.positionIds) == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]])
        // The chunk's block reaches H = W = 4 past the chunk: delta = 4 + 1 − 4 columns.
        #expect(m.state.ropeDeltas == [1])
        let second = try m(VLMCall(inputs: [Array(image[4..<9])], imageGrid: [[1, 4, 4]]), cache: cache)
        #expect(rows(second.positionIds)[0] == [5, 6, 7, 8, 9])
        // Passing the whole prompt's positions each chunk gives the image block instead.
        let (full, _) = try m.ropeIndex([image], imageGrid: [[1, 4, 4]])
        m.resetPositionState()
        let fresh = m.makeCache(leftPadding: nil)
        _ = try m(VLMCall(inputs: [Array(image[0..<4])], positionIds: full, ropeDeltas: [-2]), cache: fresh)
        let right = try m(VLMCall(inputs: [Array(image[4..<9])], positionIds: full, ropeDeltas: [-2]), cache: fresh)
        #expect(rows(right.positionIds)[0] == [3, 3, 3, 5, 6])
    }

    /// Hazard 3: a left-padded prompt without a mask gets arange positions (pad.. for padded
    /// rows); decode uses each row's real length. With the mask the prompt counts real tokens.
    @Test func leftPaddedBatchWithAndWithoutMask() throws {
        let m = try model()
        let ids = [[1, 2, 3, 4], [0, 0, 5, 6]]
        let noMask = m.makeCache(leftPadding: [0, 2])
        let prompt = try m(VLMCall(inputs: ids), cache: noMask)
        #expect(rows(prompt.positionIds) == [[0, 1, 2, 3], [0, 1, 2, 3]])
        let decode = try m(VLMCall(inputs: [[7], [8]]), cache: noMask)
        #expect(rows(decode.positionIds) == [[4], [2]])
        m.resetPositionState()
        let masked = m.makeCache(leftPadding: [0, 2])
        let right = try m(VLMCall(inputs: ids, attentionMask: [[1, 1, 1, 1], [0, 0, 1, 1]]), cache: masked)
        #expect(rows(right.positionIds) == [[0, 1, 2, 3], [1, 1, 0, 1]])
        #expect(m.state.ropeDeltas == [0, 0])   // text deltas are forced to zero
    }

    @Test func pixelValuesClearTheStoredState() throws {
        let m = try model()
        _ = try m(VLMCall(inputs: [[1, 2, 3]]), cache: nil)
        #expect(m.state.positionIds != nil)
        _ = try m(VLMCall(inputs: [[1, 2, 3]], positionIds: VLMPositions(rows: [[5, 6, 7]]), pixelValues: true), cache: nil)
        #expect(m.state == VLMPositionState())
    }

    /// mlx-vlm runs each padded row alone on its real tokens: every row of a left-padded batch
    /// equals its single-row run bit for bit, prompt and decode.
    @Test(arguments: ["dense", "moe"])
    func leftPaddedRowsEqualSingleRows(kind: String) throws {
        let m = try model(kind)
        let rowsIn = [[3, 9, 14, 1, 7, 22, 5], [11, 4, 8], [30, 2, 19, 6, 12]]
        let L = rowsIn.map(\.count).max()!
        let pads = rowsIn.map { L - $0.count }
        let padded = rowsIn.map { [Int](repeating: 0, count: L - $0.count) + $0 }
        let mask = pads.map { p in (0..<L).map { $0 >= p ? 1 : 0 } }
        let cache = m.makeCache(leftPadding: pads)
        let prompt = try m(VLMCall(inputs: padded, attentionMask: mask), cache: cache).logits
        let steps = [[40, 41, 42], [43, 44, 45]]
        let decodes = try steps.map { step in try m(VLMCall(inputs: step.map { [$0] }), cache: cache).logits }
        for (b, row) in rowsIn.enumerated() {
            let single = try model(kind)
            let own = single.makeCache(leftPadding: nil)
            let alone = try single(VLMCall(inputs: [row]), cache: own).logits
            let batchRow = prompt.slice(axis: 0, start: b, length: 1).slice(axis: 1, start: pads[b], length: row.count)
            #expect(batchRow == alone, "row \(b) prompt")
            for (s, step) in steps.enumerated() {
                let next = try single(VLMCall(inputs: [[step[b]]]), cache: own).logits
                #expect(decodes[s].slice(axis: 0, start: b, length: 1) == next, "row \(b) decode \(s)")
            }
        }
    }
}
