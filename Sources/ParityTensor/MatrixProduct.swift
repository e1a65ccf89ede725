import Dispatch
import Foundation
internal import CBLAS
internal import ParityKernels

// The one home of the matrix product.
//
// The default kernel accumulates every output element over k in order, one multiply and one add
// at a time: the order of the reference BLAS that the mlx CPU wheel links. Each element's result
// therefore depends only on its own row and column, never on how many rows a call has, so a
// chunked prefill gives the same bits as a whole one (mlx-lm's own property) and the projections
// agree with mlx bit for bit. The kernel itself (ParityKernels, C) is register-tiled and
// vectorised across output columns, with weights packed once into 64-column panels; output
// columns are split across threads. None of that changes any element's order of summation.
//
// OpenBLAS's sgemm picks kernels by row count and does not have that property (a 5-row call
// differs from a 32-row call in ~30 % of elements); it stays available as the fast backend for
// benchmarks: QWEN_PARITY_GEMM=openblas.

public enum MatrixProduct {
    /// `fma`: the in-order kernel with one fused multiply-add per step (benchmark only: row-count
    /// independent like the default, but not the reference BLAS's arithmetic, so not mlx's bits).
    public enum Backend: String, Sendable { case sequential, openblas, fma }

    public static let backend: Backend = {
        let chosen = ProcessInfo.processInfo.environment["QWEN_PARITY_GEMM"].flatMap(Backend.init(rawValue:)) ?? .sequential
        if chosen == .fma && pk_set_fused(1) == 0 {
            fatalError("QWEN_PARITY_GEMM=fma: this CPU has no fused kernel (AVX-512F or AVX2 with FMA)")
        }
        return chosen
    }()

    /// Threads the in-order kernel splits output columns across: QWEN_PARITY_THREADS, or every
    /// active processor.
    public static let threads: Int = {
        if let text = ProcessInfo.processInfo.environment["QWEN_PARITY_THREADS"], let n = Int(text), n > 0 { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// Starts the kernels' persistent thread pool with `threads` threads (once; later calls do nothing).
    public static func startPool() { _ = poolStarted }
    private static let poolStarted: Void = { pk_pool_start(Int32(threads)) }()

    /// One core's clock, measured by a chain of dependent adds (~0.2 s); nil where not measured.
    public static func measuredClockHz() -> Double? {
        let hz = pk_probe_clock_hz()
        return hz > 0 ? hz : nil
    }

    /// Cycles per 8 weights of the exact q4 sum alone at M = 1, operands in L1 (nil without AVX2).
    public static func q4FloorCyclesPer8(clockHz: Double) -> Double? {
        let cycles = pk_probe_q4_floor_cycles_per_8(clockHz)
        return cycles > 0 ? cycles : nil
    }

    /// The instruction set of the in-order kernel: "avx512f", "avx2" or "generic".
    public static var kernelName: String { String(cString: pk_kernel_name()) }

    /// Runs the in-order kernel with another instruction set (tests); false when the CPU lacks it.
    @discardableResult
    public static func selectKernel(_ name: String) -> Bool { pk_select_kernel(name) != 0 }

    /// OpenBLAS's core (e.g. "SkylakeX", "Prescott") and thread count, as the library reports them.
    public static var openBLASCore: String { String(cString: openblas_get_corename()) }
    public static var openBLASThreads: Int { Int(openblas_get_num_threads()) }

    /// `c[M, N] = a[M, K] · b[K, N]` for row-major buffers.
    public static func times(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                             into c: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int,
                             backend: Backend = backend) {
        product(a, b, into: c, m: m, n: n, k: k, transposedB: false, backend: backend)
    }

    /// `c[M, N] = a[M, K] · b[N, K]ᵀ`.
    public static func timesTransposed(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                       into c: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int,
                                       backend: Backend = backend) {
        product(a, b, into: c, m: m, n: n, k: k, transposedB: true, backend: backend)
    }

    private static func product(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                into c: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int,
                                transposedB: Bool, backend: Backend) {
        guard m > 0, n > 0 else { return }
        guard k > 0 else { c.update(repeating: 0, count: m * n); return }
        switch backend {
        case .openblas:
            cblas_sgemm(CblasRowMajor, CblasNoTrans, transposedB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k),
                        1, a, Int32(k), b, Int32(transposedB ? k : n), 0, c, Int32(n))
        case .sequential, .fma:
            PackedPanels(b, n: n, k: k, transposed: transposedB).product(a, m: m, into: c)
        }
    }
}

/// `B [K, N]` packed for the in-order kernel: 64-column panels of four `[K][16]` strips, zero-padded.
struct PackedPanels: Sendable {
    let n: Int, k: Int
    let storage: [Float]

    /// `source` is `B [K, N]`, or a weight `[N, K]` when `transposed` (then B = sourceᵀ).
    init(_ source: UnsafePointer<Float>, n: Int, k: Int, transposed: Bool) {
        self.n = n
        self.k = k
        let count = pk_packed_b_count(Int32(n), Int32(k))
        storage = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            pk_pack_b(source, Int32(n), Int32(k), Int32(transposed ? k : n), transposed ? 1 : 0, buffer.baseAddress!)
            initialized = count
        }
    }

    var panelCount: Int { (n + Int(PK_PANEL) - 1) / Int(PK_PANEL) }

    /// Element `B[p, j]`.
    @inline(__always)
    func element(_ p: Int, _ j: Int) -> Float {
        storage[pk_packed_b_index(Int32(k), Int32(p), Int32(j))]
    }

