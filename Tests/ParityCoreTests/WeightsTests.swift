import Foundation
import Testing
import ParityTensor
@testable import ParityCore

func completeWeights(_ c: TextConfig) -> [String: Tensor] {
    var out: [String: Tensor] = [:]
    for (name, shape) in WeightNames.expected(for: c) { out[name] = Tensor(zeros: shape) }
    return out
}

@Suite struct StrictLoadingTests {
    let config = try! resolve(tinyConfigJSON)

    @Test func completeSetLoads() throws {
        let w = try Weights(completeWeights(config), config: config, source: "g.h5")
        #expect(w.names.count == WeightNames.expected(for: config).count)
    }

    @Test func missingWeightIsNamed() {
        var tensors = completeWeights(config)
        tensors.removeValue(forKey: WeightNames.layer(2, "linear_attn.conv1d.weight"))
        #expect(throws: WeightError.missing(source: "g.h5", name: "language_model.model.layers.2.linear_attn.conv1d.weight")) {
            try Weights(tensors, config: config, source: "g.h5")
        }
    }

    @Test func extraWeightIsNamed() {
        var tensors = completeWeights(config)
        tensors["language_model.model.layers.0.mlp.extra.weight"] = Tensor(zeros: [1])
        #expect(throws: WeightError.unexpected(source: "g.h5", names: ["language_model.model.layers.0.mlp.extra.weight"])) {
            try Weights(tensors, config: config, source: "g.h5")
        }
    }

    @Test func misShapedWeightIsNamed() {
        var tensors = completeWeights(config)
        tensors[WeightNames.finalNorm] = Tensor(zeros: [127])
        #expect(throws: WeightError.wrongShape(source: "g.h5", name: WeightNames.finalNorm, expected: [128], found: [127])) {
            try Weights(tensors, config: config, source: "g.h5")
        }
    }

    @Test func nonFiniteWeightIsRejected() {
        var tensors = completeWeights(config)
        var t = tensors[WeightNames.embedTokens]!
        t.data[5] = .nan
        tensors[WeightNames.embedTokens] = t
        #expect(throws: WeightError.notFinite(source: "g.h5", name: WeightNames.embedTokens, index: 5)) {
            try Weights(tensors, config: config, source: "g.h5")
        }
    }

    @Test func tiedEmbeddingsExpectNoLMHead() throws {
        let tied = try resolve(tinyWith { $0["tie_word_embeddings"] = true })
        #expect(!WeightNames.expected(for: tied).contains { $0.name == WeightNames.lmHead })
        #expect(WeightNames.expected(for: config).contains { $0.name == WeightNames.lmHead })
    }

    @Test func moeLayersExpectRouterExpertsAndSharedExpert() throws {
        let moe = try resolve(tinyWith {
            $0["num_experts"] = 8; $0["num_experts_per_tok"] = 2
            $0["moe_intermediate_size"] = 64; $0["shared_expert_intermediate_size"] = 64
        })
        let names = Dictionary(uniqueKeysWithValues: WeightNames.expected(for: moe).map { ($0.name, $0.shape) })
        #expect(names[WeightNames.layer(0, "mlp.switch_mlp.gate_proj.weight")] == [8, 64, 128])
        #expect(names[WeightNames.layer(3, "mlp.shared_expert_gate.weight")] == [1, 128])
        #expect(names[WeightNames.layer(0, "mlp.gate_proj.weight")] == nil)
    }
}
