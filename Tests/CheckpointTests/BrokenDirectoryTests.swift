import Foundation
import ParityCore
import ParityTensor
import Testing
@testable import Checkpoint

/// Sharded directories load like one file; every way a directory can be broken is an error
/// naming the file and the tensor or key, never a trap.
@Suite struct BrokenDirectoryTests {
    static var config: [String: Any] { tinyConfigObject() }

    /// Every runtime weight as F32, split over `shards` builders in name order.
    static func builders(_ shards: Int) throws -> [SafetensorsBuilder] {
        let resolved = try TextConfig.mlxLM(json: JSONSerialization.data(withJSONObject: config), source: "t")
        let weights = ModelDirectoryTests.runtimeWeights(resolved, seed: 5).sorted { $0.key < $1.key }
        var out = [SafetensorsBuilder](repeating: SafetensorsBuilder(), count: shards)
        for (i, (name, t)) in weights.enumerated() { out[i * shards / weights.count].f32(name, t.shape, t.data) }
        return out
    }

    /// Writes config.json, the shards (model-0000i-of-0000n, or model.safetensors for one) and
    /// optionally an index mapping every tensor to its shard.
    static func write(_ dir: Scratch, _ shards: [SafetensorsBuilder], config: [String: Any] = tinyConfigObject(), index: Bool) throws {
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir.path("config.json")))
        var map: [String: String] = [:]
        for (i, builder) in shards.enumerated() {
            let name = shards.count == 1 ? "model.safetensors" : String(format: "model-%05d-of-%05d.safetensors", i + 1, shards.count)
            try builder.build().write(to: URL(fileURLWithPath: dir.path(name)))
            for item in builder.items { map[item.name] = name }
        }
        if index { try writeIndex(dir, map) }
    }

    static func writeIndex(_ dir: Scratch, _ map: [String: String]) throws {
        let object: [String: Any] = ["metadata": ["total_size": 0], "weight_map": map]
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: dir.path(ShardLayout.indexName)))
    }

    @Test func shardedDirectoryLoadsLikeOneFile() throws {
        let one = try Scratch(), three = try Scratch()
        try Self.write(one, try Self.builders(1), index: false)
        try Self.write(three, try Self.builders(3), index: true)
        let a = try ModelDirectory(path: one.url.path), b = try ModelDirectory(path: three.url.path)
        #expect(b.summary.files == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                    "model-00003-of-00003.safetensors"])
        #expect(a.weights.names == b.weights.names)
        for name in a.weights.names { #expect(differingBits(a.weights[name].data, b.weights[name].data) == 0, "\(name)") }
    }

    @Test func missingShardIsNamed() throws {
        let dir = try Scratch()
        try Self.write(dir, try Self.builders(3), index: true)
        try FileManager.default.removeItem(atPath: dir.path("model-00002-of-00003.safetensors"))
        #expect(throws: CheckpointError.missingShard(directory: dir.url.path, file: "model-00002-of-00003.safetensors",
                                                     shard: 2, of: 3)) {
            _ = try ModelDirectory(path: dir.url.path)
        }
    }

    @Test func indexNamingAnAbsentFileIsNamed() throws {
        let dir = try Scratch()
        let shards = try Self.builders(1)
        try Self.write(dir, shards, index: false)
        let tensor = shards[0].items[0].name
        try Self.writeIndex(dir, [tensor: "model-00001-of-00002.safetensors"])
        #expect(throws: CheckpointError.indexNamesMissingFile(index: dir.path(ShardLayout.indexName), tensor: tensor,
                                                              file: "model-00001-of-00002.safetensors")) {
            _ = try ModelDirectory(path: dir.url.path)
        }
    }

    @Test func indexNamingATensorTheFileLacksIsNamed() throws {
        let dir = try Scratch()
        try Self.write(dir, try Self.builders(2), index: true)
        let tensor = "language_model.model.layers.0.mlp.gate_proj.weight"
        var map: [String: String] = [:]
        for (i, builder) in try Self.builders(2).enumerated() {
            for item in builder.items { map[item.name] = String(format: "model-%05d-of-00002.safetensors", i + 1) }
        }
        let actual = try #require(map[tensor])
        let other = actual.hasPrefix("model-00001") ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors"
        map[tensor] = other
        try Self.writeIndex(dir, map)
        #expect(throws: CheckpointError.indexTensorNotInFile(index: dir.path(ShardLayout.indexName), tensor: tensor,
                                                             file: other, foundIn: actual)) {
            _ = try ModelDirectory(path: dir.url.path)
        }
    }

    @Test func truncatedHeaderIsNamed() throws {
        let dir = try Scratch()
        try Self.write(dir, try Self.builders(1), index: false)
        let file = dir.path("model.safetensors")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        try bytes.prefix(40).write(to: URL(fileURLWithPath: file))
        #expect(throws: SafetensorsError.self) { _ = try ModelDirectory(path: dir.url.path) }
        do { _ = try ModelDirectory(path: dir.url.path) } catch { #expect("\(error)".hasPrefix(file + ": header claims")) }
    }

    @Test func tensorShapeDisagreeingWithTheConfigIsNamedByFileAndTensor() throws {
        let dir = try Scratch()
        var shards = try Self.builders(1)
        let name = "language_model.model.layers.0.input_layernorm.weight"
        let i = try #require(shards[0].items.firstIndex { $0.name == name })
        shards[0].items[i].shape = [2, shards[0].items[i].shape[0] / 2]   // same bytes, wrong shape
        try Self.write(dir, shards, index: false)
        #expect {
            _ = try ModelDirectory(path: dir.url.path)
        } throws: { error in
            guard case let .tensorDisagreesWithConfig(file, tensor, reason)? = error as? CheckpointError else { return false }
            return file == dir.path("model.safetensors") && tensor == name && reason.contains("[2, 32]")
        }
    }

    @Test func tensorDTypeDisagreeingWithItsRoleIsNamed() throws {
        // A quantized module's packed weight stored as F32: the triple cannot be unpacked.
        let dir = try Scratch()
        var object = Self.config
        object["quantization"] = ["group_size": 64, "bits": 4]
        var builder = try Self.builders(1)[0]
        let module = "language_model.model.layers.0.mlp.gate_proj"
        builder.items.removeAll { $0.name == module + ".weight" }
        builder.f32(module + ".weight", [64, 8], [Float](repeating: 0, count: 512))
        builder.f32(module + ".scales", [64, 1], [Float](repeating: 1, count: 64))
        builder.f32(module + ".biases", [64, 1], [Float](repeating: 0, count: 64))
        try Self.write(dir, [builder], config: object, index: false)
        #expect(throws: SafetensorsError.wrongDType(file: dir.path("model.safetensors"), tensor: module + ".weight",
                                                    found: "F32", wanted: "U32")) {
            _ = try ModelDirectory(path: dir.url.path)
        }
    }

    /// (key, JSON literal)
    @Test(arguments: [("mode", "\"nf4\""), ("bits", "7"), ("bits", "1"), ("group_size", "\"64\"")])
    func unknownQuantizationIsNamedByKey(_ key: String, _ literal: String) throws {
        let dir = try Scratch()
        var object = Self.config
        let value = try JSONSerialization.jsonObject(with: Data(literal.utf8), options: .fragmentsAllowed)
        var block: [String: Any] = ["group_size": 64, "bits": 4]
        block[key] = value
        object["quantization"] = block
        try Self.write(dir, try Self.builders(1), config: object, index: false)
        #expect {
            _ = try ModelDirectory(path: dir.url.path)
        } throws: { error in
            guard case let .badConfig(source, reason)? = error as? QuantizationError else { return false }
            return source == dir.path("config.json") && reason.contains("'quantization.\(key)'")
        }
    }

    @Test func visionWeightsWithoutVisionConfigAreNamed() throws {
        let dir = try Scratch()
        var builder = try Self.builders(1)[0]
        builder.f32("vision_tower.blocks.0.norm1.weight", [4], [1, 1, 1, 1])
        try Self.write(dir, [builder], index: false)
        #expect(throws: CheckpointError.visionWeightsWithoutVisionConfig(
            file: dir.path("model.safetensors"), tensor: "vision_tower.blocks.0.norm1.weight", config: dir.path("config.json"))) {
            _ = try ModelDirectory(path: dir.url.path)
        }
        // With a vision_config the tower's weights are the vision side's, and the text model loads.
        try JSONSerialization.data(withJSONObject: tinyConfigObject { $0["vision_config"] = ["depth": 1] })
            .write(to: URL(fileURLWithPath: dir.path("config.json")))
        #expect(throws: Never.self) { _ = try ModelDirectory(path: dir.url.path) }
    }
}
