import Foundation
import LMMirror
import ParityCore
import ParityTensor
import VLMMirror

// Golden parity: an implementation run on a golden's scenarios, compared tensor by tensor with
// what the reference library stored. Paths of one scenario are also compared with each other
// (mlx-lm against mlx-vlm, a hazard against its correct twin), in the library and in Swift.

public struct ParityRow: Sendable {
    public enum Verdict: String, Sendable { case pass = "ok", fail = "FAIL", notRun = "NOT RUN", nondeterministic = "NONDETERMINISTIC" }
    public var file: String
    public var scenario: String
    public var reference: String
    public var implementation: String
    /// "position ids", "stored state", "embeddings", "layer 3", "final norm", "logits", ...
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
    /// The first row past its tolerance: where the two paths part (positions come first).
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

/// One scenario's paths against each other: the library's distance beside Swift's.
public struct PathComparison: Sendable {
    public enum Kind: String, Sendable {
        /// mlx_lm against mlx_vlm on a text schedule.
        case lmVersusVLM = "mlx_lm ↔ mlx_vlm"
        /// A hazard (mlx_vlm) against the same calls made correctly (mlx_vlm_correct).
        case hazard = "hazard ↔ correct"
        /// One prompt under two schedules (upstream: prefill/decode consistency, chunked MRoPE
        /// prefill against unchunked), mlx_vlm path.
        case schedules = "schedule ↔ schedule"
    }
    public struct Row: Sendable {
        public var item: String
        public var library: Float
        public var swift: Float
    }
    public var file: String
    public var scenario: String
    public var kind: Kind
    public var rows: [Row]
    public var explanation: String
    /// The logits row (the headline number).
    public var logits: Row? { rows.first { $0.item == "logits" } }
}

/// Everything checked in one golden file.
public struct FileReport: Sendable {
    public var scenarios: [ScenarioReport] = []
    public var comparisons: [PathComparison] = []
    /// get_rope_index cases and the mlx-vlm rotary tables, compared exactly.
    public var exact: [ParityRow] = []
    public var passed: Bool { scenarios.allSatisfy(\.passed) && exact.allSatisfy { $0.verdict == .pass } }
}

public enum GoldenParity {
    /// Both mirrors reproduce their library's CPU arithmetic operation for operation (in-order
    /// sums like the reference BLAS mlx links, mlx's own exp/sin/cos polynomials, softmax times
    /// 1/Σ), so every float32 reference path must match bit for bit. A bf16 reference run gets
    /// the bound of its float32 twin instead (see `compare`).
    public static func tolerance(for reference: String) -> Tolerance { .exact }

    /// Reference paths the lm mirror reproduces.
    public static let mirroredByLM: Set<String> = ["mlx_lm", "mlx_lm_f32"]

    /// The float32 twin of a reference path in model-directory goldens: the same model after
    /// mlx_lm.utils.dequantize_model and a float32 cast (docs/golden-format.md).
    public static let float32Twin = ["mlx_lm": "mlx_lm_f32"]

    /// The implementation that mirrors a reference path stored in the goldens.
    static func implementation(for reference: String, golden: GoldenFile, vlm: VLMGoldenConfig?,
                               weights: Weights) -> (String, QwenLanguageModel)? {
        switch reference {
        case "mlx_lm", "mlx_lm_f32": return ("lm mirror", LMTextModel(config: golden.config, weights: weights))
        case "mlx_vlm", "mlx_vlm_correct":
            guard let vlm else { return nil }
            return ("vlm mirror", VLMTextModel(config: vlm.text, multimodal: vlm.multimodal, weights: weights))
        default: return nil
        }
    }

    public static func check(_ golden: GoldenFile, scenarios only: Set<String>? = nil,
                             modelDirectory: String? = nil) throws -> [ScenarioReport] {
        try checkFile(golden, scenarios: only, modelDirectory: modelDirectory).scenarios
    }

