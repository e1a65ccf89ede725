import TestSupport
import Testing
import ParityCore
@testable import VLMMirror

@Suite struct RopeIndexTests {
    static let tokens = MultimodalConfig(imageTokenId: 97, videoTokenId: 98, visionStartTokenId: 95,
                                         visionEndTokenId: 96, spatialMergeSize: 2)
    let index = RopeIndex(tokens)
    let VS = 95, VE = 96, I = 97, V = 98

    func axes(_ p: VLMPositions, row: Int = 0) -> [[Int]] {
        (0..<3).map { a in (0..<p.length).map { p.at(axis: a, row: row, t: $0) } }
    }

    /// numerics spec §3.3: grids (1,4,6) then (1,6,4), merge 2, prompt
    /// [t t VS I×6 VE t t VS I×6 VE t t t]. Text after a block starts at block start + max(gt, gh, gw).
    @Test func workedExampleOfTheSpec() throws {
        let ids = [5, 6, VS] + [Int](repeating: I, count: 6) + [VE, 7, 8, VS] + [Int](repeating: I, count: 6) + [VE, 9, 10, 11]
        let (p, deltas) = try index([ids], imageGrid: [[1, 4, 6], [1, 6, 4]])
        #expect(p.axes == 3)
        #expect(axes(p) == [
            [0, 1, 2, 3, 3, 3, 3, 3, 3, 6, 7, 8, 9, 10, 10, 10, 10, 10, 10, 13, 14, 15, 16],
            [0, 1, 2, 3, 3, 3, 4, 4, 4, 6, 7, 8, 9, 10, 10, 11, 11, 12, 12, 13, 14, 15, 16],
            [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10, 11, 10, 11, 10, 11, 13, 14, 15, 16],
        ])
        #expect(deltas == [-6])
    }

    @Test func textOnlyIsARangeWithZeroDeltas() throws {
        let (p, deltas) = try index([[4, 5, 6], [7, 8, 9]])
        #expect(p.axes == 1 && p.values == [0, 1, 2, 0, 1, 2])
        #expect(deltas == [0, 0])
    }

    /// With a mask: cumsum(mask) − 1, padded columns 1, delta = max + 1 − L (= −pad).
    @Test func maskedTextCountsRealTokensOnly() throws {
        let (p, deltas) = try index([[0, 0, 4, 5], [1, 2, 3, 4]], attentionMask: [[0, 0, 1, 1], [1, 1, 1, 1]])
        #expect(p.values == [1, 1, 0, 1, 0, 1, 2, 3])
        #expect(deltas == [-2, 0])
    }

    /// Grids are consumed in order across rows; masked columns get 1.
    @Test func imagesOfAPaddedBatch() throws {
        let ids = [[0, 0, 1, VS, I, I, I, I, VE, 2], [1, 2, VS] + [Int](repeating: I, count: 6) + [VE]]
        let (p, deltas) = try index(ids, imageGrid: [[1, 4, 4], [1, 4, 6]],
                                    attentionMask: [[0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [Int](repeating: 1, count: 10)])
        #expect(axes(p, row: 0) == [[1, 1, 0, 1, 2, 2, 2, 2, 4, 5], [1, 1, 0, 1, 2, 2, 3, 3, 4, 5], [1, 1, 0, 1, 2, 3, 2, 3, 4, 5]])
        #expect(axes(p, row: 1)[2] == [0, 1, 2, 3, 4, 5, 3, 4, 5, 6])
        #expect(deltas == [-2, -3])
    }

    /// A (2, 4, 4) video grid is two (1, 4, 4) blocks, one per vision_start.
    @Test func videoGridsExpandPerFrame() throws {
        let ids = [1, VS, V, V, V, V, VE, VS, V, V, V, V, VE, 2]
        let (p, deltas) = try index([ids], videoGrid: [[2, 4, 4]])
        #expect(axes(p)[0] == [0, 1, 2, 2, 2, 2, 4, 5, 6, 6, 6, 6, 8, 9])
        #expect(axes(p)[2] == [0, 1, 2, 3, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9])
        #expect(deltas == [-4])
    }

    @Test func aMissingGridIsAnError() {
        #expect(throws: RopeIndexError.missingGrid(kind: "image", index: 1)) {
            try index([[VS, I, VE, VS, I, VE]], imageGrid: [[1, 2, 2]])
        }
    }
}
