import ParityCore
import ParityTensor

// mirrors mlx_lm/models/qwen3_5.py Model.sanitize + TextModel.sanitize and qwen3_5_moe.py
// Model.sanitize (mlx-lm 0.32.2): checkpoint names and layouts → runtime names and layouts.
// An MLX-layout checkpoint (what mlx-lm saves) is a fixed point; an HF-layout one is renamed,
// its conv1d moved to [C, K, 1], its zero-centred norms shifted by +1, and (MoE) its fused
// experts split.

/// A checkpoint tensor (float32 in memory, or a matrix left in its stored form), with the dtype
/// it was stored in (arithmetic the reference does in that dtype, like the norm +1, is rounded
/// back to it).
public struct SourceTensor: Sendable {
    public var value: WeightValue
    public var dtype: SafetensorsDType

    public init(_ tensor: Tensor, dtype: SafetensorsDType) {
        self.init(.dense(tensor), dtype: dtype)
    }

    public init(_ value: WeightValue, dtype: SafetensorsDType) {
        self.value = value
        self.dtype = dtype
    }

    public var shape: [Int] { value.shape }

    /// The float32 values (an encoded matrix is decoded: sanitize only transforms small tensors).
    public var tensor: Tensor {
        get { value.tensor }
        set { value = .dense(newValue) }
    }
}

public enum Sanitize {
    static let normSuffixes = [".input_layernorm.weight", ".post_attention_layernorm.weight", "model.norm.weight",
                               ".q_norm.weight", ".k_norm.weight"]

    /// Model.sanitize's renaming of one key (nil: dropped, a vision-tower tensor).
    public static func outerName(_ key: String) -> String? {
        if VisionSanitize.isVision(key) { return nil }
        if key.hasPrefix("model.language_model") {
            return "language_model.model" + key.dropFirst("model.language_model".count)
        }
        if key.hasPrefix("language_model.") { return key }
        return "language_model." + key
    }

    /// The runtime name a checkpoint key ends up under, if it is kept unchanged in content
    /// (used to look up a quantized module's unquantized shape).
    public static func runtimeName(_ key: String) -> String? {
        guard let name = outerName(key), !name.contains("mtp.") else { return nil }
        return name
    }

    public static func mlxLM(_ weights: [String: SourceTensor], modelType: String,
                             config: TextConfig) -> [String: SourceTensor] {
        var renamed: [String: SourceTensor] = [:]
        for (key, value) in weights {
            if let name = outerName(key) { renamed[name] = value }
        }
        if modelType == "qwen3_5_moe" {
            for l in 0..<config.numHiddenLayers {
                let prefix = "language_model.model.layers.\(l).mlp"
                guard let gateUp = renamed.removeValue(forKey: prefix + ".experts.gate_up_proj") else { continue }
                let fused = gateUp.tensor
                let axis = fused.rank - 2
                let mid = fused.shape[axis] / 2
                renamed[prefix + ".switch_mlp.gate_proj.weight"] =
                    SourceTensor(fused.slice(axis: axis, start: 0, length: mid), dtype: gateUp.dtype)
                renamed[prefix + ".switch_mlp.up_proj.weight"] =
                    SourceTensor(fused.slice(axis: axis, start: mid, length: fused.shape[axis] - mid), dtype: gateUp.dtype)
                if let down = renamed.removeValue(forKey: prefix + ".experts.down_proj") {
                    renamed[prefix + ".switch_mlp.down_proj.weight"] = down
                }
            }
        }
        return textModel(renamed, config: config)
    }

    /// TextModel.sanitize: computed on the keys before `mtp.` ones are dropped, like mlx-lm.
    static func textModel(_ weights: [String: SourceTensor], config: TextConfig) -> [String: SourceTensor] {
        let hasUnsanitizedConv = weights.contains { $0.key.contains("conv1d.weight") && $0.value.shape.last != 1 }
        var out = weights.filter { !$0.key.contains("mtp.") }
        if config.tieWordEmbeddings { out.removeValue(forKey: "lm_head.weight") }
        for (key, value) in out {
            var v = value
            if key.contains("conv1d.weight"), v.shape.last != 1 {
                v.tensor = moveLastAxisToSecond(v.tensor)
            }
            if hasUnsanitizedConv, normSuffixes.contains(where: { key.hasSuffix($0) }), v.shape.count == 1 {
                // `v + 1.0` in the stored dtype: a bf16 weight stays bf16, so the sum is rounded.
                v.tensor.data = v.tensor.data.map { roundTo(v.dtype, $0 + 1) }
            }
            out[key] = v
        }
        return out
    }

    /// `moveaxis(2, 1)` of a rank-3 tensor: [C, a, b] → [C, b, a].
    static func moveLastAxisToSecond(_ t: Tensor) -> Tensor {
        guard t.rank == 3 else { return t }
        let (c, a, b) = (t.shape[0], t.shape[1], t.shape[2])
        var data = [Float](repeating: 0, count: t.count)
        for i in 0..<c {
            for j in 0..<a {
                for k in 0..<b { data[(i * b + k) * a + j] = t.data[(i * a + j) * b + k] }
            }
        }
        return Tensor(shape: [c, b, a], data: data)
    }

    static func roundTo(_ dtype: SafetensorsDType, _ x: Float) -> Float {
        switch dtype {
        case .bf16: return HalfFloat.roundToBF16(x)
        case .f16: return HalfFloat.roundToF16(x)
        default: return x
        }
    }
}
