import Checkpoint
import Foundation
import GoldenIO
import ParityCore
import ParityTensor
import VLMMirror

// Reads a golden file written by tools/make_golden.py (layout: docs/golden-format.md).

public enum GoldenError: Error, CustomStringConvertible {
    case unknownFormat(file: String, version: Int, supported: Int)
    case noFormatVersion(file: String)
    case invalid(file: String, path: String, reason: String)
    case configDisagrees(file: String, differences: [String])

    public var description: String {
        switch self {
        case let .unknownFormat(file, version, supported):
            return "\(file): golden format_version \(version) is not known to this harness (it reads \(supported)); update qwen-parity or regenerate the golden with this repository's tools/make_golden.py"
        case let .noFormatVersion(file):
            return "\(file): no root attribute format_version: not a golden written by tools/make_golden.py"
        case let .invalid(file, path, reason): return "\(file): \(path): \(reason)"
        case let .configDisagrees(file, differences):
            return "\(file): /config effective_json: what mlx-lm ran differs from /config raw_json as Swift resolves it: "
                + differences.joined(separator: "; ")
        }
    }
}

/// One scenario of a golden: how it was run and what each reference produced.
public struct GoldenScenario: Sendable {
    public enum Kind: String, Sendable {
        case single, batch
        /// Explicit LanguageModel calls, listed per path in its `schedule_json`.
        case mrope
        /// An image prompt from pixel values: explicit calls whose embeddings, positions and
        /// rope deltas the vision side computes first (`vision_inputs` names them).
        case image
    }
    public var name: String
    public var kind: Kind
    public var description: String
    /// Token count of every call, in order.
    public var calls: [Int]
    public var cached: Bool
    /// Reference paths stored for this scenario (e.g. "mlx_lm").
    public var paths: [String]
    /// Hazard scenarios: what goes wrong in the library (the `mlx_vlm` path), with the same calls
    /// made correctly under `mlx_vlm_correct`.
    public var hazard: String? = nil
    /// Image scenarios: the `/inputs/vision/<prompt>` group of their pixel values and ids.
    public var visionInputs: String? = nil
}

public final class GoldenFile {
    public static let supportedFormatVersion = 1
    public let path: String
    public let file: H5File
    public let config: TextConfig
    public let rawConfigJSON: String
    public let provenance: GoldenProvenance

    public init(path: String) throws {
        self.path = path
        file = try H5File.open(path)
        // The version is checked before anything else is read: a newer layout may differ anywhere.
        guard file.hasAttribute("format_version", of: "/") else { throw GoldenError.noFormatVersion(file: path) }
        let version = try file.intAttribute("format_version", of: "/")
        guard version == Self.supportedFormatVersion else {
            throw GoldenError.unknownFormat(file: path, version: version, supported: Self.supportedFormatVersion)
        }
        provenance = try GoldenProvenance.read(file, path: path)
        rawConfigJSON = try file.stringAttribute("raw_json", of: "/config")
        config = try TextConfig.mlxLM(json: Data(rawConfigJSON.utf8), source: "\(path): /config raw_json")
        try checkEffectiveConfig()
    }

    /// The golden's display name: the file name, or for a model directory's parity.h5 the directory's.
    public var name: String {
        let url = URL(fileURLWithPath: path)
        if url.lastPathComponent == "parity.h5" { return url.deletingLastPathComponent().lastPathComponent }
        return url.deletingPathExtension().lastPathComponent
    }

