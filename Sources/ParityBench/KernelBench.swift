import Foundation
import ParityTensor

// `qwen-parity bench-kernel`: the matrix product alone at the 0.8B model's shapes, so a kernel
// change can be measured without the rest of the forward pass. GFLOP/s for prefill shapes,
// GB/s of weight streamed for decode (M = 1) shapes.

public enum KernelBench {
    public struct Shape: Sendable {
        public var m: Int, n: Int, k: Int, name: String
        public init(m: Int, n: Int, k: Int, name: String) { (self.m, self.n, self.k, self.name) = (m, n, k, name) }
    }

    public static let shapes: [Shape] = [
        Shape(m: 128, n: 3584, k: 1024, name: "mlp up, 128 tokens"),
        Shape(m: 512, n: 1024, k: 3584, name: "mlp down, 512 tokens"),
        Shape(m: 1, n: 6144, k: 1024, name: "gdn qkv, decode"),
        Shape(m: 1, n: 248_320, k: 1024, name: "lm head, decode"),
    ]

    /// Deterministic values in [-1, 1) (a linear congruential sequence: cheap for 254M values).
    static func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15
        return (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int32(truncatingIfNeeded: state >> 32)) / 2_147_483_648
        }
    }

    /// Seconds per call of `body`: one warm-up call, then the median over `repeats` timed runs of
    /// at least `seconds` each.
    static func medianSeconds(repeats: Int, seconds: Double, _ body: () -> Void) -> Double {
        body()
        var perCall: [Double] = []
        for _ in 0..<repeats {
            var calls = 0
            let start = DispatchTime.now().uptimeNanoseconds
            var elapsed = 0.0
            while elapsed < seconds {
                body()
                calls += 1
                elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            }
            perCall.append(elapsed / Double(calls))
        }
        return Summary(perCall).median
    }

    /// One line per shape: median over `repeats` timed runs of at least `seconds` each.
    public static func run(backend: MatrixProduct.Backend, repeats: Int = 3, seconds: Double = 0.5) -> [String] {
        shapes.map { s in
            let x = Tensor(shape: [s.m, s.k], data: values(s.m * s.k, seed: 1))
            let w = LinearWeight(Tensor(shape: [s.n, s.k], data: values(s.n * s.k, seed: 2)), backend: backend)
            let t = medianSeconds(repeats: repeats, seconds: seconds) { _ = x.linear(w) }
            let flops = 2 * Double(s.m * s.n * s.k) / t / 1e9
            let bytes = 4 * Double(s.n * s.k) / t / 1e9
            return String(format: "%-22@ M=%-4d N=%-6d K=%-5d %7.1f GFLOP/s %7.1f GB/s of weights",
                          s.name as NSString, s.m, s.n, s.k, flops, bytes)
        }
    }

    /// Bytes an `EncodedMatrix` built here reads, freed with the matrix.
    final class Storage {
        let pointer: UnsafeMutableRawPointer
        init<T>(_ values: [T]) {
            pointer = .allocate(byteCount: max(1, values.count * MemoryLayout<T>.stride), alignment: 16)
            values.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        deinit { pointer.deallocate() }
    }

    final class Owners {
        let all: [Storage]
        init(_ all: [Storage]) { self.all = all }
    }

    /// A 4-bit, group-64 matrix with float32 scales (the q4 bench checkpoint's form), random.
    static func q4Matrix(rows: Int, columns: Int) -> EncodedMatrix {
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        let words = Storage((0..<(rows * columns / 8)).map { _ -> UInt32 in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt32(truncatingIfNeeded: state >> 29)
        })
        let groups = rows * columns / 64
        let scales = Storage(values(groups, seed: 3).map { 0.01 + abs($0) * 0.05 }), biases = Storage(values(groups, seed: 4))
        return EncodedMatrix(owner: Owners([words, scales, biases]), values: words.pointer, scales: scales.pointer,
                             biases: biases.pointer, rows: rows, columns: columns,
                             encoding: .affine(bits: 4, groupSize: 64, scales: .float32))
    }

    /// Nanoseconds per weight of one q4 product `x[m, K] · Wᵀ` on this thread alone: the median
    /// over `repeats` timed runs of at least `seconds` each. `registerPath` false forces the
    /// panel path (the one every product took before the register path).
    public static func q4NanosecondsPerWeight(rows: Int = 6144, columns: Int = 1024, m: Int = 1, registerPath: Bool = true,
                                              repeats: Int = 3, seconds: Double = 0.3) -> Double {
        let w = q4Matrix(rows: rows, columns: columns)
        let x = values(m * columns, seed: 5)
        let previous = EncodedMatrix.setRegisterPathRows(registerPath ? 64 : 0)   // the kernel caps it at its largest
        defer { EncodedMatrix.setRegisterPathRows(previous) }
        let t = medianSeconds(repeats: repeats, seconds: seconds) { _ = w.product(x, m: m, parallel: false) }
        return t * 1e9 / Double(rows * columns)
    }

    /// The q4 product at decode row counts, register path against panel path, in one run.
    public static func q4Lines() -> [String] {
        [1, 2, 4].flatMap { m in
            [("register", true), ("panel", false)].map { name, register in
                let ns = q4NanosecondsPerWeight(m: m, registerPath: register)
                return String(format: "q4 (f32 scales) 6144×1024 M=%d, %@ path: %.3f ns per weight, one thread", m, name as NSString, ns)
            }
        }
    }
}
