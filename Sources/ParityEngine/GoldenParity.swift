import Foundation
import LMMirror
import ParityCore
import ParityTensor

// Golden parity: an implementation run on a golden's scenarios, compared tensor by tensor with
// what the reference library stored.

public struct ParityRow: Sendable {
    public enum Verdict: String, Sendable { case pass = "ok", fail = "FAIL", notRun = "NOT RUN", nondeterministic = "NONDETERMINISTIC" }
    public var file: String
    public var scenario: String
    public var reference: String
    public var implementation: String
    /// "embeddings", "layer 3", "final norm", "logits", "cache layer 3 keys", ...
    public var item: String
    public var difference: Difference?
    public var tolerance: Float
    public var verdict: Verdict
    public var note: String = ""
}

public struct ScenarioReport: Sendable {
    public var file: String
    public var path: String
    public var scenario: GoldenScenario
    public var reference: String
    public var implementation: String
    public var rows: [ParityRow]
    public var error: String?

    public var passed: Bool { error == nil && rows.allSatisfy { $0.verdict == .pass } }
    /// The first hidden-state row past the tolerance: where the two paths part.
    public var firstDivergence: ParityRow? { rows.first { $0.verdict != .pass } }
    public var reproduce: String { "qwen-parity check \(path) --scenario \(scenario.name)" }
}

public enum GoldenParity {
    /// mlx-lm and a float64 reference differ by 4e-6..1e-5; 2e-5 leaves room for ulp-level
    /// ordering differences and nothing more.
    public static let tolerance: Float = 2e-5

    /// The implementation that mirrors a reference path stored in the goldens.
    static func implementation(for reference: String, config: TextConfig, weights: Weights) -> (String, QwenLanguageModel)? {
        switch reference {
        case "mlx_lm": return ("lm mirror", LMTextModel(config: config, weights: weights))
        default: return nil
        }
    }

    public static func check(_ golden: GoldenFile, scenarios only: Set<String>? = nil) throws -> [ScenarioReport] {
        try golden.validate(only: only)
        let weights = try golden.weights()
        var reports: [ScenarioReport] = []
        for scenario in try golden.scenarios() where only?.contains(scenario.name) ?? true {
            for reference in scenario.paths {
                reports.append(checkScenario(golden, scenario, reference: reference, weights: weights))
            }
        }
        if let only {
            let known = Set(reports.map(\.scenario.name))
            for missing in only.subtracting(known).sorted() {
                throw GoldenError.invalid(file: golden.path, path: "/scenarios/" + missing, reason: "no such scenario")
            }
        }
        return reports
    }

    static func checkScenario(_ golden: GoldenFile, _ scenario: GoldenScenario, reference: String,
                              weights: Weights) -> ScenarioReport {
        var report = ScenarioReport(file: golden.name, path: golden.path, scenario: scenario, reference: reference,
                                    implementation: "-", rows: [])
        guard let (implName, model) = implementation(for: reference, config: golden.config, weights: weights) else {
            report.rows = [ParityRow(file: golden.name, scenario: scenario.name, reference: reference, implementation: "-",
                                     item: "all", difference: nil, tolerance: tolerance, verdict: .notRun,
                                     note: "no Swift implementation mirrors '\(reference)' yet")]
            return report
        }
        report.implementation = implName
        do {
            let input = try scheduleInput(golden, scenario)
            let (result, mismatches) = try Determinism.runTwice(model, input)
            report.rows = [Determinism.row(mismatches, of: report)]
            guard mismatches.isEmpty else { return report }
            report.rows += try compare(result, golden: golden, scenario: scenario, reference: reference,
                                       implementation: implName, input: input)
        } catch {
            report.error = "\(error)"
        }
        return report
    }

    public static func scheduleInput(_ golden: GoldenFile, _ scenario: GoldenScenario) throws -> ScheduleInput {
        switch scenario.kind {
        case .single:
            guard let tokens = try golden.promptTokens().first else {
                throw GoldenError.invalid(file: golden.path, path: "/inputs/token_ids", reason: "no prompt row")
            }
            return .single(tokens: tokens, calls: scenario.calls, cached: scenario.cached)
        case .batch:
            let rows = try golden.tokenRows("/inputs/batch/token_ids")
            let padding = try golden.ints("/inputs/batch/left_padding", expectingRank: 1).values.map { Int($0) }
            let decode = try golden.tokenRows("/inputs/batch/decode_tokens")
            return .batch(rows: rows, leftPadding: padding, decodeSteps: decode)
        }
    }

