import TestSupport
import Foundation
import GoldenIO
import ParityTensor
import Testing
@testable import ParityEngine

/// Candidate paths (tools/golden_candidates.py). A candidate made by copying into
/// `candidate:copy` the very references it must equal passes every candidate invariant; each
/// edit then fails exactly the invariants that read what it changed. With tools/.venv, the two
/// shipped adapters run for real.
@Suite(.serialized) struct CandidateTests {
    static let ids = Set(InvariantRegistry.candidate.map(\.id))

    /// The scenarios golden_candidates.py runs in tiny-dense, with the path each one follows.
    static func plan(_ f: H5File) throws -> [(scenario: String, reference: String)] {
        try f.children(of: "/scenarios").compactMap { s in
            let g = "/scenarios/" + s
            switch try f.stringAttribute("kind", of: g) {
            case "single", "batch": return (s, "mlx_lm")
            default:
                // Of the hazards only the chunked image prefill has a generate-style (correct) twin.
                guard f.hasAttribute("hazard", of: g) else { return (s, "mlx_vlm") }
                return s == "hazard_chunked_image_prefill" ? (s, "mlx_vlm_correct") : nil
            }
        }
    }

    static func copyFloats(_ f: H5File, _ from: String, _ to: String) throws {
        let a = try f.readFloats(from)
        try f.writeFloats(to, shape: a.shape, values: a.values)
    }

    static func copyInts(_ f: H5File, _ from: String, _ to: String) throws {
        let a = try f.readInt32s(from)
        try f.writeInt32s(to, shape: a.shape, values: a.values)
    }

    /// tiny-dense.h5 with a candidate `copy` whose results are the references' own, then `edit`.
    static func copiedCandidate(textReference: String = "mlx_lm", _ edit: (H5File) throws -> Void = { _ in }) throws -> URL {
        try editedCopy(of: "tiny-dense.h5") { f in
            try f.createGroup("/candidates")
            try f.setAttribute("generator", string: "tools/golden_candidates.py", on: "/candidates")
            try f.createGroup("/candidates/copy")
            for (key, value) in ["adapter": "copy.py", "adapter_sha256": String(repeating: "0", count: 64),
                                 "text_reference": textReference, "positions": "state", "describe_json": "{}",
                                 "provided_json": "{\"positions\": true, \"substeps\": []}", "skipped_json": "[]"] {
                try f.setAttribute(key, string: value, on: "/candidates/copy")
            }
            for (scenario, reference) in try plan(f) {
                let (src, dst) = ("/scenarios/\(scenario)/\(reference)", "/scenarios/\(scenario)/candidate:copy")
                try f.createGroup(dst)
                try f.setAttribute("reference", string: reference, on: dst)
                for name in ["logits", "hidden_states", "final_norm"] where f.exists(src + "/" + name) {
                    try copyFloats(f, src + "/" + name, dst + "/" + name)
                }
                try copyFloats(f, src + "/logits", dst + "/logits_repeat")
                for name in ["logits_positions", "position_ids", "position_ids_rank"] where f.exists(src + "/" + name) {
                    try copyInts(f, src + "/" + name, dst + "/" + name)
                }
                if f.isGroup(src + "/cache_after") {
                    try f.createGroup(dst + "/cache_after")
                    for layer in try f.children(of: src + "/cache_after") {
                        try f.createGroup("\(dst)/cache_after/\(layer)")
                        for name in try f.children(of: "\(src)/cache_after/\(layer)") {
                            try copyFloats(f, "\(src)/cache_after/\(layer)/\(name)", "\(dst)/cache_after/\(layer)/\(name)")
                        }
                    }
                }
            }
            try edit(f)
        }
    }

    /// One element of a float dataset moved by `delta`.
    static func nudge(_ f: H5File, _ dataset: String, at index: Int = 0, by delta: Float = 2e-6) throws {
        var a = try f.readFloats(dataset)
        a.values[index] += delta
        try f.overwriteFloats(dataset, values: a.values)
    }

