import Foundation
import Testing
@testable import ParityCore

/// The upstream tiny text config: top-level rope_theta 1000 and partial_rotary_factor 0.5, no rope_parameters.
let tinyConfigJSON = """
{"model_type": "qwen3_5", "hidden_size": 128, "num_hidden_layers": 4, "intermediate_size": 128,
 "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64, "vocab_size": 1000,
 "linear_num_key_heads": 4, "linear_num_value_heads": 4, "linear_key_head_dim": 32,
 "linear_value_head_dim": 32, "linear_conv_kernel_dim": 3, "rms_norm_eps": 1e-5,
 "rope_theta": 1000, "partial_rotary_factor": 0.5, "max_position_embeddings": 1000,
 "full_attention_interval": 4, "tie_word_embeddings": false}
"""

func resolve(_ json: String) throws -> TextConfig {
    try TextConfig.mlxLM(json: Data(json.utf8), source: "test.json")
}

func tinyWith(_ edit: (inout [String: Any]) -> Void) -> String {
    var object = try! JSONSerialization.jsonObject(with: Data(tinyConfigJSON.utf8)) as! [String: Any]
    edit(&object)
    return String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
}

@Suite struct RopeDefaultSurpriseTests {
    /// mlx-lm's default rope_parameters dict is truthy, so it overrides the top-level fields:
    /// the tiny config runs with base 1e5 and 16 rotary dims, not 1000 and 32.
    @Test func absentRopeParametersOverrideTopLevelFields() throws {
        let c = try resolve(tinyConfigJSON)
        #expect(c.ropeTheta == 100_000)
        #expect(c.partialRotaryFactor == 0.25)
        #expect(c.rotaryDims == 16)
        #expect(c.mropeSection == [11, 11, 10])
    }

    @Test func nullRopeParametersKeepTopLevelFields() throws {
        let c = try resolve(tinyWith { $0["rope_parameters"] = NSNull() })
        #expect(c.ropeTheta == 1000)
        #expect(c.rotaryDims == 32)
    }

    @Test func ropeParametersWithoutThetaFallBackToLibraryDefaultNotTopLevel() throws {
        let c = try resolve(tinyWith { $0["rope_parameters"] = ["type": "default", "partial_rotary_factor": 0.25] })
        #expect(c.ropeTheta == 100_000)
    }

    @Test func explicitRopeParametersWin() throws {
        let c = try resolve(tinyWith {
            $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25, "mrope_section": [11, 11, 10]]
        })
        #expect(c.ropeTheta == 1e7)
        #expect(c.rotaryDims == 16)
    }

    @Test func unsupportedRopeTypeIsRejected() {
        #expect(throws: ConfigError.self) {
            try resolve(tinyWith { $0["rope_parameters"] = ["type": "yarn", "rope_theta": 1e6] })
        }
    }
}

@Suite struct ConfigDecodingTests {
    @Test func tinyConfigFieldsAndLayerPattern() throws {
        let c = try resolve(tinyConfigJSON)
        #expect(c.hiddenSize == 128 && c.headDim == 64 && c.vocabSize == 1000)
        #expect(c.convDim == 384)
        #expect(c.layerKinds == [.linearAttention, .linearAttention, .linearAttention, .fullAttention])
        #expect(!c.isMoE)
        #expect(c.eps == Float(1e-5))
    }

    @Test func missingHeadDimFallsBackToHiddenOverHeads() throws {
        let c = try resolve(tinyWith { $0.removeValue(forKey: "head_dim") })
        #expect(c.headDim == 16)
    }

    @Test func nestedTextConfigIsRead() throws {
        let inner = try JSONSerialization.jsonObject(with: Data(tinyConfigJSON.utf8))
        let outer = try JSONSerialization.data(withJSONObject: ["model_type": "qwen3_5", "text_config": inner])
        let c = try TextConfig.mlxLM(json: outer, source: "nested.json")
        #expect(c.hiddenSize == 128)
    }

    @Test func intervalTwoAlternatesLayers() throws {
        let c = try resolve(tinyWith { $0["full_attention_interval"] = 2 })
        #expect(c.layerKinds == [.linearAttention, .fullAttention, .linearAttention, .fullAttention])
    }

    @Test func valueHeadsNotAMultipleOfKeyHeadsAreRejectedByName() {
        do {
            _ = try resolve(tinyWith { $0["linear_num_value_heads"] = 6 })
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("linear_num_value_heads"))
            #expect("\(error)".contains("test.json"))
        }
    }

    @Test(arguments: ["num_attention_heads", "vocab_size", "linear_conv_kernel_dim"])
    func nonPositiveSizesAreRejected(key: String) {
        #expect(throws: ConfigError.self) { try resolve(tinyWith { $0[key] = 0 }) }
    }

    @Test func wrongTypeNamesTheKey() {
        do {
            _ = try resolve(tinyWith { $0["hidden_size"] = "big" })
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("hidden_size"))
        }
    }

    /// mlx-lm's loader picks the model class from the top-level model_type, so it is required.
    @Test func missingOrForeignModelTypeIsNamed() {
        #expect(throws: ConfigError.missingKey(source: "test.json", key: "model_type")) {
            try resolve(tinyWith { $0.removeValue(forKey: "model_type") })
        }
        do {
            _ = try resolve(tinyWith { $0["model_type"] = "llama" })
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("model_type") && "\(error)".contains("llama"))
        }
    }

    /// Values a corrupt file can hold that would otherwise trap (Int(1e300), overflowing shape products).
    /// Edits the config text itself, as a corrupt file would hold it.
    @Test(arguments: [("\"rope_theta\": 1000", "\"rope_parameters\": {\"partial_rotary_factor\": 1e300}", "partial_rotary_factor"),
                      ("\"rope_theta\": 1000", "\"rope_parameters\": {\"partial_rotary_factor\": -0.5}", "partial_rotary_factor"),
                      ("\"hidden_size\": 128", "\"hidden_size\": 1099511627776", "hidden_size"),
                      ("\"num_attention_heads\": 8", "\"num_attention_heads\": 9223372036854775807", "num_attention_heads"),
                      ("\"num_attention_heads\": 8", "\"num_attention_heads\": 1e30", "num_attention_heads"),
                      ("\"vocab_size\": 1000", "\"vocab_size\": 1000.5", "vocab_size"),
                      ("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": false, \"num_experts\": -1", "num_experts"),
                      ("\"intermediate_size\": 128", "\"intermediate_size\": 2097152", "intermediate_size")])
    func absurdValuesAreNamedErrors(original: String, replacement: String, key: String) throws {
        let text = tinyConfigJSON.replacingOccurrences(of: original, with: replacement)
        try #require(text != tinyConfigJSON)
        do {
            _ = try resolve(text)
            Issue.record("\(replacement) was accepted")
        } catch {
            #expect("\(error)".contains(key), "\(error)")
        }
    }

    @Test func notJSONIsAnError() {
        #expect(throws: ConfigError.self) { try TextConfig.mlxLM(json: Data("{oops".utf8), source: "bad.json") }
    }
}
