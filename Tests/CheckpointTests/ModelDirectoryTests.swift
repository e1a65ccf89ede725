import Foundation
import ParityCore
import ParityTensor
import Testing
@testable import Checkpoint

@Suite struct ModelDirectoryTests {
    /// Random runtime weights for the tiny config, as float32 tensors.
    static func runtimeWeights(_ config: TextConfig, seed: UInt64) -> [String: Tensor] {
        var rng = SplitMix64(state: seed)
        var out: [String: Tensor] = [:]
        for (name, shape) in WeightNames.expected(for: config) {
            let n = shape.reduce(1, *)
            let base: Float = name.hasSuffix("norm.weight") ? 1 : 0
            out[name] = Tensor(shape: shape, data: (0..<n).map { _ in base + Float.random(in: -0.3...0.3, using: &rng) })
        }
        return out
    }

    static func write(_ dir: Scratch, config: [String: Any], _ builder: SafetensorsBuilder) throws {
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir.path("config.json")))
        try builder.build().write(to: URL(fileURLWithPath: dir.path("model.safetensors")))
    }

    /// MLX layout, mixed storage: bf16 norms, 4-bit (inferred) and 8-bit (per-module entry)
    /// quantized projections, float32 for the rest. Loading gives exactly the widened or
    /// dequantized values, and nothing is renamed (a fixed point).
    @Test func mlxLayoutWithQuantizedAndBF16Tensors() throws {
        var object = tinyConfigObject()
        object["quantization"] = ["group_size": 64, "bits": 4,
                                  "language_model.lm_head": ["group_size": 64, "bits": 8]] as [String: Any]
        let config = try TextConfig.mlxLM(json: JSONSerialization.data(withJSONObject: object), source: "t")
        let weights = Self.runtimeWeights(config, seed: 3)
        var rng = SplitMix64(state: 9)
        var builder = SafetensorsBuilder()
        var expected: [String: [Float]] = [:]
        let gateProj = WeightNames.layer(0, "mlp.gate_proj.weight")
        for (name, t) in weights.sorted(by: { $0.key < $1.key }) {
            if name == gateProj || name == WeightNames.lmHead {
                // 4-bit/group 32 (inferred from shapes) for gate_proj, 8-bit/64 (config entry) for lm_head.
                let (bits, group) = name == gateProj ? (4, 32) : (8, 64)
                let (rows, inputDim) = (t.shape[0], t.shape[1])
                let words = (0..<(rows * inputDim * bits / 32)).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
                let scales = (0..<(rows * inputDim / group)).map { _ in Float.random(in: 0.01...0.02, using: &rng) }
                let biases = (0..<(rows * inputDim / group)).map { _ in Float.random(in: -0.1...0.1, using: &rng) }
                let module = String(name.dropLast(".weight".count))
                builder.u32(name, [rows, inputDim * bits / 32], words)
                builder.f32(module + ".scales", [rows, inputDim / group], scales)
                builder.f32(module + ".biases", [rows, inputDim / group], biases)
                expected[name] = DequantizationTests.slowDequantize(words: words, rows: rows, inputDim: inputDim, bits: bits,
                                                                    groupSize: group, scales: scales, biases: biases,
                                                                    arithmetic: .float32)
            } else if name.hasSuffix("norm.weight") {
                let bits = t.data.map { UInt16(HalfFloat.roundToBF16($0).bitPattern >> 16) }
                builder.bf16(name, t.shape, bits: bits)
                expected[name] = bits.map(HalfFloat.widenBF16)
            } else {
                builder.f32(name, t.shape, t.data)
                expected[name] = t.data
            }
        }
        let dir = try Scratch()
        try Self.write(dir, config: object, builder)
        let model = try ModelDirectory(path: dir.url.path)
        #expect(model.weights.names == weights.keys.sorted())
        for (name, values) in expected {
            #expect(differingBits(model.weights[name].data, values) == 0, "\(name)")
        }
        #expect(model.summary.quantized == ["4-bit/group 32 affine": 1, "8-bit/group 64 affine": 1])
        #expect(model.summary.dtypes["BF16"] == weights.keys.filter { $0.hasSuffix("norm.weight") }.count)
    }

    /// HF layout: renamed keys, conv1d [C, 1, K], zero-centred bf16 norms (+1 rounded in bf16),
    /// and vision / mtp tensors dropped, exactly as mlx-lm's sanitize does it.
    @Test func hfLayoutIsSanitizedLikeMLXLM() throws {
        // A vision_config, as a published checkpoint has one: its tower's weights are then dropped.
        let object = tinyConfigObject { $0["vision_config"] = ["depth": 1] }
        let config = try TextConfig.mlxLM(json: JSONSerialization.data(withJSONObject: object), source: "t")
        let weights = Self.runtimeWeights(config, seed: 4)
        var builder = SafetensorsBuilder()
        var expectedNorm: [Float] = []
        let convName = WeightNames.layer(0, "linear_attn.conv1d.weight")
        let normName = WeightNames.layer(0, "input_layernorm.weight")
        for (name, t) in weights.sorted(by: { $0.key < $1.key }) {
            let hfName = name.replacingOccurrences(of: "language_model.model.", with: "model.language_model.")
                .replacingOccurrences(of: "language_model.lm_head", with: "lm_head")
            if name == convName {
                // [C, K, 1] → HF [C, 1, K]: same element order.
                builder.f32(hfName, [t.shape[0], 1, t.shape[1]], t.data)
            } else if name == normName {
                let zeroCentred = t.data.map { UInt16(HalfFloat.roundToBF16($0 - 1).bitPattern >> 16) }
                builder.bf16(hfName, t.shape, bits: zeroCentred)
                expectedNorm = zeroCentred.map { HalfFloat.roundToBF16(HalfFloat.widenBF16($0) + 1) }
            } else if name.hasSuffix("norm.weight") && !name.contains("linear_attn") {
                builder.f32(hfName, t.shape, t.data.map { $0 - 1 })
            } else {
                builder.f32(hfName, t.shape, t.data)
            }
        }
        builder.f32("mtp.layers.0.norm.weight", [2], [1, 2])
        builder.f32("model.visual.blocks.0.weight", [2], [1, 2])
        let dir = try Scratch()
        try Self.write(dir, config: object, builder)
        let model = try ModelDirectory(path: dir.url.path)
        #expect(differingBits(model.weights[normName].data, expectedNorm) == 0)
        #expect(model.weights[convName].shape == weights[convName]!.shape)
        #expect(differingBits(model.weights[convName].data, weights[convName]!.data) == 0)
        // The GDN gated norm is never shifted.
        let gated = WeightNames.layer(0, "linear_attn.norm.weight")
        #expect(differingBits(model.weights[gated].data, weights[gated]!.data) == 0)
    }

    @Test func brokenDirectoriesAreNamedErrors() throws {
        let dir = try Scratch()
        #expect(throws: CheckpointError.missingConfig(dir.url.path)) { _ = try ModelDirectory(path: dir.url.path) }
        try JSONSerialization.data(withJSONObject: tinyConfigObject()).write(to: URL(fileURLWithPath: dir.path("config.json")))
        #expect(throws: CheckpointError.noWeightFiles(dir.url.path)) { _ = try ModelDirectory(path: dir.url.path) }
        var builder = SafetensorsBuilder()
        builder.u32("language_model.model.embed_tokens.weight", [40, 8], [UInt32](repeating: 0, count: 320))
        try builder.build().write(to: URL(fileURLWithPath: dir.path("model.safetensors")))
        #expect(throws: CheckpointError.self) { _ = try ModelDirectory(path: dir.url.path) }
        var withScales = builder
        withScales.f32("language_model.model.embed_tokens.scales", [40, 1], [Float](repeating: 1, count: 40))
        try withScales.build().write(to: URL(fileURLWithPath: dir.path("model.safetensors")))
        #expect(throws: QuantizationError.incompleteTriple(source: dir.url.path, module: "language_model.model.embed_tokens",
                                                           missing: "language_model.model.embed_tokens.biases")) {
            _ = try ModelDirectory(path: dir.url.path)
        }
    }
}
