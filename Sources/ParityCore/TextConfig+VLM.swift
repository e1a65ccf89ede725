import Foundation

// The text config as mlx-vlm 0.7.10 resolves it (qwen3_5/config.py, qwen3_5_moe/config.py).
// The numbers it runs are those of mlx-lm for every config both accept; the difference is
// strictness: mlx-vlm's TextConfig dataclass has required fields and no fallbacks.

extension TextConfig {
    /// Resolves a raw config the way mlx-vlm's `TextConfig` does:
    /// - the dataclass's required fields must be present (a missing one leaves text_config a
    ///   dict and construction fails); the MoE config has no `intermediate_size` field;
    /// - `head_dim` has no fallback (`None` crashes `int(head_dim · factor)`);
    /// - `rope_parameters` absent gets the default dict; `null` crashes; given, it must hold
    ///   `mrope_section`, `type` (or `rope_type`, renamed), `rope_theta` and
    ///   `partial_rotary_factor`, or `__post_init__` raises (the error names the first missing one).
    public static func mlxVLM(_ raw: RawTextConfig, source: String) throws -> TextConfig {
        // mlx-vlm picks the MoE classes by the checkpoint's model_type; a nested text_config
        // spells its own as "qwen3_5_moe_text".
        let moe = [raw.topLevelModelType, raw.modelType].contains { $0?.hasPrefix("qwen3_5_moe") == true }
        func require<T>(_ value: T?, _ key: String) throws -> T {
            guard let value else { throw ConfigError.missingKey(source: source, key: key) }
            return value
        }
        let rope: RopeParameters
        switch raw.ropeParameters {
        case .absent: rope = .libraryDefault
        case .null:
            throw ConfigError.invalid(source: source, key: "rope_parameters",
                                      reason: "null: mlx-vlm reads rope_parameters[\"partial_rotary_factor\"] from it")
        case .given(let p):
            // mlx-vlm has no default for any of the four once the dict is given. transformers
            // writes `rope_type` (accepted for `type`) and leaves mrope_section out when the
            // config it was built from had none, so a checkpoint it saved can lack it.
            let missing = [("mrope_section", p.mropeSection == nil), ("type", p.type ?? p.ropeType == nil),
                           ("rope_theta", p.ropeTheta == nil), ("partial_rotary_factor", p.partialRotaryFactor == nil)]
                .filter(\.1).map(\.0)
            if let first = missing.first {
                throw ConfigError.invalid(source: source, key: "rope_parameters.\(first)",
                    reason: "missing (\(missing.joined(separator: ", ")) absent); mlx-vlm 0.7.10 requires mrope_section, "
                        + "type (or rope_type), rope_theta and partial_rotary_factor once rope_parameters is given")
            }
            rope = p
        }
        let config = TextConfig(
            modelType: try require(raw.modelType, "model_type"),
            hiddenSize: try require(raw.hiddenSize, "hidden_size"),
            numHiddenLayers: try require(raw.numHiddenLayers, "num_hidden_layers"),
            intermediateSize: moe ? 0 : try require(raw.intermediateSize, "intermediate_size"),
            numAttentionHeads: try require(raw.numAttentionHeads, "num_attention_heads"),
            numKeyValueHeads: try require(raw.numKeyValueHeads, "num_key_value_heads"),
            headDim: try require(raw.headDim, "head_dim"),
            vocabSize: try require(raw.vocabSize, "vocab_size"),
            rmsNormEps: try require(raw.rmsNormEps, "rms_norm_eps"),
            linearNumKeyHeads: try require(raw.linearNumKeyHeads, "linear_num_key_heads"),
            linearNumValueHeads: try require(raw.linearNumValueHeads, "linear_num_value_heads"),
            linearKeyHeadDim: try require(raw.linearKeyHeadDim, "linear_key_head_dim"),
            linearValueHeadDim: try require(raw.linearValueHeadDim, "linear_value_head_dim"),
            linearConvKernelDim: try require(raw.linearConvKernelDim, "linear_conv_kernel_dim"),
            fullAttentionInterval: raw.fullAttentionInterval ?? 4,
            tieWordEmbeddings: raw.tieWordEmbeddings ?? false,
            attentionBias: raw.attentionBias ?? false,
            numExperts: moe ? try require(raw.numExperts, "num_experts") : 0,
            numExpertsPerTok: moe ? try require(raw.numExpertsPerTok, "num_experts_per_tok") : 0,
            moeIntermediateSize: moe ? try require(raw.moeIntermediateSize, "moe_intermediate_size") : 0,
            sharedExpertIntermediateSize: moe
                ? try require(raw.sharedExpertIntermediateSize, "shared_expert_intermediate_size") : 0,
            normTopkProb: raw.normTopkProb ?? true,
            ropeTheta: rope.ropeTheta!,
            partialRotaryFactor: rope.partialRotaryFactor!,
            mropeSection: rope.mropeSection!)
        _ = try require(raw.maxPositionEmbeddings, "max_position_embeddings")
        try config.validate(source: source)
        if config.mropeSection.count != 3 {
            throw ConfigError.invalid(source: source, key: "rope_parameters.mrope_section",
                                      reason: "MRoPE needs 3 sections (T, H, W), got \(config.mropeSection)")
        }
        return config
    }

