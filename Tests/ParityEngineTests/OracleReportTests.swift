import TestSupport
import Foundation
import GoldenIO
import Testing
@testable import ParityEngine

/// The float64 oracle: the committed goldens hold it and both MLX paths stay within PyTorch's
/// form of each other; an MLX path made worse than k × the other fails, naming the scenario.
@Suite(.serialized) struct OracleReportTests {
    static let goldens = ["tiny-dense.h5", "tiny-moe.h5", "tiny-hv2-tied.h5"]

    @Test(arguments: goldens) func committedGoldensHoldTheOracleAndPass(_ name: String) throws {
        let golden = try GoldenFile(path: goldenDirectory.appendingPathComponent(name).path)
        let rows = try OracleReport.measure(golden)
        let text = try golden.scenarios().filter { $0.hazard == nil }.map(\.name)
        #expect(Set(rows.map(\.scenario)) == Set(text), "every scenario but the hazards has the oracle")
        let listed = try golden.scenarios().contains { $0.paths.contains(OracleReport.path) }
        #expect(!listed, "the oracle is no implementation's reference path")
        for r in rows {
            // The embeddings are an exact row gather in every implementation (image prompts:
            // the vision tower's features take some rows).
            if !r.scenario.hasPrefix("image_prompt") {
                #expect(r.float32.layerMaxAbs.first == 0)
                for p in r.paths { #expect(p.layerMaxAbs.first == 0, "\(r.scenario) \(p.path): embeddings") }
            }
            // numerics spec §6.3: equally valid float32 runs of the tiny model were observed within
            // 3e-5 of each other; 1e-4 is its bound for them. The MLX paths stay inside the observed
            // range; transformers' own float32 run (chunked delta rule) reaches 3.2e-5 on tiny-hv2-tied.
            for p in r.paths { #expect(p.logitsMaxAbs < 3e-5, "\(r.scenario) \(p.path)") }
            #expect(r.float32.logitsMaxAbs < 1e-4, "\(r.scenario) transformers_f32")
        }
        let row = try #require(InvariantRegistry.run(golden, only: [OracleReport.invariantID]).first)
        #expect(row.verdict == .pass, "\(row.detail)")
        #expect(OracleReport.render(rows, file: golden.name).contains("closer"))
    }

    @Test func checkpointGoldensHoldTheOracleOnTheirFloat32Path() throws {
        let q4 = try GoldenFile(path: goldenDirectory.appendingPathComponent("checkpoints/tiny-checkpoint-q4/parity.h5").path)
        let q4Rows = try OracleReport.measure(q4)
        #expect(!q4Rows.isEmpty)
        // q4 on float32 scales runs in float32 and is its own exact reference (no twin is written):
        // one float32 path, measured, with no second one to hold it to.
        for r in q4Rows {
            #expect(r.paths.map(\.path) == ["mlx_lm"], "\(r.scenario)")
            #expect(r.closer == nil)
        }
        // Not run on it, and reported as not applicable rather than NOT RUN.
        #expect(InvariantRegistry.run(q4, only: [OracleReport.invariantID]).isEmpty)
        #expect(InvariantRegistry.coverage([], only: [OracleReport.invariantID], absences: InvariantRegistry.absences(q4))
                    .map(\.verdict) == [.notApplicable])

        let bf16 = try GoldenFile(path: goldenDirectory.appendingPathComponent("checkpoints/tiny-checkpoint-bf16/parity.h5").path)
        let rows = try OracleReport.measure(bf16)
        for r in rows {
            let native = try #require(r.paths.first { $0.path == "mlx_lm" }), twin = try #require(r.paths.first { $0.path == "mlx_lm_f32" })
            #expect(native.logitsMaxAbs > 1e-3 && twin.logitsMaxAbs < 3e-5, "\(r.scenario): bf16 is measured, far; the twin is near")
            #expect(r.closer == nil, "one float32 path: no ratio")
        }
        #expect(InvariantRegistry.run(bf16, only: [OracleReport.invariantID]).isEmpty)
        #expect(InvariantRegistry.coverage([], only: [OracleReport.invariantID], absences: InvariantRegistry.absences(bf16))
                    .map(\.verdict) == [.notApplicable], "not applicable, not NOT RUN")
    }

