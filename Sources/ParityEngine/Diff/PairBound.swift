import ParityCore
import ParityTensor

// How close two diff sides must be. Sides that follow the same library do the same arithmetic
// and must agree bit for bit. Sides that follow different libraries (mlx-lm's and mlx-vlm's
// maths) may part by what the libraries themselves part by on this golden's own weights and
// inputs: item by item, the distance between the golden's stored mlx_lm and mlx_vlm results.
// No global constant: the next config has its own distances.

public struct PairBound: Sendable, CustomStringConvertible {
    /// The tolerance of every item without a measured bound.
    public var uniform: Tolerance
    /// Per item: the library's own max abs distance (a side pair passes at or below it).
    public var measured: [DiffItem: Float] = [:]
    /// Where the bound comes from, printed beside it.
    public var source: String
    /// The token indices at which the library's logits distance was measured (its paths store
    /// logits only there); logits elsewhere are not judged against it.
    public var logitsPositions: [Int]?
    /// Whether a sub-step without a measured distance takes its layer's. Not against the oracle:
    /// a sub-step's own scale (q_rope beside a layer's output) makes the layer's distance no bound.
    public var subStepsFromLayer = true

    public static func uniform(_ t: Tolerance, source: String) -> PairBound { PairBound(uniform: t, source: source) }

    public var isMeasured: Bool { !measured.isEmpty }

    public func tolerance(for item: DiffItem) -> Tolerance {
        if let x = measured[item] { return .atol(x) }
        // A sub-step has no stored counterpart in the other library: bounded by its layer's distance.
        if case let .subStep(layer, _) = item, subStepsFromLayer, let x = measured[.layer(layer)] { return .atol(x) }
        return uniform
    }

    /// Items this pair cannot judge: the libraries' paths differ there, and the golden measured nothing.
    public func unmeasured(_ item: DiffItem) -> Bool {
        guard isMeasured else { return false }
        if case .subStep = item { return tolerance(for: item) == uniform }
        return measured[item] == nil
    }

    public var description: String { isMeasured ? "library" : "\(uniform)" }
}

/// The distances between two reference paths stored in one golden scenario.
public struct LibraryDistances: Sendable {
    public var items: [DiffItem: Float]
    public var source: String
    public var logitsPositions: [Int]

    /// mlx-lm against mlx-vlm as stored in `scenario`; an older or partial golden that lacks
    /// either path gets an error that says to regenerate it, never a silent constant.
    public static func lmVersusVLM(_ golden: GoldenFile, _ scenario: GoldenScenario) throws -> LibraryDistances {
        let missing = ["mlx_lm", "mlx_vlm"].filter { !scenario.paths.contains($0) }
        guard missing.isEmpty else {
            throw GoldenError.invalid(file: golden.path, path: "/scenarios/\(scenario.name)",
                reason: "comparing an mlx-lm side with an mlx-vlm side needs the libraries' own distance, and this scenario stores no \(missing.joined(separator: " or ")) run; regenerate the golden with 'make golden' (or compare sides of one library, or pass --tolerance)")
        }
        let request = DiffRequest(golden: golden, scenario: scenario, subStepLayers: [])
        let lm = try GoldenSide(id: "golden-lm", title: "mlx-lm golden", path: "mlx_lm", numerics: "mlx-lm").capture(request)
        let vlm = try GoldenSide(id: "golden-vlm", title: "mlx-vlm golden", path: "mlx_vlm", numerics: "mlx-vlm").capture(request)
        let valid = try Diff.validity(golden, scenario)
        var items: [DiffItem: Float] = [:]
        let positions = Diff.alignedLogits(lm, vlm)?.2 ?? []
        for row in Diff.layerRows(lm, vlm, config: golden.config, bound: .uniform(.exact, source: ""), valid: valid)
        where row.status != .missing {
            if let d = row.diff { items[row.item] = d.difference.maxAbs }
        }
        return LibraryDistances(items: items, source: "mlx-lm vs mlx-vlm as stored in \(golden.name) · \(scenario.name)",
                                logitsPositions: positions)
    }

    /// The logits' largest library distance; twice it is how far a top-1/top-2 margin can move
    /// between two equally valid implementations.
    public var logits: Float { items[.logits] ?? 0 }
}

/// The float64 oracle as a diff side: its stored path, read like any golden path.
public enum OracleSide {
    public static let id = "golden-f64"
    public static let numerics = "float64"
    static func make() -> GoldenSide {
        GoldenSide(id: id, title: "float64 oracle", path: OracleReport.path, numerics: numerics)
    }
    /// The golden path whose arithmetic a side's library does.
    static let libraryPaths = ["mlx-lm": "mlx_lm", "mlx-vlm": "mlx_vlm"]
}