    static func rows(_ url: URL) throws -> [InvariantRow] {
        InvariantRegistry.run(try GoldenFile(path: url.path), only: ids)
    }

    static func failing(_ edit: (H5File) throws -> Void, textReference: String = "mlx_lm") throws -> (Set<String>, [InvariantRow]) {
        let url = try copiedCandidate(textReference: textReference, edit)
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        let rows = try rows(url)
        let broken = rows.filter { $0.verdict == .error || $0.verdict == .notRun }
        #expect(broken.isEmpty, "\(broken.map { "\($0.invariant): \($0.detail)" })")
        return (Set(rows.filter { $0.verdict == .fail }.map(\.invariant)), rows)
    }

    @Test func theReferencesThemselvesPassEveryCandidateInvariant() throws {
        let url = try Self.copiedCandidate()
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        let rows = try Self.rows(url)
        #expect(Set(rows.map(\.invariant)) == Self.ids)
        #expect(rows.allSatisfy { $0.verdict == .pass && $0.pairs > 0 }, "\(rows.map { "\($0.invariant) \($0.verdict) \($0.detail)" })")
        // Goldens without a candidate get no candidate rows, and golden parity skips candidate paths.
        let committed = try GoldenFile(path: goldenDirectory.appendingPathComponent("tiny-dense.h5").path)
        #expect(InvariantRegistry.run(committed, only: Self.ids).isEmpty)
        let reports = try GoldenParity.check(try GoldenFile(path: url.path), scenarios: ["full_prefill"])
        #expect(Set(reports.map(\.reference)) == ["mlx_lm", "mlx_vlm"])
    }

    @Test func eachEditFailsTheInvariantsThatReadIt() throws {
        let step2 = "/scenarios/mrope_chunked_boundary_step2/candidate:copy"
        let cases: [(String, (H5File) throws -> Void, Set<String>)] = [
            ("MRoPE logits (and their repeat)", { f in
                try Self.nudge(f, step2 + "/logits"); try Self.nudge(f, step2 + "/logits_repeat")
            }, ["candidate-image-vs-vlm", "candidate-mrope-chunked-sweep"]),
            ("prefill/decode vector logits", { f in
                let g = "/scenarios/mrope_prefix_decode/candidate:copy"
                try Self.nudge(f, g + "/logits", at: 1000); try Self.nudge(f, g + "/logits_repeat", at: 1000)
            }, ["candidate-image-vs-vlm", "candidate-mrope-prefix-decode"]),
            ("text logits", { f in
                let g = "/scenarios/chunked_prefill_5/candidate:copy"
                try Self.nudge(f, g + "/logits"); try Self.nudge(f, g + "/logits_repeat")
            }, ["candidate-text"]),
            ("a cache after the prompt", { f in
                try Self.nudge(f, "/scenarios/full_prefill/candidate:copy/cache_after/layer_01/recurrent_state", at: 77)
            }, ["candidate-text"]),
            ("a layer of an image prompt", { f in
                try Self.nudge(f, "/scenarios/image_prompt_one/candidate:copy/hidden_states", at: 3 * 19 * 128 + 5)
            }, ["candidate-layers"]),
            ("text after the MRoPE prompts", { f in
                try Self.nudge(f, "/scenarios/prefix_decode/candidate:copy/logits_repeat")
            }, ["candidate-no-state-leak"]),
            ("an image token's position", { f in
                var p = try f.readInt32s("/scenarios/image_prompt_two/candidate:copy/position_ids")
                let ids = try f.readInt32s("/inputs/vision/image_two/token_ids").values
                guard let t = ids.firstIndex(of: 997) else { throw GoldenError.invalid(file: "", path: "", reason: "no image token") }
                p.values[2 * p.shape[2] + t] += 1   // W axis
                try f.deleteObject("/scenarios/image_prompt_two/candidate:copy/position_ids")
                try f.writeInt32s("/scenarios/image_prompt_two/candidate:copy/position_ids", shape: p.shape, values: p.values)
            }, ["candidate-multi-image-positions"]),
            ("a call on the text route", { f in
                let g = "/scenarios/image_prompt_one/candidate:copy/position_ids_rank"
                var r = try f.readInt32s(g)
                r.values[3] = 0
                try f.deleteObject(g)
                try f.writeInt32s(g, shape: r.shape, values: r.values)
            }, ["candidate-multi-image-positions"]),
            ("the declared text route", { _ in }, ["candidate-text", "candidate-layers"]),
        ]
        for (what, edit, expected) in cases {
            let (failed, _) = try Self.failing(edit, textReference: what == "the declared text route" ? "mlx_vlm" : "mlx_lm")
            #expect(failed == expected, "\(what)")
        }
    }