    public static func checkFile(_ golden: GoldenFile, scenarios only: Set<String>? = nil,
                                 modelDirectory: String? = nil) throws -> FileReport {
        try golden.validate(only: only)
        let sources = try golden.modelSources(modelDirectory: modelDirectory)
        let (weights, tower) = (sources.weights, sources.vision)
        let vlm = try golden.vlmConfig()
        var report = FileReport()
        if let vlm {
            report.exact = try checkRopeTables(golden, vlm, model: VLMTextModel(config: vlm.text, multimodal: vlm.multimodal, weights: weights))
        }
        var vlmRuns: [String: ScheduleResult] = [:]
        let chosen = try golden.scenarios().filter { only?.contains($0.name) ?? true }
        // Candidate paths are a user's results, held to the references by the candidate invariants.
        func references(_ s: GoldenScenario) -> [String] { s.paths.filter { !$0.hasPrefix(GoldenCandidate.pathPrefix) } }
        CheckProgress.shared.begin(golden.name, steps: chosen.reduce(0) { $0 + references($1).count })
        var step = 0
        for scenario in chosen {
            var results: [String: (ScheduleInput, ScheduleResult)] = [:]
            for reference in references(scenario) {
                CheckProgress.shared.step(step, "golden parity, \(scenario.name) \(reference)")
                step += 1
                let (scenarioReport, run) = checkScenario(golden, scenario, reference: reference, vlm: vlm, weights: weights,
                                                          tower: tower)
                report.scenarios.append(scenarioReport)
                if let run { results[reference] = run }
            }
            report.comparisons += try comparePaths(golden, scenario, results)
            if let run = results["mlx_vlm"] { vlmRuns[scenario.name] = run.1 }
        }
        report.comparisons += try compareSchedules(golden, vlmRuns)
        if let only {
            let known = Set(report.scenarios.map(\.scenario.name))
            for missing in only.subtracting(known).sorted() {
                throw GoldenError.invalid(file: golden.path, path: "/scenarios/" + missing, reason: "no such scenario")
            }
        }
        return report
    }

    static func checkScenario(_ golden: GoldenFile, _ scenario: GoldenScenario, reference: String,
                              vlm: VLMGoldenConfig?, weights: Weights, tower: VisionTower?) -> (ScenarioReport, (ScheduleInput, ScheduleResult)?) {
        func notRun(_ implementation: String, _ why: String) -> (ScenarioReport, (ScheduleInput, ScheduleResult)?) {
            var report = ScenarioReport(file: golden.name, path: golden.path, scenario: scenario, reference: reference,
                                        implementation: implementation, rows: [])
            report.rows = [ParityRow(file: golden.name, scenario: scenario.name, reference: reference, implementation: implementation,
                                     item: "all", difference: nil, tolerance: tolerance(for: reference), verdict: .notRun,
                                     note: why)]
            return (report, nil)
        }
        guard let (implName, model) = implementation(for: reference, golden: golden, vlm: vlm, weights: weights) else {
            return notRun("-", "no Swift implementation mirrors '\(reference)' yet")
        }
        guard scenario.kind == .image else {
            return checkScenario(golden, scenario, reference: reference, model: model, name: implName)
        }
        return checkImageScenario(golden, scenario, reference: reference, model: model, name: implName, tower: tower)
    }

    /// An image scenario: the vision rows (tower steps, merge, prompt positions), then the language
    /// calls on Swift's own merged embeddings and positions.
    static func checkImageScenario(_ golden: GoldenFile, _ scenario: GoldenScenario, reference: String,
                                   model: QwenLanguageModel, name implName: String,
                                   tower: VisionTower?) -> (ScenarioReport, (ScheduleInput, ScheduleResult)?) {
        var report = ScenarioReport(file: golden.name, path: golden.path, scenario: scenario, reference: reference,
                                    implementation: implName, rows: [])
        guard let tower, let vlmModel = model as? VLMTextModel else {
            report.rows = [ParityRow(file: golden.name, scenario: scenario.name, reference: reference, implementation: implName,
                                     item: "all", difference: nil, tolerance: tolerance(for: reference), verdict: .notRun,
                                     note: tower == nil ? "the golden has no /vision tower for its image prompt"
                                                        : "image prompts run on the vlm mirror only")]
            return (report, nil)
        }
        let visionRows: [ParityRow], substitutes: ScheduleSubstitutes
        do {
            (visionRows, substitutes) = try ImagePromptParity.check(golden, scenario, reference: reference,
                                                                    implementation: implName, model: vlmModel, tower: tower)
        } catch {
            report.error = "\(error)"
            return (report, nil)
        }
        var (checked, run) = checkScenario(golden, scenario, reference: reference, model: model, name: implName,
                                           substitutes: substitutes)
        // After the language run's own determinism row, before its rows: the vision steps feed it.
        checked.rows.insert(contentsOf: visionRows, at: min(1, checked.rows.count))
        return (checked, run)
    }