extension LibraryDistances {
    /// One library's stored path against the stored float64 oracle, item by item, sub-steps
    /// included where both store probes: how far that library itself is from the true result.
    public static func versusOracle(_ golden: GoldenFile, _ scenario: GoldenScenario, library: String) throws -> LibraryDistances {
        guard let path = OracleSide.libraryPaths[library], scenario.paths.contains(path) else {
            throw GoldenError.invalid(file: golden.path, path: "/scenarios/\(scenario.name)",
                reason: "comparing a side with the float64 oracle needs its library's own distance from it, and this scenario stores no \(library) run")
        }
        let request = DiffRequest(golden: golden, scenario: scenario, subStepLayers: Set(golden.config.layerKinds.indices))
        let library = try GoldenSide(id: path, title: path, path: path, numerics: library).capture(request)
        let oracle = try OracleSide.make().capture(request)
        guard !library.hidden.isEmpty, !oracle.hidden.isEmpty else {
            throw GoldenError.invalid(file: golden.path, path: "/scenarios/\(scenario.name)/\(path)",
                                      reason: "no hidden states to measure the distance from the float64 oracle")
        }
        let valid = try Diff.validity(golden, scenario)
        var items: [DiffItem: Float] = [:]
        for row in Diff.layerRows(library, oracle, config: golden.config, bound: .uniform(.exact, source: ""), valid: valid)
        where row.status != .missing {
            if let d = row.diff { items[row.item] = d.difference.maxAbs }
        }
        for layer in golden.config.layerKinds.indices where !(library.subSteps[layer]?.isEmpty ?? true) && !(oracle.subSteps[layer]?.isEmpty ?? true) {
            let table = Diff.subStepTable(layer, library, oracle, sides: (path, OracleSide.id), config: golden.config,
                                          bound: .uniform(.exact, source: ""), valid: valid, calls: scenario.calls)
            for row in table.rows where row.status != .missing {
                if let d = row.diff { items[row.item] = d.difference.maxAbs }
            }
        }
        return LibraryDistances(items: items, source: "\(path) vs the float64 oracle as stored in \(golden.name) · \(scenario.name)",
                                logitsPositions: Diff.alignedLogits(library, oracle)?.2 ?? [])
    }
}

/// Resolves the bound of every side pair of one diff: `--tolerance` when given, exact between
/// sides of one library, else the library's own distances (read once per diff).
public final class PairBounds {
    let golden: GoldenFile
    let scenario: GoldenScenario
    let override: Tolerance?
    private var library: LibraryDistances?
    private var fromOracle: [String: LibraryDistances] = [:]

    public init(golden: GoldenFile, scenario: GoldenScenario, override: Tolerance?) {
        self.golden = golden; self.scenario = scenario; self.override = override
    }

    /// The library a side's arithmetic follows in this scenario: the unified model takes
    /// mlx-vlm's maths on MRoPE and image prompts.
    public func numerics(_ side: DiffSide) -> String {
        (scenario.kind == .mrope || scenario.kind == .image) && side.numerics == "unified" ? "mlx-vlm"
            : side.numerics == "unified" ? "mlx-lm" : side.numerics
    }

    func libraryDistances() throws -> LibraryDistances {
        if let library { return library }
        let measured = try LibraryDistances.lmVersusVLM(golden, scenario)
        library = measured
        return measured
    }

    /// A side's library against the float64 oracle (read once per library).
    func oracleDistances(_ library: String) throws -> LibraryDistances {
        if let d = fromOracle[library] { return d }
        let measured = try LibraryDistances.versusOracle(golden, scenario, library: library)
        fromOracle[library] = measured
        return measured
    }

    /// The other side of a pair with the oracle, or nil when neither side is the oracle.
    func oraclePartner(_ a: DiffSide, _ b: DiffSide) -> DiffSide? {
        numerics(a) == OracleSide.numerics ? b : numerics(b) == OracleSide.numerics ? a : nil
    }

    public func callAsFunction(_ a: DiffSide, _ b: DiffSide) throws -> PairBound {
        if let override { return .uniform(override, source: "--tolerance") }
        if numerics(a) == numerics(b) { return .uniform(.exact, source: "both follow \(numerics(a))") }
        if let other = oraclePartner(a, b) {
            // A side may be as far from the true result as its own library is, and no farther.
            let d = try oracleDistances(numerics(other))
            return PairBound(uniform: .exact, measured: d.items, source: d.source, logitsPositions: d.logitsPositions,
                             subStepsFromLayer: false)
        }
        let library = try libraryDistances()
        return PairBound(uniform: .exact, measured: library.items, source: library.source,
                         logitsPositions: library.logitsPositions)
    }

    public func noiseFloor(_ a: DiffSide, _ b: DiffSide) throws -> (value: Float, source: String) {
        if let override { return (0, "--tolerance \(override): every flip counts") }
        if numerics(a) == numerics(b) { return (0, "both follow \(numerics(a)): every flip counts") }
        if let other = oraclePartner(a, b) {
            let d = try oracleDistances(numerics(other))
            return (2 * d.logits, "2 × max |Δ logit| of \(d.source)")
        }
        let library = try libraryDistances()
        return (2 * library.logits, "2 × max |Δ logit| of \(library.source)")
    }
}
