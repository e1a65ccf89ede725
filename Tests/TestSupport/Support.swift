// Shared by the test targets: a deterministic generator, random tensors, a tiny config and
// well-scaled random weights for it.
import Foundation
import ParityCore
import ParityTensor

public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(state: UInt64) { self.state = state }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

public func randomTensor(_ shape: [Int], seed: UInt64, range: ClosedRange<Float> = -1...1) -> Tensor {
    var rng = SplitMix64(state: seed)
    return Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in Float.random(in: range, using: &rng) })
}

public func tinyConfig(_ edit: (inout [String: Any]) -> Void = { _ in }) throws -> TextConfig {
    var object: [String: Any] = [
        "model_type": "qwen3_5", "hidden_size": 32, "num_hidden_layers": 4, "intermediate_size": 48,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 50,
        "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 8,
        "linear_value_head_dim": 8, "linear_conv_kernel_dim": 3, "rms_norm_eps": 1e-5,
        "full_attention_interval": 2, "tie_word_embeddings": false,
    ]
    edit(&object)
    return try TextConfig.mlxLM(json: JSONSerialization.data(withJSONObject: object), source: "test")
}

/// Random but well-scaled weights for every expected tensor (norm weights near 1).
public func randomWeights(_ c: TextConfig, seed: UInt64 = 7) throws -> Weights {
    var tensors: [String: Tensor] = [:]
    for (i, (name, shape)) in WeightNames.expected(for: c).enumerated() {
        let s = seed &+ UInt64(i) &* 7919
        if name.hasSuffix("norm.weight") {
            tensors[name] = randomTensor(shape, seed: s, range: 0.8...1.2)
        } else if name.hasSuffix("A_log") {
            tensors[name] = randomTensor(shape, seed: s, range: 0...2.7)
        } else {
            let fanIn = Float(shape.last == 1 && shape.count == 3 ? shape[1] : shape.last!)
            let bound = 1 / fanIn.squareRoot() * (name.contains("embed") ? 4 : 1.5)
            tensors[name] = randomTensor(shape, seed: s, range: -bound...bound)
        }
    }
    return try Weights(tensors, config: c, source: "random")
}