    static func compare(_ result: ScheduleResult, golden: GoldenFile, scenario: GoldenScenario, reference: String,
                        implementation: String, input: ScheduleInput) throws -> [ParityRow] {
        let base = "/scenarios/\(scenario.name)/\(reference)"
        var padding: [Int] = []
        if case .batch(_, let p, _) = input { padding = p }
        let isValid: (Int, Int) -> Bool = { b, t in padding.isEmpty || t >= padding[b] }
        var rows: [ParityRow] = []
        func add(_ item: String, _ actual: Tensor, _ expected: Tensor, filter: ((Int) -> Bool)?) {
            let d = Difference.measure(actual, expected, include: filter)
            let pass = d.nonFinite == 0 && d.maxAbs <= tolerance
            rows.append(ParityRow(file: golden.name, scenario: scenario.name, reference: reference,
                                  implementation: implementation, item: item, difference: d, tolerance: tolerance,
                                  verdict: pass ? .pass : .fail,
                                  note: d.nonFinite > 0 ? "\(d.nonFinite) non-finite element(s)" : ""))
        }
        func expect(_ dataset: String, shape: [Int]) throws -> Tensor {
            let t = try golden.tensor(dataset)
            guard t.shape == shape else {
                throw GoldenError.invalid(file: golden.path, path: dataset, reason: "shape \(t.shape), the run produced \(shape)")
            }
            return t
        }

        let hidden = try expect(base + "/hidden_states", shape: result.hiddenStates.shape)
        let perLayer = Array(result.hiddenStates.shape.dropFirst())
        let layerFilter = Difference.positionFilter(shape: perLayer, batchAxis: 0, timeAxis: 1, keep: isValid)
        for i in 0..<hidden.shape[0] {
            add(i == 0 ? "embeddings" : "layer \(i - 1)",
                result.hiddenStates.slice(axis: 0, start: i, length: 1).reshaped(perLayer),
                hidden.slice(axis: 0, start: i, length: 1).reshaped(perLayer), filter: layerFilter)
        }
        add("final norm", result.finalNorm, try expect(base + "/final_norm", shape: result.finalNorm.shape), filter: layerFilter)

        let positions = try golden.ints(base + "/logits_positions", expectingRank: 1).values.map { Int($0) }
        let T = result.logits.shape[1]
        guard positions.allSatisfy({ $0 >= 0 && $0 < T }) else {
            throw GoldenError.invalid(file: golden.path, path: base + "/logits_positions", reason: "positions outside 0..<\(T)")
        }
        let picked = Tensor.concatenate(positions.map { result.logits.slice(axis: 1, start: $0, length: 1) }, axis: 1)
        let logitFilter = Difference.positionFilter(shape: picked.shape, batchAxis: 0, timeAxis: 1) { b, p in isValid(b, positions[p]) }
        add("logits", picked, try expect(base + "/logits", shape: picked.shape), filter: logitFilter)

        if let cache = result.cacheAfterPrompt, golden.file.exists(base + "/cache_after") {
            for (i, layer) in cache.enumerated() {
                let group = base + String(format: "/cache_after/layer_%02d", i)
                switch layer {
                case .attention(let c):
                    guard let keys = c.keys, let values = c.values else { continue }
                    let filter = Difference.positionFilter(shape: keys.shape, batchAxis: 0, timeAxis: 2, keep: isValid)
                    add("cache layer \(i) keys", keys, try expect(group + "/keys", shape: keys.shape), filter: filter)
                    add("cache layer \(i) values", values, try expect(group + "/values", shape: values.shape), filter: filter)
                case .deltaNet(let c):
                    guard let conv = c.convState, let state = c.recurrentState else { continue }
                    add("cache layer \(i) conv state", conv, try expect(group + "/conv_state", shape: conv.shape), filter: nil)
                    add("cache layer \(i) recurrent state", state, try expect(group + "/recurrent_state", shape: state.shape), filter: nil)
                }
            }
        }
        return rows
    }
}
