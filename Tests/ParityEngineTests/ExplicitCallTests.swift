import TestSupport
import Testing
import LMMirror
import ParityCore
import ParityTensor
import VLMMirror
@testable import ParityEngine

@Suite struct ExplicitCallTests {
    func vlm() throws -> VLMTextModel {
        let c = try tinyConfig()
        return VLMTextModel(config: c, weights: try randomWeights(c))
    }

    /// Explicit calls keep the model's stored state unless a call resets it, like one
    /// LanguageModel object used across requests.
    @Test func stateSurvivesANewCacheUnlessReset() throws {
        let m = try vlm()
        func calls(reset: Bool) -> ScheduleInput {
            .calls([
                ScheduledCall(call: VLMCall(inputs: [[1, 2, 3, 4, 5, 6]]), cache: .new(leftPadding: nil), resetState: true),
                ScheduledCall(call: VLMCall(inputs: [[7, 8, 9]]), cache: .new(leftPadding: nil), resetState: reset),
                ScheduledCall(call: VLMCall(inputs: [[10]]), cache: .keep, resetState: false),
            ])
        }
        let kept = try ScheduleRunner.run(m, calls(reset: false))
        #expect(kept.callLengths == [6, 3, 1])
        // The second prompt reuses the stored [0..<6] slice; positions coincide with a fresh run's,
        // so the logits agree: stale text positions are only harmful after an image prompt.
        #expect(kept.positionIds[1] == VLMPositions(rows: [[0, 1, 2]]))
        #expect(kept.stateAfter[1].positionIds == VLMPositions(rows: [[0, 1, 2, 3, 4, 5]]))
        let reset = try ScheduleRunner.run(m, calls(reset: true))
        #expect(reset.stateAfter[1].positionIds == VLMPositions(rows: [[0, 1, 2]]))
        #expect(differingElements(kept.logits, reset.logits) == 0)
    }

    @Test func explicitCallsNeedTheVLMMirror() throws {
        let c = try tinyConfig()
        let lm = LMTextModel(config: c, weights: try randomWeights(c))
        #expect(throws: ScheduleError.self) {
            try ScheduleRunner.run(lm, .calls([ScheduledCall(call: VLMCall(inputs: [[1]]), cache: .none, resetState: true)]))
        }
    }

    @Test func nestedStateListsParseToShapeAndValues() {
        #expect(NestedInts([[0, 1, 2]] as [Any]) == NestedInts(shape: [1, 3], values: [0, 1, 2]))
        #expect(NestedInts([[[1]], [[2]], [[3]]] as [Any]) == NestedInts(shape: [3, 1, 1], values: [1, 2, 3]))
        #expect(NestedInts(nil) == nil)
        #expect(NestedInts([[1, 2], [3]] as [Any]) == nil)   // ragged
    }
}
