import Foundation
import Testing

// Every bad input goes through the built `qwen-parity check FILE` binary, as a user would run it.
// It must end in a one-line error naming the file and what is wrong, a non-zero exit, and never
// a signal, a Swift trap, an HDF5 error stack, stray stderr output or a hang.

/// How one case ended, worst first.
enum Outcome: String, CaseIterable, Sendable {
    case hang, crash, trap, hdf5Dump = "hdf5 dump", strayStderr = "stray stderr", unnamed = "unnamed error"
    case unexpectedPass = "unexpected pass"
    case named = "named error", parityFailure = "parity failure", harmless = "harmless flip"

    var isAcceptable: Bool { self == .named || self == .parityFailure || self == .harmless }
}

enum Classifier {
    /// The clean file's output with the parts that vary between runs (path, timings) blanked.
    static func normalized(_ text: String, path: String) -> String {
        text.replacingOccurrences(of: path, with: "FILE")
            .replacingOccurrences(of: #"in [0-9]+\.[0-9] s"#, with: "in T s", options: .regularExpression)
    }

    static func classify(_ result: ProcessResult, _ input: BadInput, path: String, clean: String?) -> Outcome {
        let all = result.stdout + result.stderr
        switch result.end {
        case .timedOut: return .hang
        case .signalled(let signal): return signal == SIGILL || signal == SIGTRAP ? .trap : .crash
        case .exited: break
        }
        if all.contains("Fatal error") || all.contains("Precondition failed") { return .trap }
        if all.contains("HDF5-DIAG") || all.contains("#000:") { return .hdf5Dump }
        // stdout carries everything `check` says about golden files; stderr is for usage errors only.
        if !result.stderr.isEmpty { return .strayStderr }
        guard case .exited(let status) = result.end else { return .crash }
        let lines = result.stdout.split(separator: "\n")
        func namedLine(_ mentions: [String]) -> Bool {
            lines.contains { line in line.contains("ERROR") && line.contains(path) && mentions.allSatisfy { line.contains($0) } }
        }
        switch input.expectation {
        case .namedError(let mentions):
            if status == 0 { return .unexpectedPass }
            return namedLine(mentions) ? .named : .unnamed
        case .flipped:
            if status == 0 {
                return clean.map { normalized(result.stdout, path: path) == $0 } == true ? .harmless : .unexpectedPass
            }
            if namedLine([]) { return .named }
            // A flip in the recorded provenance can make the golden STALE (exit 3), which names it.
            if status == 3 && lines.contains(where: { $0.contains("STALE") && $0.contains(path) }) { return .named }
            let verdicts = lines.contains { $0.contains(" FAIL") || $0.contains("NONDETERMINISTIC") }
            return verdicts && result.stdout.contains("reproduce: qwen-parity check \(path)") ? .parityFailure : .unnamed
        }
    }
}

@Suite struct BadInputCorpusTests {
    static let seed: UInt64 = 20_261_129
    static let timeout = 120.0
    /// One more than the cores: a case spends part of its time starting a process and copying
    /// files, and a third worker fills those gaps.
    static let workers = ProcessInfo.processInfo.activeProcessorCount + 1

