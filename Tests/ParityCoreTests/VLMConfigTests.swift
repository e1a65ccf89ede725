import Foundation
import Testing
@testable import ParityCore

func resolveVLM(_ json: String) throws -> TextConfig {
    try TextConfig.mlxVLM(json: Data(json.utf8), source: "test.json")
}

/// mlx-vlm's TextConfig runs the same numbers as mlx-lm for the tiny config, but it is strict.
@Suite struct VLMConfigTests {
    @Test func tinyConfigResolvesLikeMLXLM() throws {
        let vlm = try resolveVLM(tinyConfigJSON)
        #expect(vlm == (try resolve(tinyConfigJSON)))
        #expect(vlm.rotaryDims == 16 && vlm.ropeTheta == 100_000 && vlm.mropeSection == [11, 11, 10])
    }

    @Test func headDimHasNoFallback() {
        #expect(throws: ConfigError.missingKey(source: "test.json", key: "head_dim")) {
            try resolveVLM(tinyWith { $0.removeValue(forKey: "head_dim") })
        }
    }

    @Test func requiredFieldsAreRequired() {
        for key in ["max_position_embeddings", "linear_conv_kernel_dim", "intermediate_size"] {
            #expect(throws: ConfigError.missingKey(source: "test.json", key: key)) {
                try resolveVLM(tinyWith { $0.removeValue(forKey: key) })
            }
        }
    }

    @Test func ropeParametersMustBeComplete() {
        #expect(throws: ConfigError.self) {
            try resolveVLM(tinyWith { $0["rope_parameters"] = ["type": "default", "partial_rotary_factor": 0.25] })
        }
        #expect(throws: ConfigError.self) { try resolveVLM(tinyWith { $0["rope_parameters"] = NSNull() }) }
        let c = try? resolveVLM(tinyWith {
            $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                                     "mrope_section": [11, 11, 10]]
        })
        #expect(c?.ropeTheta == 1e7)
    }

    @Test func moeConfigHasNoIntermediateSize() throws {
        let c = try resolveVLM(tinyWith {
            $0["model_type"] = "qwen3_5_moe"; $0.removeValue(forKey: "intermediate_size")
            $0["num_experts"] = 8; $0["num_experts_per_tok"] = 2
            $0["moe_intermediate_size"] = 64; $0["shared_expert_intermediate_size"] = 64
        })
        #expect(c.isMoE && c.numExperts == 8)
        #expect(throws: ConfigError.missingKey(source: "test.json", key: "num_experts")) {
            try resolveVLM(tinyWith { $0["model_type"] = "qwen3_5_moe" })
        }
    }

    @Test func multimodalTokensDefaultToTheLibrarysAndReadTheirOverrides() throws {
        let defaults = try MultimodalConfig.decode(Data("{}".utf8), source: "t")
        #expect(defaults == .libraryDefault && defaults.visionStartTokenId == 248_045)
        let tiny = try MultimodalConfig.decode(Data("""
            {"image_token_id": 997, "vision_start_token_id": 995, "vision_config": {"spatial_merge_size": 4}}
            """.utf8), source: "t")
        #expect(tiny.imageTokenId == 997 && tiny.visionStartTokenId == 995 && tiny.videoTokenId == 248_057)
        #expect(tiny.spatialMergeSize == 4)
    }
}
