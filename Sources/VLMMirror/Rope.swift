import Foundation
import ParityTensor

// mirrors mlx_vlm/models/rope_utils.py MRoPERotaryEmbedding (style "interleaved") and
// _apply_interleaved_rotary_pos_emb_axis1, as qwen3_5/language.py uses them on CPU: cos/sin are
// computed once per forward from explicit angles and applied to q and k of every attention layer.
// Shapes: B batch, L tokens, r rotary dims, hd head dim; positions [B, L] or [3, B, L] (T, H, W).

/// Position ids as mlx-vlm passes them: `[B, L]` (text, `axes == 1`) or `[3, B, L]` (MRoPE
/// temporal, height and width rows, `axes == 3`).
public struct VLMPositions: Equatable, Sendable, CustomStringConvertible {
    public let axes: Int
    public let batch: Int
    public let length: Int
    public let values: [Int]

    public init(axes: Int, batch: Int, length: Int, values: [Int]) {
        precondition(axes == 1 || axes == 3, "[VLMPositions] axes \(axes)")
        precondition(values.count == axes * batch * length,
                     "[VLMPositions] \(values.count) values for \(axes)×\(batch)×\(length)")
        self.axes = axes
        self.batch = batch
        self.length = length
        self.values = values
    }

    /// `[B, L]` text positions from rows.
    public init(rows: [[Int]]) {
        self.init(axes: 1, batch: rows.count, length: rows.first?.count ?? 0, values: rows.flatMap { $0 })
    }

    /// The array's rank in mlx: 2 for `[B, L]`, 3 for `[3, B, L]`.
    public var rank: Int { axes == 1 ? 2 : 3 }

    /// Position of token `t` of row `b` on MRoPE axis `axis` (a text position serves every axis).
    @inline(__always)
    public func at(axis: Int, row b: Int, t: Int) -> Int {
        values[((axes == 1 ? 0 : axis) * batch + b) * length + t]
    }

    /// `positions[..., start : start + count]`, like a Python slice (clamped at the end).
    public func sliced(from start: Int, count: Int) -> VLMPositions {
        let lo = min(max(start, 0), length), hi = min(max(start + count, lo), length)
        var out: [Int] = []
        out.reserveCapacity(axes * batch * (hi - lo))
        for a in 0..<axes { for b in 0..<batch { for t in lo..<hi { out.append(at(axis: a, row: b, t: t)) } } }
        return VLMPositions(axes: axes, batch: batch, length: hi - lo, values: out)
    }

    /// Row `b` from column `start` on (`position_ids[row:row+1, pad:]`).
    public func row(_ b: Int, from start: Int) -> VLMPositions {
        var out: [Int] = []
        for a in 0..<axes { for t in start..<length { out.append(at(axis: a, row: b, t: t)) } }
        return VLMPositions(axes: axes, batch: 1, length: length - start, values: out)
    }

    /// `[B, L]` broadcast to `[3, B, L]` (`mx.broadcast_to(p[None], (3, B, L))`).
    public var threeAxes: VLMPositions {
        axes == 3 ? self : VLMPositions(axes: 3, batch: batch, length: length, values: values + values + values)
    }

    public var description: String {
        if axes == 1 { return "\((0..<batch).map { b in (0..<length).map { at(axis: 0, row: b, t: $0) } })" }
        return "T/H/W " + (0..<3).map { a in "\((0..<batch).map { b in (0..<length).map { at(axis: a, row: b, t: $0) } })" }
            .joined(separator: " / ")
    }
}

/// Rotary cos/sin for one forward pass, `[B, L, r]` each (the two halves repeat each other).
struct RotaryAngles {
    let batch: Int, length: Int, dims: Int
    let cos: [Float], sin: [Float]
}

/// `Qwen3_5RotaryEmbedding`: MRoPE with the interleaved axis selector.
struct MRoPE {
    let dims: Int                    // r
    /// `1 / base^(2i / r)` in float32, i = 0 ..< r/2 (not mlx-lm's exp(−i·ln(base)/(r/2))).
    let inverseFrequencies: [Float]
    /// The position axis (0 T, 1 H, 2 W) that feeds frequency `i`.
    let axisOfFrequency: [Int]

    init(dims: Int, base: Double, mropeSection: [Int]) {
        precondition(dims % 2 == 0 && mropeSection.count == 3, "[MRoPE] r \(dims), section \(mropeSection)")
        self.dims = dims
        let half = dims / 2
        // compute_inv_freq: 1.0 / (base ** (arange(0, r, 2).astype(f32) / r)), all in float32.
        inverseFrequencies = (0..<half).map { i in 1 / Foundation.pow(Float(base), Float(2 * i) / Float(dims)) }
        axisOfFrequency = MRoPE.interleavedSelector(section: mropeSection, frequencies: half)
    }

    /// `_interleaved_position_selector`: frequency i reads H when i % 3 == 1 and i < 3·s₁, W when
    /// i % 3 == 2 and i < 3·s₂, and T otherwise (s₀ is never consulted).
    static func interleavedSelector(section: [Int], frequencies: Int) -> [Int] {
        var selector = [Int](repeating: 0, count: frequencies)
        for axis in 1...2 {
            var i = axis
            while i < min(section[axis] * 3, frequencies) {
                selector[i] = axis
                i += 3
            }
        }
        return selector
    }

    /// `MRoPERotaryEmbedding.__call__`: θ = f32(position) · inv_freq (3-D positions pick the
    /// axis per frequency, 2-D ones feed every frequency), emb = [θ ‖ θ], then cos and sin.
    func angles(_ positions: VLMPositions) -> RotaryAngles {
        let (B, L, half) = (positions.batch, positions.length, dims / 2)
        var c = [Float](repeating: 0, count: B * L * dims), s = c
        for b in 0..<B {
            for t in 0..<L {
                let base = (b * L + t) * dims
                for i in 0..<half {
                    let theta = Float(positions.at(axis: axisOfFrequency[i], row: b, t: t)) * inverseFrequencies[i]
                    let (si, ci) = MLXMath.sinCos(theta)   // mx.cos / mx.sin: mlx's polynomials
                    c[base + i] = ci; c[base + half + i] = ci
                    s[base + i] = si; s[base + half + i] = si
                }
            }
        }
        return RotaryAngles(batch: B, length: L, dims: dims, cos: c, sin: s)
    }

    /// `x_rot·cos + rotate_half(x_rot)·sin` on the first r dims of `x` `[B, heads, L, hd]`, in
    /// place; `rotate_half(x) = [−x[r/2:], x[:r/2]]`. Dims ≥ r pass through.
    static func apply(_ x: inout Tensor, _ a: RotaryAngles) {
        let (B, heads, L, hd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        precondition(a.batch == B && a.length == L && a.dims <= hd,
                     "[MRoPE.apply] angles \(a.batch)×\(a.length)×\(a.dims) for \(x.shape)")
        let (r, half) = (a.dims, a.dims / 2)
        var rotated = [Float](repeating: 0, count: r)
        x.data.withUnsafeMutableBufferPointer { p in
            for b in 0..<B {
                for h in 0..<heads {
                    for t in 0..<L {
                        let row = ((b * heads + h) * L + t) * hd
                        let angle = (b * L + t) * r
                        for i in 0..<r {
                            let partner = i < half ? -p[row + i + half] : p[row + i - half]
                            rotated[i] = p[row + i] * a.cos[angle + i] + partner * a.sin[angle + i]
                        }
                        for i in 0..<r { p[row + i] = rotated[i] }
                    }
                }
            }
        }
    }
}
