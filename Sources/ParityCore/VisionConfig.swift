import Foundation

// The vision tower's config as mlx-vlm 0.7.10 reads it for Qwen 3.5 (qwen3_vl VisionConfig,
// with qwen3_5's rule that deepstack is off). hidden_act is not read: the tower hard-codes its
// GELUs (tanh in the blocks, erf in the merger).

public struct VisionConfig: Equatable, Sendable {
    public var depth: Int
    public var hiddenSize: Int              // Dv
    public var intermediateSize: Int        // Iv, the blocks' MLP
    public var numHeads: Int
    public var patchSize: Int               // P
    public var temporalPatchSize: Int       // Tp
    public var spatialMergeSize: Int        // ms
    public var inChannels: Int              // C
    public var outHiddenSize: Int           // the text model's hidden size
    public var numPositionEmbeddings: Int   // rows of the learned position table

    public init(depth: Int, hiddenSize: Int, intermediateSize: Int, numHeads: Int, patchSize: Int,
                temporalPatchSize: Int, spatialMergeSize: Int, inChannels: Int, outHiddenSize: Int,
                numPositionEmbeddings: Int) {
        self.depth = depth
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHeads = numHeads
        self.patchSize = patchSize
        self.temporalPatchSize = temporalPatchSize
        self.spatialMergeSize = spatialMergeSize
        self.inChannels = inChannels
        self.outHiddenSize = outHiddenSize
        self.numPositionEmbeddings = numPositionEmbeddings
    }

    public var headDim: Int { hiddenSize / numHeads }
    /// Values per patch row of `pixel_values`: one patch flattened as `[C, Tp, P, P]`.
    public var patchValues: Int { inChannels * temporalPatchSize * patchSize * patchSize }
    /// Patches merged into one image token.
    public var mergeUnit: Int { spatialMergeSize * spatialMergeSize }
    /// Side of the learned position grid: Python's `int(n ** 0.5)`.
    public var positionGridSide: Int { Int(Double(numPositionEmbeddings).squareRoot()) }

    private struct Raw: Decodable {
        var depth: Int?, hidden_size: Int?, intermediate_size: Int?, num_heads: Int?
        var patch_size: Int?, temporal_patch_size: Int?, spatial_merge_size: Int?, in_channels: Int?
        var out_hidden_size: Int?, num_position_embeddings: Int?
        var deepstack_visual_indexes: [Int]?
    }

    /// Reads a `vision_config` object; every field is required (the golden records the values
    /// mlx-vlm ran with, and its dataclass defaults are Qwen3-VL's, not Qwen 3.5's).
    public static func decode(_ data: Data, source: String) throws -> VisionConfig {
        let raw: Raw
        do { raw = try JSONDecoder().decode(Raw.self, from: data) } catch {
            throw ConfigError.unreadable(source: source, reason: "vision config: \(error)")
        }
        func int(_ value: Int?, _ key: String) throws -> Int {
            guard let value else { throw ConfigError.missingKey(source: source, key: key) }
            guard (1...1_000_000).contains(value) else {
                throw ConfigError.invalid(source: source, key: key, reason: "expected 1...1000000, got \(value)")
            }
            return value
        }
        if let deepstack = raw.deepstack_visual_indexes, !deepstack.isEmpty {
            throw ConfigError.invalid(source: source, key: "deepstack_visual_indexes",
                                      reason: "Qwen 3.5 has no deepstack (mlx-vlm raises), got \(deepstack)")
        }
        let config = VisionConfig(
            depth: try int(raw.depth, "depth"), hiddenSize: try int(raw.hidden_size, "hidden_size"),
            intermediateSize: try int(raw.intermediate_size, "intermediate_size"),
            numHeads: try int(raw.num_heads, "num_heads"), patchSize: try int(raw.patch_size, "patch_size"),
            temporalPatchSize: try int(raw.temporal_patch_size, "temporal_patch_size"),
            spatialMergeSize: try int(raw.spatial_merge_size, "spatial_merge_size"),
            inChannels: try int(raw.in_channels, "in_channels"),
            outHiddenSize: try int(raw.out_hidden_size, "out_hidden_size"),
            numPositionEmbeddings: try int(raw.num_position_embeddings, "num_position_embeddings"))
        try config.validate(source: source)
        return config
    }

