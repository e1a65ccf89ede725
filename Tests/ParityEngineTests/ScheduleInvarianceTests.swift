import TestSupport
import Testing
import LMMirror
import ParityCore
import ParityTensor
@testable import ParityEngine

/// Counts elements whose bits differ; a bitwise comparison reports how many, not a bare boolean.
func differingElements(_ a: Tensor, _ b: Tensor) -> Int {
    precondition(a.shape == b.shape)
    return zip(a.data, b.data).filter { $0.bitPattern != $1.bitPattern }.count
}

@Suite struct GenerateRuleTests {
    @Test func chunksFollowMLXLMGenerateStep() {
        #expect(ScheduleRunner.generateCalls(promptLength: 6, prefillStep: 2) == [2, 2, 1, 1])
        #expect(ScheduleRunner.generateCalls(promptLength: 32, prefillStep: 2048) == [31, 1])
        #expect(ScheduleRunner.generateCalls(promptLength: 32, prefillStep: 16) == [16, 15, 1])
        #expect(ScheduleRunner.generateCalls(promptLength: 1, prefillStep: 4) == [1])
    }
}

@Suite struct ScheduleInvarianceTests {
    static let configs: [String] = ["dense", "moe"]

    func model(_ kind: String) throws -> LMTextModel {
        let c = try tinyConfig { object in
            if kind == "moe" {
                object["model_type"] = "qwen3_5_moe"; object["num_experts"] = 4; object["num_experts_per_tok"] = 2
                object["moe_intermediate_size"] = 24; object["shared_expert_intermediate_size"] = 24
            }
        }
        return LMTextModel(config: c, weights: try randomWeights(c))
    }

    let prompt = (0..<13).map { ($0 * 17 + 5) % 50 }

    /// Like mlx-lm on CPU, the mirror gives the same logits bit for bit whatever the schedule.
    @Test(arguments: configs)
    func everyPrefillStepGivesTheWholePromptLogits(kind: String) throws {
        let m = try model(kind)
        let whole = try ScheduleRunner.run(m, .single(tokens: prompt, calls: [prompt.count], cached: false))
        for step in 1...prompt.count {
            let calls = ScheduleRunner.generateCalls(promptLength: prompt.count, prefillStep: step)
            let chunked = try ScheduleRunner.run(m, .single(tokens: prompt, calls: calls, cached: true))
            let differing = differingElements(chunked.logits, whole.logits)
            #expect(differing == 0, "step \(step): \(differing) of \(whole.logits.count) logits differ")
        }
    }

    @Test(arguments: configs)
    func tokenByTokenAndPrefixDecodeGiveTheWholePromptLogits(kind: String) throws {
        let m = try model(kind)
        let whole = try ScheduleRunner.run(m, .single(tokens: prompt, calls: [prompt.count], cached: false))
        let byToken = try ScheduleRunner.run(m, .single(tokens: prompt, calls: Array(repeating: 1, count: prompt.count), cached: true))
        #expect(differingElements(byToken.logits, whole.logits) == 0)
        let prefix = try ScheduleRunner.run(m, .single(tokens: prompt, calls: [9, 1, 1, 1, 1], cached: true))
        #expect(differingElements(prefix.logits, whole.logits) == 0)
    }

    /// Each left-padded row equals its own single-row run at every real position.
    @Test(arguments: configs)
    func leftPaddedBatchRowsEqualSingleRows(kind: String) throws {
        let m = try model(kind)
        let rows = [Array(prompt), Array(prompt.prefix(9)), Array(prompt.suffix(4))]
        let length = rows.map(\.count).max()!
        let padding = rows.map { length - $0.count }
        let padded = rows.map { [Int](repeating: 0, count: length - $0.count) + $0 }
        let decode = [[1, 2, 3], [4, 5, 6]]
        let batch = try ScheduleRunner.run(m, .batch(rows: padded, leftPadding: padding, decodeSteps: decode))
        for (r, row) in rows.enumerated() {
            let full = row + decode.map { $0[r] }
            let single = try ScheduleRunner.run(m, .single(tokens: full, calls: [row.count] + decode.map { _ in 1 }, cached: true))
            let real = batch.logits.slice(axis: 0, start: r, length: 1).slice(axis: 1, start: padding[r], length: full.count)
            let differing = differingElements(real, single.logits)
            #expect(differing == 0, "row \(r): \(differing) of \(real.count) logits differ")
        }
    }

    @Test func batchRowsWithoutRealTokensAreErrors() throws {
        let m = try model("dense")
        #expect(throws: ScheduleError.self) {
            try ScheduleRunner.run(m, .batch(rows: [[0, 0], [1, 2]], leftPadding: [2, 0], decodeSteps: []))
        }
        #expect(throws: ScheduleError.self) {
            try ScheduleRunner.run(m, .batch(rows: [[0, 0], [1, 2]], leftPadding: [-1, 0], decodeSteps: []))
        }
        #expect(throws: ScheduleError.self) {
            try ScheduleRunner.run(m, .single(tokens: [1, 2, 3], calls: [2, 2], cached: true))
        }
    }
}
