import Foundation

// The Qwen 3.5 text configuration: what a checkpoint's config.json says (`RawTextConfig`) and what
// the reference actually runs after its defaults are applied (`TextConfig`).

public enum ConfigError: Error, CustomStringConvertible, Equatable {
    case unreadable(source: String, reason: String)
    case missingKey(source: String, key: String)
    case invalid(source: String, key: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(source, reason): return "\(source): cannot read the config: \(reason)"
        case let .missingKey(source, key): return "\(source): config key '\(key)' is required"
        case let .invalid(source, key, reason): return "\(source): config key '\(key)': \(reason)"
        }
    }
}

/// `rope_parameters` as written in a config; every field optional.
public struct RopeParameters: Codable, Equatable, Sendable {
    public var type: String?
    public var ropeType: String?
    public var mropeSection: [Int]?
    public var ropeTheta: Double?
    public var partialRotaryFactor: Double?

    enum CodingKeys: String, CodingKey {
        case type
        case ropeType = "rope_type"
        case mropeSection = "mrope_section"
        case ropeTheta = "rope_theta"
        case partialRotaryFactor = "partial_rotary_factor"
    }

    /// The dict both libraries use when a config has no `rope_parameters` key at all.
    public static let libraryDefault = RopeParameters(
        type: "default", ropeType: nil, mropeSection: [11, 11, 10], ropeTheta: 100_000, partialRotaryFactor: 0.25)

    var isEmpty: Bool {
        type == nil && ropeType == nil && mropeSection == nil && ropeTheta == nil && partialRotaryFactor == nil
    }
}

/// The text config exactly as a checkpoint spells it. Absent keys stay nil; `rope_parameters`
/// distinguishes "absent" (the library default applies) from "null" (top-level values apply).
public struct RawTextConfig: Decodable, Equatable, Sendable {
    public enum RopeField: Equatable, Sendable { case absent, null, given(RopeParameters) }

    public var modelType: String?
    /// `model_type` at the top level, which mlx-lm's loader requires to pick the model class
    /// (a nested `text_config` may leave its own out).
    public var topLevelModelType: String?
    public var hiddenSize: Int?
    public var intermediateSize: Int?
    public var numHiddenLayers: Int?
    public var numAttentionHeads: Int?
    public var numKeyValueHeads: Int?
    public var headDim: Int?
    public var rmsNormEps: Double?
    public var vocabSize: Int?
    public var maxPositionEmbeddings: Int?
    public var linearNumValueHeads: Int?
    public var linearNumKeyHeads: Int?
    public var linearKeyHeadDim: Int?
    public var linearValueHeadDim: Int?
    public var linearConvKernelDim: Int?
    public var tieWordEmbeddings: Bool?
    public var attentionBias: Bool?
    public var fullAttentionInterval: Int?
    public var numExperts: Int?
    public var numExpertsPerTok: Int?
    public var sharedExpertIntermediateSize: Int?
    public var moeIntermediateSize: Int?
    public var normTopkProb: Bool?
    public var ropeTheta: Double?
    public var partialRotaryFactor: Double?
    public var ropeParameters: RopeField = .absent

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case rmsNormEps = "rms_norm_eps"
        case vocabSize = "vocab_size"
        case maxPositionEmbeddings = "max_position_embeddings"
        case linearNumValueHeads = "linear_num_value_heads"
        case linearNumKeyHeads = "linear_num_key_heads"
        case linearKeyHeadDim = "linear_key_head_dim"
        case linearValueHeadDim = "linear_value_head_dim"
        case linearConvKernelDim = "linear_conv_kernel_dim"
        case tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias"
        case fullAttentionInterval = "full_attention_interval"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
        case moeIntermediateSize = "moe_intermediate_size"
        case normTopkProb = "norm_topk_prob"
        case ropeTheta = "rope_theta"
        case partialRotaryFactor = "partial_rotary_factor"
        case ropeParameters = "rope_parameters"
        case textConfig = "text_config"
    }

    public init(from decoder: Decoder) throws {
        var c = try decoder.container(keyedBy: CodingKeys.self)
        topLevelModelType = try c.decodeIfPresent(String.self, forKey: .modelType)
        // A multimodal checkpoint nests the text fields under text_config (mlx-lm's ModelArgs.from_dict).
        if c.contains(.textConfig) {
            c = try c.nestedContainer(keyedBy: CodingKeys.self, forKey: .textConfig)
        }
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType)
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize)
        numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads)
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps)
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize)
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings)
        linearNumValueHeads = try c.decodeIfPresent(Int.self, forKey: .linearNumValueHeads)
        linearNumKeyHeads = try c.decodeIfPresent(Int.self, forKey: .linearNumKeyHeads)
        linearKeyHeadDim = try c.decodeIfPresent(Int.self, forKey: .linearKeyHeadDim)
        linearValueHeadDim = try c.decodeIfPresent(Int.self, forKey: .linearValueHeadDim)
        linearConvKernelDim = try c.decodeIfPresent(Int.self, forKey: .linearConvKernelDim)
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias)
        fullAttentionInterval = try c.decodeIfPresent(Int.self, forKey: .fullAttentionInterval)
        numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts)
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok)
        sharedExpertIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .sharedExpertIntermediateSize)
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize)
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb)
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta)
        partialRotaryFactor = try c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor)
        if !c.contains(.ropeParameters) {
            ropeParameters = .absent
        } else if try c.decodeNil(forKey: .ropeParameters) {
            ropeParameters = .null
        } else {
            ropeParameters = .given(try c.decode(RopeParameters.self, forKey: .ropeParameters))
        }
    }

    public static func decode(_ data: Data, source: String) throws -> RawTextConfig {
        do {
            return try JSONDecoder().decode(RawTextConfig.self, from: data)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            guard !key.isEmpty else {   // the document itself: [], null, 42
                throw ConfigError.unreadable(source: source, reason: "expected a JSON object; " + context.debugDescription)
            }
            throw ConfigError.invalid(source: source, key: key, reason: context.debugDescription)
        } catch let DecodingError.dataCorrupted(context) where !context.codingPath.isEmpty {
            // A value that parses but does not fit, such as 1e30 for an Int.
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ConfigError.invalid(source: source, key: key, reason: context.debugDescription)
        } catch let DecodingError.dataCorrupted(context) {
            if let (key, value) = unrepresentableInteger(data) {
                throw ConfigError.invalid(source: source, key: key, reason: "expected an integer that fits in Int, found \(value)")
            }
            throw ConfigError.unreadable(source: source, reason: context.debugDescription)
        } catch {
            throw ConfigError.unreadable(source: source, reason: "\(error)")
        }
    }
}

