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
    public var tolerance: Tolerance
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

    public var passed: Bool { error == nil && stale.isEmpty && rows.allSatisfy { $0.verdict == .pass } }
    /// Why the golden is stale (then nothing was compared); empty when fresh.
    public var stale: [String] = []
    /// The first hidden-state row past the tolerance: where the two paths part.
    public var firstDivergence: ParityRow? { rows.first { $0.verdict != .pass } }
    public var reproduce: String { "qwen-parity check \(path) --scenario \(scenario.name)" }

    public init(file: String, path: String, scenario: GoldenScenario, reference: String, implementation: String,
                rows: [ParityRow], error: String? = nil) {
        self.file = file
        self.path = path
        self.scenario = scenario
        self.reference = reference
        self.implementation = implementation
        self.rows = rows
        self.error = error
    }
}

public enum GoldenParity {
    /// The lm mirror reproduces mlx-lm's CPU arithmetic operation for operation (in-order sums,
    /// mlx's own exp/sin/cos), so it must match bit for bit. A path computed in a different
    /// order gets 2e-5: mlx-lm itself is 4e-6..1e-5 from a float64 reference.
    public static func tolerance(for reference: String) -> Tolerance {
        reference == "mlx_lm" || reference == "mlx_lm_f32" ? .exact : .atol(2e-5)
    }

    /// The float32 twin of a reference path in model-directory goldens: the same model after
    /// mlx_lm.utils.dequantize_model and a float32 cast (docs/golden-format.md).
    public static let float32Twin = ["mlx_lm": "mlx_lm_f32"]

    /// Reference paths the lm mirror reproduces.
    public static let mirroredByLM: Set<String> = ["mlx_lm", "mlx_lm_f32"]

    /// The implementation that mirrors a reference path stored in the goldens.
    static func implementation(for reference: String, config: TextConfig, weights: Weights) -> (String, QwenLanguageModel)? {
        switch reference {
        case "mlx_lm", "mlx_lm_f32": return ("lm mirror", LMTextModel(config: config, weights: weights))
        default: return nil
        }
    }

    public static func check(_ golden: GoldenFile, scenarios only: Set<String>? = nil,
                             modelDirectory: String? = nil) throws -> [ScenarioReport] {
        try golden.validate(only: only)
        let weights = try golden.weights(modelDirectory: modelDirectory)
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
        guard let (name, model) = implementation(for: reference, config: golden.config, weights: weights) else {
            var report = ScenarioReport(file: golden.name, path: golden.path, scenario: scenario, reference: reference,
                                        implementation: "-", rows: [])
            report.rows = [ParityRow(file: golden.name, scenario: scenario.name, reference: reference, implementation: "-",
                                     item: "all", difference: nil, tolerance: tolerance(for: reference), verdict: .notRun,
                                     note: "no Swift implementation mirrors '\(reference)' yet")]
            return report
        }
        return checkScenario(golden, scenario, reference: reference, model: model, name: name)
    }

