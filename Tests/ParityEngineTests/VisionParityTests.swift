import TestSupport
import Checkpoint
import Foundation
import GoldenIO
import ParityCore
import ParityTensor
import Testing
import VLMMirror
@testable import ParityEngine

/// A temporary copy of a committed golden, edited through GoldenIO; remove its folder when done.
func editedCopy(of name: String, _ edit: (H5File) throws -> Void) throws -> URL {
    let copy = try temporaryCopy(of: name)
    let file = try H5File.open(copy.path, mode: .readWrite)
    defer { file.close() }
    try edit(file)
    return copy
}

/// Image prompts from pixel values: the committed goldens pass, and a fault anywhere on the way
/// (a tower weight, a pixel, a grid, the config) is named at the step where it first shows.
@Suite(.serialized) struct VisionParityTests {
    static let prompts = [("tiny-dense.h5", "image_prompt_one"), ("tiny-dense.h5", "image_prompt_two"),
                          ("tiny-moe.h5", "image_prompt_two")]

    func report(_ path: String, _ scenario: String) throws -> ScenarioReport {
        let reports = try GoldenParity.check(try GoldenFile(path: path), scenarios: [scenario])
        return try #require(reports.first { $0.reference == "mlx_vlm" })
    }

    /// Edits a temporary copy of a golden, then checks one scenario of it.
    func reportAfterEditing(_ name: String, _ scenario: String, _ edit: (H5File) throws -> Void) throws -> ScenarioReport {
        let copy = try editedCopy(of: name, edit)
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) }
        return try report(copy.path, scenario)
    }

    func verdicts(_ r: ScenarioReport) -> [String: ParityRow.Verdict] {
        Dictionary(r.rows.map { ($0.item, $0.verdict) }, uniquingKeysWith: { a, _ in a })
    }

    @Test(arguments: prompts)
    func committedImagePromptsPassBitForBit(name: String, scenario: String) throws {
        let r = try report(goldenDirectory.appendingPathComponent(name).path, scenario)
        #expect(r.passed, "\(r.firstDivergence?.item ?? r.error ?? "")")
        let items = r.rows.map(\.item)
        // Every tower step, the merge and the prompt's positions are checked, positions first.
        for step in ["vision patch_embed", "vision pos_embed", "vision rotary_angles", "vision embedded",
                     "vision block_00_attn", "vision block_01_out", "vision features", "merged embeddings", "logits"] {
            #expect(items.contains(step), "no row \(step)")
        }
        let position = try #require(items.firstIndex(of: "prompt position ids"))
        #expect(position < items.firstIndex(of: "vision patch_embed")!)
        #expect(r.rows.allSatisfy { $0.difference == nil || $0.difference!.differingElements == 0 })
    }

    @Test func perturbedTowerWeightFailsAtItsBlock() throws {
        let r = try reportAfterEditing("tiny-dense.h5", "image_prompt_one") { file in
            let dataset = "/vision/weights/vision_tower.blocks.1.mlp.linear_fc2.weight"
            var values = try file.readFloats(dataset).values
            values[3] += 0.01
            try file.overwriteFloats(dataset, values: values)
        }
        let v = verdicts(r)
        #expect(r.firstDivergence?.item == "vision block_01_out")
        #expect(v["vision block_00_out"] == .pass && v["vision block_01_attn"] == .pass && v["prompt position ids"] == .pass)
        #expect(v["vision features"] == .fail && v["merged embeddings"] == .fail && v["logits"] == .fail)
    }

    @Test func perturbedPixelFailsAtThePatchEmbedding() throws {
        let r = try reportAfterEditing("tiny-dense.h5", "image_prompt_two") { file in
            let dataset = "/inputs/vision/image_two/pixel_values"
            var values = try file.readFloats(dataset).values
            values[values.count - 5] += 0.5       // a patch of the second image
            try file.overwriteFloats(dataset, values: values)
        }
        #expect(r.firstDivergence?.item == "vision patch_embed")
        #expect(verdicts(r)["prompt position ids"] == .pass)
    }

    /// A grid of the same patch count but transposed: the tower still runs, the positions are
    /// wrong, and that is reported as a position mismatch before any tensor.
    @Test func transposedGridIsReportedAsAPositionBug() throws {
        let r = try reportAfterEditing("tiny-dense.h5", "image_prompt_one") { file in
            let dataset = "/inputs/vision/image_one/image_grid_thw"
            try file.deleteObject(dataset)
            try file.writeInt32s(dataset, shape: [1, 3], values: [1, 8, 6])
        }
        #expect(r.firstDivergence?.item == "prompt position ids")
    }

    @Test func inconsistentGridIsANamedError() throws {
        let copy = try editedCopy(of: "tiny-dense.h5") { file in
            let dataset = "/inputs/vision/image_one/image_grid_thw"
            try file.deleteObject(dataset)
            try file.writeInt32s(dataset, shape: [1, 3], values: [1, 6, 6])   // 36 patches for 48 pixel rows
        }
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) }
        do {
            _ = try GoldenParity.check(try GoldenFile(path: copy.path), scenarios: ["image_prompt_one"])
            Issue.record("a grid that does not match the pixel rows was accepted")
        } catch {
            let text = "\(error)"
            #expect(text.contains(copy.path) && text.contains("/inputs/vision/image_one/pixel_values") && text.contains("[36, 96]"), "\(text)")
        }
    }

    @Test func visionConfigThatDisagreesWithTheWeightsIsNamed() throws {
        let copy = try editedCopy(of: "tiny-dense.h5") { file in
            let text = try file.stringAttribute("config_json", of: "/vision")
            try file.deleteAttribute("config_json", of: "/vision")
            try file.setAttribute("config_json", string: text.replacingOccurrences(of: "\"intermediate_size\": 48",
                                                                                  with: "\"intermediate_size\": 40"), on: "/vision")
        }
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) }
        #expect {
            _ = try GoldenParity.check(try GoldenFile(path: copy.path), scenarios: ["image_prompt_one"])
        } throws: { error in
            let text = "\(error)"
            // Names are checked in sorted order: block 0's fc1 bias is the first to disagree.
            return text.contains("/vision/weights") && text.contains("blocks.0.mlp.linear_fc1.bias has shape [48]")
                && text.contains("implies [40]")
        }
    }

    /// A vision generator changed since the golden was written makes it stale, like the main one.
    @Test func changedVisionGeneratorMakesTheGoldenStale() throws {
        let repo = try TempDir()
        try repo.write("tools/make_golden.py", "print('v1')\n")
        try repo.write("tools/golden_vision.py", "print('vision v2')\n")
        let golden = repo.path("golden/x.h5")
        try FileManager.default.createDirectory(atPath: repo.path("golden"), withIntermediateDirectories: true)
        let f = try H5File.create(golden)
        try writeProvenance(f, generatorSHA: try SHA256.hex(fileAt: repo.path("tools/make_golden.py")))
        try f.createGroup("/vision")
        try f.setAttribute("generator", string: "tools/golden_vision.py", on: "/vision")
        try f.setAttribute("generator_sha256", string: String(repeating: "cd", count: 32), on: "/vision")
        let provenance = try GoldenProvenance.read(f, path: golden)
        f.close()
        let freshness = Freshness.check(provenance, sources: FreshnessSources.locate(for: golden))
        #expect(freshness.isStale && freshness.changes.count == 1 && freshness.changes[0].contains("/vision generator changed"),
                "\(freshness.changes)")
    }
}