extension RawTextConfig {
    static let integerKeys: [CodingKeys] = [
        .hiddenSize, .intermediateSize, .numHiddenLayers, .numAttentionHeads, .numKeyValueHeads, .headDim,
        .vocabSize, .maxPositionEmbeddings, .linearNumValueHeads, .linearNumKeyHeads, .linearKeyHeadDim,
        .linearValueHeadDim, .linearConvKernelDim, .fullAttentionInterval, .numExperts, .numExpertsPerTok,
        .sharedExpertIntermediateSize, .moeIntermediateSize,
    ]

    /// JSONDecoder reports a number that does not fit an Int field (1.5, 1e30) as "not valid JSON",
    /// with no key; this finds the key, so the error can name it.
    static func unrepresentableInteger(_ data: Data) -> (key: String, value: String)? {
        guard var object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return nil }
        var prefix = ""
        if let inner = object[CodingKeys.textConfig.rawValue] as? [String: Any] {
            object = inner
            prefix = CodingKeys.textConfig.rawValue + "."
        }
        for key in integerKeys {
            guard let number = object[key.rawValue] as? NSNumber, !(number is Bool) else { continue }
            let value = number.doubleValue
            if value.rounded() != value || Int(exactly: value) == nil || "\(number)".contains(".") {
                return (prefix + key.rawValue, "\(number)")
            }
        }
        return nil
    }
}

public enum LayerKind: String, Codable, Equatable, Sendable {
    case linearAttention = "linear_attention"
    case fullAttention = "full_attention"
}