    static func checkScenario(_ golden: GoldenFile, _ scenario: GoldenScenario, reference: String,
                              model: QwenLanguageModel, name implName: String) -> ScenarioReport {
        var report = ScenarioReport(file: golden.name, path: golden.path, scenario: scenario, reference: reference,
                                    implementation: implName, rows: [])
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
        // A reference run in bf16/f16 activations is held to the bound its own float32 twin sets:
        // Swift computes in float32, so it cannot be closer to the bf16 run than mlx's float32 run
        // of the same weights is. Per item: atol(2e-5 + |bf16 − float32 twin|).
        let twin = golden.provenance.dtype != "float32" ? float32Twin[reference] : nil
        let twinBase = twin.flatMap { scenario.paths.contains($0) ? "/scenarios/\(scenario.name)/\($0)" : nil }
        func add(_ item: String, _ actual: Tensor, _ expected: Tensor, twin twinValue: Tensor? = nil,
                 filter: ((Int) -> Bool)?) {
            let d = Difference.measure(actual, expected, include: filter)
            var bound = tolerance(for: reference)
            var note = ""
            if let twinValue {
                let gap = Difference.measure(twinValue, expected, include: filter).maxAbs
                bound = .atol(2e-5 + gap)
                note = "bound: \(twin ?? "") gap \(TextReport.format(gap)) + 2e-5"
            }
            let pass = bound.accepts(d)
            if d.nonFinite > 0 { note = "\(d.nonFinite) non-finite element(s)" }
            else if !pass && d.differingElements > 0 { note += (note.isEmpty ? "" : "; ") + "\(d.differingElements) differ, ULP \(d.histogramText)" }
            rows.append(ParityRow(file: golden.name, scenario: scenario.name, reference: reference,
                                  implementation: implementation, item: item, difference: d, tolerance: bound,
                                  verdict: pass ? .pass : .fail, note: note))
        }
        /// The golden tensor for `actual` (and its float32 twin), or nil after recording a failing
        /// row when the shapes differ.
        func goldenTensor(_ item: String, _ dataset: String, like actual: Tensor) throws -> (Tensor, Tensor?)? {
            let expected = try golden.tensor(dataset)
            guard expected.shape == actual.shape else {
                rows.append(ParityRow(file: golden.name, scenario: scenario.name, reference: reference,
                                      implementation: implementation, item: item, difference: nil,
                                      tolerance: tolerance(for: reference), verdict: .fail,
                                      note: "shape: the run produced \(actual.shape), \(dataset) holds \(expected.shape)"))
                return nil
            }
            var twinTensor: Tensor?
            if let twinBase {
                let twinPath = twinBase + dataset.dropFirst(base.count)
                let t = try golden.tensor(twinPath)
                guard t.shape == expected.shape else {
                    throw GoldenError.invalid(file: golden.path, path: twinPath, reason: "shape \(t.shape), expected \(expected.shape)")
                }
                twinTensor = t
            }
            return (expected, twinTensor)
        }
        func compare(_ item: String, _ actual: Tensor, _ dataset: String, filter: ((Int) -> Bool)?) throws {
            if let (expected, twinValue) = try goldenTensor(item, dataset, like: actual) {
                add(item, actual, expected, twin: twinValue, filter: filter)
            }
        }

        let perLayer = Array(result.hiddenStates.shape.dropFirst())
        let layerFilter = Difference.positionFilter(shape: perLayer, batchAxis: 0, timeAxis: 1, keep: isValid)
        if let (hidden, hiddenTwin) = try goldenTensor("hidden states", base + "/hidden_states", like: result.hiddenStates) {
            func layer(_ t: Tensor, _ i: Int) -> Tensor { t.slice(axis: 0, start: i, length: 1).reshaped(perLayer) }
            for i in 0..<hidden.shape[0] {
                add(i == 0 ? "embeddings" : "layer \(i - 1)", layer(result.hiddenStates, i), layer(hidden, i),
                    twin: hiddenTwin.map { layer($0, i) }, filter: layerFilter)
            }
        }
        try compare("final norm", result.finalNorm, base + "/final_norm", filter: layerFilter)

        let positions = try golden.ints(base + "/logits_positions", expectingRank: 1).values.map { Int($0) }
        let T = result.logits.shape[1]
        guard positions.allSatisfy({ $0 >= 0 && $0 < T }) else {
            throw GoldenError.invalid(file: golden.path, path: base + "/logits_positions", reason: "positions outside 0..<\(T)")
        }
        let picked = Tensor.concatenate(positions.map { result.logits.slice(axis: 1, start: $0, length: 1) }, axis: 1)
        let logitFilter = Difference.positionFilter(shape: picked.shape, batchAxis: 0, timeAxis: 1) { b, p in isValid(b, positions[p]) }
        try compare("logits", picked, base + "/logits", filter: logitFilter)

        if let cache = result.cacheAfterPrompt, golden.file.exists(base + "/cache_after") {
            for (i, layer) in cache.enumerated() {
                let group = base + String(format: "/cache_after/layer_%02d", i)
                switch layer {
                case .attention(let c):
                    guard let keys = c.keys, let values = c.values else { continue }
                    let filter = Difference.positionFilter(shape: keys.shape, batchAxis: 0, timeAxis: 2, keep: isValid)
                    try compare("cache layer \(i) keys", keys, group + "/keys", filter: filter)
                    try compare("cache layer \(i) values", values, group + "/values", filter: filter)
                case .deltaNet(let c):
                    guard let conv = c.convState, let state = c.recurrentState else { continue }
                    try compare("cache layer \(i) conv state", conv, group + "/conv_state", filter: nil)
                    try compare("cache layer \(i) recurrent state", state, group + "/recurrent_state", filter: nil)
                }
            }
        }
        return rows
    }
}