/// The tower and the merge reject inputs mlx-vlm would reject, with the reason.
@Suite struct VisionInputTests {
    func tower() throws -> VisionTower {
        let config = VisionConfig(depth: 1, hiddenSize: 8, intermediateSize: 16, numHeads: 2, patchSize: 2,
                                  temporalPatchSize: 2, spatialMergeSize: 2, inChannels: 3, outHiddenSize: 16,
                                  numPositionEmbeddings: 16)
        var weights: [String: Tensor] = [:]
        for (i, (name, shape)) in config.parameterShapes.sorted(by: { $0.key < $1.key }).enumerated() {
            weights[name] = randomTensor(shape, seed: UInt64(i + 1), range: -0.3...0.3)
        }
        return try VisionTower(config: config, weights: weights)
    }

    @Test func gridsMustBeWholeMergeBlocks() throws {
        let t = try tower()
        #expect(throws: VisionError.self) { try t.grids([[1, 3, 4]]) }
        #expect(throws: VisionError.self) { try t.grids([[1, 4]]) }
        #expect(throws: VisionError.self) { try t.grids([]) }
        #expect(try t.grids([[2, 4, 6]]) == [ImageGrid(frames: 2, height: 4, width: 6)])
    }

    @Test func pixelValuesMustFitTheGridsAndBeFinite() throws {
        let t = try tower()
        let grids = try t.grids([[1, 2, 4]])                      // 8 patches of 3·2·2·2 = 24 values
        #expect(throws: VisionError.self) { try t(pixelValues: Tensor(zeros: [7, 24]), grids: grids) }
        var pixels = randomTensor([8, 24], seed: 3)
        #expect(try t(pixelValues: pixels, grids: grids).shape == [2, 16])
        pixels.data[17] = .nan
        #expect(throws: VisionError.self) { try t(pixelValues: pixels, grids: grids) }
    }

