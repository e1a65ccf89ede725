import TestSupport
import Testing
@testable import ParityTensor

/// Every instruction-set variant of the in-order kernel, every row count and every thread split
/// must give the bits of the plain in-order sum (0 + x₀w₀ + x₁w₁ + …, unfused).
@Suite(.serialized) struct KernelVariantTests {
    static func inOrder(_ x: Tensor, _ w: Tensor) -> [Float] {
        let (m, k, n) = (x.shape[0], x.shape[1], w.shape[0])
        var out = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s: Float = 0
                for p in 0..<k { s = s + x.data[i * k + p] * w.data[j * k + p] }
                out[i * n + j] = s
            }
        }
        return out
    }

    @Test(arguments: ["generic", "avx2", "avx512f"])
    func variantGivesTheInOrderBits(kernel: String) {
        let previous = MatrixProduct.kernelName
        defer { MatrixProduct.selectKernel(previous) }
        guard MatrixProduct.selectKernel(kernel) else { return }   // the CPU lacks it
        // Every row-tile height (1 … 6), partial panels and strips, and K past the AVX2 kernel's
        // k block (512), whose sums wait in C between blocks.
        for (m, n, k) in [(1, 1, 1), (1, 200, 37), (2, 70, 33), (3, 150, 20), (5, 64, 64), (7, 130, 129),
                          (13, 65, 300), (40, 257, 96), (8, 100, 1100)] {
            let x = randomTensor([m, k], seed: UInt64(m * 31 + k)), w = randomTensor([n, k], seed: UInt64(n * 17 + k))
            let y = x.linear(LinearWeight(w, backend: .sequential))
            let reference = Self.inOrder(x, w)
            let differing = zip(y.data, reference).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "\(kernel) M=\(m) N=\(n) K=\(k): \(differing) of \(m * n) elements differ")
        }
    }

    /// Large enough to split across threads: the same bits as the in-order sum.
    @Test func threadedProductGivesTheInOrderBits() {
        let (m, n, k) = (9, 1000, 256)
        let x = randomTensor([m, k], seed: 41), w = randomTensor([n, k], seed: 42)
        let y = x.linear(LinearWeight(w, backend: .sequential))
        let differing = zip(y.data, Self.inOrder(x, w)).filter { $0.bitPattern != $1.bitPattern }.count
        #expect(differing == 0, "\(differing) elements differ")
    }

    @Test func rowOfPackedWeightIsTheWeightRow() {
        let w = randomTensor([70, 9], seed: 43)
        let packed = LinearWeight(w, backend: .sequential)
        for j in [0, 1, 63, 64, 69] {
            #expect(Array(packed.row(j)) == Array(w.data[(j * 9)..<((j + 1) * 9)]))
        }
    }
}