    /// What the candidate leaves out is reported as not provided and fails, never passes.
    @Test func missingTensorsAreNotProvidedNeverPassed() throws {
        let cases: [(String, String, String)] = [
            ("/scenarios/image_prompt_one/candidate:copy/hidden_states", "candidate-layers", "image_prompt_one vs mlx_vlm hidden states: not provided"),
            ("/scenarios/mrope_full_decode/candidate:copy/logits_repeat", "candidate-no-state-leak", "not provided"),
            ("/scenarios/mrope_full_decode/candidate:copy/position_ids", "candidate-multi-image-positions", "positions: not provided"),
            ("/scenarios/full_prefill/candidate:copy/cache_after/layer_03/keys", "candidate-text", "cache layer_03 keys: not provided"),
        ]
        for (dataset, invariant, words) in cases {
            let (failed, rows) = try Self.failing { try $0.deleteObject(dataset) }
            #expect(failed == [invariant], "\(dataset)")
            let row = try #require(rows.first { $0.invariant == invariant })
            #expect(row.detail.contains(words), "\(row.detail)")
        }
    }

    @Test func brokenCandidateRecordsAreNamedErrors() throws {
        let url = try Self.copiedCandidate { try $0.deleteAttribute("text_reference", of: "/candidates/copy") }
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        let rows = try Self.rows(url)
        #expect(rows.count == Self.ids.count && rows.allSatisfy { $0.verdict == .error })
        #expect(rows.allSatisfy { $0.detail.contains("/candidates/copy") && $0.detail.contains("text_reference") }, "\(rows.map(\.detail))")
    }

    @Test func diffTakesTheNumericsOfTheReferenceTheCandidateMustEqual() throws {
        let url = try Self.copiedCandidate { f in
            try Self.nudge(f, "/scenarios/mrope_full_decode/candidate:copy/hidden_states", at: 2 * 7 * 128 + 3 * 128 + 9, by: 1e-4)
        }
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        let golden = try GoldenFile(path: url.path)
        let weights = { try golden.weights() }
        #expect(DiffSides.recognises("candidate:copy") && !DiffSides.recognises("candidate:"))
        let side = try DiffSides.make("candidate:copy", golden: golden, weights: weights)
        let bounds = { (s: String) in PairBounds(golden: golden, scenario: try golden.scenario(s), override: nil) }
        #expect(try bounds("full_prefill").numerics(side) == "mlx-lm" && bounds("mrope_full_decode").numerics(side) == "mlx-vlm")
        #expect(throws: GoldenError.self) { try DiffSides.make("candidate:other", golden: golden, weights: weights) }
        let (text, mrope) = (side, side)

        let same = try Diff.run(golden, scenario: "full_prefill",
                                sides: [try DiffSides.make("golden-lm", golden: golden, weights: weights), text])
        #expect(same.tolerance.description == "exact" && same.agrees)
        // The nudge sits in layer 1's output, token 3: the vote with the vlm mirror blames the candidate there.
        let report = try Diff.run(golden, scenario: "mrope_full_decode", sides: [
            try DiffSides.make("golden-vlm", golden: golden, weights: weights), mrope,
            try DiffSides.make("vlm", golden: golden, weights: weights)])
        #expect(report.first?.item == .layer(1) && report.first?.position == 3)
        #expect(report.vote?.departing == "candidate:copy" && report.vote?.at == .layer(1))
    }

