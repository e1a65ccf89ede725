import ParityCore
import ParityTensor

// Model.merge_input_ids_with_image_features (masked_scatter): image features replace the
// embedding rows of image and video tokens, in row-major (B, L) order; other rows keep
// embed_tokens. The counts must agree, or mlx-vlm raises.

public enum ImageMerge {
    /// `embeddings` `[B, L, D]` of `ids`; `features` `[n, D]`, one row per image/video token.
    public static func scatter(_ features: Tensor, into embeddings: Tensor, ids: [[Int]],
                               tokens: MultimodalConfig) throws -> Tensor {
        let D = embeddings.lastDim
        guard embeddings.rank == 3, embeddings.shape[0] == ids.count, ids.allSatisfy({ $0.count == embeddings.shape[1] }) else {
            throw VisionError.imageTokens("embeddings \(embeddings.shape) do not match ids of \(ids.count) rows")
        }
        guard features.rank == 2, features.shape[1] == D else {
            throw VisionError.imageTokens("features \(features.shape) do not have the embedding width \(D)")
        }
        let slots = ids.joined().enumerated().filter { $0.element == tokens.imageTokenId || $0.element == tokens.videoTokenId }.map(\.offset)
        guard slots.count == features.shape[0] else {
            throw VisionError.imageTokens("Image features and image tokens do not match: tokens: \(slots.count), features \(features.shape[0])")
        }
        var out = embeddings
        for (row, slot) in slots.enumerated() {
            out.data.replaceSubrange((slot * D)..<((slot + 1) * D), with: features.data[(row * D)..<((row + 1) * D)])
        }
        return out
    }
}
