import Foundation
import Testing
import ParityEngine

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Writers SIGKILLed at random moments, and at moments chosen inside the write itself (once the
// temporary exists): the destination must always be the previous file or the complete new one,
// bit for bit, and the next run must remove whatever temporary a killed run left.

/// One writer run that may be killed: where the kill landed, judged from what is on disk.
enum KillLanding: String, CaseIterable {
    case beforeWrite = "before the write (previous intact, no temporary)"
    case duringWrite = "during the write (previous intact, temporary left)"
    case afterRename = "after the rename (new file complete)"
    case finished = "finished before the kill"
}

struct KillHarness {
    let executable: URL
    let arguments: [String]
    let destination: URL
    let environment: [String: String]?

    func temporaries() -> [String] {
        let prefix = "." + destination.lastPathComponent + "."
        let names = (try? FileManager.default.contentsOfDirectory(atPath: destination.deletingLastPathComponent().path)) ?? []
        return names.filter { $0.hasPrefix(prefix) && $0.hasSuffix(".tmp") }.sorted()
    }

    /// Starts the writer and SIGKILLs it after `delay` seconds, or, with `inWrite`, `delay` seconds
    /// after its temporary appears. Returns the pid and whether it had already exited.
    func runAndKill(after delay: Double, inWrite: Bool, timeout: Double) throws -> (pid: Int32, finished: Bool) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let environment { process.environment = environment }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let pid = process.processIdentifier
        let started = Date()
        var killAt = inWrite ? Date.distantFuture : started.addingTimeInterval(delay)
        let temporary = AtomicFile.temporary(for: destination, pid: pid).path
        while process.isRunning {
            let now = Date()
            if inWrite, killAt == .distantFuture, FileManager.default.fileExists(atPath: temporary) {
                killAt = now.addingTimeInterval(delay)
            }
            if now >= killAt || now.timeIntervalSince(started) > timeout {
                kill(pid, SIGKILL)
                break
            }
            usleep(inWrite ? 200 : 1_000)
        }
        process.waitUntilExit()
        let finished = process.terminationReason == .exit
        return (pid, finished)
    }
}

/// Runs `trials` kills and checks the destination and the temporaries after each; returns the tally.
/// `isNew` decides whether bytes are the complete new file (plain equality by default).
func killTrials(_ harness: KillHarness, previous: Data, new: Data, delays: [(Double, Bool)], timeout: Double,
                isNew: (Data, Data) -> Bool = { $0 == $1 },
                finalRun: () throws -> Void) throws -> (tally: [KillLanding: Int], leftForFinalRun: [String]) {
    var previous = previous
    var tally: [KillLanding: Int] = [:]
    var killedPids: Set<Int32> = []
    for (i, (delay, inWrite)) in delays.enumerated() {
        let (pid, finished) = try harness.runAndKill(after: delay, inWrite: inWrite, timeout: timeout)
        if !finished { killedPids.insert(pid) }
        let now = try Data(contentsOf: harness.destination)
        let temps = harness.temporaries()
        let isPrevious = now == previous, isNew = isNew(now, new)
        #expect(isPrevious || isNew, "trial \(i) (kill after \(delay) s\(inWrite ? " in the write" : "")): the destination is neither the previous file nor the new one (\(now.count) bytes)")
        // A temporary may stay only when its writer was killed; the next run removes it.
        for name in temps {
            let pid = Int32(name.split(separator: ".").dropLast().last ?? "") ?? -1
            #expect(killedPids.contains(pid), "trial \(i): temporary \(name) does not belong to a killed run")
        }
        let landing: KillLanding = finished ? .finished
            : isNew && !isPrevious ? .afterRename
            : temps.contains(AtomicFile.temporary(for: harness.destination, pid: pid).lastPathComponent) ? .duringWrite
            : .beforeWrite
        tally[landing, default: 0] += 1
        if isNew { previous = now }
    }
    // One complete run: the new file, and no temporary left anywhere.
    let leftForFinalRun = harness.temporaries()
    try finalRun()
    #expect(isNew(try Data(contentsOf: harness.destination), new))
    #expect(harness.temporaries().isEmpty, "temporaries left after a complete run: \(harness.temporaries())")
    return (tally, leftForFinalRun)
}

