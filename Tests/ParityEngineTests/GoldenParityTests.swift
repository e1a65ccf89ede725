import TestSupport
import Foundation
import GoldenIO
import Testing
@testable import ParityEngine

/// The committed goldens, found relative to this file.
let goldenDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../golden").standardizedFileURL

func temporaryCopy(of name: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qwen-parity-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let copy = dir.appendingPathComponent(name)
    try FileManager.default.copyItem(at: goldenDirectory.appendingPathComponent(name), to: copy)
    return copy
}

@Suite(.serialized) struct GoldenParityTests {
    /// One cached scenario per golden in the debug build; `make parity` runs them all in release.
    @Test(arguments: ["tiny-dense.h5", "tiny-moe.h5", "tiny-hv2-tied.h5"])
    func committedGoldensPass(name: String) throws {
        let golden = try GoldenFile(path: goldenDirectory.appendingPathComponent(name).path)
        let reports = try GoldenParity.check(golden, scenarios: ["full_prefill"])
        #expect(Set(reports.map(\.reference)) == ["mlx_lm", "mlx_vlm"])
        for report in reports {
            #expect(report.passed, "\(report.scenario.name): \(report.firstDivergence?.item ?? report.error ?? "")")
        }
    }

    /// The comparison can fail: one weight of layer 2 nudged in a temporary copy makes layers 0 and 1
    /// pass and names layer 2 as the first divergence.
    @Test func perturbedWeightFailsAtItsLayer() throws {
        let copy = try temporaryCopy(of: "tiny-dense.h5")
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) }
        let dataset = "/weights/language_model.model.layers.2.linear_attn.out_proj.weight"
        do {
            let file = try H5File.open(copy.path, mode: .readWrite)
            var values = try file.readFloats(dataset).values
            values[7] += 0.01
            try file.overwriteFloats(dataset, values: values)
            file.close()
        }
        let reports = try GoldenParity.check(try GoldenFile(path: copy.path), scenarios: ["no_cache"])
        let report = try #require(reports.first)
        #expect(!report.passed)
        #expect(report.firstDivergence?.item == "layer 2")
        let verdicts = Dictionary(uniqueKeysWithValues: report.rows.map { ($0.item, $0.verdict) })
        #expect(verdicts["layer 0"] == .pass && verdicts["layer 1"] == .pass)
        #expect(verdicts["layer 3"] == .fail && verdicts["logits"] == .fail)
    }

    @Test func unknownScenarioIsNamed() throws {
        let golden = try GoldenFile(path: goldenDirectory.appendingPathComponent("tiny-dense.h5").path)
        #expect(throws: GoldenError.self) { try GoldenParity.check(golden, scenarios: ["no_such"]) }
    }

    /// The golden records what mlx-lm ran: the rope default overrode the config's top-level fields.
    @Test func goldenRecordsTheRopeSurprise() throws {
        let golden = try GoldenFile(path: goldenDirectory.appendingPathComponent("tiny-dense.h5").path)
        #expect(golden.rawConfigJSON.contains("\"rope_theta\": 1000"))
        #expect(golden.config.ropeTheta == 100_000 && golden.config.rotaryDims == 16)
    }
}
