import ArgumentParser
import Foundation
import ParityEngine

public struct QwenParity: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "qwen-parity",
        abstract: "Checks Swift implementations of Qwen 3.5 against golden tensors from mlx-lm and mlx-vlm.",
        subcommands: [Check.self])
    public init() {}
}

/// Runs the mirrors on golden files and compares every traced layer and the logits.
public struct Check: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Run each golden's scenarios through the Swift mirrors and compare them layer by layer.",
        discussion: """
            Everything this command reports goes to standard output, in order: the tables, every \
            scenario's verdict (an implementation that differs from itself between two runs is \
            NONDETERMINISTIC and is not compared), and for an unreadable or invalid golden one line \
            'ERROR <file>: <dataset or key>: <what was expected>'. Standard error is left to \
            command-line usage errors. Exit status: 0 when every scenario passed, 1 otherwise \
            (a failed comparison or an invalid file), 64 for a usage error.
            """)

    @Argument(help: "Golden files (.h5) written by tools/make_golden.py.")
    var files: [String]

    @Option(name: .long, help: "Only this scenario (repeatable).")
    var scenario: [String] = []

    public init() {}

    public func run() throws {
        var reports: [ScenarioReport] = []
        var fileErrors = 0
        for path in files {
            do {
                let golden = try GoldenFile(path: path)
                let started = Date()
                let fileReports = try GoldenParity.check(golden, scenarios: scenario.isEmpty ? nil : Set(scenario))
                for report in fileReports { print(TextReport.render(report)); print("") }
                reports += fileReports
                print(String(format: "%@: %d scenario runs in %.1f s\n", path, fileReports.count,
                             Date().timeIntervalSince(started)))
            } catch {
                fileErrors += 1
                print("ERROR \(error)")
            }
        }
        print(TextReport.summary(reports) + (fileErrors > 0 ? ", \(fileErrors) file(s) unreadable" : ""))
        if fileErrors > 0 || !reports.allSatisfy(\.passed) || reports.isEmpty { throw ExitCode.failure }
    }
}