    /// The library recorded what it actually ran; Swift's resolution must agree field by field.
    private func checkEffectiveConfig() throws {
        let effective = try file.stringAttribute("effective_json", of: "/config")
        guard let object = try? JSONSerialization.jsonObject(with: Data(effective.utf8)) as? [String: Any] else {
            throw GoldenError.invalid(file: path, path: "/config effective_json", reason: "not a JSON object")
        }
        let ours: [String: Double] = [
            "hidden_size": Double(config.hiddenSize), "num_hidden_layers": Double(config.numHiddenLayers),
            "num_attention_heads": Double(config.numAttentionHeads), "num_key_value_heads": Double(config.numKeyValueHeads),
            "head_dim": Double(config.headDim), "vocab_size": Double(config.vocabSize),
            "rms_norm_eps": config.rmsNormEps, "rope_theta": config.ropeTheta,
            "partial_rotary_factor": config.partialRotaryFactor, "rotary_dims": Double(config.rotaryDims),
            "linear_num_key_heads": Double(config.linearNumKeyHeads), "linear_num_value_heads": Double(config.linearNumValueHeads),
            "linear_key_head_dim": Double(config.linearKeyHeadDim), "linear_value_head_dim": Double(config.linearValueHeadDim),
            "linear_conv_kernel_dim": Double(config.linearConvKernelDim),
            "full_attention_interval": Double(config.fullAttentionInterval),
            "num_experts": Double(config.numExperts), "num_experts_per_tok": Double(config.numExpertsPerTok),
            "intermediate_size": Double(config.intermediateSize), "moe_intermediate_size": Double(config.moeIntermediateSize),
            "shared_expert_intermediate_size": Double(config.sharedExpertIntermediateSize),
        ]
        var differences: [String] = []
        for (key, value) in ours.sorted(by: { $0.key < $1.key }) {
            guard let theirs = (object[key] as? NSNumber)?.doubleValue else {
                differences.append("\(key) missing from effective_json"); continue
            }
            if theirs != value { differences.append("\(key): Swift \(value), mlx-lm \(theirs)") }
        }
        let flags = ["tie_word_embeddings": config.tieWordEmbeddings, "norm_topk_prob": config.normTopkProb,
                     "attention_bias": config.attentionBias]
        for (key, mine) in flags.sorted(by: { $0.key < $1.key }) {
            let theirs = (object[key] as? NSNumber)?.boolValue
            if theirs != mine { differences.append("\(key): Swift \(mine), mlx-lm \(theirs.map(String.init) ?? "missing")") }
        }
        if let kinds = object["layer_types"] as? [String],
           kinds.count != config.numHiddenLayers || kinds != config.layerKinds.map(\.rawValue) {
            differences.append("layer_types: Swift \(config.layerKinds.map(\.rawValue)), mlx-lm \(kinds)")
        }
        guard differences.isEmpty else { throw GoldenError.configDisagrees(file: path, differences: differences) }
    }

    /// Whether the weights live in an MLX model directory instead of /weights.
    public var usesModelDirectory: Bool { provenance.weightsSource == "model_dir" }

    /// The model directory of a model_dir golden: `override`, or the recorded directory
    /// resolved against the golden's folder.
    public func modelDirectory(override: String? = nil) -> String? {
        guard usesModelDirectory else { return nil }
        if let override { return override }
        guard let relative = provenance.modelDirectory else { return nil }
        if relative.hasPrefix("/") { return relative }
        return URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(relative).standardizedFileURL.path
    }

    /// What the implementations are built from.
    public struct ModelSources: Sendable {
        public var weights: Weights
        public var vision: VisionTower?
        public init(weights: Weights, vision: VisionTower?) {
            self.weights = weights
            self.vision = vision
        }
    }

    /// The runtime weights: /weights, or the model directory loaded as mlx-lm loads it.
    public func weights(modelDirectory override: String? = nil) throws -> Weights {
        if let model = try loadModelDirectory(override: override) { return model.weights }
        var tensors: [String: Tensor] = [:]
        for name in try file.children(of: "/weights") {
            tensors[name] = try tensor("/weights/" + name)
        }
        return try Weights(tensors, config: config, source: path)
    }

    /// The weights and the vision tower (nil without /vision), a model directory mapped once for both.
    public func modelSources(modelDirectory override: String? = nil) throws -> ModelSources {
        if let model = try loadModelDirectory(override: override) {
            return ModelSources(weights: model.weights, vision: try visionTower(directory: model))
        }
        return ModelSources(weights: try weights(), vision: try visionTower())
    }

    /// A model_dir golden's directory, mapped and checked against the golden's config; nil for others.
    func loadModelDirectory(override: String?) throws -> ModelDirectory? {
        guard usesModelDirectory else { return nil }
        guard let dir = modelDirectory(override: override) else {
            throw GoldenError.invalid(file: path, path: "/ model_dir", reason: "a model_dir golden without model_dir; pass --model DIR")
        }
        let model = try ModelDirectory(path: dir)
        guard model.config == config else {
            throw GoldenError.configDisagrees(file: path, differences: ["\(dir)/config.json resolves differently from the golden's /config raw_json"])
        }
        return model
    }

    /// A float32 dataset as a tensor; NaN or Inf is an error, never a value to compare.
    public func tensor(_ dataset: String) throws -> Tensor {
        let array = try file.readFloats(dataset)
        if let bad = array.values.firstIndex(where: { !$0.isFinite }) {
            throw GoldenError.invalid(file: path, path: dataset, reason: "holds a NaN or Inf at flat index \(bad)")
        }
        return Tensor(shape: array.shape, data: array.values)
    }

