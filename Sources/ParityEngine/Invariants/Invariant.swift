import Foundation
import LMMirror
import ParityCore
import ParityTensor
import UnifiedModel
import VLMMirror

// Declared equivalences: each invariant names what it compares, its tolerance class and the
// goldens it runs on, declared once here and run by `qwen-parity check` / `make parity`.

/// The implementations an invariant may run, built once per golden. Tests substitute faulty ones.
public struct Implementations {
    public var lm: QwenLanguageModel
    /// A fresh vlm mirror per scenario: it keeps position state between calls, as mlx-vlm does.
    public var makeVLM: (() -> QwenLanguageModel)?
    /// The unified (patched) model: one object serving prediction after prediction, as upstream,
    /// so state it fails to clear shows up in the next prediction.
    public var unified: UnifiedTextModel?
    /// Why there is no unified model for this golden (its config is not one mlx-vlm accepts).
    public var unifiedUnavailable: String?
    /// The golden's vision tower (/vision), for its image prompts.
    public var vision: VisionTower?
    /// A trace the unified model's MRoPE schedule runs go through: tests inject a sub-step fault
    /// into its vlm route there. Nil in real use.
    public var unifiedTrace: TraceSink?

    public init(lm: QwenLanguageModel, makeVLM: (() -> QwenLanguageModel)? = nil,
                unified: UnifiedTextModel? = nil, unifiedUnavailable: String? = nil, vision: VisionTower? = nil) {
        self.lm = lm
        self.makeVLM = makeVLM
        self.unified = unified
        self.unifiedUnavailable = unifiedUnavailable
        self.vision = vision
    }

    /// Every model from one `Weights`, so they share one packed copy of each projection.
    public static func standard(_ golden: GoldenFile, modelDirectory: String? = nil) throws -> Implementations {
        let sources = try golden.modelSources(modelDirectory: modelDirectory)
        let (weights, tower) = (sources.weights, sources.vision)
        let vlm = try golden.vlmConfig()
        var unified: UnifiedTextModel?, unavailable: String?
        do {
            // Goldens without mlx-vlm paths (model directories) still get the unified model when
            // mlx-vlm would accept their config; its MRoPE route then uses the library's token ids.
            let vlmText = try vlm?.text ?? TextConfig.mlxVLM(json: Data(golden.rawConfigJSON.utf8), source: "\(golden.path): /config raw_json")
            unified = try UnifiedTextModel(config: golden.config, vlmConfig: vlmText,
                                           multimodal: vlm?.multimodal ?? .libraryDefault, weights: weights)
        } catch {
            unavailable = "\(error)"
        }
        return Implementations(lm: LMTextModel(config: golden.config, weights: weights),
                               makeVLM: vlm.map { v in { VLMTextModel(config: v.text, multimodal: v.multimodal, weights: weights) } },
                               unified: unified, unifiedUnavailable: unavailable, vision: tower)
    }
}

/// What an invariant runs on: a golden, the implementations, and an optional scenario filter.
public struct InvariantContext {
    public var golden: GoldenFile
    public var implementations: Implementations
    /// Golden scenarios to include (nil: all).
    public var scenarios: Set<String>?
}

/// One compared pair inside an invariant run (e.g. "step 5" of a chunk sweep).
public struct Measurement {
    public var label: String
    public var difference: Difference
    /// A bound for this pair alone, overriding the invariant's class (a bf16 reference path is held
    /// to 2e-5 plus mlx's own bf16↔float32 gap, see GoldenParity).
    public var tolerance: Tolerance? = nil
    /// Invariants of class `.library`: the reference library's own distance for this pair.
    public var library: LibraryPair? = nil
    public var libraryName: String? = nil
    public var upstreamBound: Float? = nil

    /// Whether this pair holds under `tolerance` (its own, or the invariant's).
    func holds(_ invariantTolerance: Tolerance) -> Bool {
        let t = tolerance ?? invariantTolerance
        guard t == .library else { return t.accepts(difference) }
        guard let library, difference.nonFinite == 0 else { return false }
        return difference.maxAbs == library.maxAbs && difference.differingElements == library.differing
    }
}

public struct Invariant: Sendable {
    /// Stable identifier, used on the command line (`--invariant`).
    public let id: String
    /// What is compared with what.
    public let compares: String
    public let tolerance: Tolerance
    /// Whether a golden holds what this invariant needs (e.g. batch inputs).
    public let appliesTo: @Sendable (GoldenFile) -> Bool
    public let measure: @Sendable (InvariantContext) throws -> [Measurement]