/// The configuration a reference actually runs: every default applied, every field resolved.
public struct TextConfig: Codable, Equatable, Sendable {
    public var modelType: String
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var intermediateSize: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var vocabSize: Int
    public var rmsNormEps: Double
    public var linearNumKeyHeads: Int
    public var linearNumValueHeads: Int
    public var linearKeyHeadDim: Int
    public var linearValueHeadDim: Int
    public var linearConvKernelDim: Int
    public var fullAttentionInterval: Int
    public var tieWordEmbeddings: Bool
    public var attentionBias: Bool
    public var numExperts: Int
    public var numExpertsPerTok: Int
    public var moeIntermediateSize: Int
    public var sharedExpertIntermediateSize: Int
    public var normTopkProb: Bool
    public var ropeTheta: Double
    public var partialRotaryFactor: Double
    public var mropeSection: [Int]

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers"
        case intermediateSize = "intermediate_size"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case vocabSize = "vocab_size"
        case rmsNormEps = "rms_norm_eps"
        case linearNumKeyHeads = "linear_num_key_heads"
        case linearNumValueHeads = "linear_num_value_heads"
        case linearKeyHeadDim = "linear_key_head_dim"
        case linearValueHeadDim = "linear_value_head_dim"
        case linearConvKernelDim = "linear_conv_kernel_dim"
        case fullAttentionInterval = "full_attention_interval"
        case tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case moeIntermediateSize = "moe_intermediate_size"
        case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
        case normTopkProb = "norm_topk_prob"
        case ropeTheta = "rope_theta"
        case partialRotaryFactor = "partial_rotary_factor"
        case mropeSection = "mrope_section"
    }

    // Derived sizes, named with the spec's letters.
    public var isMoE: Bool { numExperts > 0 }
    /// Rotary dims `r = int(hd · prf)`.
    public var rotaryDims: Int { Int(Double(headDim) * partialRotaryFactor) }
    public var keyDim: Int { linearNumKeyHeads * linearKeyHeadDim }        // Kd
    public var valueDim: Int { linearNumValueHeads * linearValueHeadDim }  // Vd
    public var convDim: Int { 2 * keyDim + valueDim }                      // Cc
    public var layerKinds: [LayerKind] {
        (0..<numHiddenLayers).map { ($0 + 1) % fullAttentionInterval == 0 ? .fullAttention : .linearAttention }
    }
    public var eps: Float { Float(rmsNormEps) }
}

extension TextConfig {
    /// Resolves a raw config the way mlx-lm 0.32.2's `TextModelArgs` does, defaults and surprises
    /// included: a config without `rope_parameters` gets the library's default dict, whose
    /// rope_theta (1e5) and partial_rotary_factor (0.25) override the top-level fields.
    public static func mlxLM(_ raw: RawTextConfig, source: String) throws -> TextConfig {
        guard let modelType = raw.topLevelModelType else { throw ConfigError.missingKey(source: source, key: "model_type") }
        guard supportedModelTypes.contains(modelType) else {
            throw ConfigError.invalid(source: source, key: "model_type",
                reason: "'\(modelType)' is not a Qwen 3.5 model (expected one of \(supportedModelTypes.joined(separator: ", ")))")
        }
        let rope: RopeParameters?
        switch raw.ropeParameters {
        case .absent: rope = .libraryDefault
        case .null: rope = nil
        case .given(let p): rope = p.isEmpty ? nil : p
        }
        var ropeTheta = raw.ropeTheta ?? 100_000
        var partialRotaryFactor = raw.partialRotaryFactor ?? 0.25
        if let rope {
            let type = rope.type ?? rope.ropeType ?? "default"
            guard type == "default" || type == "mrope" else {
                throw ConfigError.invalid(source: source, key: "rope_parameters.type",
                                          reason: "rope type '\(type)' is not supported (default or mrope)")
            }
            // The top-level values are never a fallback once rope_parameters is set.
            ropeTheta = rope.ropeTheta ?? 100_000
            partialRotaryFactor = rope.partialRotaryFactor ?? 0.25
        }
        let hidden = raw.hiddenSize ?? 4096
        let heads = raw.numAttentionHeads ?? 32
        guard heads > 0 else {
            throw ConfigError.invalid(source: source, key: "num_attention_heads", reason: "must be positive, got \(heads)")
        }
        let config = TextConfig(
            modelType: raw.modelType ?? "",
            hiddenSize: hidden,
            numHiddenLayers: raw.numHiddenLayers ?? 32,
            intermediateSize: raw.intermediateSize ?? 14336,
            numAttentionHeads: heads,
            numKeyValueHeads: raw.numKeyValueHeads ?? 8,
            headDim: raw.headDim ?? hidden / heads,
            vocabSize: raw.vocabSize ?? 151_936,
            rmsNormEps: raw.rmsNormEps ?? 1e-6,
            linearNumKeyHeads: raw.linearNumKeyHeads ?? 16,
            linearNumValueHeads: raw.linearNumValueHeads ?? 64,
            linearKeyHeadDim: raw.linearKeyHeadDim ?? 192,
            linearValueHeadDim: raw.linearValueHeadDim ?? 128,
            linearConvKernelDim: raw.linearConvKernelDim ?? 4,
            fullAttentionInterval: raw.fullAttentionInterval ?? 4,
            tieWordEmbeddings: raw.tieWordEmbeddings ?? false,
            attentionBias: raw.attentionBias ?? false,
            numExperts: raw.numExperts ?? 0,
            numExpertsPerTok: raw.numExpertsPerTok ?? 0,
            moeIntermediateSize: raw.moeIntermediateSize ?? 0,
            sharedExpertIntermediateSize: raw.sharedExpertIntermediateSize ?? 0,
            normTopkProb: raw.normTopkProb ?? true,
            ropeTheta: ropeTheta,
            partialRotaryFactor: partialRotaryFactor,
            mropeSection: rope?.mropeSection ?? [])
        try config.validate(source: source)
        return config
    }

