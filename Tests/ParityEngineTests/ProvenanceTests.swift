import TestSupport
import Checkpoint
import Foundation
import GoldenIO
import Testing
@testable import ParityEngine

/// A fresh directory under the system temporary directory, removed on deinit.
final class TempDir {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("ProvenanceTests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    func write(_ name: String, _ text: String) throws {
        let u = url.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: u.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: u)
    }
}

let pinnedVersions = ["mlx": "0.32.4", "mlx_lm": "0.32.2", "mlx_vlm": "0.7.10", "numpy": "2.4.6", "h5py": "3.16.0",
                      "python": "3.11.2"]
let requirementsText = """
    # pins
    mlx==0.32.4
    mlx-cpu==0.32.4
    mlx-lm==0.32.2
    mlx-vlm==0.7.10
    h5py==3.16.0
    numpy==2.4.6
    """

/// Root attributes as tools/make_golden.py writes them.
func writeProvenance(_ file: H5File, version: Int = 1, generatorSHA: String, versions: [String: String] = pinnedVersions,
                     history: String = "[]", extra: [String: String] = [:]) throws {
    try file.setAttribute("format_version", int: version, on: "/")
    try file.setAttribute("versions_json", string: String(decoding: JSONEncoder().encode(versions), as: UTF8.self), on: "/")
    try file.setAttribute("generator", string: "tools/make_golden.py", on: "/")
    try file.setAttribute("generator_sha256", string: generatorSHA, on: "/")
    try file.setAttribute("weights_seed", int: 1234, on: "/")
    try file.setAttribute("history_json", string: history, on: "/")
    for (k, v) in extra { try file.setAttribute(k, string: v, on: "/") }
}

@Suite(.serialized) struct ProvenanceTests {
    @Test func unknownAndMissingFormatVersionsAreRefused() throws {
        let dir = try TempDir()
        let future = try H5File.create(dir.path("future.h5"))
        try writeProvenance(future, version: 2, generatorSHA: "x")
        future.close()
        do {
            _ = try GoldenFile(path: dir.path("future.h5"))
            Issue.record("a format_version 2 golden was accepted")
        } catch let GoldenError.unknownFormat(file, version, supported) {
            #expect(file == dir.path("future.h5") && version == 2 && supported == 1)
            let text = "\(GoldenError.unknownFormat(file: file, version: version, supported: supported))"
            #expect(text.contains("format_version 2") && text.contains("reads 1"))
        }
        let bare = try H5File.create(dir.path("bare.h5"))
        bare.close()
        #expect(throws: GoldenError.self) { _ = try GoldenFile(path: dir.path("bare.h5")) }
        do { _ = try GoldenFile(path: dir.path("bare.h5")) } catch {
            #expect("\(error)".contains("no root attribute format_version"))
        }
    }

    @Test func staleWhenTheGeneratorOrThePinsChanged() throws {
        let repo = try TempDir()
        try repo.write("tools/make_golden.py", "print('v2')\n")
        try repo.write("tools/requirements.txt", requirementsText)
        let current = try SHA256.hex(fileAt: repo.path("tools/make_golden.py"))
        let golden = repo.path("golden/x.h5")
        try FileManager.default.createDirectory(atPath: repo.path("golden"), withIntermediateDirectories: true)

        // The repository copies are found by walking up from the golden.
        let sources = FreshnessSources.locate(for: golden)
        #expect(sources.generator.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
                == URL(fileURLWithPath: repo.path("tools/make_golden.py")).standardizedFileURL.path)
        #expect(sources.requirements != nil)

        func provenance(sha: String, versions: [String: String] = pinnedVersions) throws -> GoldenProvenance {
            let f = try H5File.create(golden)
            defer { f.close() }
            try writeProvenance(f, generatorSHA: sha, versions: versions)
            return try GoldenProvenance.read(f, path: golden)
        }
        let fresh = Freshness.check(try provenance(sha: current), sources: sources)
        #expect(!fresh.isStale && fresh.unverified.isEmpty, "\(fresh)")

        let oldGenerator = Freshness.check(try provenance(sha: String(repeating: "ab", count: 32)), sources: sources)
        #expect(oldGenerator.isStale)
        #expect(oldGenerator.changes.count == 1 && oldGenerator.changes[0].contains("generator changed"))

