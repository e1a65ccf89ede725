import Foundation
import ParityCore
import ParityTensor

// mirrors mlx_vlm/models/qwen3_vl/vision.py VisionModel as qwen3_5 uses it (no deepstack):
// patch embedding, learned position embedding, 2-D rotary, pre-norm blocks with bidirectional
// attention inside each frame, and the 2×2 patch merger. Every product is the in-order float32
// sum of the reference BLAS; biases are added after the product, as mlx's addmm does on the CPU.
// Shapes: N patches, Dv tower width, nh heads, hd head dim, K = Tp·P·P·C patch values.

public enum VisionError: Error, CustomStringConvertible, Equatable {
    case badPixelValues(String)
    case badGrid(String)
    case weights(String)
    case imageTokens(String)

    public var description: String {
        switch self {
        case let .badPixelValues(s): return "pixel_values: \(s)"
        case let .badGrid(s): return "image_grid_thw: \(s)"
        case let .weights(s): return "vision weights: \(s)"
        case let .imageTokens(s): return "image tokens: \(s)"
        }
    }
}

/// Receives the tower's intermediate tensors under the names the goldens store them by.
public typealias VisionTrace = (_ step: String, _ value: Tensor) -> Void

public struct VisionTower: Sendable {
    public let config: VisionConfig
    let patchProjection: LinearWeight, patchBias: Tensor
    let positionTable: Tensor
    let blocks: [VisionBlock]
    let mergerNorm: (weight: Tensor, bias: Tensor)
    let mergerUp: LinearWeight, mergerUpBias: Tensor
    let mergerOut: LinearWeight, mergerOutBias: Tensor

    /// `weights` by mlx-vlm name (`vision_tower.…`): exactly the tower's parameters, each of
    /// the shape the config implies.
    public init(config: VisionConfig, weights: [String: Tensor]) throws {
        try self.init(config: config, values: weights.mapValues { .dense($0) })
    }

    /// The same from values a checkpoint may keep in their stored form (a projection read in
    /// place, decoded by its products to the bits of the dense copy). Values are finite: their
    /// sources check that as they read them.
    public init(config: VisionConfig, values weights: [String: WeightValue]) throws {
        if let mismatch = config.parameterMismatch(weights.mapValues(\.shape)) { throw VisionError.weights(mismatch) }
        func w(_ name: String) -> Tensor { weights["vision_tower." + name]!.tensor }
        func linear(_ name: String) -> LinearWeight {
            if case let .encoded(matrix, shape) = weights["vision_tower." + name]!, shape.count == 2 {
                return LinearWeight(encoded: matrix)
            }
            return LinearWeight(w(name))
        }
        self.config = config
        let patch = w("patch_embed.proj.weight")     // [Dv, Tp, P, P, C]: rows already in K order
        patchProjection = LinearWeight(patch.reshaped([config.hiddenSize, config.patchValues]))
        patchBias = w("patch_embed.proj.bias")
        positionTable = w("pos_embed.weight")
        blocks = (0..<config.depth).map { i in
            let b = "blocks.\(i)."
            return VisionBlock(
                norm1: (w(b + "norm1.weight"), w(b + "norm1.bias")), norm2: (w(b + "norm2.weight"), w(b + "norm2.bias")),
                qkv: linear(b + "attn.qkv.weight"), qkvBias: w(b + "attn.qkv.bias"),
                projection: linear(b + "attn.proj.weight"), projectionBias: w(b + "attn.proj.bias"),
                up: linear(b + "mlp.linear_fc1.weight"), upBias: w(b + "mlp.linear_fc1.bias"),
                down: linear(b + "mlp.linear_fc2.weight"), downBias: w(b + "mlp.linear_fc2.bias"),
                heads: config.numHeads, headDim: config.headDim)
        }
        mergerNorm = (w("merger.norm.weight"), w("merger.norm.bias"))
        mergerUp = linear("merger.linear_fc1.weight"); mergerUpBias = w("merger.linear_fc1.bias")
        mergerOut = linear("merger.linear_fc2.weight"); mergerOutBias = w("merger.linear_fc2.bias")
    }

    /// Checks `image_grid_thw` rows `(t, h, w)` against the config and returns them as grids.
    public func grids(_ rows: [[Int]]) throws -> [ImageGrid] {
        try Self.grids(rows, config: config)
    }