func describe(_ tally: [KillLanding: Int]) -> String {
    KillLanding.allCases.map { "\(tally[$0] ?? 0) \($0.rawValue)" }.joined(separator: ", ")
}

@Suite struct AtomicFileKillTests {
    @Test func aKilledReportWriterLeavesThePreviousFileOrTheNewOneAndNoTemporary() throws {
        guard let probe = Paths.builtProduct("atomic-write-probe") else {
            Issue.record("atomic-write-probe is not built beside the tests (swift test builds it)")
            return
        }
        let scratch = try ScratchDirectory("atomic-kill")
        let destination = scratch.url.appendingPathComponent("report.json")
        let mebibytes = 8
        let previous = Data(repeating: 0xAA, count: mebibytes << 20)
        let new = Data(repeating: 0x55, count: mebibytes << 20)
        try previous.write(to: destination)

        // How long one uninterrupted write takes here.
        let timing = try ScratchDirectory("atomic-timing")
        let started = Date()
        let run = try Subprocess.run(probe, [timing.path("x"), "\(mebibytes)", "85"], timeout: 60, outputDirectory: timing.url)
        let duration = Date().timeIntervalSince(started)
        try #require(run.end == .exited(0), "the probe failed: \(run.stdout) \(run.stderr)")

        var rng = SeededGenerator(state: 7)
        var delays: [(Double, Bool)] = (0..<10).map { _ in (Double.random(in: 0...(1.2 * duration), using: &rng), false) }
        delays += (0..<10).map { _ in (Double.random(in: 0...0.01, using: &rng), true) }
        let harness = KillHarness(executable: probe, arguments: [destination.path, "\(mebibytes)", "85"],
                                  destination: destination, environment: nil)
        let (tally, _) = try killTrials(harness, previous: previous, new: new, delays: delays, timeout: 60) {
            let result = try Subprocess.run(probe, harness.arguments, timeout: 60, outputDirectory: scratch.url)
            #expect(result.end == .exited(0))
        }
        print("atomic write kill test: \(delays.count) kills, one write ≈ \(String(format: "%.3f", duration)) s: \(describe(tally))")
        #expect((tally[.duringWrite] ?? 0) > 0, "no kill landed inside the write; the test proves little")
    }
}

@Suite struct GoldenGeneratorKillTests {
    static let python = Paths.root.appendingPathComponent("tools/.venv/bin/python")
    static var hasVenv: Bool { FileManager.default.isExecutableFile(atPath: python.path) }

    /// Two runs of the generator from the same previous golden differ only in the timestamp of
    /// the history entry they append (same length, so same layout): equal sizes, and every
    /// differing byte a digit on both sides.
    static func sameGoldenApartFromTheDate(_ a: Data, _ b: Data) -> Bool {
        guard a.count == b.count else { return false }
        let digit = UInt8(ascii: "0")...UInt8(ascii: "9")
        var differing = 0
        for (x, y) in zip(a, b) where x != y {
            differing += 1
            guard differing <= 14, digit.contains(x), digit.contains(y) else { return false }
        }
        return true
    }

