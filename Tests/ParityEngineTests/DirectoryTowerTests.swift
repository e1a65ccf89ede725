import Checkpoint
import Foundation
import ParityCore
import ParityTensor
import Testing
import VLMMirror
@testable import ParityEngine

/// A model directory's vision tower is read from the directory itself (in place), sanitized the
/// way mlx-vlm's load_model does; the golden's float32 copy is what mlx-vlm actually ran.
@Suite struct DirectoryTowerTests {
    static let published = goldenDirectory.appendingPathComponent("checkpoints/tiny-published-hf")

    @Test func publishedTowerHoldsTheBitsMlxVlmLoaded() throws {
        let golden = try GoldenFile(path: Self.published.appendingPathComponent("parity.h5").path)
        let config = try #require(try golden.visionConfig())
        let directory = try ModelDirectory(path: Self.published.path)
        let values = try directory.visionWeights(config: config)
        let recorded = try golden.file.children(of: "/vision/weights")
        #expect(Set(values.keys) == Set(recorded))
        // the published patch embedding is [D, C, Tp, P, P]: moved to [D, Tp, P, P, C]
        #expect(values["vision_tower.patch_embed.proj.weight"]?.shape == config.parameterShapes["vision_tower.patch_embed.proj.weight"])
        for name in recorded {
            let expected = try golden.tensor("/vision/weights/" + name)
            let mine = try #require(values[name]).tensor
            #expect(mine.shape == expected.shape, "\(name)")
            #expect(mine.data.map(\.bitPattern) == expected.data.map(\.bitPattern), "\(name)")
        }
    }

    @Test func patchEmbeddingInNeitherLayoutIsNamed() throws {
        let golden = try GoldenFile(path: Self.published.appendingPathComponent("parity.h5").path)
        var config = try #require(try golden.visionConfig())
        config.inChannels = 5   // the stored [D, 3, 2, 4, 4] has no axis of 5 channels, first or last
        let directory = try ModelDirectory(path: Self.published.path)
        #expect {
            _ = try directory.visionWeights(config: config)
        } throws: { error in
            let text = "\(error)"
            return text.contains("model.safetensors") && text.contains("model.visual.patch_embed.proj.weight")
                && text.contains("in_channels")
        }
    }
}