    /// `c[M, N] = a[M, K] · B`, output columns split across `MatrixProduct.threads` threads
    /// when the product is large enough to pay for it.
    func product(_ a: UnsafePointer<Float>, m: Int, into c: UnsafeMutablePointer<Float>) {
        guard m > 0, n > 0 else { return }
        _ = MatrixProduct.backend   // QWEN_PARITY_GEMM=fma selects the fused kernel when first read
        guard k > 0 else { c.update(repeating: 0, count: m * n); return }
        let packedCount = pk_packed_a_count(Int32(m), Int32(k))
        let packedA = [Float](unsafeUninitializedCapacity: packedCount) { buffer, initialized in
            pk_pack_a(a, Int32(m), Int32(k), Int32(k), buffer.baseAddress!)
            initialized = packedCount
        }
        packedA.withUnsafeBufferPointer { ap in
            storage.withUnsafeBufferPointer { bp in
                let (aPointer, bPointer) = (ap.baseAddress!, bp.baseAddress!)
                if MatrixProduct.threads <= 1 || panelCount <= 1 || m * n * k < 1 << 16 {
                    pk_gemm(aPointer, bPointer, c, Int32(n), Int32(m), Int32(n), Int32(k), 0, Int32(panelCount))
                } else {
                    MatrixProduct.startPool()
                    pk_gemm_parallel(aPointer, bPointer, c, Int32(n), Int32(m), Int32(n), Int32(k), 4)
                }
            }
        }
    }
}

/// A weight `W [N, K]` held once, in the layout its backend multiplies fastest: packed panels
/// for the in-order kernel, row-major `[N, K]` for OpenBLAS (`x Wᵀ` as a transposed sgemm), or
/// as the checkpoint stores it (`EncodedMatrix`), decoded a panel at a time by the in-order kernel.
public struct LinearWeight: Sendable {
    public let outputs: Int   // N
    public let inputs: Int    // K
    public let backend: MatrixProduct.Backend
    private let panels: PackedPanels?
    private let rowMajor: [Float]?
    private let encoded: EncodedMatrix?

    public init(_ weight: Tensor, backend: MatrixProduct.Backend = MatrixProduct.backend) {
        precondition(weight.rank == 2, "[LinearWeight] weight shape \(weight.shape)")
        outputs = weight.shape[0]
        inputs = weight.shape[1]
        self.backend = backend
        switch backend {
        case .sequential, .fma:
            let (n, k) = (outputs, inputs)
            panels = weight.data.withUnsafeBufferPointer { PackedPanels($0.baseAddress!, n: n, k: k, transposed: true) }
            rowMajor = nil
        case .openblas:
            panels = nil
            rowMajor = weight.data
        }
        encoded = nil
    }

    /// A weight kept in its stored form. Products always run the in-order kernel (the bits
    /// of the dense product), whatever the backend.
    public init(encoded matrix: EncodedMatrix) {
        outputs = matrix.rows
        inputs = matrix.columns
        backend = .sequential
        panels = nil
        rowMajor = nil
        encoded = matrix
    }

    /// The address of the packed elements: two values with the same address share one copy.
    public var storageAddress: UInt {
        if let encoded { return encoded.address }
        if let panels { return panels.storage.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) } }
        return rowMajor?.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) } ?? 0
    }

    /// Bytes this weight holds (packed panels are zero-padded to 64 outputs).
    public var byteCount: Int { encoded?.storedBytes ?? 4 * (panels?.storage.count ?? rowMajor?.count ?? 0) }

    /// Row `j` of `W` (`[K]`): an embedding row when the weight is a tied embedding.
    public func row(_ j: Int) -> ArraySlice<Float> {
        precondition(j >= 0 && j < outputs, "[LinearWeight] row \(j) of \(outputs)")
        if let rowMajor { return rowMajor[(j * inputs)..<((j + 1) * inputs)] }
        if let encoded { return ArraySlice(encoded.row(j)) }
        let p = panels!
        return ArraySlice((0..<inputs).map { p.element($0, j) })
    }

    /// `y[M, N] = x[M, K] · Wᵀ` into a buffer of `M · N` floats.
    func apply(_ x: UnsafePointer<Float>, rows m: Int, into y: UnsafeMutablePointer<Float>) {
        guard m > 0, outputs > 0 else { return }
        guard inputs > 0 else { y.update(repeating: 0, count: m * outputs); return }
        if let panels {
            panels.product(x, m: m, into: y)
        } else if let encoded {
            encoded.product(x, m: m, into: y)
        } else {
            rowMajor!.withUnsafeBufferPointer { w in
                if m == 1 {
                    // One row: a matrix-vector product (OpenBLAS 0.3.21's sgemm would pack all of W).
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(outputs), Int32(inputs),
                                1, w.baseAddress!, Int32(inputs), x, 1, 0, y, 1)
                } else {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(outputs), Int32(inputs),
                                1, x, Int32(inputs), w.baseAddress!, Int32(inputs), 0, y, Int32(outputs))
                }
            }
        }
    }
}

extension Tensor {
    /// `x Wᵀ` over the last axis: `self` is `[..., K]`, the result `[..., N]`.
    public func linear(_ weight: LinearWeight) -> Tensor {
        precondition(weight.inputs == lastDim, "[linear] input \(shape) against weight [\(weight.outputs), \(weight.inputs)]")
        let m = rows, n = weight.outputs
        let out = [Float](unsafeUninitializedCapacity: m * n) { y, initialized in
            data.withUnsafeBufferPointer { x in weight.apply(x.baseAddress!, rows: m, into: y.baseAddress!) }
            initialized = m * n
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
