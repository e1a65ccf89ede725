import Foundation
import GoldenIO
import ParityCore
import ParityTensor

// Candidate paths: a user's Python implementation run by tools/golden_candidates.py through the
// golden's scenarios and stored as `/scenarios/<s>/candidate:<name>` (docs/golden-format.md,
// "Candidate paths"). Swift cannot run it, so its invariants compare stored results with stored
// references: the unified model's invariants with the candidate in the unified model's place.

/// One candidate stored in a golden: what `/candidates/<name>` records.
public struct GoldenCandidate: Sendable {
    public static let pathPrefix = "candidate:"
    public var name: String
    /// The adapter file as given (repository-relative when inside it) and its sha256.
    public var adapter: String
    public var adapterSHA256: String
    /// The reference its text route must equal: "mlx_lm" (the unified design) or "mlx_vlm".
    public var textReference: String
    /// "state" (the prompt's positions stored once) or "per_call".
    public var positions: String
    /// What the adapter reported about itself (describe()), as JSON.
    public var describe: String
    /// Whether it reported the positions each call used, and the sub-steps it recorded.
    public var providesPositions: Bool
    public var subSteps: [String]
    /// Scenarios it did not run, with the reason.
    public var skipped: [(scenario: String, reason: String)]

    /// `candidate:<name>`: the path group under each scenario, and the diff side.
    public var path: String { Self.pathPrefix + name }

    /// The numerics a candidate claims, those of the references it must equal: the unified
    /// design's ("unified": mlx-lm on text, mlx-vlm on MRoPE and image prompts; see PairBounds),
    /// or mlx-vlm's throughout.
    public var numerics: String { textReference == "mlx_lm" ? "unified" : "mlx-vlm" }
}

extension GoldenFile {
    /// Every candidate stored in this golden (none for the committed goldens).
    public func candidates() throws -> [GoldenCandidate] {
        guard file.isGroup("/candidates") else { return [] }
        return try file.children(of: "/candidates").filter { file.isGroup("/candidates/" + $0) }.map(candidate)
    }

    public func candidate(_ name: String) throws -> GoldenCandidate {
        let g = "/candidates/" + name
        guard file.isGroup(g) else {
            let known = (try? candidates().map(\.name)) ?? []
            throw GoldenError.invalid(file: path, path: g, reason: "no such candidate; stored: "
                                      + (known.isEmpty ? "none (generate with make golden ... CANDIDATE=adapter.py)" : known.joined(separator: ", ")))
        }
        func text(_ key: String) throws -> String { try file.stringAttribute(key, of: g) }
        func json(_ key: String) throws -> Any {
            let raw = try text(key)
            guard let value = try? JSONSerialization.jsonObject(with: Data(raw.utf8)) else {
                throw GoldenError.invalid(file: path, path: "\(g) \(key)", reason: "not JSON: \(raw.prefix(80))")
            }
            return value
        }
        let reference = try text("text_reference")
        guard ["mlx_lm", "mlx_vlm"].contains(reference) else {
            throw GoldenError.invalid(file: path, path: g + " text_reference", reason: "expected mlx_lm or mlx_vlm, found '\(reference)'")
        }
        guard let provided = try json("provided_json") as? [String: Any], let positions = provided["positions"] as? Bool,
              let steps = provided["substeps"] as? [String] else {
            throw GoldenError.invalid(file: path, path: g + " provided_json", reason: "expected {\"positions\": bool, \"substeps\": [names]}")
        }
        guard let skipped = try json("skipped_json") as? [[String: String]] else {
            throw GoldenError.invalid(file: path, path: g + " skipped_json", reason: "expected a list of {scenario, reason}")
        }
        return GoldenCandidate(name: name, adapter: try text("adapter"), adapterSHA256: try text("adapter_sha256"),
                               textReference: reference, positions: try text("positions"), describe: try text("describe_json"),
                               providesPositions: positions, subSteps: steps,
                               skipped: skipped.map { ($0["scenario"] ?? "?", $0["reason"] ?? "") })
    }

    /// The reference path a candidate's results on `scenario` are held to (its `reference` attribute;
    /// text schedules: the candidate's declared text route), or nil when the golden lacks it.
    func candidateReference(_ candidate: GoldenCandidate, _ scenario: GoldenScenario) throws -> String? {
        let group = "/scenarios/\(scenario.name)/\(candidate.path)"
        let ran = try file.stringAttribute("reference", of: group)
        let reference = scenario.kind == .single || scenario.kind == .batch ? candidate.textReference : ran
        return scenario.paths.contains(reference) ? reference : nil
    }
}