    public init(id: String, compares: String, tolerance: Tolerance,
                appliesTo: @escaping @Sendable (GoldenFile) -> Bool = { _ in true },
                measure: @escaping @Sendable (InvariantContext) throws -> [Measurement]) {
        self.id = id
        self.compares = compares
        self.tolerance = tolerance
        self.appliesTo = appliesTo
        self.measure = measure
    }
}

public struct InvariantRow: Sendable {
    /// `finding`: the port reproduces its library, and the library itself exceeds the bound of
    /// upstream's own tests; a fact about the library, reported apart from port failures.
    public enum Verdict: String, Sendable {
        case pass = "ok", fail = "FAIL", notRun = "NOT RUN", error = "ERROR", finding = "FINDING"
        /// The checkpoint has no such path (see `Absence`); reported with the reason, not a failure.
        case notApplicable = "n/a"
        /// Neither a port failure nor a coverage gap.
        public var isSuccess: Bool { self == .pass || self == .finding || self == .notApplicable }
    }
    public var invariant: String
    public var compares: String
    public var scenario: String
    public var path: String
    public var tolerance: Tolerance
    /// The worst measurement, merged over all of this row's pairs.
    public var worst: Difference?
    public var worstLabel: String = ""
    public var pairs: Int = 0
    public var verdict: Verdict
    public var detail: String = ""
    /// `.library` invariants: the library's largest distance over the pairs, and whose.
    public var libraryWorst: Float? = nil
    public var library: String? = nil
    public var upstreamBound: Float? = nil

    public var reproduce: String { "qwen-parity check \(path) --invariant \(invariant)" }

    /// A golden that could not be loaded at all: every invariant on it is an error.
    public static func unreadable(_ path: String, _ error: Error) -> InvariantRow {
        InvariantRow(invariant: "load", compares: "the golden file loads", scenario: path, path: path,
                     tolerance: .exact, verdict: .error, detail: "\(error)")
    }
}