    /// One scenario path run on `model` (also how invariants run substituted implementations).
    static func checkScenario(_ golden: GoldenFile, _ scenario: GoldenScenario, reference: String,
                              model: QwenLanguageModel, name implName: String,
                              substitutes: ScheduleSubstitutes = ScheduleSubstitutes()) -> (ScenarioReport, (ScheduleInput, ScheduleResult)?) {
        var report = ScenarioReport(file: golden.name, path: golden.path, scenario: scenario, reference: reference,
                                    implementation: implName, rows: [])
        do {
            let input = try scheduleInput(golden, scenario, path: reference, substitutes: substitutes)
            let (result, mismatches) = try Determinism.runTwice(model, input)
            report.rows = [Determinism.row(mismatches, of: report)]
            guard mismatches.isEmpty else { return (report, nil) }
            report.rows += try compare(result, golden: golden, scenario: scenario, reference: reference,
                                       implementation: implName, input: input)
            return (report, (input, result))
        } catch {
            report.error = "\(error)"
            return (report, nil)
        }
    }

    /// The schedule a path was run with: its own `schedule_json` (mlx-vlm paths), otherwise the
    /// scenario kind's.
    public static func scheduleInput(_ golden: GoldenFile, _ scenario: GoldenScenario, path: String = "mlx_lm",
                                     substitutes: ScheduleSubstitutes = ScheduleSubstitutes()) throws -> ScheduleInput {
        if let calls = try golden.schedule(scenario, path: path, substitutes: substitutes) {
            guard calls.map({ $0.call.inputs.first?.count ?? 0 }) == scenario.calls else {
                throw GoldenError.invalid(file: golden.path, path: "/scenarios/\(scenario.name)/\(path) schedule_json",
                                          reason: "call lengths differ from calls_json \(scenario.calls)")
            }
            return .calls(calls)
        }
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
        case .mrope, .image:
            throw GoldenError.invalid(file: golden.path, path: "/scenarios/\(scenario.name)/\(path)",
                                      reason: "an \(scenario.kind.rawValue) scenario path needs its schedule_json")
        }
    }

