import TestSupport
import Foundation
import GoldenIO
import LMMirror
import ParityCore
import ParityTensor
import Testing
@testable import ParityEngine

/// The committed golden `name` with its mlx-lm golden side and a fresh lm mirror.
struct DiffFixture {
    let golden: GoldenFile
    let weights: Weights

    init(_ name: String) throws {
        golden = try GoldenFile(path: goldenDirectory.appendingPathComponent(name).path)
        weights = try golden.weights()
    }

    var goldenSide: DiffSide { GoldenSide(id: "golden-lm", title: "mlx-lm golden", path: "mlx_lm", numerics: "mlx-lm") }
    var lm: ImplementationSide {
        ImplementationSide(id: "lm", title: "lm mirror", numerics: "mlx-lm", model: LMTextModel(config: golden.config, weights: weights))
    }

    func faulted(_ layer: Int, _ name: String) -> ImplementationSide { lm.faulted(SubStepFault(layer: layer, name: name)) }

    /// A registered side by its command-line name, over the same weights.
    func side(_ id: String) throws -> DiffSide { try DiffSides.make(id, golden: golden) { weights } }
}

/// One fault case: a golden, a layer, a sub-step.
struct FaultCase: CustomTestStringConvertible, Sendable {
    let golden: String
    let layer: Int
    let step: String
    var testDescription: String { "\(golden) layer \(layer) \(step)" }

    /// Every sub-step of both layer kinds, each in two layers of two goldens: GatedDeltaNet in
    /// tiny-dense layer 2 and tiny-hv2-tied layer 0 (Hv = 2·Hk), attention in tiny-dense layer 3
    /// and tiny-hv2-tied layer 1.
    static let all: [FaultCase] =
        SubSteps.deltaNet.flatMap { s in [FaultCase(golden: "tiny-dense.h5", layer: 2, step: s.name),
                                          FaultCase(golden: "tiny-hv2-tied.h5", layer: 0, step: s.name)] }
        // rope_positions is recorded, not rewritten, in the lm mirror (its rope reads the offsets:
        // kv_offset is the faultable step there; the vlm mirror's MRoPE positions are faulted below).
        + SubSteps.attention.filter { $0.name != "rope_positions" }.flatMap { s in
            [FaultCase(golden: "tiny-dense.h5", layer: 3, step: s.name), FaultCase(golden: "tiny-hv2-tied.h5", layer: 1, step: s.name)] }
        + SubSteps.denseFeedForward.flatMap { s in [FaultCase(golden: "tiny-dense.h5", layer: 2, step: s.name),
                                                    FaultCase(golden: "tiny-dense.h5", layer: 3, step: s.name)] }
        // Left out: router_probs, where the nudged expert may not be among the chosen ones (then
        // nothing reads it); topk_indices is faulted through diff tests of whole-numbered steps.
        + SubSteps.moeFeedForward.filter { !["router_probs", "topk_indices"].contains($0.name) }.flatMap { s in
            [FaultCase(golden: "tiny-moe.h5", layer: 1, step: s.name), FaultCase(golden: "tiny-moe.h5", layer: 3, step: s.name)] }
}

@Suite(.serialized) struct DiffTests {
    /// The lm mirror matches mlx-lm bit for bit on every scenario of every golden, and its
    /// sub-steps match every probe the goldens store.
    @Test(arguments: ["tiny-dense.h5", "tiny-moe.h5", "tiny-hv2-tied.h5"])
    func goldenAndMirrorAgreeEverywhereIncludingProbes(name: String) throws {
        let f = try DiffFixture(name)
        for scenario in try f.golden.scenarios() where scenario.paths.contains("mlx_lm") {
            let report = try Diff.run(f.golden, scenario: scenario.name, sides: [f.goldenSide, f.lm])
            #expect(report.agrees, "\(name) \(scenario.name): \(report.first?.sentence ?? "")")
            #expect(report.rows.allSatisfy { $0.status == .identical }, "\(name) \(scenario.name)")
            #expect(report.logits?.flips.isEmpty == true && report.logits?.klMax == 0)
        }
        let kinds = f.golden.config.layerKinds
        for layer in [kinds.firstIndex(of: .linearAttention)!, kinds.firstIndex(of: .fullAttention)!] {
            let report = try Diff.run(f.golden, scenario: "full_prefill", sides: [f.goldenSide, f.lm], layer: layer)
            let table = try #require(report.drillDown)
            let compared = table.rows.filter { $0.status != .missing }
            // attention: 8 stored probes + gate sliced from q_proj; then the feed-forward's, all stored
            let stored = (kinds[layer] == .linearAttention ? 15 : 9) + (f.golden.config.isMoE ? 10 : 5)
            #expect(compared.count == stored, "layer \(layer): \(compared.map(\.item.label))")
            #expect(compared.allSatisfy { $0.status == .identical && $0.diff?.difference.differingElements == 0 })
        }
    }

