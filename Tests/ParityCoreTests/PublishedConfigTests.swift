import Foundation
import Testing
@testable import ParityCore

/// The configs of published checkpoints (tools/configs/published) and the form transformers 5.25's
/// `save_pretrained` writes: both resolvers read them, with the numbers the checkpoints run.
@Suite struct PublishedConfigTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("tools/configs/published")

    /// name → (layers, hidden, experts)
    static let published: [String: (layers: Int, hidden: Int, experts: Int)] = [
        "qwen3.5-0.8b": (24, 1024, 0), "qwen3.5-9b": (32, 4096, 0), "qwen3.5-35b-a3b": (40, 2048, 256),
    ]

    @Test(arguments: published.keys.sorted())
    func publishedConfigResolvesForBothLibraries(_ name: String) throws {
        let data = try Data(contentsOf: Self.folder.appendingPathComponent(name + ".json"))
        let lm = try TextConfig.mlxLM(json: data, source: name)
        let vlm = try TextConfig.mlxVLM(json: data, source: name)
        let expected = try #require(Self.published[name])
        #expect(lm.numHiddenLayers == expected.layers && lm.hiddenSize == expected.hidden && lm.numExperts == expected.experts)
        // rope_type (not type), theta 1e7 and factor 0.25 from rope_parameters, 64 rotary dims.
        #expect(lm.ropeTheta == 1e7 && lm.partialRotaryFactor == 0.25 && lm.rotaryDims == 64)
        #expect(vlm.mropeSection == [11, 11, 10])
        // The mirrors share weights only when both libraries resolve the same sizes.
        var vlmAsLM = vlm
        vlmAsLM.mropeSection = lm.mropeSection
        if lm.isMoE { vlmAsLM.intermediateSize = lm.intermediateSize }   // no dense MLP reads it
        #expect(vlmAsLM == lm)
        let multimodal = try MultimodalConfig.decode(data, source: name)
        #expect(multimodal.imageTokenId == 248_056 && multimodal.visionStartTokenId == 248_053 && multimodal.spatialMergeSize == 2)
    }

    /// text_config exactly as `Qwen3_5ForConditionalGeneration.save_pretrained` (transformers 5.25)
    /// wrote it for a tiny model built with an mrope_section.
    static func savedByTransformers(rope: String) -> String {
        """
        {"architectures": ["Qwen3_5ForConditionalGeneration"], "dtype": "float32", "image_token_id": 997,
         "model_type": "qwen3_5", "text_config": {"attention_bias": false, "attention_dropout": 0.0,
         "bos_token_id": null, "eos_token_id": null, "head_dim": 64, "hidden_act": "silu", "hidden_size": 128,
         "initializer_range": 0.02, "intermediate_size": 128,
         "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"],
         "linear_conv_kernel_dim": 3, "linear_key_head_dim": 32, "linear_num_key_heads": 4,
         "linear_num_value_heads": 4, "linear_value_head_dim": 32, "max_position_embeddings": 1000,
         "model_type": "qwen3_5_text", "num_attention_heads": 8, "num_hidden_layers": 4, "num_key_value_heads": 4,
         "pad_token_id": null, "rms_norm_eps": 1e-05, "rope_parameters": \(rope),
         "tie_word_embeddings": false, "use_cache": true, "vocab_size": 1000},
         "tie_word_embeddings": false, "transformers_version": "5.25.0", "video_token_id": 998,
         "vision_config": {"depth": 2, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 24, "in_channels": 3,
         "model_type": "qwen3_5_vision", "num_heads": 2, "num_position_embeddings": 64, "out_hidden_size": 128,
         "patch_size": 4, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "axial"}, "spatial_merge_size": 2,
         "temporal_patch_size": 2}, "vision_end_token_id": 996, "vision_start_token_id": 995}
        """
    }

    @Test func transformersSavedConfigResolvesForBothLibraries() throws {
        let json = Data(Self.savedByTransformers(rope: """
            {"mrope_interleaved": true, "mrope_section": [6, 5, 5], "partial_rotary_factor": 0.5,
             "rope_theta": 1000.0, "rope_type": "default"}
            """).utf8)
        let lm = try TextConfig.mlxLM(json: json, source: "config.json")
        let vlm = try TextConfig.mlxVLM(json: json, source: "config.json")
        #expect(lm.ropeTheta == 1000 && lm.rotaryDims == 32 && lm.layerKinds.last == .fullAttention)
        #expect(vlm.mropeSection == [6, 5, 5] && vlm.rotaryDims == 32 && vlm.ropeTheta == 1000)
        let multimodal = try MultimodalConfig.decode(json, source: "config.json")
        #expect(multimodal.imageTokenId == 997 && multimodal.visionEndTokenId == 996)
    }

    /// Built from a config without an mrope_section, transformers writes none: mlx-lm runs it,
    /// mlx-vlm refuses it (ValueError in TextConfig.__post_init__), and so does the Swift resolver,
    /// naming the missing key.
    @Test func transformersSavedConfigWithoutMRoPESectionIsRefusedByTheVLMResolverOnly() throws {
        let json = Data(Self.savedByTransformers(rope: """
            {"partial_rotary_factor": 0.5, "rope_theta": 1000.0, "rope_type": "default"}
            """).utf8)
        let lm = try TextConfig.mlxLM(json: json, source: "config.json")
        #expect(lm.ropeTheta == 1000 && lm.rotaryDims == 32)
        #expect {
            try TextConfig.mlxVLM(json: json, source: "config.json")
        } throws: { error in
            guard case let .invalid(source, key, reason) = error as? ConfigError else { return false }
            return source == "config.json" && key == "rope_parameters.mrope_section" && reason.contains("mlx-vlm")
        }
    }
}
