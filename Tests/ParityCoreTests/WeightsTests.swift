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

/// The bytes of a packed projection's value: for a reference-backed value (an array buffer) two
/// values hold the same packed copy iff these are equal.
/// Which buffer holds the packed elements (the struct's own bytes include padding).
func storageBytes(_ w: LinearWeight) -> UInt { w.storageAddress }

@Suite struct SharedPackingTests {
    let config = try! resolve(tinyConfigJSON)

    func weights(_ c: TextConfig) throws -> Weights {
        var tensors = completeWeights(c)
        for (name, t) in tensors { tensors[name] = Tensor(shape: t.shape, data: t.data.indices.map { Float($0 % 7) - 3 }) }
        return try Weights(tensors, config: c, source: "g.h5")
    }

    @Test func aProjectionIsPackedOnceAndShared() throws {
        let w = try weights(config)
        let name = WeightNames.layer(3, "self_attn.q_proj.weight")
        #expect(w.packedCount == 0)
        let first = w.linear(name), copy = w   // a copy of the value shares the memo
        let second = copy.linear(name)
        #expect(w.packedCount == 1)
        #expect(storageBytes(first) == storageBytes(second))
        // Control: packing the same tensor again makes a second copy, with other bytes.
        #expect(storageBytes(LinearWeight(w[name])) != storageBytes(first))
        let x = Tensor(shape: [2, 128], data: (0..<256).map { Float($0) / 256 })
        #expect(x.linear(first) == x.linear(LinearWeight(w[name])))
    }

    @Test func expertsAreSlicesOfTheStackedWeight() throws {
        let moe = try resolve(tinyWith {
            $0["num_experts"] = 4; $0["num_experts_per_tok"] = 2
            $0["moe_intermediate_size"] = 16; $0["shared_expert_intermediate_size"] = 16
        })
        let w = try weights(moe)
        let name = WeightNames.layer(1, "mlp.switch_mlp.down_proj.weight")
        let stacked = w[name]                                  // [E, D, Im]
        let x = Tensor(shape: [1, 16], data: (0..<16).map { Float($0) })
        for e in 0..<4 {
            let manual = LinearWeight(stacked.slice(axis: 0, start: e, length: 1).reshaped([128, 16]))
            #expect(x.linear(w.linear(name, expert: e)) == x.linear(manual))
        }
        #expect(w.packedCount == 4)
        #expect(storageBytes(w.linear(name, expert: 2)) == storageBytes(w.linear(name, expert: 2)))
        #expect(w.packedCount == 4)
    }

    @Test func concurrentCallersGetOnePackedCopy() throws {
        let w = try weights(config)
        let names = WeightNames.expected(for: config).map(\.name).filter { $0.hasSuffix("proj.weight") }
        let results = ConcurrentResults()
        DispatchQueue.concurrentPerform(iterations: 64) { i in
            let name = names[i % names.count]
            results.add(name, storageBytes(w.linear(name)))
        }
        #expect(w.packedCount == names.count)
        #expect(results.distinctPerName.values.allSatisfy { $0 == 1 })
    }
}

final class ConcurrentResults: @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [String: Set<UInt>] = [:]
    func add(_ name: String, _ bytes: UInt) { lock.lock(); seen[name, default: []].insert(bytes); lock.unlock() }
    var distinctPerName: [String: Int] { lock.lock(); defer { lock.unlock() }; return seen.mapValues(\.count) }
}
