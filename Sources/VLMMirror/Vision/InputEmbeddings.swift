import ParityCore
import ParityTensor

// Model.get_input_embeddings with pixel values: the tower's features scattered into
// embed_tokens(ids), and the 3-D positions and rope deltas get_rope_index gives the prompt.

public struct MultimodalInput: Sendable {
    /// `[B, L, D]`: image features at the image tokens, token embeddings elsewhere.
    public var embeddings: Tensor
    public var positionIds: VLMPositions
    /// One per row (`[B, 1]` in mlx-vlm).
    public var ropeDeltas: [Int]
}

extension VLMTextModel {
    public func inputEmbeddings(ids: [[Int]], pixelValues: Tensor, imageGrid: [[Int]], tower: VisionTower,
                                trace: VisionTrace? = nil) throws -> MultimodalInput {
        guard tower.config.spatialMergeSize == multimodal.spatialMergeSize else {
            throw VisionError.badGrid("the tower merges \(tower.config.spatialMergeSize)×\(tower.config.spatialMergeSize) "
                                      + "patches, get_rope_index assumes \(multimodal.spatialMergeSize)")
        }
        guard tower.config.outHiddenSize == config.hiddenSize else {
            throw VisionError.weights("the tower's out_hidden_size \(tower.config.outHiddenSize) is not the text hidden size \(config.hiddenSize)")
        }
        let grids = try tower.grids(imageGrid)
        let tokens = try model.embed(ids)
        let features = try tower(pixelValues: pixelValues, grids: grids, trace: trace)
        let merged = try ImageMerge.scatter(features, into: tokens, ids: ids, tokens: multimodal)
        let (positions, deltas) = try ropeIndex(ids, imageGrid: imageGrid)
        return MultimodalInput(embeddings: merged, positionIds: positions, ropeDeltas: deltas)
    }
}