    /// A nudge in any one sub-step is found at its layer and named as the first divergent sub-step.
    @Test(arguments: FaultCase.all)
    func faultIsNamedAtItsLayerAndSubStep(_ c: FaultCase) throws {
        let f = try DiffFixture(c.golden)
        let report = try Diff.run(f.golden, scenario: "full_prefill", sides: [f.lm, f.faulted(c.layer, c.step)])
        let first = try #require(report.first, "no divergence found")
        #expect(first.item.layer == c.layer, "first divergence \(first.item.label)")
        #expect(first.subStep == c.step, "named \(first.subStep ?? "nothing")")
        // Everything before the faulted layer is bit-identical.
        for row in report.rows {
            if let layer = row.item.layer, layer < c.layer { #expect(row.status == .identical, "\(row.item.label)") }
        }
        if c.step == "final_state" {
            // Nothing reads the state inside the call: only the cache shows it.
            #expect(first.item == .cache(layer: c.layer, name: "recurrent_state"))
        }
    }

    /// Against the golden, the first divergent *stored* probe is named; a fault in a stored probe is
    /// named exactly.
    @Test func faultAgainstTheGoldenIsNamedWhereProbesExist() throws {
        let f = try DiffFixture("tiny-dense.h5")
        for (layer, step) in [(0, "conv_out"), (0, "g"), (0, "core_out"), (3, "q_rope"), (3, "sdpa"), (3, "gate")] {
            let report = try Diff.run(f.golden, scenario: "full_prefill", sides: [f.goldenSide, f.faulted(layer, step)])
            #expect(report.first?.item.layer == layer)
            #expect(report.first?.subStep == step, "\(layer):\(step) named \(report.first?.subStep ?? "nothing")")
        }
    }

    /// Faults that live only in a multi-call schedule (a cache offset, a conv window carried to the
    /// next call), only in a padded batch (a mask that lets a query see padding, a padding bit),
    /// only in MRoPE calls (an axis's position), or in the MoE's routing are named at their layer
    /// and sub-step, on either mirror.
    @Test(arguments: [
        ("tiny-dense.h5", "lm", "prefix_decode", 3, "kv_offset"), ("tiny-dense.h5", "lm", "batch_left_pad", 3, "attn_mask"),
        ("tiny-dense.h5", "lm", "batch_left_pad", 0, "ssm_mask"), ("tiny-dense.h5", "lm", "prefix_decode", 0, "conv_state"),
        ("tiny-dense.h5", "vlm", "mrope_prefix_decode", 3, "rope_positions"),
        ("tiny-dense.h5", "vlm", "mrope_chunked_boundary_step2", 3, "rope_positions"),
        ("tiny-dense.h5", "vlm", "hazard_chunked_image_prefill", 0, "conv_state"),
        ("tiny-dense.h5", "vlm", "hazard_batch_without_mask", 3, "attn_mask"),
        ("tiny-moe.h5", "lm", "full_prefill", 1, "topk_indices"), ("tiny-moe.h5", "vlm", "prefix_decode", 3, "topk_weights"),
    ])
    func bookkeepingFaultIsNamedWhereItLives(_ c: (golden: String, side: String, scenario: String, layer: Int, step: String)) throws {
        let f = try DiffFixture(c.golden)
        let side = try #require(try f.side(c.side) as? ImplementationSide)
        let report = try Diff.run(f.golden, scenario: c.scenario, sides: [side, side.faulted(SubStepFault(layer: c.layer, name: c.step))])
        let first = try #require(report.first, "no divergence found")
        #expect(first.item.layer == c.layer && first.subStep == c.step, "named \(first.item.label) \(first.subStep ?? "no sub-step")")
    }

    /// Sub-steps have one shape on both mirrors: unfaulted, lm and vlm sub-step tables of a
    /// multi-call text scenario never differ on shape (gated_norm_out was [B, L, Hv·dv] on one
    /// side). A left-padded batch is left out: mlx-vlm runs its prompt row by row.
    @Test func subStepShapesAgreeAcrossMirrors() throws {
        for name in ["tiny-dense.h5", "tiny-moe.h5"] {
            let f = try DiffFixture(name)
            let request = DiffRequest(golden: f.golden, scenario: try f.golden.scenario("prefix_decode"),
                                      subStepLayers: Set(f.golden.config.layerKinds.indices))
            let (lm, vlm) = (try f.lm.capture(request), try f.side("vlm").capture(request))
            for (layer, steps) in lm.subSteps {
                for (step, t) in steps { #expect(vlm.subSteps[layer]?[step]?.shape == t.shape, "\(name) layer \(layer) \(step)") }
                #expect(Set(steps.keys) == Set(vlm.subSteps[layer]?.keys ?? [:].keys), "\(name) layer \(layer)")
            }
        }
    }

    /// Unfaulted, the golden and both mirrors agree item by item on every text scenario of every
    /// golden: lm against vlm within the libraries' own distance on that golden, so no side departs.
    @Test(arguments: ["tiny-dense.h5", "tiny-moe.h5", "tiny-hv2-tied.h5"])
    func unfaultedThreeWayVoteNamesNoSide(name: String) throws {
        let f = try DiffFixture(name)
        for scenario in try f.golden.scenarios() where scenario.paths.contains("mlx_lm") && scenario.paths.contains("mlx_vlm") {
            let report = try Diff.run(f.golden, scenario: scenario.name, sides: [f.goldenSide, f.lm, try f.side("vlm")])
            let vote = try #require(report.vote)
            #expect(vote.departing == nil && vote.at == nil, "\(name) \(scenario.name): \(vote.verdict)")
            #expect(vote.pairs.filter { $0.tolerance.isMeasured }.count == 2)
        }
    }

    /// The lm/vlm bound is the library's distance on this golden: the same pair judged bit for bit
    /// parts, so the measured bound is what lets it pass, and the noise floor is twice its logits row.
    @Test func libraryBoundComesFromTheGolden() throws {
        let f = try DiffFixture("tiny-dense.h5")
        let scenario = try f.golden.scenario("full_prefill")
        let library = try LibraryDistances.lmVersusVLM(f.golden, scenario)
        #expect(library.items.values.contains { $0 > 0 })
        let strict = try Diff.run(f.golden, scenario: "full_prefill", sides: [f.lm, try f.side("vlm")], tolerance: .exact)
        #expect(!strict.agrees)
        let measured = try Diff.run(f.golden, scenario: "full_prefill", sides: [f.lm, try f.side("vlm")])
        #expect(measured.agrees && measured.tolerance.isMeasured)
        #expect(measured.logits?.noiseFloor == 2 * library.logits && library.logits > 0)
    }

    /// An older golden without an mlx-vlm run of the scenario gets a message to regenerate, not a constant.
    @Test func missingLibraryDistanceSaysRegenerate() throws {
        let f = try DiffFixture("tiny-dense.h5")
        let mrope = try f.golden.scenarios().first { !$0.paths.contains("mlx_lm") && $0.paths.contains("mlx_vlm") && $0.kind != .image }
        let s = try #require(mrope)
        #expect(throws: GoldenError.self) { _ = try LibraryDistances.lmVersusVLM(f.golden, s) }
        do { _ = try LibraryDistances.lmVersusVLM(f.golden, s) } catch { #expect("\(error)".contains("regenerate")) }
    }

    /// With two implementations and the golden, the faulted side is the one that departs,
    /// wherever it sits in the side list.
    @Test(arguments: [0, 1, 2])
    func voteBlamesTheFaultedSide(position: Int) throws {
        let f = try DiffFixture("tiny-dense.h5")
        let bad = f.faulted(2, "conv_out")
        var sides: [DiffSide] = [f.goldenSide, f.lm]
        sides.insert(bad, at: position)
        let vote = try #require(try Diff.run(f.golden, scenario: "full_prefill", sides: sides).vote)
        #expect(vote.departing == bad.id)
        #expect(Set(vote.agreeing) == ["golden-lm", "lm"])
        #expect(vote.at == .layer(2) && vote.subStep == "conv_out")
        #expect(vote.verdict.hasSuffix("lm mirror with fault 2:conv_out departs at layer 2, conv_out"), "\(vote.verdict)")
    }

    /// The vote is generic over sides: a golden that was tampered with is the one that departs.
    @Test func voteBlamesATamperedGolden() throws {
        let copy = try temporaryCopy(of: "tiny-dense.h5")
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) }
        do {
            let file = try H5File.open(copy.path, mode: .readWrite)
            let dataset = "/scenarios/no_cache/mlx_lm/hidden_states"   // other scenarios link to it; only no_cache is diffed
            var values = try file.readFloats(dataset).values
            values[2 * 32 * 128 + 5] += 0.01                          // layer 1's output, token 0
            try file.overwriteFloats(dataset, values: values)
            file.close()
        }
        let golden = try GoldenFile(path: copy.path)
        let weights = try golden.weights()
        let lm = { ImplementationSide(id: $0, title: $0, numerics: "mlx-lm", model: LMTextModel(config: golden.config, weights: weights)) }
        let sides: [DiffSide] = [GoldenSide(id: "golden-lm", title: "mlx-lm golden", path: "mlx_lm", numerics: "mlx-lm"), lm("lm"), lm("lm-again")]
        let vote = try #require(try Diff.run(golden, scenario: "no_cache", sides: sides).vote)
        #expect(vote.departing == "golden-lm")
        #expect(vote.at == .layer(1))
        #expect(vote.subStep == nil)   // the golden has no sub-steps for no_cache
    }

    @Test func healthySidesAgreeInTheVote() throws {
        let f = try DiffFixture("tiny-moe.h5")
        let vote = try #require(try Diff.run(f.golden, scenario: "chunked_prefill_5", sides: [f.goldenSide, f.lm, f.lm]).vote)
        #expect(vote.departing == nil && vote.at == nil)
        #expect(vote.verdict.hasPrefix("all 3 sides agree"))
    }

    /// A state changed after one call is found in that state, not only in the outputs it moves later.
    @Test func carriedStateIsFoundInTheState() throws {
        let f = try DiffFixture("tiny-dense.h5")
        let report = try Diff.run(f.golden, scenario: "prefix_decode", sides: [f.lm, f.faulted(1, "final_state")])
        let first = try #require(report.first)
        #expect(first.item == .layer(1))
        #expect(first.subStep == "final_state" && first.stateCall == 0 && first.call == 1 && first.position == 28)
        #expect(report.rows.first { $0.item == .cache(layer: 1, name: "recurrent_state") }?.status == .differs)
    }

    /// Batch rows are compared on their real tokens only; a fault in one row's decode is placed in
    /// the decode call.
    @Test func batchDiffSkipsPaddingAndFindsTheFault() throws {
        let f = try DiffFixture("tiny-dense.h5")
        let clean = try Diff.run(f.golden, scenario: "batch_left_pad", sides: [f.goldenSide, f.lm])
        #expect(clean.agrees)
        let report = try Diff.run(f.golden, scenario: "batch_left_pad", sides: [f.goldenSide, f.faulted(3, "o_proj")])
        #expect(report.first?.item == .layer(3))
        #expect(report.first?.subStep == "o_proj")   // the golden stores batch probes in layer 3
    }

    /// diff replays every path a golden holds: the hazards' correct twins (stored light, logits
    /// only) against the vlm mirror making the same correct calls, bit for bit.
    @Test(arguments: ["hazard_stale_positions", "hazard_chunked_image_prefill", "hazard_batch_without_mask"])
    func hazardTwinsReplayBitForBit(scenario: String) throws {
        let f = try DiffFixture("tiny-dense.h5")
        let report = try Diff.run(f.golden, scenario: scenario, sides: [try f.side("golden-vlm-correct"), try f.side("vlm-correct")])
        #expect(report.agrees && report.rows.contains { $0.item == .logits && $0.status == .identical })
    }

    /// The 2-of-3 vote across libraries: the vlm mirror agrees with mlx-vlm's golden bit for bit.
    @Test func vlmMirrorAgreesWithItsGolden() throws {
        let f = try DiffFixture("tiny-dense.h5")
        let goldenVLM = try DiffSides.make("golden-vlm", golden: f.golden, weights: { f.weights })
        let vlm = try DiffSides.make("vlm", golden: f.golden, weights: { f.weights })
        let report = try Diff.run(f.golden, scenario: "full_prefill", sides: [goldenVLM, vlm])
        #expect(report.agrees)
        #expect(report.rows.allSatisfy { $0.status == .identical })
    }

    @Test func unknownSideAndBadFaultAreNamed() throws {
        let f = try DiffFixture("tiny-dense.h5")
        #expect(throws: DiffError.unknownSide("mlx", known: ["golden-lm", "lm", "golden-vlm", "vlm", "golden-vlm-correct", "vlm-correct", "golden-f64", "unified"])) {
            try DiffSides.make("mlx", golden: f.golden, weights: { f.weights })
        }
        #expect(throws: DiffError.self) { try SubStepFault(parsing: "conv_out") }
        #expect(throws: DiffError.self) { try SubStepFault(parsing: "3:conv_out").validate(for: f.golden.config) }   // attention layer
        #expect(throws: DiffError.self) { try SubStepFault(parsing: "9:sdpa").validate(for: f.golden.config) }
        #expect(throws: DiffError.self) { try Diff.run(f.golden, scenario: "full_prefill", sides: [f.goldenSide, f.lm], layer: 4) }
    }

