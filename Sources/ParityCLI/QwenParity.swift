import ArgumentParser
import Foundation
import ParityEngine

public struct QwenParity: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "qwen-parity",
        abstract: "Checks Swift implementations of Qwen 3.5 against golden tensors from mlx-lm and mlx-vlm.",
        subcommands: [Check.self, DiffCommand.self, InspectCommand.self, Bench.self, BenchEngine.self, BenchKernel.self])
    public init() {}
}

/// Runs the mirrors on golden files and compares every traced layer and the logits.
public struct Check: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Run the invariants on golden files: golden parity layer by layer, then every schedule equivalence.",
        discussion: """
            Invariants: \(InvariantRegistry.all.map(\.id).joined(separator: ", ")); on goldens holding a \
            candidate path (make_golden.py --candidate): \(InvariantRegistry.candidate.map(\.id).joined(separator: ", ")). \
            Each row of the \
            final table is one invariant on one golden, with its tolerance class (exact, ulp(k), \
            atol(x), or "= library": each pair's distance equals the reference library's own for \
            the same two schedules, stored in the golden by the generator), the measured value and \
            a verdict; an invariant that runs on no golden at all is NOT RUN and counts as failed. \
            FINDING is a verdict about the library, not the port: the port reproduces the library \
            pair by pair, and the library's own distance exceeds the bound of upstream's tests \
            (1e-4); findings are listed apart in the summary and the reports. Golden parity runs every scenario twice first: an \
            implementation that differs from itself is NONDETERMINISTIC and is not compared.

            Before anything is compared, each golden's provenance is checked: the sha256 of the \
            generator that wrote it against tools/make_golden.py, the reference versions against \
            the pins in tools/requirements.txt (both found by walking up from the golden, or given \
            with --generator / --requirements) and, for goldens made from an MLX model directory, \
            the sha256 of the directory's files. A golden that fails any of these is STALE: its \
            scenarios are not run, what changed is listed, and the exit status is 3 (unless \
            something also failed, which gives 1). Regenerate it with 'make golden'.

            MLX model directories (config.json + model*.safetensors as mlx-lm saves them, bf16 or \
            affine-quantized): 'check DIR' or 'check --model DIR' checks the golden DIR/parity.h5 \
            written by 'make_golden.py --make-checkpoint' with the weights loaded from DIR; with \
            golden files given, '--model DIR' replaces the directory recorded in those goldens \
            (e.g. one made with 'make_golden.py --from-model DIR --out FILE').

            Everything this command reports goes to standard output, in order; an unreadable or \
            invalid golden is one ERROR row naming the file, the dataset or key and what was \
            expected. Standard error is left to command-line usage errors. Exit status: 0 all \
            passed, 1 a comparison failed or a file could not be read, 3 no failure but a golden \
            is stale, 4 no failure and nothing stale but a library finding, 64 a usage error.
            """)

    @Argument(help: "Golden files (.h5) written by tools/make_golden.py, or MLX model directories holding a parity.h5.")
    var files: [String] = []

    @Option(name: .long, help: "Only this golden scenario for golden parity (repeatable).")
    var scenario: [String] = []

    @Option(name: .long, help: "Only this invariant (repeatable).")
    var invariant: [String] = []

    @Flag(name: .long, inversion: .prefixedNo, help: "Print the per-layer table of every golden-parity scenario.")
    var layers = true

    @Option(name: .long, help: "Folder for parity.json, parity-junit.xml and parity.md.")
    var reportDir = "reports"

    @Option(name: .long, help: "An MLX model directory (repeatable; see the discussion).")
    var model: [String] = []

    @Option(name: .long, help: "The generator whose sha256 goldens must carry (default: tools/make_golden.py above the golden).")
    var generator: String?

    @Option(name: .long, help: "The requirements file with the reference pins (default: tools/requirements.txt above the golden).")
    var requirements: String?

    @Flag(name: .long, help: "Compare stale goldens anyway (still reported stale, still exit 3).")
    var ignoreStale = false

    public init() {}

    public func validate() throws {
        let known = Set((InvariantRegistry.all + InvariantRegistry.candidate).map(\.id))
        for id in invariant where !known.contains(id) {
            throw ValidationError("unknown invariant '\(id)'; known: \(known.sorted().joined(separator: ", "))")
        }
        if files.isEmpty && model.isEmpty { throw ValidationError("give golden files or model directories, or --model DIR") }
        if files.contains(where: { !isDirectory($0) }) && model.count > 1 {
            throw ValidationError("with golden files, --model replaces their model directory: give it once")
        }
    }

    private func isDirectory(_ path: String) -> Bool {
        var directory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &directory) && directory.boolValue
    }

    /// (golden, model directory) pairs: a directory argument or a lone --model DIR means
    /// DIR/parity.h5 with DIR's weights; a golden file takes --model as its directory override.
    private func targets() -> [(golden: String, modelDirectory: String?)] {
        let goldenFiles = files.filter { !isDirectory($0) }
        let inDirectory = { (dir: String) in (URL(fileURLWithPath: dir).appendingPathComponent("parity.h5").path, Optional(dir)) }
        var out: [(String, String?)] = []
        for path in files {
            out.append(isDirectory(path) ? inDirectory(path) : (path, goldenFiles.isEmpty ? nil : model.first))
        }
        if goldenFiles.isEmpty { out += model.map(inDirectory) }
        return out
    }

    public func run() throws {
        var invariants = invariant.isEmpty ? nil : Set(invariant)
        // A scenario filter is about golden parity; other invariants run only when named.
        if !scenario.isEmpty && invariants == nil { invariants = ["golden-lm", "golden-vlm"] }
        let scenarios = scenario.isEmpty ? nil : Set(scenario)
        var rows: [InvariantRow] = []
        var staleFiles = 0
        var absences: [String: Absence] = [:]
        for (path, modelDirectory) in targets() {
            let started = Date()
            do {
                let golden = try GoldenFile(path: path)
                let sources = FreshnessSources.locate(for: path, explicit: .init(generator: generator, requirements: requirements))
                let freshness = Freshness.check(golden.provenance, sources: sources,
                                                modelDirectory: golden.modelDirectory(override: modelDirectory))
                for note in freshness.unverified { print("note: \(path): \(note)") }
                if freshness.isStale {
                    staleFiles += 1
                    print("STALE \(path): the golden no longer matches what the repository would generate:")
                    for change in freshness.changes { print("  - \(change)") }
                    print("  regenerate: make golden (then review and commit), or compare anyway with --ignore-stale\n")
                    if !ignoreStale { continue }
                }
                if layers && (invariants?.contains { $0.hasPrefix("golden-") } ?? true) {
                    let file = try GoldenParity.checkFile(golden, scenarios: scenarios, modelDirectory: modelDirectory)
                    for report in file.scenarios { print(TextReport.render(report)); print("") }
                    for text in [TextReport.renderExact(file.exact, file: golden.name),
                                 TextReport.renderComparisons(file.comparisons, file: golden.name)] where !text.isEmpty {
                        print(text); print("")
                    }
                }
                rows += InvariantRegistry.run(golden, only: invariants, scenarios: scenarios, modelDirectory: modelDirectory)
                if let why = OracleReport.unavailable(golden) { print("note: \(path): no float64 oracle: \(why)\n") }
                if invariants?.contains(OracleReport.invariantID) ?? true, golden.file.exists("/oracle") {
                    // The oracle table (the invariant's row comes from the registry); a read error is its row's.
                    if let oracle = try? OracleReport.measure(golden, scenarios: scenarios), !oracle.isEmpty {
                        print(OracleReport.render(oracle, file: golden.name))
                        let differences = OracleReport.defaultDifferences(golden)
                        if !differences.isEmpty {
                            print("  where transformers differs from the libraries (/oracle defaults_json):")
                            for line in differences { print("  - " + line) }
                        }
                        print("")
                    }
                }
                InvariantRegistry.merge(&absences, InvariantRegistry.absences(golden))
            } catch {
                rows.append(.unreadable(path, error))
            }
            print(String(format: "%@: done in %.1f s\n", path, Date().timeIntervalSince(started)))
        }
        rows += InvariantRegistry.coverage(rows, only: invariants, absences: absences)
        print(TextReport.render(rows))
        do {
            try ReportFiles.write(rows, to: reportDir)
            print("reports: \(reportDir)/parity.json, parity-junit.xml, parity.md")
        } catch {
            print("warning: could not write reports into \(reportDir): \(error)")
        }
        print(TextReport.summary(rows))
        if staleFiles > 0 { print("\(staleFiles) golden file(s) STALE (not a pass)") }
        if rows.contains(where: { !$0.verdict.isSuccess }) || (rows.isEmpty && staleFiles == 0) { throw ExitCode.failure }
        if staleFiles > 0 { throw ExitCode(3) }
        if rows.contains(where: { $0.verdict == .finding }) { throw ExitCode(4) }
    }
}
