import TestSupport
import Testing
import ParityCore
import ParityTensor
@testable import LMMirror

@Suite struct ModelInputTests {
    @Test func tokenOutsideTheVocabularyIsAnErrorNotATrap() throws {
        let c = try tinyConfig()
        let model = LMTextModel(config: c, weights: try randomWeights(c))
        #expect(throws: ForwardError.tokenOutOfRange(row: 0, position: 1, id: 50, vocabSize: 50)) {
            try model.forward(.tokens([[1, 50, 2]]))
        }
        #expect(throws: ForwardError.tokenOutOfRange(row: 0, position: 0, id: -1, vocabSize: 50)) {
            try model.forward(.tokens([[-1]]))
        }
    }

    @Test func raggedOrEmptyRowsAreRejected() throws {
        let c = try tinyConfig()
        let model = LMTextModel(config: c, weights: try randomWeights(c))
        #expect(throws: ForwardError.self) { try model.forward(.tokens([[1, 2], [3]])) }
        #expect(throws: ForwardError.self) { try model.forward(.tokens([[]])) }
        #expect(throws: ForwardError.self) { try model.forward(.embeddings(Tensor(zeros: [1, 2, 31]))) }
    }

    @Test func textPathRejectsMRoPEPositions() throws {
        let c = try tinyConfig()
        let model = LMTextModel(config: c, weights: try randomWeights(c))
        let positions = PositionIDs(batch: 1, length: 2, values: [0, 1, 0, 1, 0, 1])
        #expect(throws: ForwardError.self) { try model.forward(.tokens([[1, 2]]), positionIds: positions, cache: nil, trace: nil) }
    }

    @Test func embeddingsInputEqualsTokenInput() throws {
        let c = try tinyConfig()
        let weights = try randomWeights(c)
        let model = LMTextModel(config: c, weights: weights)
        let ids = [3, 1, 4, 1, 5]
        let table = weights[WeightNames.embedTokens]
        let rows = ids.flatMap { Array(table.data[($0 * 32)..<(($0 + 1) * 32)]) }
        let fromIds = try model.forward(.tokens([ids]))
        let fromEmbeddings = try model.forward(.embeddings(Tensor(shape: [1, 5, 32], data: rows)))
        #expect(fromIds == fromEmbeddings)
        #expect(fromIds.shape == [1, 5, 50])
        let finite = fromIds.data.allSatisfy { $0.isFinite }
        #expect(finite)
    }
}