    @Test func jsonCarriesTheVerdicts() throws {
        let f = try DiffFixture("tiny-dense.h5")
        let report = try Diff.run(f.golden, scenario: "full_prefill", sides: [f.goldenSide, f.faulted(0, "beta"), f.lm])
        let object = try #require(try JSONSerialization.jsonObject(with: DiffText.json(report)) as? [String: Any])
        #expect(object["agrees"] as? Bool == false)
        let first = try #require(object["firstDivergence"] as? [String: Any])
        #expect(first["layer"] as? Int == 0 && first["subStep"] as? String == "beta")
        #expect((object["vote"] as? [String: Any])?["departing"] as? String == "lm+0:beta")
        #expect((object["rows"] as? [Any])?.count == report.rows.count)
    }

    @Test func textHasColoursOnlyWhenAsked() throws {
        let f = try DiffFixture("tiny-dense.h5")
        let report = try Diff.run(f.golden, scenario: "full_prefill", sides: [f.goldenSide, f.faulted(0, "qkv")])
        let plain = DiffText.render(report, style: TerminalStyle(colours: false))
        #expect(!plain.contains("\u{1B}["))
        #expect(plain.contains("◀ first divergence") && plain.contains("◀ first divergent sub-step"))
        #expect(plain.contains("first divergence: layer 0, sub-step qkv"))
        #expect(DiffText.render(report, style: TerminalStyle(colours: true)).contains("\u{1B}[1;31m"))
    }
}

