import Foundation
import ParityCore
import ParityTensor

struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func randomTensor(_ shape: [Int], seed: UInt64, range: ClosedRange<Float> = -1...1) -> Tensor {
    var rng = SplitMix64(state: seed)
    return Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in Float.random(in: range, using: &rng) })
}

/// One tiny config as both libraries resolve it (the same JSON through mlx-lm's and mlx-vlm's rules).
func tinyConfigs(_ kind: String = "dense", _ edit: (inout [String: Any]) -> Void = { _ in }) throws -> (lm: TextConfig, vlm: TextConfig) {
    var object: [String: Any] = [
        "model_type": "qwen3_5", "hidden_size": 32, "num_hidden_layers": 4, "intermediate_size": 48,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 50,
        "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 8,
        "linear_value_head_dim": 8, "linear_conv_kernel_dim": 3, "rms_norm_eps": 1e-5,
        "full_attention_interval": 2, "tie_word_embeddings": false, "max_position_embeddings": 256,
    ]
    if kind == "moe" {
        object["model_type"] = "qwen3_5_moe"; object["num_experts"] = 4; object["num_experts_per_tok"] = 2
        object["moe_intermediate_size"] = 24; object["shared_expert_intermediate_size"] = 24
    }
    edit(&object)
    let json = try JSONSerialization.data(withJSONObject: object)
    return (try TextConfig.mlxLM(json: json, source: "test"), try TextConfig.mlxVLM(json: json, source: "test"))
}

/// Random but well-scaled weights for every expected tensor (norm weights near 1).
func randomWeights(_ c: TextConfig, seed: UInt64 = 7) throws -> Weights {
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

/// Counts elements whose bits differ; a bitwise comparison reports how many, not a bare boolean.
func differingElements(_ a: Tensor, _ b: Tensor) -> Int {
    precondition(a.shape == b.shape, "\(a.shape) vs \(b.shape)")
    return zip(a.data, b.data).filter { $0.bitPattern != $1.bitPattern }.count
}

/// `[3, B, L]` rows as nested arrays (T, H, W; one row each for B = 1).
func axes(_ p: PositionIDs?) -> [[Int]] {
    guard let p else { return [] }
    return (0..<3).flatMap { a in (0..<p.batch).map { b in (0..<p.length).map { p.at(axis: a, row: b, t: $0) } } }
}