public enum InvariantRegistry {
    /// Every invariant, in report order.
    public static let all: [Invariant] = [
        Invariant(id: "golden-lm", compares: "lm mirror vs mlx-lm golden, every scenario, layer, logit and cache "
                  + "(bf16 reference runs: atol 2e-5 + mlx's own bf16-to-float32 gap)",
                  tolerance: .exact, measure: goldenParity),
        Invariant(id: "golden-vlm", compares: "vlm mirror vs mlx-vlm golden: text schedules, MRoPE scenarios, the "
                  + "stateful hazards and image prompts from pixel values (every vision tower step, the merge, the prompt's "
                  + "positions), every layer and logit (positions and stored position state exact)",
                  tolerance: .exact, appliesTo: { $0.file.hasAttribute("vlm_json", of: "/config") }, measure: goldenVLM),
        Invariant(id: "vlm-rope-index", compares: "vlm mirror get_rope_index and MRoPE tables vs mlx-vlm (one and several images)",
                  tolerance: .exact, appliesTo: { $0.file.exists("/rope_index") }, measure: ropeIndex),
        Invariant(id: "lm-uncached-vs-cached", compares: "lm mirror: no cache vs fresh prompt cache, whole prompt",
                  tolerance: .exact, measure: uncachedVersusCached),
        Invariant(id: "lm-prefill-vs-prefix-decode", compares: "lm mirror: whole prompt vs prefix then one-token decodes",
                  tolerance: .exact, measure: prefillVersusPrefixDecode),
        Invariant(id: "lm-chunked-sweep", compares: "lm mirror: whole prompt vs chunked prefill at every step 1…L (logits and caches)",
                  tolerance: .exact, measure: chunkedSweep),
        Invariant(id: "lm-batch-vs-single", compares: "lm mirror: left-padded batch (vector offsets) vs each row alone, prompt and decodes",
                  tolerance: .exact, appliesTo: { $0.file.exists("/inputs/batch/token_ids") }, measure: batchVersusSingle),

        // The unified (patched) model, upstream's test list (docs/upstream-change.md). Exact where
        // the same code runs; where the vlm route's chunked GatedDeltaNet scan meets its
        // sequential step, which rounds differently by design, equal to mlx-vlm's own distance
        // for the same pair, measured on the golden's weights (no constant: it depends on the config).
        Invariant(id: "unified-text-vs-lm", compares: "unified model, text only (no stored positions) vs the unpatched lm mirror: "
                  + "every text schedule of the golden (whole, chunked, prefix + decode, token by token, batch), logits, layers, caches",
                  tolerance: .exact, measure: unifiedTextVersusLM),
        Invariant(id: "unified-image-vs-vlm", compares: "unified model, positions stored from the MRoPE prompt vs the vlm mirror driven "
                  + "like mlx-vlm's generate (whole prompt's position_ids each chunk): every stored MRoPE schedule, the image "
                  + "prompt with get_rope_index run by the unified model, whole and [L-1, 1], with decodes, and the pixel-value "
                  + "image prompts on Swift's merged embeddings; logits and layers",
                  tolerance: .exact, appliesTo: hasMRoPEInputs, measure: unifiedImageVersusVLM),
        Invariant(id: "unified-mrope-prefix-decode", compares: "unified model, MRoPE: whole prompt vs prefix + 1 and + 4 one-token calls, "
                  + "and prompt + decode tokens in one call (stitched past the stored positions), then the same decodes; "
                  + "each pair's distance equals mlx-vlm's own for the same two schedules (/library_distances); "
                  + "above upstream's 1e-4 the library's excess is a FINDING",
                  tolerance: .library, appliesTo: hasMRoPEInputs, measure: unifiedMRoPEPrefixDecode),
        Invariant(id: "unified-mrope-chunked-sweep", compares: "unified model, MRoPE: chunked prefill at every step 1..L vs unchunked "
                  + "(upstream cases: boundary inside the image span, image span in a later chunk; and the image prompt), "
                  + "logits of the prompt and 2 decodes; each pair's distance equals mlx-vlm's own for the same two "
                  + "schedules (/library_distances); above upstream's 1e-4 the library's excess is a FINDING",
                  tolerance: .library, appliesTo: hasMRoPEInputs, measure: unifiedMRoPEChunkedSweep),
        Invariant(id: "vision-image-alone-vs-batched", compares: "vision tower: each image of a multi-image prompt alone vs "
                  + "its rows of the one batched tower call (attention stays inside each image's frames)",
                  tolerance: .exact, appliesTo: { $0.file.exists("/vision") }, measure: visionAloneVersusBatched),
        Invariant(id: "unified-no-state-leak", compares: "unified model, one object: a text prompt's logits before and after an image "
                  + "prompt (three schedules), every call after it on the mlx-lm route; the image prompt before and after",
                  tolerance: .exact, appliesTo: { $0.file.exists("/inputs/mrope/image_prompt") && $0.file.exists("/inputs/token_ids") },
                  measure: unifiedNoStateLeak),
        Invariant(id: "unified-multi-image-positions", compares: "unified model: the positions every call used, for each image token and "
                  + "every other token and 2 decodes, vs get_rope_index in mlx-vlm (one- and two-image cases), chunk steps 1..L "
                  + "and one call past the stored end",
                  tolerance: .exact, appliesTo: { $0.file.exists("/rope_index") }, measure: unifiedMultiImagePositions),

        // The float64 oracle (transformers on torch CPU): which MLX path is closer to the true result.
        OracleReport.invariant,
    ]

    static let hasMRoPEInputs: @Sendable (GoldenFile) -> Bool = {
        $0.file.exists("/inputs/mrope") && $0.file.hasAttribute("vlm_json", of: "/config")
    }

    public static func run(_ golden: GoldenFile, only: Set<String>? = nil, scenarios: Set<String>? = nil,
                           modelDirectory: String? = nil, implementations: Implementations? = nil) -> [InvariantRow] {
        var chosen = (all + candidate).filter { (only?.contains($0.id) ?? true) && $0.appliesTo(golden) }
        // What the checkpoint itself lacks is reported, not run (an error would blame the port).
        var excused: [InvariantRow] = []
        for (id, absence) in absences(golden) {
            guard case .notApplicable(let reason) = absence, let i = chosen.firstIndex(where: { $0.id == id }) else { continue }
            excused.append(row(chosen.remove(at: i), golden, verdict: .notApplicable, detail: reason))
        }
        guard !chosen.isEmpty else { return inRegistryOrder(excused) }
        let impls: Implementations
        do {
            impls = try implementations ?? .standard(golden, modelDirectory: modelDirectory)
        } catch {
            return inRegistryOrder(chosen.map { row($0, golden, verdict: .error, detail: "\(error)") } + excused)
        }
        CheckProgress.shared.begin(golden.name, steps: chosen.count)
        return inRegistryOrder(excused + chosen.enumerated().map { i, invariant in
            CheckProgress.shared.step(i, invariant.id)
            do {
                let measurements = try invariant.measure(InvariantContext(golden: golden, implementations: impls, scenarios: scenarios))
                return judge(invariant, measurements, golden)
            } catch {
                return row(invariant, golden, verdict: .error, detail: "\(error)")
            }
        })
    }