@Suite struct DiffMetricTests {
    @Test func rateOfChangeFollowsCradle() {
        func row(_ item: DiffItem, _ mean: Float) -> DiffRow {
            var d = Difference()
            d.meanAbs = mean
            return DiffRow(item: item, shape: [1], diff: TensorDiff(difference: d, maxRelative: 0, cosine: 1, firstPosition: nil, passes: true),
                           status: .identical)
        }
        var rows = [row(.embeddings, 0), row(.layer(0), 0), row(.cache(layer: 0, name: "keys"), 5), row(.layer(1), 1e-6),
                    row(.layer(2), 2e-6), row(.finalNorm, 1e-6), row(.logits, 9)]
        Diff.addRates(&rows)
        #expect(rows[0].rate == nil && rows[1].rate == 0)
        #expect(rows[2].rate == nil && rows[6].rate == nil)          // caches and logits are not layers
        #expect(abs(rows[3].rate! - 1e-6 / 1e-12) < 1)                  // off an exact match: huge
        #expect(abs(rows[4].rate! - 1) < 1e-4)                          // doubled
        #expect(abs(rows[5].rate! + 0.5) < 1e-4)                        // halved
    }

    @Test func tensorDiffReportsCosineRelativeAndFirstToken() {
        let a = Tensor(shape: [1, 3, 2], data: [1, 2, 3, 4, 5, 6])
        var b = a
        b.data[3] = 4.5   // token 1
        let d = TensorDiff.measure(a, b, timeAxis: 1, valid: nil, tolerance: .exact)
        #expect(!d.passes && d.firstPosition == 1 && d.difference.differingElements == 1)
        #expect(abs(d.maxRelative - 0.125) < 1e-6)
        #expect(d.cosine < 1 && d.cosine > 0.99)
        #expect(TensorDiff.measure(a, a, timeAxis: 1, valid: nil, tolerance: .exact).cosine == 1)
        // Within atol: passes, and no token is past the tolerance.
        let loose = TensorDiff.measure(a, b, timeAxis: 1, valid: nil, tolerance: .atol(1))
        #expect(loose.passes && loose.firstPosition == nil)
        // Padding is not compared.
        let padded = TensorDiff.measure(a, b, timeAxis: 1, valid: { _, t in t != 1 }, tolerance: .exact)
        #expect(padded.passes && padded.difference.compared == 4)
    }

