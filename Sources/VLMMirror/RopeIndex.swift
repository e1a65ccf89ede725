import ParityCore

// mirrors mlx_vlm/models/qwen3_5/language.py LanguageModel.get_rope_index: MRoPE position ids
// and rope deltas from token ids, image/video grids and the spatial merge size.
// Shapes: B rows, L columns; positions [3, B, L] with images or videos, [B, L] for text.

public enum RopeIndexError: Error, CustomStringConvertible, Equatable {
    case missingGrid(kind: String, index: Int)
    case missingToken(kind: String, row: Int, from: Int)
    case tooFewPositions(row: Int, positions: Int, tokens: Int)
    case badMask(String)

    public var description: String {
        switch self {
        case let .missingGrid(kind, index): return "get_rope_index: no \(kind) grid at index \(index)"
        case let .missingToken(kind, row, from): return "get_rope_index: row \(row) has no \(kind) token at or after \(from)"
        case let .tooFewPositions(row, positions, tokens):
            return "get_rope_index: row \(row) has \(positions) positions for \(tokens) kept tokens"
        case let .badMask(s): return "get_rope_index: \(s)"
        }
    }
}

public struct RopeIndex: Sendable {
    public let tokens: MultimodalConfig

    public init(_ tokens: MultimodalConfig) { self.tokens = tokens }

    /// Position ids and rope deltas (`[B, 1]`, returned as one value per row).
    /// - Without grids: `arange(L)` per row and zero deltas, or with a mask `cumsum(mask) − 1`
    ///   (masked columns get 1) and `delta = max + 1 − L`.
    /// - With grids, per row over the kept tokens: each vision block (found by a vision_start
    ///   token followed by an image or video token) takes the next grid `(t, h/ms, w/ms)`; text
    ///   before it counts on from the previous block's maximum + 1 on all three axes; the block
    ///   enumerates `(t, h, w)` row-major from there. Trailing text follows; masked columns get 1;
    ///   `delta = max + 1 − kept tokens`. Grids are consumed in order across rows; a video grid
    ///   `(t, h, w)` first becomes t grids `(1, h, w)`.
    public func callAsFunction(_ inputIds: [[Int]], imageGrid: [[Int]]? = nil, videoGrid: [[Int]]? = nil,
                               attentionMask: [[Int]]? = nil) throws -> (positions: VLMPositions, ropeDeltas: [Int]) {
        let B = inputIds.count, L = inputIds.first?.count ?? 0
        if let attentionMask, attentionMask.count != B || attentionMask.contains(where: { $0.count != L }) {
            throw RopeIndexError.badMask("mask \(attentionMask.count) rows for \(B)×\(L) ids")
        }
        let videos = videoGrid.map { grids in grids.flatMap { g in Array(repeating: [1, g[1], g[2]], count: g[0]) } }
        guard imageGrid != nil || videos != nil else { return textPositions(B: B, L: L, mask: attentionMask) }

        let ms = tokens.spatialMergeSize
        var out = [Int](repeating: 1, count: 3 * B * L)
        var deltas: [Int] = []
        var imageIndex = 0, videoIndex = 0
        for (row, ids) in inputIds.enumerated() {
            let keep = attentionMask?[row] ?? [Int](repeating: 1, count: L)
            let kept = zip(ids, keep).filter { $0.1 == 1 }.map(\.0)
            let vision = kept.indices.dropLast().filter { kept[$0] == tokens.visionStartTokenId }.map { kept[$0 + 1] }
            var remainingImages = vision.filter { $0 == tokens.imageTokenId }.count
            var remainingVideos = vision.filter { $0 == tokens.videoTokenId }.count
            var blocks: [[[Int]]] = []          // each block: 3 axes × its columns
            var start = 0
            func nextStart() -> Int { blocks.last.map { b in b.flatMap { $0 }.max()! + 1 } ?? 0 }
            func firstIndex(of token: Int, kind: String) throws -> Int {
                guard let i = kept[start...].firstIndex(of: token) else {
                    throw RopeIndexError.missingToken(kind: kind, row: row, from: start)
                }
                return i
            }
            for _ in 0..<(remainingImages + remainingVideos) {
                let endImage = kept.contains(tokens.imageTokenId) && remainingImages > 0
                    ? try firstIndex(of: tokens.imageTokenId, kind: "image") : kept.count + 1
                let endVideo = kept.contains(tokens.videoTokenId) && remainingVideos > 0
                    ? try firstIndex(of: tokens.videoTokenId, kind: "video") : kept.count + 1
                let grid: [Int], end: Int
                if endImage < endVideo {
                    guard let g = imageGrid, imageIndex < g.count else { throw RopeIndexError.missingGrid(kind: "image", index: imageIndex) }
                    grid = g[imageIndex]; imageIndex += 1; remainingImages -= 1; end = endImage
                } else {
                    guard let g = videos, videoIndex < g.count else { throw RopeIndexError.missingGrid(kind: "video", index: videoIndex) }
                    grid = g[videoIndex]; videoIndex += 1; remainingVideos -= 1; end = endVideo
                }
                let (gt, gh, gw) = (grid[0], grid[1] / ms, grid[2] / ms)
                let textLength = end - start
                let s0 = nextStart()
                let text = (0..<textLength).map { s0 + $0 }
                blocks.append([text, text, text])
                var axes: [[Int]] = [[], [], []]
                for ti in 0..<gt { for hi in 0..<gh { for wi in 0..<gw {
                    axes[0].append(ti + textLength + s0)
                    axes[1].append(hi + textLength + s0)
                    axes[2].append(wi + textLength + s0)
                } } }
                blocks.append(axes)
                start = end + gt * gh * gw
            }
            if start < kept.count {
                let s0 = nextStart()
                let text = (0..<(kept.count - start)).map { s0 + $0 }
                blocks.append([text, text, text])
            }
            guard !blocks.isEmpty else { deltas.append(0); continue }
            let compact = (0..<3).map { a in blocks.flatMap { $0[a] } }
            guard compact[0].count >= kept.count else {
                throw RopeIndexError.tooFewPositions(row: row, positions: compact[0].count, tokens: kept.count)
            }
            var column = 0
            for (t, k) in keep.enumerated() where k == 1 {
                for a in 0..<3 { out[(a * B + row) * L + t] = compact[a][column] }
                column += 1
            }
            deltas.append(compact.flatMap { $0 }.max()! + 1 - kept.count)
        }
        return (VLMPositions(axes: 3, batch: B, length: L, values: out), deltas)
    }

    private func textPositions(B: Int, L: Int, mask: [[Int]]?) -> (positions: VLMPositions, ropeDeltas: [Int]) {
        guard let mask else {
            return (VLMPositions(rows: [[Int]](repeating: Array(0..<L), count: B)), [Int](repeating: 0, count: B))
        }
        var rows: [[Int]] = []
        var deltas: [Int] = []
        for m in mask {
            var running = 0
            let row = m.map { keep -> Int in
                running += keep
                return keep == 0 ? 1 : running - 1
            }
            rows.append(row)
            deltas.append((row.max() ?? 0) + 1 - L)
        }
        return (VLMPositions(rows: rows), deltas)
    }
}