    private static func inRegistryOrder(_ rows: [InvariantRow]) -> [InvariantRow] {
        let order = (all + candidate).map(\.id)
        return rows.sorted { (order.firstIndex(of: $0.invariant) ?? order.count) < (order.firstIndex(of: $1.invariant) ?? order.count) }
    }

    /// One row from an invariant's measurements: the worst pair, the verdict under its tolerance
    /// class, and for `.library` invariants the library's own distance and any finding.
    static func judge(_ invariant: Invariant, _ measurements: [Measurement], _ golden: GoldenFile) -> InvariantRow {
        guard let first = measurements.first else {
            return row(invariant, golden, verdict: .notRun, detail: "nothing to compare in this golden")
        }
        var result = row(invariant, golden, verdict: .pass)
        var worst = first.difference
        result.worstLabel = first.label
        for m in measurements.dropFirst() {
            if m.difference.maxAbs > worst.maxAbs || (m.difference.differingElements > 0 && worst.differingElements == 0) {
                result.worstLabel = m.label
            }
            worst = worst.merged(with: m.difference)
        }
        result.worst = worst
        result.pairs = measurements.count
        let failing = measurements.filter { !$0.holds(invariant.tolerance) }
        if let worstLibrary = measurements.compactMap({ $0.library?.maxAbs }).max() {
            result.libraryWorst = worstLibrary
            result.library = measurements.first?.libraryName
            result.upstreamBound = measurements.first?.upstreamBound
        }
        let ownBound = invariant.tolerance.isRatio ? 0
            : measurements.filter { $0.tolerance != nil && $0.tolerance != invariant.tolerance }.count
        if ownBound > 0 { result.detail = "\(ownBound) pair(s) under their own bound (bf16 run: 2e-5 + its float32 twin's gap)" }
        if case .ratio(let k) = invariant.tolerance {
            // The worst ratio, not the largest error, is what the class judges.
            func ratio(_ m: Measurement) -> Float {
                guard case .atol(let bound)? = m.tolerance, bound > 0 else { return .infinity }
                return m.difference.maxAbs / (bound / Float(k))
            }
            if let worstRatio = measurements.max(by: { ratio($0) < ratio($1) }) { result.detail = "worst: \(worstRatio.label)" }
        }
        if !failing.isEmpty {
            result.verdict = .fail
            result.detail = "\(failing.count) of \(measurements.count) failing, first: \(failing[0].label)"
                + (result.detail.isEmpty ? "" : "; " + result.detail)
            if !worst.histogramText.isEmpty { result.detail += "; ULP histogram \(worst.histogramText)" }
            if invariant.tolerance == .library, let f = failing.first, let lib = f.library {
                result.detail += "; Swift \(TextReport.format(f.difference.maxAbs)) (\(f.difference.differingElements) differ) "
                    + "where \(f.libraryName ?? "the library") has \(TextReport.format(lib.maxAbs)) (\(lib.differing) differ)"
            }
        } else if let lib = result.libraryWorst, let bound = result.upstreamBound {
            let name = result.library ?? "the library"
            if lib > bound {
                result.verdict = .finding
                result.detail = "\(name) itself: \(TextReport.format(lib)) > upstream's \(TextReport.format(bound)); "
                    + "reproduced exactly by the port, pair by pair"
            } else {
                result.detail = "= \(name) pair by pair (library ≤ \(TextReport.format(lib)), upstream's bound \(TextReport.format(bound)))"
            }
        }
        return result
    }

