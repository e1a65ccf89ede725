import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Paths, scratch directories and a subprocess runner with a timeout, shared by the bad-input
// corpus and the kill tests.

enum Paths {
    /// The package root, found from this file's place in Tests/ReliabilityTests/.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    static var goldens: [URL] {
        let dir = root.appendingPathComponent("golden")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".h5") }.sorted().map { dir.appendingPathComponent($0) }
    }

    /// A product built beside the test bundle (`swift test` builds every target), or nil.
    static func builtProduct(_ name: String) -> URL? {
        var candidates: [URL] = []
        if let bundle = Bundle.main.executableURL { candidates.append(bundle.deletingLastPathComponent()) }
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
        candidates.append(root.appendingPathComponent(".build/debug"))
        for dir in candidates {
            let url = dir.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return nil
    }
}

/// A fresh directory under the system temporary directory, removed on deinit.
final class ScratchDirectory: @unchecked Sendable {
    let url: URL

    init(_ label: String) throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(label)-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
}

/// How a child process ended.
struct ProcessResult: Sendable {
    enum End: Sendable, Equatable {
        case exited(Int32)
        case signalled(Int32)
        /// Still running at the deadline; it was then killed.
        case timedOut
    }
    var end: End
    var stdout: String
    var stderr: String
    var seconds: Double
}

enum Subprocess {
    /// Runs `executable` with `arguments`, output to files (no pipe can fill up), killing it at `timeout`.
    static func run(_ executable: URL, _ arguments: [String], timeout: Double,
                    environment: [String: String]? = nil, outputDirectory: URL) throws -> ProcessResult {
        let id = UUID().uuidString
        let outURL = outputDirectory.appendingPathComponent("out-\(id).txt")
        let errURL = outputDirectory.appendingPathComponent("err-\(id).txt")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        // Reports a run writes (check writes reports/ by default) land beside its output.
        process.currentDirectoryURL = outputDirectory
        if let environment { process.environment = environment }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        let started = Date()
        try process.run()
        let deadline = started.addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning {
            if Date() > deadline {
                kill(process.processIdentifier, SIGKILL)
                timedOut = true
                break
            }
            usleep(5_000)
        }
        process.waitUntilExit()
        try? out.close()
        try? err.close()
        let end: ProcessResult.End
        if timedOut {
            end = .timedOut
        } else if process.terminationReason == .uncaughtSignal {
            end = .signalled(process.terminationStatus)
        } else {
            end = .exited(process.terminationStatus)
        }
        func text(_ url: URL) -> String {
            String(decoding: (try? Data(contentsOf: url)) ?? Data(), as: UTF8.self)
        }
        return ProcessResult(end: end, stdout: text(outURL), stderr: text(errURL),
                             seconds: Date().timeIntervalSince(started))
    }
}

/// A small seeded generator, so every run derives the same corpus.
struct SeededGenerator: RandomNumberGenerator, Sendable {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A counter several threads can bump.
final class Tally: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [String: Int] = [:]
    func add(_ key: String, _ n: Int = 1) { lock.lock(); counts[key, default: 0] += n; lock.unlock() }
    /// Adds one and returns the value before, atomically.
    func increment(_ key: String) -> Int {
        lock.lock(); defer { lock.unlock() }
        counts[key, default: 0] += 1
        return counts[key]! - 1
    }
    subscript(_ key: String) -> Int { lock.lock(); defer { lock.unlock() }; return counts[key] ?? 0 }
    var all: [String: Int] { lock.lock(); defer { lock.unlock() }; return counts }
}