    public static func mlxVLM(json data: Data, source: String) throws -> TextConfig {
        try mlxVLM(RawTextConfig.decode(data, source: source), source: source)
    }
}

/// The fields of mlx-vlm's top-level `ModelConfig` that the language model reads: the special
/// token ids `get_rope_index` looks for and the vision tower's spatial merge size.
public struct MultimodalConfig: Decodable, Equatable, Sendable {
    public var imageTokenId: Int
    public var videoTokenId: Int
    public var visionStartTokenId: Int
    public var visionEndTokenId: Int
    public var spatialMergeSize: Int

    enum CodingKeys: String, CodingKey {
        case imageTokenId = "image_token_id"
        case videoTokenId = "video_token_id"
        case visionStartTokenId = "vision_start_token_id"
        case visionEndTokenId = "vision_end_token_id"
        case visionConfig = "vision_config"
    }

    enum VisionKeys: String, CodingKey { case spatialMergeSize = "spatial_merge_size" }

    /// mlx-vlm's dataclass defaults (Qwen 3.5 checkpoints; HF's vision_start default is 248053).
    public static let libraryDefault = MultimodalConfig(
        imageTokenId: 248_056, videoTokenId: 248_057, visionStartTokenId: 248_045,
        visionEndTokenId: 248_046, spatialMergeSize: 2)

    public init(imageTokenId: Int, videoTokenId: Int, visionStartTokenId: Int, visionEndTokenId: Int,
                spatialMergeSize: Int) {
        self.imageTokenId = imageTokenId
        self.videoTokenId = videoTokenId
        self.visionStartTokenId = visionStartTokenId
        self.visionEndTokenId = visionEndTokenId
        self.spatialMergeSize = spatialMergeSize
    }

    public init(from decoder: Decoder) throws {
        let d = Self.libraryDefault
        let c = try decoder.container(keyedBy: CodingKeys.self)
        imageTokenId = try c.decodeIfPresent(Int.self, forKey: .imageTokenId) ?? d.imageTokenId
        videoTokenId = try c.decodeIfPresent(Int.self, forKey: .videoTokenId) ?? d.videoTokenId
        visionStartTokenId = try c.decodeIfPresent(Int.self, forKey: .visionStartTokenId) ?? d.visionStartTokenId
        visionEndTokenId = try c.decodeIfPresent(Int.self, forKey: .visionEndTokenId) ?? d.visionEndTokenId
        if c.contains(.visionConfig), try !c.decodeNil(forKey: .visionConfig) {
            let v = try c.nestedContainer(keyedBy: VisionKeys.self, forKey: .visionConfig)
            spatialMergeSize = try v.decodeIfPresent(Int.self, forKey: .spatialMergeSize) ?? d.spatialMergeSize
        } else {
            spatialMergeSize = d.spatialMergeSize
        }
    }

    public static func decode(_ data: Data, source: String) throws -> MultimodalConfig {
        do {
            let config = try JSONDecoder().decode(MultimodalConfig.self, from: data)
            guard config.spatialMergeSize > 0 else {
                throw ConfigError.invalid(source: source, key: "vision_config.spatial_merge_size",
                                          reason: "must be positive, got \(config.spatialMergeSize)")
            }
            return config
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError.unreadable(source: source, reason: "\(error)")
        }
    }
}
