import TestSupport
import Testing
@testable import ParityTensor

/// The vectorised silu·y (ParityKernels) must give the bits of the scalar MLXMath code on every
/// input, including the polynomial's edges (±88, NaN, ±∞, subnormals, signed zeros).
@Suite(.serialized) struct VectorMathTests {
    static let edges: [Float] = [0, -0, 1, -1, 88, -88, 88.0001, -88.0001, 87.99, -87.99, 1e-40, -1e-40,
                                 .infinity, -.infinity, .nan, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                                 0.5, -0.5, 20, -20, 3.3e-8, -17.25]

    @Test(arguments: ["generic", "avx2", "avx512f"])
    func siluTimesMatchesScalar(kernel: String) {
        let previous = MatrixProduct.kernelName
        defer { MatrixProduct.selectKernel(previous) }
        guard MatrixProduct.selectKernel(kernel) else { return }
        let random = randomTensor([1000], seed: 77).data.map { $0 * 60 }
        let a = Self.edges + random + Self.edges
        let b = (0..<a.count).map { i in i % 3 == 0 ? Float(1) : Float(i % 7) - 3.5 }
        let fast = Activation.siluTimes(a, b)
        var differing = 0
        for i in a.indices {
            let slow = Activation.silu(a[i]) * b[i]
            if !(slow.bitPattern == fast[i].bitPattern || (slow.isNaN && fast[i].isNaN)) { differing += 1 }
        }
        #expect(differing == 0, "\(kernel): \(differing) of \(a.count) elements differ")
    }
}
