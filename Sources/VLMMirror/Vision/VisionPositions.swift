import Foundation
import ParityTensor

// Where each patch sits, as mlx-vlm's qwen3_vl VisionModel lays patches out: images in order,
// each as t frames of merge blocks row-major ([h/ms, w/ms]) with ms×ms patches inside a block.
// From that order come the learned position embedding (bilinear over the n×n table,
// fast_pos_embed_interpolate) and the 2-D rotary angles (rot_pos_emb).

/// One image's grid `(t, h, w)` in patches.
public struct ImageGrid: Equatable, Sendable {
    public var frames: Int, height: Int, width: Int
    public var patches: Int { frames * height * width }

    public init(frames: Int, height: Int, width: Int) {
        self.frames = frames
        self.height = height
        self.width = width
    }

    /// Image tokens after merging: `t · (h/ms) · (w/ms)`.
    public func tokens(mergeSize ms: Int) -> Int { frames * (height / ms) * (width / ms) }

    /// (row, column) in full-resolution patch units of every patch, in the tower's order.
    func patchCoordinates(mergeSize ms: Int) -> [(row: Int, column: Int)] {
        var frame: [(row: Int, column: Int)] = []
        frame.reserveCapacity(height * width)
        for blockRow in 0..<(height / ms) {
            for blockColumn in 0..<(width / ms) {
                for innerRow in 0..<ms {
                    for innerColumn in 0..<ms {
                        frame.append((blockRow * ms + innerRow, blockColumn * ms + innerColumn))
                    }
                }
            }
        }
        return Array([[(row: Int, column: Int)]](repeating: frame, count: frames).joined())
    }
}

enum VisionPositions {
    /// `mx.linspace(0, stop, count)` in float32: `t = i/(count − 1)`, then `(1 − t)·0 + t·stop`.
    static func linspace(to stop: Float, count: Int) -> [Float] {
        guard count > 1 else { return [0] }
        let last = Float(count - 1)
        return (0..<count).map { i in
            let t = Float(i) / last
            return (1 - t) * 0 + t * stop
        }
    }

    /// The learned position embedding of every patch `[N, Dv]`: per image, the four neighbours
    /// of `(linspace(0, n−1, h)[i], linspace(0, n−1, w)[j])` in the table, weighted
    /// `(1−dh)(1−dw), (1−dh)dw, dh(1−dw), dh·dw` and summed in that order; then merge order, tiled
    /// over frames.
    static func embedding(table: Tensor, grids: [ImageGrid], mergeSize ms: Int, side n: Int) -> Tensor {
        let D = table.lastDim
        var out: [Float] = []
        out.reserveCapacity(grids.reduce(0) { $0 + $1.patches } * D)
        for grid in grids {
            let rows = linspace(to: Float(n - 1), count: grid.height)
            let columns = linspace(to: Float(n - 1), count: grid.width)
            // Row-major over (h, w): the four contributions and their weights.
            var image = [Float](repeating: 0, count: grid.height * grid.width * D)
            for (i, y) in rows.enumerated() {
                let y0 = Int(y), y1 = min(Int(y) + 1, n - 1), dy = y - Float(Int(y))
                for (j, x) in columns.enumerated() {
                    let x0 = Int(x), x1 = min(Int(x) + 1, n - 1), dx = x - Float(Int(x))
                    let corners = [(y0 * n + x0, (1 - dy) * (1 - dx)), (y0 * n + x1, (1 - dy) * dx),
                                   (y1 * n + x0, dy * (1 - dx)), (y1 * n + x1, dy * dx)]
                    let base = (i * grid.width + j) * D
                    for d in 0..<D {
                        var sum = table.data[corners[0].0 * D + d] * corners[0].1
                        for c in 1..<4 { sum = sum + table.data[corners[c].0 * D + d] * corners[c].1 }
                        image[base + d] = sum
                    }
                }
            }
            for (row, column) in grid.patchCoordinates(mergeSize: ms) {
                let base = (row * grid.width + column) * D
                out.append(contentsOf: image[base..<(base + D)])
            }
        }
        return Tensor(shape: [out.count / D, D], data: out)
    }

    /// The rotary angles of every patch `[N, hd/2]`: `[row·inv ‖ column·inv]` with
    /// `inv_j = 1 / 10000^(2j / (hd/2))` (powf), rows of the table `arange(max h, w) ⊗ inv`.
    static func rotaryAngles(grids: [ImageGrid], headDim: Int, mergeSize ms: Int) -> Tensor {
        let dim = headDim / 2
        let inverse = stride(from: 0, to: dim, by: 2).map { k in
            1 / Foundation.pow(Float(10_000), Float(k) / Float(dim))
        }
        let half = inverse.count
        var out: [Float] = []
        for grid in grids {
            for (row, column) in grid.patchCoordinates(mergeSize: ms) {
                for f in inverse { out.append(Float(row) * f) }
                for f in inverse { out.append(Float(column) * f) }
            }
        }
        return Tensor(shape: [out.count / (2 * half), 2 * half], data: out)
    }
}