        var older = pinnedVersions
        older["mlx_lm"] = "0.32.1"
        older["mlx"] = "0.31.0"
        let oldPins = Freshness.check(try provenance(sha: current, versions: older), sources: sources)
        #expect(oldPins.changes == ["mlx: golden made with 0.31.0, requirements.txt pins 0.32.4",
                                    "mlx-lm: golden made with 0.32.1, requirements.txt pins 0.32.2"])

        // Outside a repository nothing can be verified: noted, not stale.
        let alone = Freshness.check(try provenance(sha: "x"), sources: FreshnessSources())
        #expect(!alone.isStale && alone.unverified.count == 2)
    }

    @Test func anOracleGoldenIsHeldToTheOraclePinsAndItsHelper() throws {
        let repo = try TempDir()
        try repo.write("tools/make_golden.py", "print('v2')\n")
        try repo.write("tools/golden/oracle/capture.py", "print('oracle')\n")
        try repo.write("tools/requirements.txt", requirementsText)
        try repo.write("tools/requirements-torch.txt", "-r requirements.txt\ntorch==2.13.0+cpu\ntransformers==5.25.0\n")
        let current = try Freshness.generatorSHA256(repo.path("tools/make_golden.py"))   // the package manifest
        let helper = try SHA256.hex(fileAt: repo.path("tools/golden/oracle/capture.py"))
        let golden = repo.path("golden/x.h5")
        try FileManager.default.createDirectory(atPath: repo.path("golden"), withIntermediateDirectories: true)
        func freshness(_ torch: String, helperSHA: String) throws -> Freshness {
            let f = try H5File.create(golden)
            defer { f.close() }
            try writeProvenance(f, generatorSHA: current,
                                versions: pinnedVersions.merging(["torch": torch, "transformers": "5.25.0"]) { $1 })
            try f.createGroup("/oracle")
            try f.setAttribute("generator", string: "tools/golden/oracle/capture.py", on: "/oracle")
            try f.setAttribute("generator_sha256", string: helperSHA, on: "/oracle")
            return Freshness.check(try GoldenProvenance.read(f, path: golden), sources: FreshnessSources.locate(for: golden))
        }
        let fresh = try freshness("2.13.0+cpu", helperSHA: helper)
        #expect(!fresh.isStale && fresh.unverified.isEmpty, "\(fresh)")
        #expect(try freshness("2.12.0+cpu", helperSHA: helper).changes
                == ["torch: golden made with 2.12.0+cpu, requirements-torch.txt pins 2.13.0+cpu"])
        #expect(try freshness("2.13.0+cpu", helperSHA: "x").changes.first?.contains("/oracle generator changed") == true)
    }

    @Test func staleWhenTheModelFilesChanged() throws {
        let dir = try TempDir()
        try dir.write("model/config.json", "{}")
        try dir.write("model/model.safetensors", "weights")
        let recorded = ["config.json": try SHA256.hex(fileAt: dir.path("model/config.json")),
                        "model.safetensors": try SHA256.hex(fileAt: dir.path("model/model.safetensors"))]
        let f = try H5File.create(dir.path("g.h5"))
        try writeProvenance(f, generatorSHA: "x", extra: [
            "weights_source": "model_dir", "model_dir": "model",
            "model_files_json": String(decoding: try JSONEncoder().encode(recorded), as: UTF8.self)])
        let p = try GoldenProvenance.read(f, path: dir.path("g.h5"))
        f.close()
        #expect(p.weightsSource == "model_dir" && p.modelDirectory == "model")
        #expect(!Freshness.check(p, sources: .init(), modelDirectory: dir.path("model")).isStale)
        try dir.write("model/model.safetensors", "other weights")
        let changed = Freshness.check(p, sources: .init(), modelDirectory: dir.path("model"))
        #expect(changed.changes.count == 1 && changed.changes[0].contains("model.safetensors changed"))
        try FileManager.default.removeItem(atPath: dir.path("model/config.json"))
        #expect(Freshness.check(p, sources: .init(), modelDirectory: dir.path("model")).changes.count == 2)
    }

    /// history_json is an append-only list: entries come back in order with their reasons.
    @Test func historyEntriesAreReadInOrder() throws {
        let dir = try TempDir()
        let f = try H5File.create(dir.path("h.h5"))
        defer { f.close() }
        let history = """
            [{"date": "2026-01-01T00:00:00+00:00", "reason": "created", "generator_sha256": "aa", "versions": {}},
             {"date": "2026-02-01T00:00:00+00:00", "reason": "mlx-lm 0.32.2", "generator_sha256": "bb", "versions": {},
              "changes": ["/scenarios/x/mlx_lm/logits"]}]
            """
        try writeProvenance(f, generatorSHA: "bb", history: history)
        let p = try GoldenProvenance.read(f, path: "h.h5")
        #expect(p.history.map(\.reason) == ["created", "mlx-lm 0.32.2"])
        #expect(p.history.last?.generatorSHA256 == "bb")
        try f.setAttribute("history_json", string: "{not a list", on: "/")
        #expect(throws: GoldenError.self) { _ = try GoldenProvenance.read(f, path: "h.h5") }
    }
}
