import ParityCore
import ParityTensor

// mirrors the vision-tower part of mlx_vlm/models/qwen3_5/qwen3_5.py Model.sanitize and
// qwen3_vl/vision.py VisionModel.sanitize (mlx-vlm 0.7.10): published names (`model.visual.…`,
// `model.language_model.visual.…`) become `vision_tower.…`, `position_ids` buffers are dropped,
// and a patch embedding stored in PyTorch's Conv3d order [D, C, Tp, P, P] moves to MLX's
// [D, Tp, P, P, C]. An MLX-layout directory (what mlx-vlm's convert writes) is a fixed point.

public enum VisionSanitize {
    static let publishedPrefixes = ["model.language_model.visual", "model.visual"]
    static let runtimePrefix = "vision_tower"

    /// Whether a checkpoint key is a vision-tower tensor (mlx-lm drops these).
    public static func isVision(_ key: String) -> Bool {
        key.hasPrefix(runtimePrefix) || publishedPrefixes.contains { key.hasPrefix($0) }
    }

    /// The runtime name of a vision-tower key, or nil for a dropped buffer.
    public static func runtimeName(_ key: String) -> String? {
        guard !key.contains("position_ids") else { return nil }
        for prefix in publishedPrefixes where key.hasPrefix(prefix) {
            return runtimePrefix + key.dropFirst(prefix.count)
        }
        return key
    }

    /// The tower's tensors by runtime name, each of the shape the config implies and finite.
    /// Projections keep their stored form; the patch embedding of a published checkpoint is
    /// decoded and permuted (it is small).
    /// `origin` names the file and stored tensor of a runtime name, for errors.
    static func tower(_ stored: [String: SourceTensor], config: VisionConfig,
                      origin: (String) -> (file: String, tensor: String)) throws -> [String: WeightValue] {
        var out: [String: WeightValue] = [:]
        for (key, value) in stored {
            guard let name = runtimeName(key) else { continue }
            out[name] = value.value
        }
        let patchName = runtimePrefix + ".patch_embed.proj.weight"
        if let patch = out[patchName], patch.shape.count == 5 {
            let c = config.inChannels
            if patch.shape[4] != c && patch.shape[1] == c {
                out[patchName] = .dense(patch.tensor.permuted([0, 2, 3, 4, 1]))
            } else if patch.shape[4] != c {
                let (file, tensor) = origin(patchName)
                throw CheckpointError.tensorDisagreesWithConfig(
                    file: file, tensor: tensor,
                    reason: "shape \(patch.shape) has \(c) input channels (vision_config in_channels) neither last (MLX) nor second (PyTorch)")
            }
        }
        for (name, value) in out.sorted(by: { $0.key < $1.key }) {
            guard let shape = config.parameterShapes[name] else { continue }   // the tower names what it does not know
            if value.shape != shape {
                let (file, tensor) = origin(name)
                throw CheckpointError.tensorDisagreesWithConfig(file: file, tensor: tensor,
                    reason: "shape \(value.shape), the vision_config implies \(shape)")
            }
            if let bad = value.firstNonFinite {
                let (file, tensor) = origin(name)
                throw CheckpointError.tensorDisagreesWithConfig(file: file, tensor: tensor, reason: "holds a NaN or infinity at flat index \(bad)")
            }
        }
        return out
    }
}
