import ArgumentParser
import Foundation
import ParityEngine

public struct QwenParity: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "qwen-parity",
        abstract: "Checks Swift implementations of Qwen 3.5 against golden tensors from mlx-lm and mlx-vlm.",
        subcommands: [Check.self, Bench.self, BenchEngine.self, BenchKernel.self])
    public init() {}
}

/// Runs the declared invariants on golden files; golden parity prints a per-layer table.
public struct Check: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Run the invariants on golden files: golden parity layer by layer, then every schedule equivalence.",
        discussion: """
        Invariants: \(InvariantRegistry.all.map(\.id).joined(separator: ", ")).
        Exit status 1 when any invariant fails, errors or does not run.
        """)

    @Argument(help: "Golden files (.h5) written by tools/make_golden.py.")
    var files: [String]

    @Option(name: .long, help: "Only this golden scenario for golden parity (repeatable).")
    var scenario: [String] = []

    @Option(name: .long, help: "Only this invariant (repeatable).")
    var invariant: [String] = []

    @Flag(name: .long, inversion: .prefixedNo, help: "Print the per-layer table of every golden-parity scenario.")
    var layers = true

    @Option(name: .long, help: "Folder for parity.json, parity-junit.xml and parity.md.")
    var reportDir = "reports"

    public init() {}

    public func validate() throws {
        let known = Set(InvariantRegistry.all.map(\.id))
        for id in invariant where !known.contains(id) {
            throw ValidationError("unknown invariant '\(id)'; known: \(known.sorted().joined(separator: ", "))")
        }
    }

    public func run() throws {
        var invariants = invariant.isEmpty ? nil : Set(invariant)
        // A scenario filter is about golden parity; other invariants run only when named.
        if !scenario.isEmpty && invariants == nil { invariants = ["golden-lm"] }
        let scenarios = scenario.isEmpty ? nil : Set(scenario)
        var rows: [InvariantRow] = []
        for path in files {
            let started = Date()
            do {
                let golden = try GoldenFile(path: path)
                if layers && (invariants?.contains("golden-lm") ?? true) {
                    for report in try GoldenParity.check(golden, scenarios: scenarios) {
                        print(TextReport.render(report))
                        print("")
                    }
                }
                rows += InvariantRegistry.run(golden, only: invariants, scenarios: scenarios)
            } catch {
                rows.append(.unreadable(path, error))
            }
            print(String(format: "%@: done in %.1f s\n", path, Date().timeIntervalSince(started)))
        }
        print(TextReport.render(rows))
        do {
            try ReportFiles.write(rows, to: reportDir)
            print("reports: \(reportDir)/parity.json, parity-junit.xml, parity.md")
        } catch {
            print("warning: could not write reports into \(reportDir): \(error)")
        }
        print(TextReport.summary(rows))
        if rows.isEmpty || rows.contains(where: { $0.verdict != .pass }) { throw ExitCode.failure }
    }
}