    /// A row for every chosen invariant that ran on no golden at all: NOT RUN (a failure), or not
    /// applicable when a given golden's checkpoint has no such path (`absences`, merged over the
    /// goldens; a coverage gap anywhere wins, so a gap is never excused by another file).
    public static func coverage(_ rows: [InvariantRow], only: Set<String>? = nil,
                                absences: [String: Absence] = [:]) -> [InvariantRow] {
        let ran = Set(rows.map(\.invariant))
        return all.filter { (only?.contains($0.id) ?? true) && !ran.contains($0.id) }.map {
            var row = InvariantRow(invariant: $0.id, compares: $0.compares, scenario: "-", path: "-", tolerance: $0.tolerance,
                                   verdict: .notRun, detail: "no golden given holds what this invariant needs")
            switch absences[$0.id] {
            case .notApplicable(let reason)?: row.verdict = .notApplicable; row.detail = reason
            case .coverageGap(let reason)?: row.detail = reason
            case nil: break
            }
            return row
        }
    }

    /// Merges one golden's absences into those of the goldens before it: a coverage gap wins.
    public static func merge(_ absences: inout [String: Absence], _ more: [String: Absence]) {
        for (id, absence) in more {
            if case .coverageGap? = absences[id] { continue }
            if case .notApplicable = absence, absences[id] != nil { continue }
            absences[id] = absence
        }
    }

    private static func row(_ invariant: Invariant, _ golden: GoldenFile, verdict: InvariantRow.Verdict,
                            detail: String = "") -> InvariantRow {
        InvariantRow(invariant: invariant.id, compares: invariant.compares, scenario: golden.name, path: golden.path,
                     tolerance: invariant.tolerance, verdict: verdict, detail: detail)
    }

    // MARK: - Measurements

    static func goldenParity(_ c: InvariantContext) throws -> [Measurement] {
        var out: [Measurement] = []
        let golden = c.golden
        try golden.validate(only: c.scenarios)
        for scenario in try golden.scenarios() where c.scenarios?.contains(scenario.name) ?? true {
          for reference in scenario.paths where GoldenParity.mirroredByLM.contains(reference) {
            let (report, _) = GoldenParity.checkScenario(golden, scenario, reference: reference, model: c.implementations.lm, name: "lm mirror")
            if let error = report.error { throw GoldenError.invalid(file: golden.path, path: "/scenarios/" + scenario.name, reason: error) }
            out += measurements(report.rows, label: scenario.name)
          }
        }
        return out
    }

    static func goldenVLM(_ c: InvariantContext) throws -> [Measurement] {
        guard let makeVLM = c.implementations.makeVLM else { return [] }
        var out: [Measurement] = []
        for scenario in try c.golden.scenarios() where c.scenarios?.contains(scenario.name) ?? true {
            for reference in scenario.paths where reference.hasPrefix("mlx_vlm") {
                let (report, _) = scenario.kind == .image
                    ? GoldenParity.checkImageScenario(c.golden, scenario, reference: reference, model: makeVLM(),
                                                      name: "vlm mirror", tower: c.implementations.vision)
                    : GoldenParity.checkScenario(c.golden, scenario, reference: reference, model: makeVLM(), name: "vlm mirror")
                if let error = report.error {
                    throw GoldenError.invalid(file: c.golden.path, path: "/scenarios/\(scenario.name)/\(reference)", reason: error)
                }
                out += measurements(report.rows, label: "\(scenario.name) \(reference)")
            }
        }
        return out
    }

    static func ropeIndex(_ c: InvariantContext) throws -> [Measurement] {
        guard let vlm = try c.golden.vlmConfig() else { return [] }
        let model = c.implementations.makeVLM?() as? VLMTextModel
        return measurements(try GoldenParity.checkRopeTables(c.golden, vlm, model: model), label: "rope")
    }

    /// Parity rows as measurements; a row without a tensor difference (a shape, a position table)
    /// counts as one differing element when it failed.
    static func measurements(_ rows: [ParityRow], label: String) -> [Measurement] {
        rows.map { row in
            var d = row.difference ?? Difference()
            if row.difference == nil && row.verdict != .pass { d.differingElements = 1; d.maxAbs = .infinity }
            return Measurement(label: "\(label) \(row.item)", difference: d, tolerance: row.tolerance)
        }
    }

    static func prompt(_ golden: GoldenFile) throws -> [Int] {
        guard let tokens = try golden.promptTokens().first, tokens.count >= 2 else {
            throw GoldenError.invalid(file: golden.path, path: "/inputs/token_ids", reason: "needs a prompt of at least 2 tokens")
        }
        return tokens
    }