    public func ints(_ dataset: String, expectingRank rank: Int) throws -> H5Array<Int32> {
        let array = try file.readInt32s(dataset)
        guard array.shape.count == rank else {
            throw GoldenError.invalid(file: path, path: dataset, reason: "expected rank \(rank), found shape \(array.shape)")
        }
        return array
    }

    /// The prompt `[1, L]` as token rows.
    public func promptTokens() throws -> [[Int]] {
        try tokenRows("/inputs/token_ids")
    }

    /// Token ids `[rows, length]`, every one inside the vocabulary: an id the model cannot embed is
    /// a broken golden, named here rather than deep inside a forward pass.
    public func tokenRows(_ dataset: String) throws -> [[Int]] {
        let ids = try ints(dataset, expectingRank: 2)
        let (rows, length) = (ids.shape[0], ids.shape[1])
        guard rows > 0, length > 0 else {
            throw GoldenError.invalid(file: path, path: dataset, reason: "expected at least one token, found shape \(ids.shape)")
        }
        if let bad = ids.values.firstIndex(where: { $0 < 0 || Int($0) >= config.vocabSize }) {
            throw GoldenError.invalid(file: path, path: dataset,
                reason: "token id \(ids.values[bad]) at [\(bad / length), \(bad % length)] is outside the vocabulary 0..<\(config.vocabSize)")
        }
        return (0..<rows).map { r in ids.values[(r * length)..<((r + 1) * length)].map { Int($0) } }
    }

    public func scenarios() throws -> [GoldenScenario] {
        try file.children(of: "/scenarios").map(scenario)
    }

    public func scenario(_ name: String) throws -> GoldenScenario {
        let group = "/scenarios/" + name
        guard file.exists(group) else {
            throw GoldenError.invalid(file: path, path: group, reason: "no such scenario")
        }
        let kindText = try file.stringAttribute("kind", of: group)
        guard let kind = GoldenScenario.Kind(rawValue: kindText) else {
            throw GoldenError.invalid(file: path, path: group, reason: "unknown kind '\(kindText)'")
        }
        let callsText = try file.stringAttribute("calls_json", of: group)
        guard let calls = try? JSONDecoder().decode([Int].self, from: Data(callsText.utf8)),
              !calls.isEmpty, calls.allSatisfy({ $0 > 0 }) else {
            throw GoldenError.invalid(file: path, path: group + " calls_json", reason: "expected a list of positive token counts, found '\(callsText)'")
        }
        let description = (try? file.stringAttribute("description", of: group)) ?? ""
        let cached = try file.intAttribute("cached", of: group) != 0
        // Every member is a reference path's group; one that does not open as a group is damaged,
        // not absent. The float64 oracle is no implementation's reference: OracleReport reads it.
        let members = try file.children(of: group)
        if let bad = members.first(where: { !file.isGroup(group + "/" + $0) }) {
            throw GoldenError.invalid(file: path, path: group + "/" + bad, reason: "does not open as a reference path group")
        }
        let paths = members.filter { $0 != OracleReport.path }
        let hazard = file.hasAttribute("hazard", of: group) ? try file.stringAttribute("hazard", of: group) : nil
        let vision = file.hasAttribute("vision_inputs", of: group) ? try file.stringAttribute("vision_inputs", of: group) : nil
        if kind == .image && vision == nil {
            throw GoldenError.invalid(file: path, path: group, reason: "an image scenario needs its vision_inputs attribute")
        }
        return GoldenScenario(name: name, kind: kind, description: description, calls: calls, cached: cached,
                              paths: paths, hazard: hazard, visionInputs: vision)
    }
}

// MARK: - mlx-vlm

/// What /config says about mlx-vlm's model: its text config, resolved by Swift the way mlx-vlm
/// does it, and the token ids and merge size get_rope_index reads.
public struct VLMGoldenConfig {
    public var text: TextConfig
    public var multimodal: MultimodalConfig
    /// mlx-vlm's own record of what it ran (rotary, selector, inv_freq, token ids).
    public var effective: [String: Any]
}