    // MARK: the shipped adapters, for real

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL
    static let python = root.appendingPathComponent("tools/.venv/bin/python")
    static var hasVenv: Bool { FileManager.default.isExecutableFile(atPath: python.path) }

    /// A tiny-dense golden with the adapter's path: two text schedules, the upstream vectors,
    /// both chunk sweeps and the image prompts.
    static func generate(_ adapter: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qwen-parity-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let out = dir.appendingPathComponent("candidate.h5")
        let process = Process()
        process.executableURL = python
        process.arguments = [root.appendingPathComponent("tools/make_golden.py").path, "--config",
                             root.appendingPathComponent("tools/configs/tiny-dense.json").path, "--out", out.path,
                             "--scenarios", "full_prefill,chunked_prefill_5", "--vlm-extras", "vectors,sweeps,vision", "--oracle", "off",
                             "--candidate", root.appendingPathComponent(adapter).path]
        let log = dir.appendingPathComponent("generator.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        process.environment = ProcessInfo.processInfo.environment.merging(["CI": "", "PYTHONDONTWRITEBYTECODE": "1"]) { $1 }
        try process.run()
        process.waitUntilExit()
        try handle.close()
        let output = String(decoding: (try? Data(contentsOf: log)) ?? Data(), as: UTF8.self)
        try #require(process.terminationStatus == 0, "\(output.suffix(1500))")
        return out
    }

    @Test(.enabled(if: hasVenv, "tools/.venv is missing: `make venv` creates it from tools/requirements.txt"))
    func sequentialMRoPEIsCaughtAtLayerZero() throws {
        let url = try Self.generate("tools/candidates/sequential_mrope.py")
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        let golden = try GoldenFile(path: url.path)
        let rows = Dictionary(InvariantRegistry.run(golden, only: Self.ids).map { ($0.invariant, $0) }, uniquingKeysWith: { a, _ in a })
        for id in ["candidate-text", "candidate-no-state-leak", "candidate-multi-image-positions"] {
            #expect(rows[id]?.verdict == .pass, "\(id): \(rows[id]?.detail ?? "no row")")
        }
        for id in ["candidate-image-vs-vlm", "candidate-mrope-prefix-decode", "candidate-mrope-chunked-sweep"] {
            let worst = rows[id]?.worst?.maxAbs ?? 0
            #expect(rows[id]?.verdict == .fail && worst > 1e-6 && worst < 2e-5, "\(id): \(worst)")
        }
        #expect(rows["candidate-layers"]?.verdict == .fail)
        let weights = { try golden.weights() }
        for scenario in ["mrope_full_decode", "mrope_chunked_boundary_step2", "image_prompt_two"] {
            let sides = try ["golden-vlm", "candidate:sequential_mrope", "vlm"].map {
                try DiffSides.make($0, golden: golden, weights: weights)
            }
            let report = try Diff.run(golden, scenario: scenario, sides: sides)
            #expect(report.first?.item == .layer(0), "\(scenario)")
            #expect(report.vote?.departing == "candidate:sequential_mrope" && report.vote?.at == .layer(0), "\(scenario)")
            #expect(["q_normed", "core_out"].contains(report.vote?.subStep ?? ""), "\(scenario): \(report.vote?.subStep ?? "none")")
        }
    }

    @Test(.enabled(if: hasVenv, "tools/.venv is missing: `make venv` creates it from tools/requirements.txt"))
    func mlxVLMLanguagePassesEveryCandidateInvariant() throws {
        let url = try Self.generate("tools/candidates/mlx_vlm_language.py")
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        let rows = InvariantRegistry.run(try GoldenFile(path: url.path), only: Self.ids)
        #expect(Set(rows.map(\.invariant)) == Self.ids)
        #expect(rows.allSatisfy { $0.verdict == .pass && $0.worst?.differingElements == 0 }, "\(rows.map { "\($0.invariant) \($0.verdict) \($0.detail)" })")
    }
}