    static func uncachedVersusCached(_ c: InvariantContext) throws -> [Measurement] {
        let (golden, impls) = (c.golden, c.implementations)
        let tokens = try prompt(golden)
        let uncached = try ScheduleRunner.run(impls.lm, .single(tokens: tokens, calls: [tokens.count], cached: false))
        let cached = try ScheduleRunner.run(impls.lm, .single(tokens: tokens, calls: [tokens.count], cached: true))
        return [Measurement(label: "logits", difference: .measure(cached.logits, uncached.logits)),
                Measurement(label: "hidden states", difference: .measure(cached.hiddenStates, uncached.hiddenStates))]
    }

    static func prefillVersusPrefixDecode(_ c: InvariantContext) throws -> [Measurement] {
        let (golden, impls) = (c.golden, c.implementations)
        let tokens = try prompt(golden)
        let whole = try ScheduleRunner.run(impls.lm, .single(tokens: tokens, calls: [tokens.count], cached: false))
        var out: [Measurement] = []
        for tail in [1, 4] where tail < tokens.count {
            let calls = [tokens.count - tail] + Array(repeating: 1, count: tail)
            let run = try ScheduleRunner.run(impls.lm, .single(tokens: tokens, calls: calls, cached: true))
            out.append(Measurement(label: "prefix \(tokens.count - tail) + \(tail) decodes",
                                   difference: .measure(run.logits, whole.logits)))
        }
        return out
    }

    static func chunkedSweep(_ c: InvariantContext) throws -> [Measurement] {
        let (golden, impls) = (c.golden, c.implementations)
        let tokens = try prompt(golden)
        let whole = try ScheduleRunner.run(impls.lm, .single(tokens: tokens, calls: [tokens.count], cached: true))
        var out: [Measurement] = []
        for step in 1...tokens.count {
            let calls = ScheduleRunner.generateCalls(promptLength: tokens.count, prefillStep: step)
            let run = try ScheduleRunner.run(impls.lm, .single(tokens: tokens, calls: calls, cached: true))
            out.append(Measurement(label: "step \(step) logits", difference: .measure(run.logits, whole.logits)))
            out.append(Measurement(label: "step \(step) caches",
                                   difference: cacheDifference(run.cacheAfterPrompt ?? [], whole.cacheAfterPrompt ?? [])))
        }
        return out
    }

    static func batchVersusSingle(_ c: InvariantContext) throws -> [Measurement] {
        let (golden, impls) = (c.golden, c.implementations)
        guard golden.file.exists("/inputs/batch/token_ids") else { return [] }
        let rows = try golden.tokenRows("/inputs/batch/token_ids")
        let padding = try golden.ints("/inputs/batch/left_padding", expectingRank: 1).values.map { Int($0) }
        let decode = try golden.tokenRows("/inputs/batch/decode_tokens")
        let batch = try ScheduleRunner.run(impls.lm, .batch(rows: rows, leftPadding: padding, decodeSteps: decode))
        var out: [Measurement] = []
        for (r, row) in rows.enumerated() {
            let real = Array(row[padding[r]...]) + decode.map { $0[r] }
            let calls = [row.count - padding[r]] + decode.map { _ in 1 }
            let single = try ScheduleRunner.run(impls.lm, .single(tokens: real, calls: calls, cached: true))
            let batchRow = batch.logits.slice(axis: 0, start: r, length: 1).slice(axis: 1, start: padding[r], length: real.count)
            out.append(Measurement(label: "row \(r) (left padding \(padding[r]))", difference: .measure(batchRow, single.logits)))
        }
        return out
    }

    /// Compares two caches layer by layer; a missing or differently shaped tensor is a total mismatch.
    static func cacheDifference(_ a: [LayerCache], _ b: [LayerCache]) -> Difference {
        var total = Difference()
        func add(_ x: Tensor?, _ y: Tensor?) {
            guard let x, let y, x.shape == y.shape else {
                total.differingElements += max(x?.count ?? 1, y?.count ?? 1)
                total.maxAbs = .infinity
                return
            }
            total = total.merged(with: .measure(x, y))
        }
        guard a.count == b.count else { total.differingElements = 1; total.maxAbs = .infinity; return total }
        for (x, y) in zip(a, b) {
            switch (x, y) {
            case let (.attention(p), .attention(q)):
                add(p.keys, q.keys); add(p.values, q.values)
            case let (.deltaNet(p), .deltaNet(q)):
                add(p.convState, q.convState); add(p.recurrentState, q.recurrentState)
            default:
                total.differingElements += 1; total.maxAbs = .infinity
            }
        }
        return total
    }
}
