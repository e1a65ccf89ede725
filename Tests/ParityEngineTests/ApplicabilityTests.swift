import Foundation
import GoldenIO
import Testing
@testable import ParityEngine

/// Model directories: what the checkpoint lacks is not applicable (with the reason, not a
/// failure); what only its golden lacks stays NOT RUN.
@Suite struct ApplicabilityTests {
    static let checkpoint = goldenDirectory.appendingPathComponent("checkpoints/tiny-checkpoint-q4")
    static let visionInvariants = InvariantRegistry.all.map(\.id).filter {
        !InvariantRegistry.textOnlyInvariants.contains($0) && $0 != "unified-text-vs-lm"
    }

    /// A copy of the committed text-only checkpoint whose golden records `edit`ed raw_json.
    static func editedCheckpoint(_ edit: (inout [String: Any]) -> Void) throws -> (URL, GoldenFile) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("applicability-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: checkpoint, to: dir)
        let path = dir.appendingPathComponent("parity.h5").path
        let file = try H5File.open(path, mode: .readWrite)
        var raw = try JSONSerialization.jsonObject(with: Data(try file.stringAttribute("raw_json", of: "/config").utf8)) as! [String: Any]
        edit(&raw)
        try file.setAttribute("raw_json", string: String(decoding: try JSONSerialization.data(withJSONObject: raw), as: UTF8.self), on: "/config")
        file.close()
        return (dir, try GoldenFile(path: path))
    }