    /// The same against a config alone (no weights needed to validate a golden's inputs).
    public static func grids(_ rows: [[Int]], config: VisionConfig) throws -> [ImageGrid] {
        let ms = config.spatialMergeSize
        guard !rows.isEmpty else { throw VisionError.badGrid("no images") }
        return try rows.enumerated().map { i, row in
            guard row.count == 3, row.allSatisfy({ (1...100_000).contains($0) }) else {
                throw VisionError.badGrid("row \(i) is \(row), expected (t, h, w) of positive patch counts")
            }
            guard row[1] % ms == 0, row[2] % ms == 0 else {
                throw VisionError.badGrid("row \(i) \(row): h and w must be multiples of the merge size \(ms)")
            }
            return ImageGrid(frames: row[0], height: row[1], width: row[2])
        }
    }

    /// `pixel_values` `[N, C·Tp·P·P]` for the images of `grids` → one row per image token
    /// `[Σ t·(h/ms)·(w/ms), out_hidden_size]`, images in order.
    public func callAsFunction(pixelValues: Tensor, grids: [ImageGrid], trace: VisionTrace? = nil) throws -> Tensor {
        let N = grids.reduce(0) { $0 + $1.patches }
        guard pixelValues.shape == [N, config.patchValues] else {
            throw VisionError.badPixelValues("shape \(pixelValues.shape); the grids \(grids.map { [$0.frames, $0.height, $0.width] }) "
                                             + "need [\(N), \(config.patchValues)] (C·Tp·P·P)")
        }
        if let bad = pixelValues.data.firstIndex(where: { !$0.isFinite }) {
            throw VisionError.badPixelValues("non-finite value \(pixelValues.data[bad]) at patch \(bad / config.patchValues)")
        }
        let ms = config.spatialMergeSize
        var h = patchEmbedding(pixelValues)
        trace?("patch_embed", h)
        let positions = VisionPositions.embedding(table: positionTable, grids: grids, mergeSize: ms,
                                                  side: config.positionGridSide)
        trace?("pos_embed", positions)
        h = h + positions
        trace?("embedded", h)
        let angles = VisionPositions.rotaryAngles(grids: grids, headDim: config.headDim, mergeSize: ms)
        trace?("rotary_angles", angles)
        let rotary = VisionRotary(angles: angles)
        // Attention stays inside one frame of one image: cu_seqlens of h·w, t times per image.
        let segments = grids.flatMap { g in [Int](repeating: g.height * g.width, count: g.frames) }
        for (i, block) in blocks.enumerated() {
            h = block(h, rotary: rotary, segments: segments, trace: { step, value in
                trace?(String(format: "block_%02d_%@", i, step), value)
            })
        }
        let features = merge(h)
        trace?("features", features)
        return features
    }

    /// Conv3d with kernel = stride = (Tp, P, P) is a product over each patch: mlx moves C last,
    /// so the K values of a patch run (t, y, x, c) against the weight's `[Dv, Tp, P, P, C]` rows.
    func patchEmbedding(_ pixels: Tensor) -> Tensor {
        let (C, T, P) = (config.inChannels, config.temporalPatchSize, config.patchSize)
        let K = config.patchValues
        var moved = [Float](repeating: 0, count: pixels.count)
        for n in 0..<pixels.rows {
            let base = n * K
            for c in 0..<C { for t in 0..<T { for y in 0..<P { for x in 0..<P {
                moved[base + ((t * P + y) * P + x) * C + c] = pixels.data[base + ((c * T + t) * P + y) * P + x]
            } } } }
        }
        return Tensor(shape: pixels.shape, data: moved).linear(patchProjection, bias: patchBias)
    }

    /// PatchMerger: LayerNorm per patch, each merge block's ms² patches side by side, then
    /// fc1 → GELU (erf) → fc2.
    func merge(_ h: Tensor) -> Tensor {
        let normed = h.layerNorm(weight: mergerNorm.weight, bias: mergerNorm.bias, eps: VisionBlock.eps)
        let grouped = normed.reshaped([h.rows / config.mergeUnit, config.mergeUnit * config.hiddenSize])
        let up = grouped.linear(mergerUp, bias: mergerUpBias).map(MLXMath.gelu)
        return up.linear(mergerOut, bias: mergerOutBias)
    }
}

/// cos and sin of the rotary angles, each duplicated to the full head dim (`tile(…, 2)`).
struct VisionRotary {
    let cos: [Float], sin: [Float]
    let width: Int    // hd

    init(angles: Tensor) {
        let half = angles.lastDim
        width = 2 * half
        var c = [Float](repeating: 0, count: angles.rows * width), s = c
        for n in 0..<angles.rows {
            for j in 0..<half {
                let (sv, cv) = MLXMath.sinCos(angles.data[n * half + j])
                c[n * width + j] = cv; c[n * width + half + j] = cv
                s[n * width + j] = sv; s[n * width + half + j] = sv
            }
        }
        cos = c
        sin = s
    }