    /// A top-1 flip counts only when the reference's margin is past the noise floor.
    @Test func flipsInsideTheNoiseFloorAreListedApart() {
        let V = 8
        var a = [Float](repeating: 0, count: 3 * V), b = a
        // token 0: reference margin 5e-5 (noise), the other side swaps top-1 and top-2
        a[0] = 1; a[1] = 1 - 5e-5; b[0] = 1 - 5e-5; b[1] = 1
        // token 1: reference margin 0.5, swapped: a real flip
        a[V + 2] = 2; a[V + 3] = 1.5; b[V + 2] = 1.5; b[V + 3] = 2
        // token 2: identical
        a[2 * V + 4] = 3; b[2 * V + 4] = 3
        let m = LogitMetrics.measure(Tensor(shape: [1, 3, V], data: a), Tensor(shape: [1, 3, V], data: b), positions: [0, 1, 2], valid: nil,
                                     noiseFloor: (1e-4, "test"))
        #expect(m.compared == 3 && m.top1Agree == 1)
        #expect(m.flips.count == 1 && m.flips[0].position == 1 && m.flips[0].referenceTop == 2 && m.flips[0].otherTop == 3)
        #expect(m.noiseFlips.count == 1 && m.noiseFlips[0].position == 0)
        #expect(m.klMax > 0 && m.klMaxPosition == 1)
        #expect(m.topKOverlap == 1)   // the same five tokens on top everywhere
        let same = LogitMetrics.measure(Tensor(shape: [1, 3, V], data: a), Tensor(shape: [1, 3, V], data: a), positions: [0, 1, 2], valid: nil,
                                     noiseFloor: (1e-4, "test"))
        #expect(same.klMax == 0 && same.flips.isEmpty && same.noiseFlips.isEmpty)
    }

    @Test func klDivergenceMatchesTheDefinition() {
        let p: [Float] = [0, 1, 2], q: [Float] = [2, 1, 0]
        func softmax(_ v: [Float]) -> [Double] { let e = v.map { Foundation.exp(Double($0)) }; let s = e.reduce(0, +); return e.map { $0 / s } }
        let (sp, sq) = (softmax(p), softmax(q))
        let expected = zip(sp, sq).reduce(0.0) { $0 + $1.0 * Foundation.log($1.0 / $1.1) }
        #expect(abs(LogitMetrics.klDivergence(p, q) - expected) < 1e-12)
    }
}
