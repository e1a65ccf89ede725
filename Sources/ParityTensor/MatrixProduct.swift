import Foundation
internal import CBLAS

// The one home of the matrix product.
//
// The default kernel accumulates every output element over k in order, one multiply and one add
// at a time: the order of the reference BLAS that the mlx CPU wheel links. Each element's result
// therefore depends only on its own row and column, never on how many rows a call has, so a
// chunked prefill gives the same bits as a whole one (mlx-lm's own property) and the projections
// agree with mlx bit for bit. OpenBLAS's sgemm picks kernels by row count and does not have that
// property (a 5-row call differs from a 32-row call in ~30 % of elements); it stays available as
// the fast backend for benchmarks: QWEN_PARITY_GEMM=openblas.

public enum MatrixProduct {
    public enum Backend: String, Sendable { case sequential, openblas }

    public static let backend: Backend = {
        ProcessInfo.processInfo.environment["QWEN_PARITY_GEMM"].flatMap(Backend.init(rawValue:)) ?? .sequential
    }()

    /// `c[M, N] = a[M, K] · b[K, N]` for row-major buffers.
    public static func times(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                             into c: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int,
                             backend: Backend = backend) {
        guard m > 0, n > 0 else { return }
        guard k > 0 else { c.update(repeating: 0, count: m * n); return }
        switch backend {
        case .openblas:
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                        1, a, Int32(k), b, Int32(n), 0, c, Int32(n))
        case .sequential:
            sequentialProduct(a, b, into: c, m: m, n: n, k: k)
        }
    }

    /// `c[M, N] = a[M, K] · b[N, K]ᵀ`: transposes `b` once, then multiplies.
    public static func timesTransposed(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                       into c: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int,
                                       backend: Backend = backend) {
        guard m > 0, n > 0 else { return }
        guard k > 0 else { c.update(repeating: 0, count: m * n); return }
        if backend == .openblas {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k),
                        1, a, Int32(k), b, Int32(k), 0, c, Int32(n))
            return
        }
        var bT = [Float](repeating: 0, count: k * n)
        for j in 0..<n { for p in 0..<k { bT[p * n + j] = b[j * k + p] } }
        bT.withUnsafeBufferPointer { sequentialProduct(a, $0.baseAddress!, into: c, m: m, n: n, k: k) }
    }

    /// Vectorised across output columns; each column's sum runs over k in order.
    private static func sequentialProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                          into c: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int) {
        typealias V = SIMD8<Float>
        let lanes = V.scalarCount
        let vectorColumns = n - n % lanes
        b.withMemoryRebound(to: Float.self, capacity: k * n) { b in
            for i in 0..<m {
                let row = a + i * k
                let out = c + i * n
                var j = 0
                while j + 4 * lanes <= vectorColumns {
                    var s0 = V(), s1 = V(), s2 = V(), s3 = V()
                    for p in 0..<k {
                        let x = V(repeating: row[p])
                        let w = b + p * n + j
                        s0 = s0 + x * UnsafeRawPointer(w).loadUnaligned(as: V.self)
                        s1 = s1 + x * UnsafeRawPointer(w + lanes).loadUnaligned(as: V.self)
                        s2 = s2 + x * UnsafeRawPointer(w + 2 * lanes).loadUnaligned(as: V.self)
                        s3 = s3 + x * UnsafeRawPointer(w + 3 * lanes).loadUnaligned(as: V.self)
                    }
                    UnsafeMutableRawPointer(out + j).storeBytes(of: s0, as: V.self)
                    UnsafeMutableRawPointer(out + j + lanes).storeBytes(of: s1, as: V.self)
                    UnsafeMutableRawPointer(out + j + 2 * lanes).storeBytes(of: s2, as: V.self)
                    UnsafeMutableRawPointer(out + j + 3 * lanes).storeBytes(of: s3, as: V.self)
                    j += 4 * lanes
                }
                while j < vectorColumns {
                    var s = V()
                    for p in 0..<k { s = s + V(repeating: row[p]) * UnsafeRawPointer(b + p * n + j).loadUnaligned(as: V.self) }
                    UnsafeMutableRawPointer(out + j).storeBytes(of: s, as: V.self)
                    j += lanes
                }
                while j < n {
                    var s: Float = 0
                    for p in 0..<k { s = s + row[p] * b[p * n + j] }
                    out[j] = s
                    j += 1
                }
            }
        }
    }
}

/// A weight `W [N, K]` kept transposed as `[K, N]`, so `x Wᵀ` runs without a copy per call.
public struct LinearWeight: Sendable {
    public let outputs: Int   // N
    public let inputs: Int    // K
    let transposed: [Float]

    public init(_ weight: Tensor) {
        precondition(weight.rank == 2, "[LinearWeight] weight shape \(weight.shape)")
        outputs = weight.shape[0]
        inputs = weight.shape[1]
        var t = [Float](repeating: 0, count: weight.count)
        for j in 0..<outputs { for p in 0..<inputs { t[p * outputs + j] = weight.data[j * inputs + p] } }
        transposed = t
    }
}

extension Tensor {
    /// `x Wᵀ` over the last axis: `self` is `[..., K]`, the result `[..., N]`.
    public func linear(_ weight: LinearWeight) -> Tensor {
        precondition(weight.inputs == lastDim, "[linear] input \(shape) against weight [\(weight.outputs), \(weight.inputs)]")
        let m = rows, n = weight.outputs, k = lastDim
        var out = [Float](repeating: 0, count: m * n)
        data.withUnsafeBufferPointer { x in
            weight.transposed.withUnsafeBufferPointer { w in
                out.withUnsafeMutableBufferPointer { y in
                    MatrixProduct.times(x.baseAddress!, w.baseAddress!, into: y.baseAddress!, m: m, n: n, k: k)
                }
            }
        }
        return Tensor(shape: Array(shape.dropLast()) + [n], data: out)
    }

    /// `x Wᵀ + b`; without a bias, the plain product.
    public func linear(_ weight: LinearWeight, bias: Tensor?) -> Tensor {
        var out = linear(weight)
        if let bias {
            let n = bias.count
            precondition(bias.shape == [out.lastDim], "[linear] bias \(bias.shape) for output \(out.shape)")
            for r in 0..<out.rows { for j in 0..<n { out.data[r * n + j] += bias.data[j] } }
        }
        return out
    }

    /// `x Wᵀ` for an unpacked weight `[N, K]` (packs it for this call).
    public func linear(_ weight: Tensor) -> Tensor {
        precondition(weight.rank == 2 && weight.shape[1] == lastDim,
                     "[linear] input \(shape) against weight \(weight.shape)")
        return linear(LinearWeight(weight))
    }

    /// `self[M, K] · other[K, N]` for two matrices.
    public func matmul(_ other: Tensor) -> Tensor {
        precondition(rank == 2 && other.rank == 2 && shape[1] == other.shape[0],
                     "[matmul] \(shape) · \(other.shape)")
        let m = shape[0], n = other.shape[1], k = shape[1]
        var out = [Float](repeating: 0, count: m * n)
        data.withUnsafeBufferPointer { a in
            other.data.withUnsafeBufferPointer { b in
                out.withUnsafeMutableBufferPointer { c in
                    MatrixProduct.times(a.baseAddress!, b.baseAddress!, into: c.baseAddress!, m: m, n: n, k: k)
                }
            }
        }
        return Tensor(shape: [m, n], data: out)
    }
}