    /// The top-level model types mlx-lm loads with the Qwen 3.5 classes this harness mirrors.
    public static let supportedModelTypes = ["qwen3_5", "qwen3_5_moe"]

    /// The largest size any one config field may have. No real checkpoint comes near it (vocabularies
    /// stop around 2^18), and with it a product of three sizes, as in an expert stack `[E, I, D]`,
    /// cannot overflow `Int`: a corrupt config gets an error, not a trap.
    public static let maximumSize = 1 << 20

    public static func mlxLM(json data: Data, source: String) throws -> TextConfig {
        try mlxLM(RawTextConfig.decode(data, source: source), source: source)
    }

    /// Rejects what the reference rejects, and what would make the forward pass meaningless.
    public func validate(source: String) throws {
        func positive(_ value: Int, _ key: String) throws {
            if value <= 0 { throw ConfigError.invalid(source: source, key: key, reason: "must be positive, got \(value)") }
            try notHuge(value, key)
        }
        func notHuge(_ value: Int, _ key: String) throws {
            if value > Self.maximumSize {
                throw ConfigError.invalid(source: source, key: key, reason: "\(value) is larger than any model this harness runs (at most \(Self.maximumSize))")
            }
        }
        for (value, key) in [(intermediateSize, "intermediate_size"), (numExperts, "num_experts"),
                             (numExpertsPerTok, "num_experts_per_tok"), (moeIntermediateSize, "moe_intermediate_size"),
                             (sharedExpertIntermediateSize, "shared_expert_intermediate_size")] {
            if value < 0 { throw ConfigError.invalid(source: source, key: key, reason: "must not be negative, got \(value)") }
            try notHuge(value, key)
        }
        try positive(hiddenSize, "hidden_size")
        try positive(numHiddenLayers, "num_hidden_layers")
        try positive(numAttentionHeads, "num_attention_heads")
        try positive(numKeyValueHeads, "num_key_value_heads")
        try positive(headDim, "head_dim")
        try positive(vocabSize, "vocab_size")
        try positive(linearNumKeyHeads, "linear_num_key_heads")
        try positive(linearNumValueHeads, "linear_num_value_heads")
        try positive(linearKeyHeadDim, "linear_key_head_dim")
        try positive(linearValueHeadDim, "linear_value_head_dim")
        try positive(linearConvKernelDim, "linear_conv_kernel_dim")
        try positive(fullAttentionInterval, "full_attention_interval")
        if !isMoE { try positive(intermediateSize, "intermediate_size") }
        if numAttentionHeads % numKeyValueHeads != 0 {
            throw ConfigError.invalid(source: source, key: "num_key_value_heads",
                reason: "num_attention_heads (\(numAttentionHeads)) must be a multiple of num_key_value_heads (\(numKeyValueHeads))")
        }
        if linearNumValueHeads % linearNumKeyHeads != 0 {
            throw ConfigError.invalid(source: source, key: "linear_num_value_heads",
                reason: "num_v_heads (\(linearNumValueHeads)) must be divisible by num_k_heads (\(linearNumKeyHeads))")
        }
        if !(rmsNormEps > 0) || !rmsNormEps.isFinite {
            throw ConfigError.invalid(source: source, key: "rms_norm_eps", reason: "must be a positive number, got \(rmsNormEps)")
        }
        if !(ropeTheta > 0) || !ropeTheta.isFinite {
            throw ConfigError.invalid(source: source, key: "rope_theta", reason: "must be a positive number, got \(ropeTheta)")
        }
        // int(head_dim · factor) traps in Swift when the product is not a finite Int.
        if !(partialRotaryFactor > 0 && partialRotaryFactor <= 1) {
            throw ConfigError.invalid(source: source, key: "partial_rotary_factor",
                reason: "must be in (0, 1], got \(partialRotaryFactor)")
        }
        let r = rotaryDims
        if r <= 0 || r > headDim || r % 2 != 0 {
            throw ConfigError.invalid(source: source, key: "partial_rotary_factor",
                reason: "rotary dims int(head_dim·factor) = \(r) must be even and in 2...\(headDim)")
        }
        if isMoE {
            try positive(numExpertsPerTok, "num_experts_per_tok")
            try positive(moeIntermediateSize, "moe_intermediate_size")
            try positive(sharedExpertIntermediateSize, "shared_expert_intermediate_size")
            if numExpertsPerTok > numExperts {
                throw ConfigError.invalid(source: source, key: "num_experts_per_tok",
                    reason: "\(numExpertsPerTok) experts per token but only \(numExperts) experts")
            }
        }
    }
}