extension InvariantRegistry {
    /// Run on goldens that hold a candidate (`/candidates`); `coverage` does not ask for them elsewhere.
    public static let candidate: [Invariant] = [
        Invariant(id: "candidate-text", compares: "candidate, text schedules with no stored positions (whole, chunked, prefix + "
                  + "decode, token by token, left-padded batch) vs the reference its text route declares (mlx-lm in the "
                  + "unified design): logits and the caches after the prompt",
                  tolerance: .exact, appliesTo: hasCandidate, measure: candidateText),
        Invariant(id: "candidate-image-vs-vlm", compares: "candidate, MRoPE and image prompts (positions stored from the prompt, "
                  + "then decodes) vs the mlx-vlm path that ran the same generate-style calls: logits",
                  tolerance: .exact, appliesTo: hasCandidate, measure: candidateImageVersusVLM),
        Invariant(id: "candidate-mrope-prefix-decode", compares: "candidate, the upstream prefill/decode vector (prefix + one-token "
                  + "calls, and the whole prompt in one call, then decodes) vs mlx-vlm on the same calls; exact, since the "
                  + "candidate must equal mlx-vlm, whose own chunked-vs-sequential drift is in its stored results",
                  tolerance: .exact, appliesTo: hasCandidate, measure: candidateMRoPEPrefixDecode),
        Invariant(id: "candidate-mrope-chunked-sweep", compares: "candidate, chunked MRoPE prefill at every step (upstream's two "
                  + "cases) vs mlx-vlm on the same chunks; exact, as above",
                  tolerance: .exact, appliesTo: hasCandidate, measure: candidateMRoPEChunkedSweep),
        Invariant(id: "candidate-layers", compares: "candidate, every scenario it ran: the embeddings, every layer's output and "
                  + "the final norm vs the same reference as above (where the reference stores them); qwen-parity diff "
                  + "--b candidate:<name> shows where they part",
                  tolerance: .exact, appliesTo: hasCandidate, measure: candidateLayers),
        Invariant(id: "candidate-no-state-leak", compares: "candidate, one model object: every text schedule run again after the "
                  + "MRoPE and image prompts, and every MRoPE prompt again after that, vs its first run",
                  tolerance: .exact, appliesTo: hasCandidate, measure: candidateNoStateLeak),
        Invariant(id: "candidate-multi-image-positions", compares: "candidate: the positions every call used (as the adapter "
                  + "reports them), for each image token and every other token and decode, vs the positions mlx-vlm used on "
                  + "the same calls (one- and two-image prompts, every chunking stored)",
                  tolerance: .exact, appliesTo: hasCandidate, measure: candidateMultiImagePositions),
    ]

    static let hasCandidate: @Sendable (GoldenFile) -> Bool = { $0.file.isGroup("/candidates") }

    /// A tensor the reference stores and the candidate does not: never a pass.
    static func notProvided(_ label: String) -> Measurement {
        var d = Difference()
        d.compared = 1; d.differingElements = 1; d.maxAbs = .infinity
        return Measurement(label: label + ": not provided by the candidate", difference: d)
    }

    static func mismatch(_ label: String) -> Measurement {
        var d = Difference()
        d.compared = 1; d.differingElements = 1; d.maxAbs = .infinity
        return Measurement(label: label, difference: d)
    }

    /// The candidate's stored results on one scenario against a reference path's, item by item:
    /// logits at the positions both store, hidden states and final norm (when the reference stores
    /// them), caches after the prompt (when it stores them). Batch rows: real tokens only.
    enum StoredItems { case logitsAndCaches, layers }