    @Test func everyBadInputGetsANamedErrorAndNeverACrash() throws {
        guard let binary = Paths.builtProduct("qwen-parity") else {
            Issue.record("qwen-parity is not built beside the tests; run `swift build` (swift test builds it)")
            return
        }
        let goldens = Paths.goldens
        try #require(!goldens.isEmpty, "no golden/*.h5 to derive bad inputs from")
        let scratch = try ScratchDirectory("bad-inputs")

        // The corpus, rebuilt from the goldens on every run.
        var corpus = BadInputCorpus.notGoldens(goldens[0])
        var facts: [String: GoldenFacts] = [:]
        for (i, golden) in goldens.enumerated() {
            let f = try GoldenFacts(golden)
            facts[f.name] = f
            corpus += BadInputCorpus.cases(f, seed: Self.seed &+ UInt64(i))
        }
        let checkpoints = Paths.checkpoints
        try #require(!checkpoints.isEmpty, "no golden/checkpoints/*/parity.h5 to derive bad model directories from")
        for checkpoint in checkpoints { corpus += BadInputCorpus.modelDirectoryCases(checkpoint) }
        // Cases are few seconds at most; the slow ones (a forward pass) go first so the two
        // workers finish together.
        corpus.sort { ($0.scenario != nil ? 0 : 1, $0.id) < ($1.scenario != nil ? 0 : 1, $1.id) }

        // What a clean copy prints for the scenario the flip cases run, to recognise harmless flips.
        let cleanRuns = CleanOutputs()
        let factList = Array(facts.values)
        DispatchQueue.concurrentPerform(iterations: factList.count) { i in
            let f = factList[i]
            let dir = scratch.url.appendingPathComponent("clean-\(f.name)")
            let path = dir.appendingPathComponent(f.name + ".h5").path
            do {
                try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                try BadInputCorpus.copy(f.url, to: path)
                let result = try Subprocess.run(binary, ["check", path, "--scenario", "no_cache"], timeout: Self.timeout,
                                                outputDirectory: dir)
                if result.end == .exited(0) { cleanRuns.set(f.name, Classifier.normalized(result.stdout, path: path)) }
                else { Issue.record("the clean \(f.name) does not pass: \(result.stdout.suffix(500))") }
            } catch {
                Issue.record("the clean \(f.name) could not run: \(error)")
            }
        }
        let clean = cleanRuns.all

        let tally = Tally()
        let failures = FailureLog()
        let next = Tally()
        let started = Date()
        let cleanOutputs = clean
        let items = corpus
        DispatchQueue.concurrentPerform(iterations: Self.workers) { _ in
            while true {
                let i = next.increment("index")
                guard i < items.count else { return }
                let input = items[i]
                let name = input.golden.deletingPathExtension().lastPathComponent
                // Each case in its own directory under the golden's own name, so the report's
                // file name matches the clean run's.
                let dir = scratch.url.appendingPathComponent("case-\(i)")
                let path = dir.appendingPathComponent(name + ".h5").path
                do {
                    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                    try input.build(path)
                    let target = input.checksDirectory ? dir.path : path
                    var arguments = ["check", target] + input.arguments
                    if let scenario = input.scenario { arguments += ["--scenario", scenario] }
                    let result = try Subprocess.run(binary, arguments, timeout: Self.timeout, outputDirectory: dir)
                    let outcome = Classifier.classify(result, input, path: target, clean: cleanOutputs[name])
                    tally.add(outcome.rawValue)
                    tally.add("seconds x1000", Int(result.seconds * 1000))
                    if !outcome.isAcceptable {
                        failures.add("\(input.id) [\(outcome.rawValue)] \(result.end): "
                                     + (result.stdout + result.stderr).split(separator: "\n").prefix(4).joined(separator: " | ").prefix(600))
                    }
                } catch {
                    tally.add("generator error")
                    failures.add("\(input.id): could not build the case: \(error)")
                }
                try? FileManager.default.removeItem(at: dir)
            }
        }

        let counts = tally.all
        let total = items.count
        let named = counts[Outcome.named.rawValue] ?? 0
        let flips = items.filter { if case .flipped = $0.expectation { return true } else { return false } }.count
        print("""
            bad-input corpus: \(total) cases (\(total - flips) constructed, \(flips) bit flips) from \(goldens.count) goldens \
            in \(String(format: "%.0f", Date().timeIntervalSince(started))) s (\(String(format: "%.0f", Double(counts["seconds x1000"] ?? 0) / 1000)) s of CLI time)
              crashes \(counts[Outcome.crash.rawValue] ?? 0), traps \(counts[Outcome.trap.rawValue] ?? 0), \
            hangs \(counts[Outcome.hang.rawValue] ?? 0), HDF5 dumps \(counts[Outcome.hdf5Dump.rawValue] ?? 0), \
            stray stderr \(counts[Outcome.strayStderr.rawValue] ?? 0), unnamed \(counts[Outcome.unnamed.rawValue] ?? 0), \
            unexpected passes \(counts[Outcome.unexpectedPass.rawValue] ?? 0), generator errors \(counts["generator error"] ?? 0)
              named errors \(named) of \(total) (\(String(format: "%.1f", 100 * Double(named) / Double(max(total, 1)))) %); \
            of the \(flips) flips: \(counts[Outcome.parityFailure.rawValue] ?? 0) reported as parity failures, \
            \(counts[Outcome.harmless.rawValue] ?? 0) harmless (output identical to the clean file)
            """)
        for line in failures.all.sorted() { print("  ✗ " + line) }

        #expect(total >= 500, "the corpus should hold at least 500 cases, has \(total)")
        for outcome in Outcome.allCases where !outcome.isAcceptable {
            #expect((counts[outcome.rawValue] ?? 0) == 0, "\(counts[outcome.rawValue] ?? 0) case(s) ended as \(outcome.rawValue)")
        }
        #expect((counts["generator error"] ?? 0) == 0)
        // Every constructed case is a named error; flips may also be caught by the comparison.
        #expect(named + (counts[Outcome.parityFailure.rawValue] ?? 0) + (counts[Outcome.harmless.rawValue] ?? 0) == total)
    }
}

final class CleanOutputs: @unchecked Sendable {
    private let lock = NSLock()
    private var outputs: [String: String] = [:]
    func set(_ name: String, _ text: String) { lock.lock(); outputs[name] = text; lock.unlock() }
    var all: [String: String] { lock.lock(); defer { lock.unlock() }; return outputs }
}

final class FailureLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func add(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}
