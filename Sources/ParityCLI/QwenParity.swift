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
        abstract: "Run each golden's scenarios through the Swift mirrors and compare them layer by layer.")

    @Argument(help: "Golden files (.h5) written by tools/make_golden.py.")
    var files: [String]

    @Option(name: .long, help: "Only this scenario (repeatable).")
    var scenario: [String] = []

    public init() {}

    public func run() throws {
        var reports: [ScenarioReport] = []
        var fileErrors = 0
        var exactFailures = 0
        for path in files {
            do {
                let golden = try GoldenFile(path: path)
                let started = Date()
                let file = try GoldenParity.checkFile(golden, scenarios: scenario.isEmpty ? nil : Set(scenario))
                for report in file.scenarios { print(TextReport.render(report)); print("") }
                for text in [TextReport.renderExact(file.exact, file: golden.name),
                             TextReport.renderComparisons(file.comparisons, file: golden.name)] where !text.isEmpty {
                    print(text); print("")
                }
                reports += file.scenarios
                exactFailures += file.exact.filter { $0.verdict != .pass }.count
                print(String(format: "%@: %d scenario runs in %.1f s\n", path, file.scenarios.count,
                             Date().timeIntervalSince(started)))
            } catch {
                fileErrors += 1
                print("ERROR \(error)")
            }
        }
        print(TextReport.summary(reports) + (exactFailures > 0 ? ", \(exactFailures) exact position check(s) failed" : "")
              + (fileErrors > 0 ? ", \(fileErrors) file(s) unreadable" : ""))
        if fileErrors > 0 || exactFailures > 0 || !reports.allSatisfy(\.passed) || reports.isEmpty { throw ExitCode.failure }
    }
}
