import Foundation

// Elementwise maths and reductions over the last axis, in float32 like the references.

public enum Activation {
    @inline(__always) public static func sigmoid(_ x: Float) -> Float { MLXMath.sigmoid(x) }
    @inline(__always) public static func silu(_ x: Float) -> Float { MLXMath.silu(x) }
    @inline(__always) public static func softplus(_ x: Float) -> Float { MLXMath.softplus(x) }
}

extension Tensor {
    public func map(_ f: (Float) -> Float) -> Tensor {
        Tensor(shape: shape, data: data.map(f))
    }

    public static func + (a: Tensor, b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "[+] \(a.shape) vs \(b.shape)")
        var out = a.data
        for i in out.indices { out[i] += b.data[i] }
        return Tensor(shape: a.shape, data: out)
    }

    /// Elementwise product of two tensors of the same shape.
    public static func * (a: Tensor, b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "[*] \(a.shape) vs \(b.shape)")
        var out = a.data
        for i in out.indices { out[i] *= b.data[i] }
        return Tensor(shape: a.shape, data: out)
    }

    public static func * (a: Tensor, s: Float) -> Tensor {
        Tensor(shape: a.shape, data: a.data.map { $0 * s })
    }

    /// RMSNorm over the last axis as `mx.fast.rms_norm` computes it in float32:
    /// `(x · 1/sqrt(Σx² · (1/d) + eps)) · w`, summed in order, normalised first, then weighted.
    public func rmsNorm(weight: Tensor?, eps: Float) -> Tensor {
        let d = lastDim
        if let weight { precondition(weight.shape == [d], "[rmsNorm] weight \(weight.shape) for \(shape)") }
        var out = data
        let w = weight?.data
        let reciprocal = Float(1 / Double(d))
        for r in 0..<rows {
            let base = r * d
            var sum: Float = 0
            for j in 0..<d { sum += data[base + j] * data[base + j] }
            let inv = 1 / (sum * reciprocal + eps).squareRoot()
            if let w {
                for j in 0..<d { out[base + j] = (data[base + j] * inv) * w[j] }
            } else {
                for j in 0..<d { out[base + j] = data[base + j] * inv }
            }
        }
        return Tensor(shape: shape, data: out)
    }

    /// LayerNorm over the last axis as mlx 0.32's `mx.fast.layer_norm` evaluates it on the CPU
    /// (its composed fallback): `μ = Σx·(1/d)`, `c = x − μ`, `v = Σc²·(1/d)`,
    /// `((c · 1/sqrt(v + eps)) · w) + b`, sums in order.
    public func layerNorm(weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
        let d = lastDim
        precondition(weight.shape == [d] && bias.shape == [d], "[layerNorm] weight \(weight.shape), bias \(bias.shape) for \(shape)")
        var out = data
        let reciprocal = Float(1 / Double(d))
        for r in 0..<rows {
            let base = r * d
            var sum: Float = 0
            for j in 0..<d { sum += data[base + j] }
            let mean = sum * reciprocal
            var squares: Float = 0
            for j in 0..<d {
                let c = data[base + j] - mean
                out[base + j] = c
                squares += c * c
            }
            let inv = 1 / (squares * reciprocal + eps).squareRoot()
            for j in 0..<d { out[base + j] = ((out[base + j] * inv) * weight.data[j]) + bias.data[j] }
        }
        return Tensor(shape: shape, data: out)
    }

    /// Softmax over the last axis as mlx's precise softmax: `e^(x − max) · (1 / Σ)`.
    public func softmax() -> Tensor {
        let d = lastDim
        var out = data
        for r in 0..<rows {
            let base = r * d
            var m = -Float.infinity
            for j in 0..<d { m = max(m, data[base + j]) }
            var sum: Float = 0
            for j in 0..<d {
                let e = MLXMath.exp(data[base + j] - m)
                out[base + j] = e
                sum += e
            }
            let inverse = 1 / sum
            for j in 0..<d { out[base + j] *= inverse }
        }
        return Tensor(shape: shape, data: out)
    }
}
