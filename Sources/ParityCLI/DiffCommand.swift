import ArgumentParser
import Foundation
import ParityCore
import ParityEngine

/// Compares two sides on one golden scenario, layer by layer, then inside the first divergent
/// layer; a third side adds a 2-of-3 vote on which side departs.
public struct DiffCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Per-layer diff of two sides on a golden scenario: first divergent layer and sub-step, logit metrics, and a 2-of-3 vote.",
        discussion: """
        Sides: \(DiffSides.registered.map { "\($0.id) (\($0.summary))" }.joined(separator: "; ")).
        Sides that follow the same library (golden-lm and lm; golden-vlm and vlm) are compared bit for bit.
        Sides that follow different libraries are bounded item by item by the libraries' own distance on
        this golden (its stored mlx_lm and mlx_vlm results), and the top-1 noise floor is twice their logits
        distance; the report says where each came from. Goldens store sub-steps as probes in one
        GatedDeltaNet and one attention layer of a scenario of each kind (see 'inspect FILE --group /probes');
        implementation sides trace every layer and every scenario.
        candidate:<name> is a user's implementation stored in the golden by make_golden.py --candidate; it takes the \
        numerics of the reference it must equal on the scenario (mlx-lm on text schedules in the unified design, \
        mlx-vlm on MRoPE and image prompts), so it is compared with that reference's sides bit for bit.
        Exit status: 0 when a and b agree (and no side departs in the vote), 1 when they differ, 2 when the
        diff cannot run (64 for a bad command line).
        """)

    @Argument(help: "A golden file (.h5) written by tools/make_golden.py.")
    var file: String

    @Option(name: .long, help: "The golden scenario to run and compare (e.g. full_prefill).")
    var scenario: String

    @Option(name: .customLong("a"), help: "The reference side (default: golden-lm, or golden-vlm for a scenario mlx-lm did not run).")
    var a: String?

    @Option(name: .customLong("b"), help: "The compared side (default: lm, or vlm for a scenario mlx-lm did not run).")
    var b: String?

    @Option(name: .customLong("c"), help: "A third side: the diff ends with a 2-of-3 vote on which side departs.")
    var c: String?

    @Option(name: .long, help: "Show this layer's sub-steps (default: the first divergent layer's).")
    var layer: Int?

    @Option(name: .long, help: ArgumentHelp("Debug: nudge one sub-step of side b in every call, e.g. 2:conv_out.", valueName: "layer:substep"))
    var fault: String?
    @Option(name: .customLong("fault-on"), help: ArgumentHelp("The sides --fault nudges, a comma list of a, b, c (default b); "
        + "'a,b' with --c golden-f64 shows the oracle naming a fault both mirrors share.", valueName: "sides"))
    var faultOn: String = "b"

    @Option(name: .long, help: ArgumentHelp("Override the pair's tolerance: exact, ulp:N or atol:X.", valueName: "tolerance"))
    var tolerance: String?

    @Flag(name: .long, help: "Print JSON instead of tables.")
    var json = false

    public init() {}

    public func validate() throws {
        for side in [a, b, c].compactMap({ $0 }) where !DiffSides.recognises(side) {
            throw ValidationError("unknown side '\(side)'; known: \(DiffSides.names.joined(separator: ", ")), candidate:<name>")
        }
        if let fault { _ = try parse(fault: fault) }
        let faulted = faultOn.split(separator: ",").map(String.init)
        if let bad = faulted.first(where: { !["a", "b", "c"].contains($0) }) {
            throw ValidationError("--fault-on: unknown side '\(bad)'; expected a comma list of a, b, c")
        }
        if faulted.contains("c") && c == nil { throw ValidationError("--fault-on c needs --c") }
        if faultOn != "b" && fault == nil { throw ValidationError("--fault-on needs --fault") }
        if let tolerance { _ = try parse(tolerance: tolerance) }
    }

    func parse(fault text: String) throws -> SubStepFault {
        do { return try SubStepFault(parsing: text) } catch { throw ValidationError("\(error)") }
    }

    func parse(tolerance text: String) throws -> Tolerance {
        if text == "exact" { return .exact }
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        if parts.count == 2, parts[0] == "ulp", let k = Int(parts[1]), k >= 0 { return .ulp(k) }
        if parts.count == 2, parts[0] == "atol", let x = Float(parts[1]), x >= 0 { return .atol(x) }
        throw ValidationError("bad tolerance '\(text)': expected exact, ulp:N or atol:X")
    }

    public func run() throws {
        let report: DiffReport
        do {
            let golden = try GoldenFile(path: file)
            // Image prompts and the MRoPE scenarios exist only as mlx-vlm runs.
            let textRun = try golden.scenario(scenario).paths.contains("mlx_lm")
            let a = self.a ?? (textRun ? "golden-lm" : "golden-vlm")
            let b = self.b ?? (textRun ? "lm" : "vlm")
            var cached: GoldenFile.ModelSources?
            let sources = { () throws -> GoldenFile.ModelSources in
                if let cached { return cached }
                let loaded = try golden.modelSources()
                cached = loaded
                return loaded
            }
            var sides = try ([a, b] + (c.map { [$0] } ?? [])).map { try DiffSides.make($0, golden: golden, sources: sources) }
            var command = "qwen-parity diff \(file) --scenario \(scenario) --a \(a) --b \(b)"
            if let fault {
                let f = try parse(fault: fault)
                try f.validate(for: golden.config)
                for letter in Set(faultOn.split(separator: ",").map(String.init)).sorted() {
                    let index = ["a": 0, "b": 1, "c": 2][letter]!
                    guard let implementation = sides[index] as? ImplementationSide else { throw DiffError.cannotFault(sides[index].id) }
                    sides[index] = implementation.faulted(f)
                }
                command += " --fault \(f)" + (faultOn == "b" ? "" : " --fault-on \(faultOn)")
            }
            if let c { command += " --c \(c)" }
            if let layer { command += " --layer \(layer)" }
            if let tolerance { command += " --tolerance \(tolerance)" }
            report = try Diff.run(golden, scenario: scenario, sides: sides, layer: layer,
                                  tolerance: try tolerance.map(parse(tolerance:)), reproduce: command)
        } catch let error as ValidationError {
            throw error
        } catch {
            FileHandle.standardError.write(Data("qwen-parity diff: error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if json {
            print(String(decoding: try DiffText.json(report), as: UTF8.self))
        } else {
            print(DiffText.render(report, style: .detect()))
        }
        if !report.agrees { throw ExitCode(1) }
    }
}