    @Test(.enabled(if: hasVenv, "tools/.venv is missing: `make venv` creates it from tools/requirements.txt"))
    func aKilledGeneratorLeavesThePreviousGoldenOrTheNewOneAndTheNextRunRemovesItsTemporary() throws {
        let golden = Paths.root.appendingPathComponent("golden/tiny-dense.h5")
        let config = Paths.root.appendingPathComponent("tools/configs/tiny-dense.json")
        let generator = Paths.root.appendingPathComponent("tools/make_golden.py")
        let scratch = try ScratchDirectory("generator-kill")
        let destination = scratch.url.appendingPathComponent("tiny-dense.h5")
        try FileManager.default.copyItem(at: golden, to: destination)
        let previous = try Data(contentsOf: destination)
        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        // One scenario on the shortest prompt keeps a run short. It changes the golden, so the
        // generator wants a reason, which goes into history_json with the date.
        func arguments(_ out: URL) -> [String] {
            [generator.path, "--config", config.path, "--out", out.path, "--scenarios", "no_cache",
             "--prompt-length", "18", "--reason", "kill test", "--oracle", "off"]   // make test never needs torch
        }

        // The new golden, made from the same previous one elsewhere.
        let referenceDirectory = scratch.url.appendingPathComponent("reference")
        try FileManager.default.createDirectory(at: referenceDirectory, withIntermediateDirectories: true)
        let reference = referenceDirectory.appendingPathComponent("tiny-dense.h5")
        try FileManager.default.copyItem(at: golden, to: reference)
        let started = Date()
        let run = try Subprocess.run(Self.python, arguments(reference), timeout: 300, environment: environment,
                                     outputDirectory: referenceDirectory)
        let duration = Date().timeIntervalSince(started)
        try #require(run.end == .exited(0), "the generator failed: \(run.stderr.suffix(800))")
        let new = try Data(contentsOf: reference)
        try #require(new != previous)

        var rng = SeededGenerator(state: 11)
        var delays: [(Double, Bool)] = (0..<2).map { _ in (Double.random(in: 0...(1.1 * duration), using: &rng), false) }
        delays += (0..<3).map { _ in (Double.random(in: 0...0.1, using: &rng), true) }
        let harness = KillHarness(executable: Self.python, arguments: arguments(destination), destination: destination,
                                  environment: environment)
        let tally = try killTrials(harness, previous: previous, new: new, delays: delays, timeout: 300,
                                   isNew: Self.sameGoldenApartFromTheDate) {
            let result = try Subprocess.run(Self.python, harness.arguments, timeout: 300, environment: environment,
                                            outputDirectory: scratch.url)
            #expect(result.end == .exited(0), "\(result.stderr.suffix(800))")
        }.tally
        print("generator kill test: \(delays.count) kills, one run ≈ \(String(format: "%.1f", duration)) s: \(describe(tally))")
        #expect((tally[.duringWrite] ?? 0) > 0, "no kill landed inside the write; the test proves little")
    }
}

@Suite struct AtomicFileTests {
    @Test func writesReplaceAndSweepOnlyTheTemporariesOfDeadWriters() throws {
        let scratch = try ScratchDirectory("atomic")
        let destination = scratch.url.appendingPathComponent("r.txt")
        try AtomicFile.write(Data("one".utf8), to: destination)
        try AtomicFile.write(Data("two".utf8), to: destination)
        #expect(try String(contentsOf: destination, encoding: .utf8) == "two")

        let finished = Process()
        finished.executableURL = URL(fileURLWithPath: "/bin/sh")
        finished.arguments = ["-c", "exit 0"]
        try finished.run()
        finished.waitUntilExit()
        let dead = AtomicFile.temporary(for: destination, pid: finished.processIdentifier)
        let alive = AtomicFile.temporary(for: destination, pid: 1)   // init never exits
        let other = scratch.url.appendingPathComponent(".other.txt.\(finished.processIdentifier).tmp")
        for url in [dead, alive, other] { try Data("partial".utf8).write(to: url) }
        #expect(AtomicFile.removeStaleTemporaries(for: destination).map(\.lastPathComponent) == [dead.lastPathComponent])
        #expect(FileManager.default.fileExists(atPath: alive.path) && FileManager.default.fileExists(atPath: other.path))

        let missing = scratch.url.appendingPathComponent("no/such/dir/r.txt")
        #expect(throws: AtomicFileError.self) { try AtomicFile.write(Data(), to: missing) }
        do { try AtomicFile.write(Data(), to: missing) } catch { #expect("\(error)".contains(missing.path)) }
    }
}