    @Test func missingOrMisshapenWeightsAreNamed() throws {
        let config = try tower().config
        var weights: [String: Tensor] = [:]
        for (name, shape) in config.parameterShapes { weights[name] = Tensor(zeros: shape) }
        weights["vision_tower.merger.norm.bias"] = nil
        #expect(throws: VisionError.self) { try VisionTower(config: config, weights: weights) }
        weights["vision_tower.merger.norm.bias"] = Tensor(zeros: [9])
        #expect { try VisionTower(config: config, weights: weights) } throws: { "\($0)".contains("merger.norm.bias") }
    }

    @Test func imageTokenCountMustMatchTheFeatures() throws {
        let tokens = MultimodalConfig(imageTokenId: 7, videoTokenId: 8, visionStartTokenId: 5, visionEndTokenId: 6, spatialMergeSize: 2)
        let embeddings = randomTensor([1, 5, 4], seed: 1)
        let features = randomTensor([2, 4], seed: 2)
        #expect(throws: VisionError.self) {
            try ImageMerge.scatter(features, into: embeddings, ids: [[1, 5, 7, 6, 2]], tokens: tokens)
        }
        let merged = try ImageMerge.scatter(features, into: embeddings, ids: [[5, 7, 7, 6, 2]], tokens: tokens)
        #expect(Array(merged.data[4..<12]) == features.data)
        #expect(Array(merged.data[0..<4]) == Array(embeddings.data[0..<4]) && Array(merged.data[12...]) == Array(embeddings.data[12...]))
    }

    @Test func visionConfigNamesWhatIsWrong() throws {
        let good = #"{"depth": 2, "hidden_size": 24, "intermediate_size": 48, "num_heads": 2, "patch_size": 4, "temporal_patch_size": 2, "spatial_merge_size": 2, "in_channels": 3, "out_hidden_size": 128, "num_position_embeddings": 16}"#
        #expect(try VisionConfig.decode(Data(good.utf8), source: "s").headDim == 12)
        func rejects(_ text: String, mentioning key: String) {
            #expect { try VisionConfig.decode(Data(text.utf8), source: "s") } throws: { "\($0)".contains(key) }
        }
        rejects(good.replacingOccurrences(of: #""depth": 2, "#, with: ""), mentioning: "depth")
        rejects(good.replacingOccurrences(of: #""num_heads": 2"#, with: #""num_heads": 4"#), mentioning: "multiple of 4")
        rejects(good.replacingOccurrences(of: #""num_heads": 2"#, with: #""num_heads": 5"#), mentioning: "num_heads")
        rejects(good.replacingOccurrences(of: "}", with: #", "deepstack_visual_indexes": [1]}"#), mentioning: "deepstack")
        rejects(good.replacingOccurrences(of: #""patch_size": 4"#, with: #""patch_size": -4"#), mentioning: "patch_size")
    }
}

/// `qwen-parity diff` on an image prompt: the tower's steps come first, and the first divergent
/// one is named.
@Suite(.serialized) struct VisionDiffTests {
    func sides(_ golden: GoldenFile) throws -> [DiffSide] {
        let weights = try golden.weights()
        return try ["golden-vlm", "vlm"].map { try DiffSides.make($0, golden: golden, weights: { weights }) }
    }

    @Test func imagePromptDiffStartsWithTheTower() throws {
        let golden = try GoldenFile(path: goldenDirectory.appendingPathComponent("tiny-dense.h5").path)
        let report = try Diff.run(golden, scenario: "image_prompt_one", sides: try sides(golden))
        #expect(report.agrees)
        let labels = report.rows.map(\.item.label)
        #expect(labels.prefix(2) == ["vision patch_embed", "vision pos_embed"])
        #expect(labels.firstIndex(of: "merged embeddings")! < labels.firstIndex(of: "embeddings")!)
    }

    @Test func perturbedPositionTableIsTheFirstDivergence() throws {
        let copy = try editedCopy(of: "tiny-dense.h5") { file in
            let dataset = "/vision/weights/vision_tower.pos_embed.weight"
            var values = try file.readFloats(dataset).values
            values[30] += 0.05
            try file.overwriteFloats(dataset, values: values)
        }
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) }
        let golden = try GoldenFile(path: copy.path)
        let report = try Diff.run(golden, scenario: "image_prompt_one", sides: try sides(golden))
        #expect(report.first?.item == .vision("pos_embed"))
        #expect(report.rows.first?.status == .identical)   // patch_embed does not read the table
    }
}