    static func storedPairs(_ golden: GoldenFile, _ scenario: GoldenScenario, reference: String,
                            candidate: GoldenCandidate, label: String, items: StoredItems) throws -> [Measurement] {
        let a = "/scenarios/\(scenario.name)/\(reference)", b = "/scenarios/\(scenario.name)/\(candidate.path)"
        var keep: ((Int, Int) -> Bool)?
        if scenario.kind == .batch {
            let padding = try golden.ints("/inputs/batch/left_padding", expectingRank: 1).values.map { Int($0) }
            keep = { row, t in row >= padding.count || t >= padding[row] }
        }
        func pair(_ item: String, _ x: Tensor, _ y: Tensor, batchAxis: Int, timeAxis: Int?,
                  positions: [Int]? = nil) -> Measurement {
            guard x.shape == y.shape else { return mismatch("\(label) \(item): shape \(y.shape), reference \(x.shape)") }
            var filter: ((Int) -> Bool)?
            if let keep, let timeAxis {
                filter = Difference.positionFilter(shape: x.shape, batchAxis: batchAxis, timeAxis: timeAxis) { row, t in
                    keep(row, positions.map { $0[t] } ?? t)
                }
            }
            return Measurement(label: "\(label) \(item)", difference: .measure(y, x, include: filter))
        }
        var out: [Measurement] = []
        if items == .layers {
            for (item, name, axes) in [("hidden states", "hidden_states", (1, 2)), ("final norm", "final_norm", (0, 1))]
            where golden.file.exists(a + "/" + name) {
                guard golden.file.exists(b + "/" + name) else { out.append(notProvided("\(label) \(item)")); continue }
                out.append(pair(item, try golden.tensor(a + "/" + name), try golden.tensor(b + "/" + name),
                                batchAxis: axes.0, timeAxis: axes.1))
            }
            return out
        }
        // Logits at the positions both store.
        let pa = try golden.ints(a + "/logits_positions", expectingRank: 1).values.map(Int.init)
        let pb = try golden.ints(b + "/logits_positions", expectingRank: 1).values.map(Int.init)
        let index = Dictionary(pb.enumerated().map { ($1, $0) }, uniquingKeysWith: { x, _ in x })
        let common = pa.enumerated().compactMap { i, t in index[t].map { (i, $0, t) } }
        if common.isEmpty {
            out.append(mismatch("\(label) logits: no position stored by both"))
        } else {
            func pick(_ t: Tensor, _ columns: [Int]) -> Tensor {
                Tensor.concatenate(columns.map { t.slice(axis: 1, start: $0, length: 1) }, axis: 1)
            }
            let (x, y) = (try golden.tensor(a + "/logits"), try golden.tensor(b + "/logits"))
            guard x.rank == 3, y.rank == 3, x.shape[1] == pa.count, y.shape[1] == pb.count else {
                throw GoldenError.invalid(file: golden.path, path: b + "/logits", reason: "shape \(y.shape) does not match its logits_positions (\(pb.count))")
            }
            out.append(pair("logits", pick(x, common.map(\.0)), pick(y, common.map(\.1)), batchAxis: 0, timeAxis: 1,
                            positions: common.map(\.2)))
        }
        if golden.file.isGroup(a + "/cache_after") {
            for layer in try golden.file.children(of: a + "/cache_after") {
                for name in try golden.file.children(of: "\(a)/cache_after/\(layer)") {
                    let (x, y) = ("\(a)/cache_after/\(layer)/\(name)", "\(b)/cache_after/\(layer)/\(name)")
                    let item = "cache \(layer) \(name)"
                    guard golden.file.exists(y) else { out.append(notProvided("\(label) \(item)")); continue }
                    // Cached rows of a left-padded batch: the padding is whatever each side left there.
                    out.append(pair(item, try golden.tensor(x), try golden.tensor(y), batchAxis: 0,
                                    timeAxis: name == "keys" || name == "values" ? 2 : nil))
                }
            }
        }
        return out
    }

    /// Each candidate with the scenarios it ran (and the filter allows) whose kind passes `kinds`.
    static func candidateRuns(_ c: InvariantContext, _ select: (GoldenScenario) -> Bool)
        throws -> [(GoldenCandidate, GoldenScenario)] {
        var out: [(GoldenCandidate, GoldenScenario)] = []
        let scenarios = try c.golden.scenarios()
        for candidate in try c.golden.candidates() {
            for scenario in scenarios where (c.scenarios?.contains(scenario.name) ?? true)
                && scenario.paths.contains(candidate.path) && select(scenario) {
                out.append((candidate, scenario))
            }
        }
        return out
    }

    static func isText(_ s: GoldenScenario) -> Bool { s.kind == .single || s.kind == .batch }

    /// Stored pairs against each scenario's reference; a reference the golden lacks is no pair.
    static func againstReferences(_ c: InvariantContext, items: StoredItems = .logitsAndCaches,
                                  _ select: (GoldenScenario) -> Bool) throws -> [Measurement] {
        var out: [Measurement] = []
        for (candidate, scenario) in try candidateRuns(c, select) {
            guard let reference = try c.golden.candidateReference(candidate, scenario) else { continue }
            out += try storedPairs(c.golden, scenario, reference: reference, candidate: candidate,
                                   label: "\(candidate.path) \(scenario.name) vs \(reference)", items: items)
        }
        return out
    }

    static func candidateText(_ c: InvariantContext) throws -> [Measurement] {
        try againstReferences(c, isText)
    }

    static func candidateImageVersusVLM(_ c: InvariantContext) throws -> [Measurement] {
        try againstReferences(c) { !isText($0) }
    }

    static func candidateMRoPEPrefixDecode(_ c: InvariantContext) throws -> [Measurement] {
        try againstReferences(c) { ["mrope_prefix_decode", "mrope_full_decode"].contains($0.name) }
    }

    static func candidateMRoPEChunkedSweep(_ c: InvariantContext) throws -> [Measurement] {
        try againstReferences(c) { $0.name.hasPrefix("mrope_chunked_") }
    }

    static func candidateLayers(_ c: InvariantContext) throws -> [Measurement] {
        try againstReferences(c, items: .layers) { _ in true }
    }

