import ParityCore
import ParityTensor
import VLMMirror

// The vlm mirror as a benchmark engine (`swift-vlm`): mlx-vlm's language model on a text prompt,
// its positions resolved as mlx-vlm resolves them (text positions from get_rope_index on the
// fresh cache, then the cache offset plus the stored deltas), the lm head on the last position.

extension VLMTextModel: BenchModel {
    /// A fresh cache starts a new conversation: the stored positions and deltas go with it, as a
    /// new generate call with a new prompt cache would leave them.
    public func makeBenchCache() -> PromptCache {
        resetPositionState()
        return makeCache(leftPadding: nil)
    }

    public func lastLogits(tokens: [Int], cache: PromptCache) throws -> Tensor {
        try lastLogits(tokens: [tokens], cache: cache)
    }
}
