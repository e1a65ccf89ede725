import ParityCore
import ParityTensor

// What `qwen-parity bench` needs from the vlm mirror: a text prompt step that, like mlx-lm's
// generate_step and mlx-vlm's generate, runs every token through the layers but the lm head on
// the last position only. The rest is `VLMTextModel.callAsFunction` as it is: the same position
// resolution (get_rope_index's text positions on a fresh cache, then cache offset + stored
// deltas), the same inner model.

extension VLMTextModel {
    /// Logits `[B, 1, V]` of the last position of a text-only call: the same bits as the last
    /// row of `self(VLMCall(inputs: rows), cache:)`, advancing `cache` and the position state alike.
    public func lastLogits(tokens rows: [[Int]], cache: PromptCache?) throws -> Tensor {
        let call = VLMCall(inputs: rows)
        guard let L = rows.first?.count, L > 0, rows.allSatisfy({ $0.count == L }) else {
            throw ForwardError.badInputShape("token rows must be non-empty and of equal length")
        }
        if let cache, cache.layers.count != model.layers.count {
            throw ForwardError.cacheMismatch("cache has \(cache.layers.count) layers, the model \(model.layers.count)")
        }
        let positions = try resolvePositions(call, cache: cache)
        let normed = try model(try model.embed(rows), cache: cache, positions: positions, trace: nil)
        let (B, D) = (normed.shape[0], normed.shape[2])
        var last = normed
        if L > 1 {
            var data = [Float]()
            data.reserveCapacity(B * D)
            for b in 0..<B { data.append(contentsOf: normed.data[((b * L + L - 1) * D)..<((b * L + L) * D)]) }
            last = Tensor(shape: [B, 1, D], data: data)
        }
        return last.linear(lmHead)
    }
}