    @Test func anMLXPathWorseThanKTimesTheOtherFails() throws {
        // mlx_vlm's full_prefill logits moved to oracle + 5 × (mlx_lm − oracle): 5 times mlx-lm's error.
        let base = "/scenarios/full_prefill"
        let copy = try editedCopy(of: "tiny-hv2-tied.h5") { file in
            let oracle = try file.readDoubles(base + "/transformers_f64/logits")
            let lm = try file.readFloats(base + "/mlx_lm/logits")
            let vlmPositions = try file.readInt32s(base + "/mlx_vlm/logits_positions").values.map { Int($0) }
            let oraclePositions = try file.readInt32s(base + "/transformers_f64/logits_positions").values.map { Int($0) }
            let V = oracle.shape[2]
            var values: [Float] = []
            for p in vlmPositions {
                let i = try #require(oraclePositions.firstIndex(of: p))
                for v in 0..<V {
                    let o = oracle.values[i * V + v]
                    values.append(Float(o + 5 * (Double(lm.values[p * V + v]) - o)))
                }
            }
            try file.overwriteFloats(base + "/mlx_vlm/logits", values: values)
        }
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) }
        let golden = try GoldenFile(path: copy.path)
        let rows = try OracleReport.measure(golden, scenarios: ["full_prefill"])
        let r = try #require(rows.first)
        #expect(r.closer?.path == "mlx_lm")
        #expect((r.closer?.factor ?? 0) > 4.5)
        #expect(r.ratioHolds == false)
        let row = try #require(InvariantRegistry.run(golden, only: [OracleReport.invariantID],
                                                     scenarios: ["full_prefill"]).first)
        #expect(row.verdict == .fail)
        #expect(row.detail.contains("full_prefill"))
    }

    @Test func aMissingFloat32YardstickIsAnErrorNamingTheDataset() throws {
        let copy = try editedCopy(of: "tiny-hv2-tied.h5") { file in
            try file.deleteObject("/scenarios/token_by_token/transformers_f64/float32_error/hidden_sum_sq")
        }
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) }
        let golden = try GoldenFile(path: copy.path)
        #expect(throws: (any Error).self) { try OracleReport.measure(golden, scenarios: ["token_by_token"]) }
        do { _ = try OracleReport.measure(golden, scenarios: ["token_by_token"]) } catch {
            #expect("\(error)".contains("float32_error/hidden_sum_sq"))
        }
    }

    @Test func theOracleNamesAFaultBothMirrorsShareWhereAVoteWithoutItBlamesTheGolden() throws {
        let golden = try GoldenFile(path: goldenDirectory.appendingPathComponent("tiny-moe.h5").path)
        let weights = try golden.weights()
        let side = { (id: String) in try DiffSides.make(id, golden: golden, weights: { weights }) }
        let fault = try SubStepFault(parsing: "3:o_proj")
        let lm = try #require(try side("lm") as? ImplementationSide).faulted(fault)
        let vlm = try #require(try side("vlm") as? ImplementationSide).faulted(fault)

        let arbiter = try #require(try Diff.run(golden, scenario: "full_prefill", sides: [lm, vlm, try side("golden-f64")]).vote)
        #expect(arbiter.departing == "\(lm.id) and \(vlm.id)")
        #expect(arbiter.at == .layer(3) && arbiter.subStep == "o_proj")
        #expect(arbiter.verdict.contains("a fault they share"))

        // Two faulted mirrors outvote the library's own golden in a plain 2-of-3 vote.
        let plain = try #require(try Diff.run(golden, scenario: "full_prefill", sides: [lm, vlm, try side("golden-lm")]).vote)
        #expect(plain.departing == "golden-lm")

        let clean = try #require(try Diff.run(golden, scenario: "full_prefill",
                                              sides: [try side("lm"), try side("vlm"), try side("golden-f64")]).vote)
        #expect(clean.departing == nil, "\(clean.verdict)")
    }
}