extension GoldenFile {
    /// The mlx-vlm side of /config, or nil for a golden written without mlx-vlm.
    public func vlmConfig() throws -> VLMGoldenConfig? {
        guard file.hasAttribute("vlm_json", of: "/config") else { return nil }
        let source = "\(path): /config vlm_json"
        let json = try file.stringAttribute("vlm_json", of: "/config")
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let text = object["text_config"] else {
            throw GoldenError.invalid(file: path, path: "/config vlm_json", reason: "no text_config object")
        }
        let textConfig = try TextConfig.mlxVLM(json: JSONSerialization.data(withJSONObject: text), source: source)
        let multimodal = try MultimodalConfig.decode(Data(json.utf8), source: source)
        let effectiveText = try file.stringAttribute("vlm_effective_json", of: "/config")
        guard let effective = try? JSONSerialization.jsonObject(with: Data(effectiveText.utf8)) as? [String: Any] else {
            throw GoldenError.invalid(file: path, path: "/config vlm_effective_json", reason: "not a JSON object")
        }
        var differences: [String] = []
        func check(_ key: String, _ mine: Double) {
            guard let theirs = (effective[key] as? NSNumber)?.doubleValue else { differences.append("\(key) missing"); return }
            if theirs != mine { differences.append("\(key): Swift \(mine), mlx-vlm \(theirs)") }
        }
        // A special token id outside the vocabulary could never be embedded or matched.
        for (key, id) in [("image_token_id", multimodal.imageTokenId), ("video_token_id", multimodal.videoTokenId),
                          ("vision_start_token_id", multimodal.visionStartTokenId),
                          ("vision_end_token_id", multimodal.visionEndTokenId)] where !(0..<config.vocabSize).contains(id) {
            throw GoldenError.invalid(file: path, path: "/config vlm_json \(key)",
                                      reason: "\(id) is outside the vocabulary [0, \(config.vocabSize))")
        }
        // Both mirrors are built over the one set of weights mlx-lm's config names.
        for (key, mine, lm) in [("num_experts", textConfig.numExperts, config.numExperts),
                                ("num_experts_per_tok", textConfig.numExpertsPerTok, config.numExpertsPerTok),
                                ("num_hidden_layers", textConfig.numHiddenLayers, config.numHiddenLayers),
                                ("hidden_size", textConfig.hiddenSize, config.hiddenSize)] where mine != lm {
            differences.append("\(key): mlx-vlm's text config \(mine), mlx-lm's \(lm)")
        }
        check("rotary_dims", Double(textConfig.rotaryDims))
        check("rope_theta", textConfig.ropeTheta)
        check("head_dim", Double(textConfig.headDim))
        check("full_attention_interval", Double(textConfig.fullAttentionInterval))
        check("spatial_merge_size", Double(multimodal.spatialMergeSize))
        check("image_token_id", Double(multimodal.imageTokenId))
        check("video_token_id", Double(multimodal.videoTokenId))
        check("vision_start_token_id", Double(multimodal.visionStartTokenId))
        check("vision_end_token_id", Double(multimodal.visionEndTokenId))
        if (effective["mrope_section"] as? [Int]) != textConfig.mropeSection {
            differences.append("mrope_section: Swift \(textConfig.mropeSection), mlx-vlm \(effective["mrope_section"] ?? "missing")")
        }
        if let kinds = effective["layer_types"] as? [String], kinds != textConfig.layerKinds.map(\.rawValue) {
            differences.append("layer_types: Swift \(textConfig.layerKinds.map(\.rawValue)), mlx-vlm \(kinds)")
        }
        guard differences.isEmpty else { throw GoldenError.configDisagrees(file: path, differences: differences) }
        return VLMGoldenConfig(text: textConfig, multimodal: multimodal, effective: effective)
    }