    static func compare(_ result: ScheduleResult, golden: GoldenFile, scenario: GoldenScenario, reference: String,
                        implementation: String, input: ScheduleInput) throws -> [ParityRow] {
        let base = "/scenarios/\(scenario.name)/\(reference)"
        let padding = input.leftPadding
        let isValid: (Int, Int) -> Bool = { b, t in padding.isEmpty || t >= padding[b] }
        var rows: [ParityRow] = []
        let declared = tolerance(for: reference)
        // A reference run in bf16/f16 activations is held to the bound its own float32 twin sets:
        // Swift computes in float32, so it cannot be closer to the bf16 run than mlx's float32 run
        // of the same weights is. Per item: atol(2e-5 + |bf16 − float32 twin|).
        let twin = golden.provenance.dtype != "float32" ? float32Twin[reference] : nil
        let twinBase = twin.flatMap { scenario.paths.contains($0) ? "/scenarios/\(scenario.name)/\($0)" : nil }
        func row(_ item: String, _ d: Difference?, tolerance: Tolerance, pass: Bool, note: String = "") {
            rows.append(ParityRow(file: golden.name, scenario: scenario.name, reference: reference,
                                  implementation: implementation, item: item, difference: d, tolerance: tolerance,
                                  verdict: pass ? .pass : .fail, note: note))
        }
        func add(_ item: String, _ actual: Tensor, _ expected: Tensor, twin twinValue: Tensor? = nil,
                 filter: ((Int) -> Bool)?) {
            let d = Difference.measure(actual, expected, include: filter)
            var bound = declared
            var note = ""
            if let twinValue {
                let gap = Difference.measure(twinValue, expected, include: filter).maxAbs
                bound = .atol(2e-5 + gap)
                note = "bound: \(twin ?? "") gap \(TextReport.format(gap)) + 2e-5"
            }
            let pass = bound.accepts(d)
            if d.nonFinite > 0 { note = "\(d.nonFinite) non-finite element(s)" }
            else if !pass && d.differingElements > 0 { note += (note.isEmpty ? "" : "; ") + "\(d.differingElements) differ, ULP \(d.histogramText)" }
            row(item, d, tolerance: bound, pass: pass, note: note)
        }
        /// The golden tensor for `actual` (and its float32 twin), or nil after recording a failing
        /// row when the shapes differ.
        func goldenTensor(_ item: String, _ dataset: String, like actual: Tensor) throws -> (Tensor, Tensor?)? {
            let expected = try golden.tensor(dataset)
            guard expected.shape == actual.shape else {
                row(item, nil, tolerance: declared, pass: false,
                    note: "shape: the run produced \(actual.shape), \(dataset) holds \(expected.shape)")
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

        // Positions first, exactly: a position bug is reported as one, not as the logits it spoils.
        if case .calls = input, golden.file.exists(base + "/position_ids") {
            for (item, d, pass, note) in try comparePositions(result, golden: golden, base: base) {
                row(item, d, tolerance: .exact, pass: pass, note: note)
            }
        }

        let perLayer = Array(result.hiddenStates.shape.dropFirst())
        let layerFilter = Difference.positionFilter(shape: perLayer, batchAxis: 0, timeAxis: 1, keep: isValid)
        // Light paths store no per-layer tensors (docs/golden-format.md).
        if golden.file.exists(base + "/hidden_states"),
           let (hidden, hiddenTwin) = try goldenTensor("hidden states", base + "/hidden_states", like: result.hiddenStates) {
            func layer(_ t: Tensor, _ i: Int) -> Tensor { t.slice(axis: 0, start: i, length: 1).reshaped(perLayer) }
            for i in 0..<hidden.shape[0] {
                add(i == 0 ? "embeddings" : "layer \(i - 1)", layer(result.hiddenStates, i), layer(hidden, i),
                    twin: hiddenTwin.map { layer($0, i) }, filter: layerFilter)
            }
        }
        if golden.file.exists(base + "/final_norm") {
            try compare("final norm", result.finalNorm, base + "/final_norm", filter: layerFilter)
        }

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

    /// The positions each call ran with (`position_ids` [3, B, T], `position_ids_rank`) and the
    /// stored `_position_ids` / `_rope_deltas` after it (`state_after_json`), all exact.
    static func comparePositions(_ result: ScheduleResult, golden: GoldenFile,
                                 base: String) throws -> [(String, Difference?, Bool, String)] {
        let stored = try golden.file.readInt32s(base + "/position_ids")
        let ranks = try golden.file.readInt32s(base + "/position_ids_rank").values.map(Int.init)
        guard stored.shape.count == 3, stored.shape[0] == 3, ranks.count == result.positionIds.count else {
            throw GoldenError.invalid(file: golden.path, path: base + "/position_ids",
                                      reason: "shape \(stored.shape) and \(ranks.count) ranks for \(result.positionIds.count) calls")
        }
        let (B, T) = (stored.shape[1], stored.shape[2])
        var mine = [Float](repeating: 0, count: 3 * B * T)
        var notes: [String] = []
        var t0 = 0
        for (call, p) in result.positionIds.enumerated() {
            let rank = p?.rank ?? 0
            if rank != ranks[call] { notes.append("call \(call): rank \(rank), mlx-vlm \(ranks[call])") }
            let L = result.callLengths[call]
            if let p {
                guard p.batch == B, t0 + L <= T else {
                    throw GoldenError.invalid(file: golden.path, path: base + "/position_ids", reason: "call \(call) does not fit [3, \(B), \(T)]")
                }
                let three = p.threeAxes
                for a in 0..<3 { for b in 0..<B { for t in 0..<L { mine[(a * B + b) * T + t0 + t] = Float(three.at(axis: a, row: b, t: t)) } } }
            }
            t0 += L
        }
        let expected = Tensor(shape: stored.shape, data: stored.values.map(Float.init))
        let d = Difference.measure(Tensor(shape: stored.shape, data: mine), expected)
        if d.differingElements > 0 {
            let (axis, rest) = (d.worstIndex / (B * T), d.worstIndex % (B * T))
            notes.append("first worst: axis \(["T", "H", "W"][axis]) row \(rest / T) t \(rest % T): Swift \(Int(mine[d.worstIndex])), mlx-vlm \(Int(expected.data[d.worstIndex]))")
        }
        let positionRow = ("position ids", Optional(d), d.differingElements == 0 && notes.isEmpty, notes.joined(separator: "; "))

        let stateText = try golden.file.stringAttribute("state_after_json", of: base)
        guard let states = try? JSONSerialization.jsonObject(with: Data(stateText.utf8)) as? [[String: Any]],
              states.count == result.stateAfter.count else {
            throw GoldenError.invalid(file: golden.path, path: base + " state_after_json", reason: "not one state per call")
        }
        var mismatch: String?
        for (call, (theirs, ours)) in zip(states, result.stateAfter).enumerated() where mismatch == nil {
            let theirPositions = NestedInts(theirs["position_ids"]), theirDeltas = NestedInts(theirs["rope_deltas"])
            let ourPositions = ours.positionIds.map(NestedInts.init(positions:))
            let ourDeltas = ours.ropeDeltas.map { NestedInts(shape: [$0.count, 1], values: $0) }
            if theirPositions != ourPositions {
                mismatch = "after call \(call): _position_ids Swift \(ourPositions?.description ?? "None"), mlx-vlm \(theirPositions?.description ?? "None")"
            } else if theirDeltas != ourDeltas {
                mismatch = "after call \(call): _rope_deltas Swift \(ourDeltas?.description ?? "None"), mlx-vlm \(theirDeltas?.description ?? "None")"
            }
        }
        return [positionRow, ("stored position state", nil, mismatch == nil, mismatch ?? "\(states.count) calls")]
    }

    // MARK: paths against each other

    static func comparePaths(_ golden: GoldenFile, _ scenario: GoldenScenario,
                             _ results: [String: (ScheduleInput, ScheduleResult)]) throws -> [PathComparison] {
        var out: [PathComparison] = []
        for (kind, a, b) in [(PathComparison.Kind.lmVersusVLM, "mlx_lm", "mlx_vlm"), (.hazard, "mlx_vlm", "mlx_vlm_correct")] {
            guard scenario.paths.contains(a), scenario.paths.contains(b),
                  let (inputA, runA) = results[a], let (_, runB) = results[b] else { continue }
            let baseA = "/scenarios/\(scenario.name)/\(a)", baseB = "/scenarios/\(scenario.name)/\(b)"
            let padding = inputA.leftPadding
            let valid: (Int, Int) -> Bool = { r, t in padding.isEmpty || t >= padding[r] }
            var rows: [PathComparison.Row] = []
            if golden.file.exists(baseA + "/hidden_states"), golden.file.exists(baseB + "/hidden_states") {
                let libA = try golden.tensor(baseA + "/hidden_states"), libB = try golden.tensor(baseB + "/hidden_states")
                let perLayer = Array(libA.shape.dropFirst())
                let filter = Difference.positionFilter(shape: perLayer, batchAxis: 0, timeAxis: 1, keep: valid)
                for i in 1..<libA.shape[0] {
                    func layer(_ t: Tensor) -> Tensor { t.slice(axis: 0, start: i, length: 1).reshaped(perLayer) }
                    rows.append(.init(item: "layer \(i - 1) \(golden.config.layerKinds[i - 1] == .fullAttention ? "attention" : "GDN")",
                                      library: Difference.measure(layer(libA), layer(libB), include: filter).maxAbs,
                                      swift: Difference.measure(layer(runA.hiddenStates), layer(runB.hiddenStates), include: filter).maxAbs))
                }
            }
            // Logits at the positions both paths stored.
            let posA = try golden.ints(baseA + "/logits_positions", expectingRank: 1).values.map(Int.init)
            let posB = try golden.ints(baseB + "/logits_positions", expectingRank: 1).values.map(Int.init)
            let common = posA.filter(posB.contains)
            if !common.isEmpty {
                let libA = try golden.tensor(baseA + "/logits"), libB = try golden.tensor(baseB + "/logits")
                func pick(_ t: Tensor, _ from: [Int]) -> Tensor {
                    Tensor.concatenate(common.map { t.slice(axis: 1, start: from.firstIndex(of: $0)!, length: 1) }, axis: 1)
                }
                func run(_ t: Tensor) -> Tensor { Tensor.concatenate(common.map { t.slice(axis: 1, start: $0, length: 1) }, axis: 1) }
                let la = pick(libA, posA), lb = pick(libB, posB)
                let filter = Difference.positionFilter(shape: la.shape, batchAxis: 0, timeAxis: 1) { r, p in valid(r, common[p]) }
                rows.append(.init(item: "logits", library: Difference.measure(la, lb, include: filter).maxAbs,
                                  swift: Difference.measure(run(runA.logits), run(runB.logits), include: filter).maxAbs))
            }
            out.append(PathComparison(file: golden.name, scenario: scenario.name, kind: kind, rows: rows,
                                      explanation: kind == .hazard ? (scenario.hazard ?? "hazard")
                                                                   : lmVersusVLMExplanation(golden.config, inputA, rows)))
        }
        return out
    }

    /// The same prompt under two schedules, on the mlx_vlm path: the upstream prefill/decode
    /// vector (whole prompt against prefix + last token) and each chunked-MRoPE step against the
    /// longest step (upstream compares steps 16 and 2).
    static func compareSchedules(_ golden: GoldenFile, _ runs: [String: ScheduleResult]) throws -> [PathComparison] {
        var pairs: [(String, String, String)] = [("mrope_full_decode", "mrope_prefix_decode",
            "upstream: model(all)[-1] equals the prefix, then the last token (atol 1e-4); same decodes")]
        for case_ in ["boundary", "later"] {
            let steps = runs.keys.compactMap { name -> Int? in
                let prefix = "mrope_chunked_\(case_)_step"
                return name.hasPrefix(prefix) ? Int(name.dropFirst(prefix.count)) : nil
            }.sorted()
            guard let longest = steps.last else { continue }
            for step in steps.dropLast() {
                pairs.append(("mrope_chunked_\(case_)_step\(longest)", "mrope_chunked_\(case_)_step\(step)",
                              "upstream: chunked MRoPE prefill matches unchunked (atol 1e-4); the chunked scan moves rounding"))
            }
        }
        var out: [PathComparison] = []
        for (a, b, why) in pairs {
            guard let runA = runs[a], let runB = runs[b] else { continue }
            let baseA = "/scenarios/\(a)/mlx_vlm", baseB = "/scenarios/\(b)/mlx_vlm"
            let posA = try golden.ints(baseA + "/logits_positions", expectingRank: 1).values.map(Int.init)
            let posB = try golden.ints(baseB + "/logits_positions", expectingRank: 1).values.map(Int.init)
            let common = posA.filter(posB.contains)
            guard !common.isEmpty else { continue }
            let libA = try golden.tensor(baseA + "/logits"), libB = try golden.tensor(baseB + "/logits")
            func stored(_ t: Tensor, _ from: [Int]) -> Tensor {
                Tensor.concatenate(common.map { t.slice(axis: 1, start: from.firstIndex(of: $0)!, length: 1) }, axis: 1)
            }
            func ran(_ t: Tensor) -> Tensor { Tensor.concatenate(common.map { t.slice(axis: 1, start: $0, length: 1) }, axis: 1) }
            let row = PathComparison.Row(item: "logits", library: Difference.measure(stored(libA, posA), stored(libB, posB)).maxAbs,
                                         swift: Difference.measure(ran(runA.logits), ran(runB.logits)).maxAbs)
            out.append(PathComparison(file: golden.name, scenario: "\(b) vs \(a)", kind: .schedules, rows: [row],
                                      explanation: why + " (positions \(common))"))
        }
        return out
    }

    /// Which blocks make mlx-lm and mlx-vlm differ on this text schedule.
    static func lmVersusVLMExplanation(_ config: TextConfig, _ input: ScheduleInput, _ rows: [PathComparison.Row]) -> String {
        var calls: [Int] = []
        switch input {
        case .single(_, let c, _): calls = c
        case .batch(let r, _, let d): calls = [r.first?.count ?? 0] + d.map { _ in 1 }
        case .calls(let c): calls = c.map { $0.call.inputs.first?.count ?? 0 }
        }
        var parts: [String] = []
        if calls.contains(where: { $0 > 1 }) {
            parts.append("GDN: chunked WY scan (C=64, g clipped at 1e-6) for calls of L>1 vs the sequential recurrence")
        } else {
            parts.append("GDN: the same sequential step (every call has one token)")
        }
        parts.append("attention: MRoPE cos/sin from 1/base^(2i/r) vs mx.fast.rope's exp(-i·ln(base)/(r/2))")
        if case .batch = input {
            parts.append("batch: mlx-vlm runs each row unpadded, mlx-lm masks the padded batch")
        }
        if let first = rows.first(where: { $0.item != "logits" && $0.library > 0 }) {
            parts.append("first gap at \(first.item)")
        }
        return parts.joined(separator: "; ")
    }

    // MARK: get_rope_index and the rotary tables

    /// `model`: the caller's vlm mirror when it has one (a model directory's weights are mapped
    /// once, not once more for the rotary tables).
    static func checkRopeTables(_ golden: GoldenFile, _ vlm: VLMGoldenConfig, model given: VLMTextModel? = nil) throws -> [ParityRow] {
        var rows: [ParityRow] = []
        func row(_ item: String, pass: Bool, note: String) {
            rows.append(ParityRow(file: golden.name, scenario: "(config)", reference: "mlx_vlm", implementation: "vlm mirror",
                                  item: item, difference: nil, tolerance: .exact, verdict: pass ? .pass : .fail, note: note))
        }
        let ropeIndex = RopeIndex(vlm.multimodal)
        for c in try golden.ropeIndexCases() {
            do {
                let (positions, deltas) = try ropeIndex(c.inputIds, imageGrid: c.imageGrid, videoGrid: c.videoGrid,
                                                        attentionMask: c.attentionMask)
                let same = positions == c.positionIds && deltas == c.ropeDeltas
                row("get_rope_index \(c.name)", pass: same,
                    note: same ? "rank \(positions.rank), deltas \(deltas)"
                               : "Swift \(positions) deltas \(deltas); mlx-vlm \(c.positionIds) deltas \(c.ropeDeltas)")
            } catch {
                row("get_rope_index \(c.name)", pass: false, note: "\(error)")
            }
        }
        // The rotary tables mlx-vlm built: the axis selector must be identical; inv_freq is
        // reported bit for bit (an ulp apart would still be within tolerance downstream).
        let model = try given ?? VLMTextModel(config: vlm.text, multimodal: vlm.multimodal, weights: golden.weights())
        if let selector = vlm.effective["position_selector"] as? [Int] {
            row("MRoPE axis selector", pass: selector == model.positionSelector,
                note: "\(model.positionSelector.map { ["T", "H", "W"][$0] }.joined())")
        }
        if let theirs = (vlm.effective["inv_freq"] as? [NSNumber])?.map({ Float($0.doubleValue) }) {
            let ours = model.inverseFrequencies
            let differing = zip(ours, theirs).filter { $0.bitPattern != $1.bitPattern }.count
            row("MRoPE inv_freq", pass: ours.count == theirs.count && differing == 0,
                note: ours.count == theirs.count ? "\(ours.count) frequencies, \(differing) differ in bits" : "\(ours.count) vs \(theirs.count) frequencies")
        }
        return rows
    }
}

/// A nested JSON list of ints as shape + values, for comparing stored state exactly.
struct NestedInts: Equatable, CustomStringConvertible {
    var shape: [Int]
    var values: [Int]

    init(shape: [Int], values: [Int]) {
        self.shape = shape
        self.values = values
    }

    init(positions p: VLMPositions) {
        self.init(shape: p.axes == 1 ? [p.batch, p.length] : [3, p.batch, p.length], values: p.values)
    }

    /// nil for JSON null (or anything that is not a regular nested list of ints).
    init?(_ any: Any?) {
        guard let any, !(any is NSNull) else { return nil }
        var shape: [Int] = []
        var values: [Int] = []
        func walk(_ node: Any, depth: Int) -> Bool {
            if let list = node as? [Any] {
                if shape.count == depth { shape.append(list.count) } else if shape[depth] != list.count { return false }
                return list.allSatisfy { walk($0, depth: depth + 1) }
            }
            guard let n = node as? NSNumber, shape.count == depth else { return false }
            values.append(n.intValue)
            return true
        }
        guard walk(any, depth: 0) else { return nil }
        self.init(shape: shape, values: values)
    }

    var description: String {
        values.count <= 24 ? "\(shape) \(values)" : "\(shape) \(values.prefix(24))…"
    }
}
