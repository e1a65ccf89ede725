import Foundation
import ParityCore
import ParityTensor
@_exported import TestSupport

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