    /// `x·cos + rotate_half(x)·sin` for one head vector of patch `n`, in place.
    func apply(_ x: UnsafeMutablePointer<Float>, patch n: Int) {
        let half = width / 2, base = n * width
        for j in 0..<half {
            let (a, b) = (x[j], x[half + j])   // rotate_half(x) = [−b ‖ a]
            x[j] = a * cos[base + j] + (-b) * sin[base + j]
            x[half + j] = b * cos[base + half + j] + a * sin[base + half + j]
        }
    }
}

struct VisionBlock: Sendable {
    static let eps = Float(Double(1e-6))
    let norm1: (weight: Tensor, bias: Tensor), norm2: (weight: Tensor, bias: Tensor)
    let qkv: LinearWeight, qkvBias: Tensor
    let projection: LinearWeight, projectionBias: Tensor
    let up: LinearWeight, upBias: Tensor
    let down: LinearWeight, downBias: Tensor
    let heads: Int, headDim: Int

    /// `h + attn(LN₁(h))`, then `+ mlp(LN₂(h))`.
    func callAsFunction(_ h: Tensor, rotary: VisionRotary, segments: [Int], trace: VisionTrace) -> Tensor {
        let attended = attention(h.layerNorm(weight: norm1.weight, bias: norm1.bias, eps: Self.eps),
                                 rotary: rotary, segments: segments)
        trace("attn", attended)
        let mid = h + attended
        let hidden = mid.layerNorm(weight: norm2.weight, bias: norm2.bias, eps: Self.eps)
            .linear(up, bias: upBias).map(MLXMath.geluTanh)
        let out = mid + hidden.linear(down, bias: downBias)
        trace("out", out)
        return out
    }

    /// qkv → rotary on q and k → per segment `softmax(q·scale · Kᵀ) · V` over every patch of the
    /// segment (bidirectional) → proj. mlx pads hd to the fused kernel's 64/80/128 with zeros
    /// first; zeros add nothing to an in-order sum, so the unpadded sums are the same.
    func attention(_ x: Tensor, rotary: VisionRotary, segments: [Int]) -> Tensor {
        let (N, hd, D) = (x.rows, headDim, heads * headDim)
        var packed = x.linear(qkv, bias: qkvBias).data          // [N, 3, nh, hd]
        packed.withUnsafeMutableBufferPointer { p in
            for n in 0..<N {
                for part in 0..<2 { for head in 0..<heads {
                    rotary.apply(p.baseAddress! + ((n * 3 + part) * heads + head) * hd, patch: n)
                } }
            }
        }
        let scale = Float(Foundation.pow(Double(hd), -0.5))
        var out = [Float](repeating: 0, count: N * D)
        var start = 0
        for S in segments {
            // Gather this segment's q (scaled), k, v per head as contiguous [S, hd] blocks.
            for head in 0..<heads {
                var q = [Float](repeating: 0, count: S * hd), k = q, v = q
                for s in 0..<S {
                    let n = start + s
                    for d in 0..<hd {
                        q[s * hd + d] = packed[((n * 3 + 0) * heads + head) * hd + d] * scale
                        k[s * hd + d] = packed[((n * 3 + 1) * heads + head) * hd + d]
                        v[s * hd + d] = packed[((n * 3 + 2) * heads + head) * hd + d]
                    }
                }
                var scores = [Float](repeating: 0, count: S * S)
                q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in scores.withUnsafeMutableBufferPointer { sp in
                    MatrixProduct.timesTransposed(qp.baseAddress!, kp.baseAddress!, into: sp.baseAddress!, m: S, n: S, k: hd)
                } } }
                let probabilities = Tensor(shape: [S, S], data: scores).softmax()
                var attended = [Float](repeating: 0, count: S * hd)
                probabilities.data.withUnsafeBufferPointer { pp in v.withUnsafeBufferPointer { vp in attended.withUnsafeMutableBufferPointer { ap in
                    MatrixProduct.times(pp.baseAddress!, vp.baseAddress!, into: ap.baseAddress!, m: S, n: hd, k: S)
                } } }
                for s in 0..<S {
                    for d in 0..<hd { out[(start + s) * D + head * hd + d] = attended[s * hd + d] }
                }
            }
            start += S
        }
        return Tensor(shape: [N, D], data: out).linear(projection, bias: projectionBias)
    }
}
