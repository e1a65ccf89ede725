import Foundation
import ParityCore
import ParityTensor
import Testing
import TestSupport
import VLMMirror
@testable import ParityBench

// The Swift engines time `BenchModel.lastLogits`; it must be the model's own forward, only
// cheaper (the lm head on the last position), and a fresh bench cache must start over.
@Suite struct BenchModelTests {
    @Test func vlmLastLogitsAreTheLastRowOfTheFullCall() throws {
        let config = try tinyConfig { $0["tie_word_embeddings"] = true }
        let full = try randomWeights(config)
        // The same tensors read on demand, as the bench streams them from its file.
        let onDemand = Weights(names: full.names, source: "on demand") { full[$0] }
        let reference = VLMTextModel(config: config, weights: full)
        let model = VLMTextModel(config: config, weights: onDemand)
        let prompt = [3, 17, 5, 42, 8, 1, 29]

        let expectedCache = reference.makeCache(leftPadding: nil)
        let logits = try reference(VLMCall(inputs: [prompt]), cache: expectedCache).logits
        let V = logits.shape[2]
        let expectedLast = Array(logits.data[((prompt.count - 1) * V)...])
        let expectedNext = try reference(VLMCall(inputs: [[11]]), cache: expectedCache).logits

        for _ in 0..<2 {   // twice: a new bench cache leaves nothing of the last run behind
            let cache = model.makeBenchCache()
            let last = try model.lastLogits(tokens: prompt, cache: cache)
            #expect(last.shape == [1, 1, V])
            #expect(last.data == expectedLast)
            #expect(try model.lastLogits(tokens: [11], cache: cache).data == expectedNext.data)
        }
    }

    @Test func onDemandWeightsServeEveryNameAndPackOnce() throws {
        let config = try tinyConfig()
        let full = try randomWeights(config)
        let onDemand = Weights(names: full.names, source: "on demand") { full[$0] }
        #expect(onDemand.names == full.names)
        for name in full.names { #expect(onDemand[name] == full[name]) }
        let name = WeightNames.layer(0, "mlp.up_proj.weight")
        #expect(onDemand.linear(name).storageAddress == onDemand.linear(name).storageAddress)
        #expect(onDemand.packedCount == 1)
    }
}