    public func validate(source: String) throws {
        guard hiddenSize % numHeads == 0 else {
            throw ConfigError.invalid(source: source, key: "num_heads",
                                      reason: "hidden_size \(hiddenSize) is not a multiple of \(numHeads) heads")
        }
        // The 2-D rotary splits half the head dim between rows and columns, in pairs.
        guard headDim % 4 == 0 else {
            throw ConfigError.invalid(source: source, key: "num_heads",
                                      reason: "head dim \(headDim) is not a multiple of 4 (the 2-D rotary needs it)")
        }
        guard positionGridSide >= 1 else {
            throw ConfigError.invalid(source: source, key: "num_position_embeddings", reason: "no position grid")
        }
    }

    /// How tensors of these shapes (by mlx-vlm name) fail to be exactly this tower's parameters,
    /// or nil: missing and unexpected names first, then the first shape (in name order) that differs.
    public func parameterMismatch(_ shapes: [String: [Int]]) -> String? {
        let expected = parameterShapes
        let missing = expected.keys.filter { shapes[$0] == nil }.sorted()
        let unexpected = shapes.keys.filter { expected[$0] == nil }.sorted()
        guard missing.isEmpty, unexpected.isEmpty else {
            func list(_ names: [String]) -> String { names.prefix(3).joined(separator: ", ") + (names.count > 3 ? ", …" : "") }
            return [missing.isEmpty ? nil : "\(missing.count) missing (\(list(missing)))",
                    unexpected.isEmpty ? nil : "\(unexpected.count) unexpected (\(list(unexpected)))"]
                .compactMap { $0 }.joined(separator: ", ")
        }
        for (name, shape) in expected.sorted(by: { $0.key < $1.key }) where shapes[name]! != shape {
            return "\(name) has shape \(shapes[name]!), the config implies \(shape)"
        }
        return nil
    }

    /// The tower's parameters as mlx-vlm names them (prefix `vision_tower.`), with shapes.
    public var parameterShapes: [String: [Int]] {
        let (D, I, K) = (hiddenSize, intermediateSize, mergeUnit * hiddenSize)
        var shapes: [String: [Int]] = [
            "patch_embed.proj.weight": [D, temporalPatchSize, patchSize, patchSize, inChannels],
            "patch_embed.proj.bias": [D],
            "pos_embed.weight": [numPositionEmbeddings, D],
            "merger.norm.weight": [D], "merger.norm.bias": [D],
            "merger.linear_fc1.weight": [K, K], "merger.linear_fc1.bias": [K],
            "merger.linear_fc2.weight": [outHiddenSize, K], "merger.linear_fc2.bias": [outHiddenSize],
        ]
        for i in 0..<depth {
            let b = "blocks.\(i)."
            shapes[b + "norm1.weight"] = [D]; shapes[b + "norm1.bias"] = [D]
            shapes[b + "norm2.weight"] = [D]; shapes[b + "norm2.bias"] = [D]
            shapes[b + "attn.qkv.weight"] = [3 * D, D]; shapes[b + "attn.qkv.bias"] = [3 * D]
            shapes[b + "attn.proj.weight"] = [D, D]; shapes[b + "attn.proj.bias"] = [D]
            shapes[b + "mlp.linear_fc1.weight"] = [I, D]; shapes[b + "mlp.linear_fc1.bias"] = [I]
            shapes[b + "mlp.linear_fc2.weight"] = [D, I]; shapes[b + "mlp.linear_fc2.bias"] = [D]
        }
        return Dictionary(uniqueKeysWithValues: shapes.map { ("vision_tower." + $0.key, $0.value) })
    }
}