    /// The explicit calls stored for one path (`schedule_json`), with every referenced input read.
    public func schedule(_ scenario: GoldenScenario, path reference: String,
                         substitutes: ScheduleSubstitutes = ScheduleSubstitutes()) throws -> [ScheduledCall]? {
        let group = "/scenarios/\(scenario.name)/\(reference)"
        guard file.hasAttribute("schedule_json", of: group) else { return nil }
        let text = try file.stringAttribute("schedule_json", of: group)
        guard let calls = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] else {
            throw GoldenError.invalid(file: path, path: group + " schedule_json", reason: "not a list of call objects")
        }
        var tokenCache: [String: [[Int]]] = [:]
        func ints2(_ dataset: String) throws -> [[Int]] {
            if let cached = tokenCache[dataset] { return cached }
            let rows = try tokenRows(dataset)
            tokenCache[dataset] = rows
            return rows
        }
        func invalid(_ i: Int, _ reason: String) -> GoldenError {
            GoldenError.invalid(file: path, path: group + " schedule_json[\(i)]", reason: reason)
        }
        return try calls.enumerated().map { i, object in
            guard let tokens = object["tokens"] as? String, let start = object["start"] as? Int,
                  let length = object["length"] as? Int, length > 0,
                  let cacheText = object["cache"] as? String else {
                throw invalid(i, "needs tokens, start, length and cache")
            }
            func slice(_ rows: [[Int]]) throws -> [[Int]] {
                guard let width = rows.first?.count, start >= 0, start + length <= width else {
                    throw invalid(i, "columns \(start)..<\(start + length) outside the input")
                }
                return rows.map { Array($0[start..<(start + length)]) }
            }
            var call = VLMCall(inputs: try slice(ints2(tokens)))
            if let name = object["embeddings"] as? String {
                let e = try substitutes.tensors[name] ?? tensor(name)
                guard e.rank == 3, start + length <= e.shape[1] else { throw invalid(i, "embeddings \(e.shape) too short") }
                call.inputEmbeddings = e.slice(axis: 1, start: start, length: length)
            }
            if let name = object["position_ids"] as? String {
                let p = try substitutes.ints[name] ?? file.readInt32s(name)
                switch p.shape.count {
                case 2: call.positionIds = VLMPositions(axes: 1, batch: p.shape[0], length: p.shape[1], values: p.values.map(Int.init))
                case 3 where p.shape[0] == 3:
                    call.positionIds = VLMPositions(axes: 3, batch: p.shape[1], length: p.shape[2], values: p.values.map(Int.init))
                default: throw invalid(i, "position_ids of shape \(p.shape)")
                }
            }
            if let name = object["rope_deltas"] as? String {
                call.ropeDeltas = try (substitutes.ints[name] ?? file.readInt32s(name)).values.map(Int.init)
            }
            if let name = object["image_grid_thw"] as? String { call.imageGrid = try ints2(name) }
            if let name = object["video_grid_thw"] as? String { call.videoGrid = try ints2(name) }
            if let name = object["attention_mask"] as? String { call.attentionMask = try slice(ints2(name)) }
            let action: ScheduledCall.CacheAction
            switch cacheText {
            case "none": action = .none
            case "keep": action = .keep
            case "new":
                action = .new(leftPadding: try (object["left_padding"] as? String).map {
                    try file.readInt32s($0).values.map(Int.init)
                })
            default: throw invalid(i, "unknown cache action '\(cacheText)'")
            }
            return ScheduledCall(call: call, cache: action, resetState: object["reset_state"] as? Bool ?? false)
        }
    }

    /// One get_rope_index case run by the library: inputs and what it returned.
    public struct RopeIndexCase {
        public var name: String
        public var description: String
        public var inputIds: [[Int]]
        public var imageGrid: [[Int]]?
        public var videoGrid: [[Int]]?
        public var attentionMask: [[Int]]?
        public var positionIds: VLMPositions
        public var ropeDeltas: [Int]
    }

    public func ropeIndexCases() throws -> [RopeIndexCase] {
        guard file.exists("/rope_index") else { return [] }
        return try file.children(of: "/rope_index").map { name in
            let g = "/rope_index/" + name
            func optional(_ key: String) throws -> [[Int]]? { file.exists(g + "/" + key) ? try tokenRows(g + "/" + key) : nil }
            let p = try file.readInt32s(g + "/position_ids")
            let positions: VLMPositions
            switch p.shape.count {
            case 2: positions = VLMPositions(axes: 1, batch: p.shape[0], length: p.shape[1], values: p.values.map(Int.init))
            case 3: positions = VLMPositions(axes: 3, batch: p.shape[1], length: p.shape[2], values: p.values.map(Int.init))
            default: throw GoldenError.invalid(file: path, path: g + "/position_ids", reason: "shape \(p.shape)")
            }
            return RopeIndexCase(
                name: name, description: (try? file.stringAttribute("description", of: g)) ?? "",
                inputIds: try tokenRows(g + "/input_ids"), imageGrid: try optional("image_grid_thw"),
                videoGrid: try optional("video_grid_thw"), attentionMask: try optional("attention_mask"),
                positionIds: positions, ropeDeltas: try file.readInt32s(g + "/rope_deltas").values.map(Int.init))
        }
    }
}
