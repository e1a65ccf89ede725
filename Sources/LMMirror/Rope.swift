import Foundation
import ParityTensor

// mirrors mx.fast.rope (CPU, traditional = false) as mlx-lm's nn.RoPE calls it.

/// Half-split rotary embedding over the first `r` dims of each head: pairs `(i, i + r/2)`.
struct Rope {
    let dims: Int          // r
    let inverseFrequencies: [Float]

    init(dims: Int, base: Double) {
        self.dims = dims
        let half = dims / 2
        // mlx's CPU rope: exp(−i · ln(base)/(r/2)) in float32, with mlx's own exp. Its base is a
        // C float, so std::log is logf and the division is in float too: a double ln(base)
        // rounded once differs for some bases and widths (1e7 with r/2 = 3, 5 or 6).
        let step = Foundation.logf(Float(base)) / Float(half)
        inverseFrequencies = (0..<half).map { MLXMath.exp(-Float($0) * step) }
    }

    /// Rotates `x` `[B, heads, L, hd]` in place; token `t` of row `b` sits at `offsets[b] + t`.
    func apply(_ x: inout Tensor, offsets: [Int]) {
        let (B, heads, L, hd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let half = dims / 2
        x.data.withUnsafeMutableBufferPointer { p in
            for b in 0..<B {
                for t in 0..<L {
                    let position = Float(offsets[b] + t)
                    for i in 0..<half {
                        let theta = position * inverseFrequencies[i]
                        let (s, c) = MLXMath.sinCos(theta)
                        for h in 0..<heads {
                            let base = ((b * heads + h) * L + t) * hd
                            let x1 = p[base + i], x2 = p[base + i + half]
                            p[base + i] = x1 * c - x2 * s
                            p[base + i + half] = x1 * s + x2 * c
                        }
                    }
                }
            }
        }
    }
}
