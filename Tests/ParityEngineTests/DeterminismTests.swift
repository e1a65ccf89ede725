import TestSupport
import Testing
import LMMirror
import ParityCore
import ParityTensor
@testable import ParityEngine

/// Wraps a model and nudges one logit on every second call: deterministic per call, but not per run.
final class FlakyModel: QwenLanguageModel {
    let inner: QwenLanguageModel
    private var calls = 0
    init(_ inner: QwenLanguageModel) { self.inner = inner }
    var config: TextConfig { inner.config }
    func makeCache(leftPadding: [Int]?) -> PromptCache { inner.makeCache(leftPadding: leftPadding) }
    func forward(_ input: ModelInput, positionIds: PositionIDs?, cache: PromptCache?, trace: TraceSink?) throws -> Tensor {
        var logits = try inner.forward(input, positionIds: positionIds, cache: cache, trace: trace)
        calls += 1
        if calls % 2 == 0 { logits.data[0] = logits.data[0].nextUp }
        return logits
    }
}

@Suite struct DeterminismTests {
    let prompt = (0..<9).map { ($0 * 7 + 3) % 50 }

    @Test func theMirrorIsBitwiseIdenticalToItself() throws {
        let c = try tinyConfig()
        let model = LMTextModel(config: c, weights: try randomWeights(c))
        for input: ScheduleInput in [.single(tokens: prompt, calls: [prompt.count], cached: false),
                                     .single(tokens: prompt, calls: [5, 3, 1], cached: true),
                                     .batch(rows: [prompt, [0, 0] + prompt.suffix(7)], leftPadding: [0, 2], decodeSteps: [[1, 2]])] {
            let (_, mismatches) = try Determinism.runTwice(model, input)
            #expect(mismatches.isEmpty, "\(mismatches)")
        }
    }

    @Test func aSideThatDiffersFromItselfIsNamedWithTheCount() throws {
        let c = try tinyConfig()
        let model = FlakyModel(LMTextModel(config: c, weights: try randomWeights(c)))
        let (_, mismatches) = try Determinism.runTwice(model, .single(tokens: prompt, calls: [prompt.count], cached: false))
        #expect(mismatches == [Determinism.Mismatch(item: "logits", differing: 1, count: prompt.count * c.vocabSize)])
    }

    /// The self-check row leads the report and says what differed; the summary counts it.
    @Test func nondeterminismIsReportedFirst() {
        let scenario = GoldenScenario(name: "no_cache", kind: .single, description: "", calls: [9], cached: false, paths: ["mlx_lm"])
        var report = ScenarioReport(file: "tiny", path: "golden/tiny.h5", scenario: scenario, reference: "mlx_lm",
                                    implementation: "lm mirror", rows: [])
        let mismatch = Determinism.Mismatch(item: "logits", differing: 1, count: 450)
        report.rows = [Determinism.row([mismatch], of: report)]
        #expect(!report.passed)
        let text = TextReport.render(report)
        let lines = text.split(separator: "\n")
        #expect(lines[2].contains(Determinism.item) && lines[2].contains("NONDETERMINISTIC") && lines[2].contains("logits: 1 of 450"))
        #expect(text.contains("first divergence: \(Determinism.item)"))
        #expect(TextReport.summary([report]).contains("1 nondeterministic"))
        report.rows = [Determinism.row([], of: report)]
        #expect(report.passed)
    }
}