    static func candidateNoStateLeak(_ c: InvariantContext) throws -> [Measurement] {
        var out: [Measurement] = []
        for (candidate, scenario) in try candidateRuns(c, { _ in true }) {
            let base = "/scenarios/\(scenario.name)/\(candidate.path)"
            let label = "\(candidate.path) \(scenario.name) " + (isText(scenario) ? "after the MRoPE prompts" : "after the text prompts again")
            guard c.golden.file.exists(base + "/logits_repeat") else { out.append(notProvided(label)); continue }
            let (first, again) = (try c.golden.tensor(base + "/logits"), try c.golden.tensor(base + "/logits_repeat"))
            guard first.shape == again.shape else { out.append(mismatch("\(label): shape \(again.shape) vs \(first.shape)")); continue }
            out.append(Measurement(label: label + " vs its first run", difference: .measure(again, first)))
        }
        return out
    }

    /// Per call, the positions the candidate reports against those mlx-vlm resolved on the same
    /// calls: image-token columns apart from the others. A call on the text route (rank 0) where
    /// mlx-vlm used positions is a mismatch.
    static func candidateMultiImagePositions(_ c: InvariantContext) throws -> [Measurement] {
        let golden = c.golden
        let imageToken = try golden.vlmConfig()?.multimodal.imageTokenId
        var out: [Measurement] = []
        for (candidate, scenario) in try candidateRuns(c, { !isText($0) }) {
            guard let reference = try golden.candidateReference(candidate, scenario) else { continue }
            let a = "/scenarios/\(scenario.name)/\(reference)", b = "/scenarios/\(scenario.name)/\(candidate.path)"
            let label = "\(candidate.path) \(scenario.name) vs \(reference)"
            guard golden.file.exists(a + "/position_ids") else { continue }
            guard golden.file.exists(b + "/position_ids") else { out.append(notProvided("\(label) positions")); continue }
            let (pa, pb) = (try golden.ints(a + "/position_ids", expectingRank: 3), try golden.ints(b + "/position_ids", expectingRank: 3))
            let (ra, rb) = (try golden.ints(a + "/position_ids_rank", expectingRank: 1).values,
                            try golden.ints(b + "/position_ids_rank", expectingRank: 1).values)
            guard pa.shape == pb.shape, ra.count == rb.count, ra.count == scenario.calls.count else {
                out.append(mismatch("\(label) positions: shape \(pb.shape) over \(rb.count) calls, reference \(pa.shape) over \(ra.count)"))
                continue
            }
            if let call = ra.indices.first(where: { ra[$0] > 0 && rb[$0] == 0 }) {
                out.append(mismatch("\(label) positions: call \(call + 1) took the text route where mlx-vlm used positions"))
            }
            // Token ids of every column, from the schedule the reference ran.
            let ids = (try golden.schedule(scenario, path: reference) ?? []).flatMap { $0.call.inputs.first ?? [] }
            let (B, T) = (pa.shape[1], pa.shape[2])
            let isImage = { (t: Int) in B == 1 && t < ids.count && imageToken.map { ids[t] == $0 } == true }
            for (part, wanted) in [("image tokens", true), ("other tokens and decodes", false)] {
                let columns = (0..<T).filter { isImage($0) == wanted }
                if columns.isEmpty { continue }
                func gather(_ p: H5Array<Int32>) -> Tensor {
                    Tensor(shape: [3, B, columns.count], data: (0..<3).flatMap { axis in (0..<B).flatMap { row in
                        columns.map { Float(p.values[(axis * B + row) * T + $0]) } } })
                }
                out.append(Measurement(label: "\(label) positions, \(part)", difference: .measure(gather(pb), gather(pa))))
            }
        }
        return out
    }
}

// MARK: - diff side

/// A candidate's stored results as a `qwen-parity diff` side: `candidate:<name>`. Its numerics are
/// those of the reference it must equal on the scenario (mlx-lm on text schedules in the unified
/// design, mlx-vlm on MRoPE and image prompts), so that pair is compared bit for bit. The vision
/// tower's steps are the library's, not the candidate's: their tensors are left out (the rows show
/// them missing on this side; the step list stays, so every pair of a vote lists the same items).
public struct CandidateSide: DiffSide {
    public let id: String
    public let title: String
    public let numerics: String
    let stored: GoldenSide
    public var isGolden: Bool { true }

    public init(golden: GoldenFile, name: String) throws {
        let candidate = try golden.candidate(name)
        id = candidate.path
        title = "candidate \(candidate.name)"
        numerics = candidate.numerics
        stored = GoldenSide(id: candidate.path, title: title, path: candidate.path, numerics: numerics)
    }

    public func capture(_ request: DiffRequest) throws -> DiffCapture {
        var c = try stored.capture(request)
        c.vision = [:]
        return c
    }
}