    /// The q4 checkpoint's native run is float32 (float32 scales), so its golden holds one
    /// float32 path: the oracle ratio has nothing to hold it to.
    @Test func textOnlyCheckpointRunsTheTextInvariantsAndExcusesTheRest() throws {
        let golden = try GoldenFile(path: Self.checkpoint.appendingPathComponent("parity.h5").path)
        let absences = InvariantRegistry.absences(golden)
        #expect(Set(absences.keys) == Set(Self.visionInvariants + [OracleReport.invariantID]))
        for id in Self.visionInvariants {
            guard case .notApplicable(let reason)? = absences[id] else { Issue.record("\(id): \(String(describing: absences[id]))"); continue }
            #expect(reason.contains("text-only") && reason.contains("vision_config"))
        }
        guard case .notApplicable(let reason)? = absences[OracleReport.invariantID] else { Issue.record("\(absences)"); return }
        #expect(reason.contains("one float32 path"))
        var rows = InvariantRegistry.run(golden)
        rows += InvariantRegistry.coverage(rows, absences: absences)
        #expect(rows.count == InvariantRegistry.all.count)
        #expect(!rows.contains { $0.verdict == .notRun || $0.verdict == .error || $0.verdict == .fail })
        #expect(rows.filter { $0.verdict == .pass }.map(\.invariant).sorted()
                == (InvariantRegistry.textOnlyInvariants.subtracting([OracleReport.invariantID]).union(["unified-text-vs-lm"])).sorted())
        #expect(rows.filter { $0.verdict == .notApplicable }.count == Self.visionInvariants.count + 1)
        #expect(TextReport.summary(rows).hasPrefix("6 passed, 0 failed, 9 not applicable"))
    }

    /// Without /oracle: what the generator recorded decides. A float64 copy too large for the
    /// machine is not applicable here; the oracle turned off by choice, or no record, is a gap.
    @Test func aMissingOracleIsExcusedOnlyWhenItCouldNotBeMade() throws {
        let cases: [(String?, Bool)] = [
            (#"{"reason": "a float64 copy needs about 144 GB", "applicable": false}"#, true),
            (#"{"reason": "turned off (--oracle off)", "applicable": true}"#, false),
            (nil, false),
        ]
        for (recorded, excused) in cases {
            let (dir, _) = try Self.editedCheckpoint { _ in }
            defer { try? FileManager.default.removeItem(at: dir) }
            let path = dir.appendingPathComponent("parity.h5").path
            let file = try H5File.open(path, mode: .readWrite)
            try file.deleteObject("/oracle")
            if let recorded { try file.setAttribute("oracle_absent_json", string: recorded, on: "/") }
            file.close()
            let absence = InvariantRegistry.absences(try GoldenFile(path: path))[OracleReport.invariantID]
            switch absence {
            case .notApplicable(let reason)?: #expect(excused && reason.contains("144 GB"), "\(reason)")
            case .coverageGap(let reason)?: #expect(!excused && reason.contains("oracle"), "\(reason)")
            case nil: Issue.record("no absence for \(String(describing: recorded))")
            }
        }
    }

    @Test func multimodalCheckpointWithoutVLMPathsIsACoverageGap() throws {
        let (dir, golden) = try Self.editedCheckpoint { $0["vision_config"] = ["depth": 2, "spatial_merge_size": 2] }
        defer { try? FileManager.default.removeItem(at: dir) }
        let absences = InvariantRegistry.absences(golden)
        guard case .coverageGap(let reason)? = absences["golden-vlm"] else {
            Issue.record("golden-vlm: \(String(describing: absences["golden-vlm"]))"); return
        }
        #expect(reason.contains("vision_config") && reason.contains("mlx-vlm"))
        let rows = InvariantRegistry.coverage([], only: ["golden-vlm", "unified-image-vs-vlm"], absences: absences)
        #expect(rows.map(\.verdict) == [.notRun, .notRun])
        #expect(TextReport.summary(rows).hasPrefix("0 passed, 2 failed"))
    }

    @Test func multimodalCheckpointWithVLMPathsButNoImagePromptsLacksOnlyTheTowerInvariant() throws {
        let (dir, _) = try Self.editedCheckpoint { $0["vision_config"] = ["depth": 2, "spatial_merge_size": 2] }
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("parity.h5").path
        let file = try H5File.open(path, mode: .readWrite)
        try file.setAttribute("vlm_json", string: "{}", on: "/config")   // only its presence is read here
        file.close()
        let absences = InvariantRegistry.absences(try GoldenFile(path: path)).filter { $0.key != OracleReport.invariantID }
        #expect(Array(absences.keys) == ["vision-image-alone-vs-batched"])
        guard case .coverageGap(let reason)? = absences["vision-image-alone-vs-batched"] else { Issue.record("\(absences)"); return }
        #expect(reason.contains("vision tower"))
    }

    @Test func configMLXVLMRefusesExcusesTheUnifiedModelWithTheReason() throws {
        // transformers' form without an mrope_section (same theta and factor as the library
        // default the checkpoint runs with): mlx-lm runs it, mlx-vlm raises.
        let (dir, golden) = try Self.editedCheckpoint {
            $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 100_000, "partial_rotary_factor": 0.25]
            $0["vision_config"] = ["depth": 2]
        }
        defer { try? FileManager.default.removeItem(at: dir) }
        let absences = InvariantRegistry.absences(golden).filter { $0.key != OracleReport.invariantID }
        #expect(Set(absences.keys) == Set(Self.visionInvariants + ["unified-text-vs-lm"]))
        // Excused before any weight is loaded: the unified model cannot exist for this config.
        let rows = InvariantRegistry.run(golden, only: ["unified-text-vs-lm"])
        #expect(rows.map(\.verdict) == [.notApplicable])
        #expect(rows.first?.detail.contains("rope_parameters.mrope_section") == true)
    }

    @Test func randomWeightGoldensExcuseNothing() throws {
        let golden = try GoldenFile(path: goldenDirectory.appendingPathComponent("tiny-dense.h5").path)
        #expect(InvariantRegistry.absences(golden).isEmpty)
    }

    @Test func aCoverageGapIsNeverExcusedByAnotherGolden() {
        let excused: [String: Absence] = ["golden-vlm": .notApplicable("text-only")]
        let gap: [String: Absence] = ["golden-vlm": .coverageGap("no vlm paths")]
        for order in [[excused, gap], [gap, excused]] {
            var merged: [String: Absence] = [:]
            for a in order { InvariantRegistry.merge(&merged, a) }
            #expect(merged["golden-vlm"] == .coverageGap("no vlm paths"))
        }
    }
}
