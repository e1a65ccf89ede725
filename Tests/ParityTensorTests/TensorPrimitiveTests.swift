import Foundation
import Testing
@testable import ParityTensor
import TestSupport

func maxAbsDifference(_ a: [Float], _ b: [Double]) -> Double {
    zip(a, b).map { abs(Double($0) - $1) }.max() ?? 0
}

@Suite struct MatrixProductTests {
    @Test(arguments: [(1, 1, 1), (3, 5, 7), (17, 11, 13), (2, 64, 33), (65, 3, 1)])
    func linearMatchesNaive(m: Int, n: Int, k: Int) {
        let x = randomTensor([m, k], seed: 1), w = randomTensor([n, k], seed: 2)
        let y = x.linear(w)
        #expect(y.shape == [m, n])
        var naive = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { for p in 0..<k { naive[i * n + j] += Double(x.data[i * k + p]) * Double(w.data[j * k + p]) } } }
        #expect(maxAbsDifference(y.data, naive) < 1e-5 * Double(k))
    }

    @Test func linearKeepsLeadingAxesAndAddsBias() {
        let x = randomTensor([2, 3, 5], seed: 3), w = randomTensor([4, 5], seed: 4), b = randomTensor([4], seed: 5)
        let y = x.linear(LinearWeight(w), bias: b)
        #expect(y.shape == [2, 3, 4])
        let plain = x.linear(w)
        for r in 0..<6 { for j in 0..<4 { #expect(y.data[r * 4 + j] == plain.data[r * 4 + j] + b.data[j]) } }
    }

    @Test(arguments: [(1, 1, 1), (5, 3, 9), (7, 13, 4)])
    func matmulMatchesNaive(m: Int, k: Int, n: Int) {
        let a = randomTensor([m, k], seed: 6), b = randomTensor([k, n], seed: 7)
        let c = a.matmul(b)
        var naive = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { for p in 0..<k { naive[i * n + j] += Double(a.data[i * k + p]) * Double(b.data[p * n + j]) } } }
        #expect(maxAbsDifference(c.data, naive) < 1e-5 * Double(k))
    }

    @Test(arguments: [MatrixProduct.Backend.sequential, .openblas])
    func bothBackendsMatchNaive(backend: MatrixProduct.Backend) {
        let (m, n, k) = (7, 45, 33)
        let a = randomTensor([m, k], seed: 20), b = randomTensor([k, n], seed: 21)
        var c = [Float](repeating: 0, count: m * n)
        a.data.withUnsafeBufferPointer { ap in b.data.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
            MatrixProduct.times(ap.baseAddress!, bp.baseAddress!, into: cp.baseAddress!, m: m, n: n, k: k, backend: backend)
        } } }
        var naive = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { for p in 0..<k { naive[i * n + j] += Double(a.data[i * k + p]) * Double(b.data[p * n + j]) } } }
        #expect(maxAbsDifference(c, naive) < 1e-5 * Double(k))
    }

    /// The default kernel sums each element over k in order (the reference BLAS order), so a row's
    /// bits never depend on how many rows share the call.
    @Test func sequentialKernelIsTheInOrderSumAndRowInvariant() {
        let (n, k) = (1000, 128)
        let x = randomTensor([32, k], seed: 22), w = LinearWeight(randomTensor([n, k], seed: 23))
        let whole = x.linear(w)
        for m in [1, 2, 3, 5, 7, 8, 17, 31] {
            let part = x.slice(axis: 0, start: 0, length: m).linear(w)
            let differing = zip(part.data, whole.data).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "M=\(m): \(differing) elements differ")
        }
        let raw = randomTensor([n, k], seed: 23)
        for (i, j) in [(0, 0), (5, 999), (31, 17), (12, 512)] {
            var s: Float = 0
            for p in 0..<k { s = s + x.data[i * k + p] * raw.data[j * k + p] }
            #expect(whole.data[i * n + j].bitPattern == s.bitPattern)
        }
    }

    @Test func emptyInnerDimensionGivesZeros() {
        let y = Tensor(zeros: [3, 0]).linear(Tensor(zeros: [2, 0]))
        #expect(y.shape == [3, 2] && y.data == [0, 0, 0, 0, 0, 0])
    }
}

@Suite struct ElementwiseTests {
    @Test(arguments: [[1, 7], [3, 5, 13], [4, 1]])
    func rmsNormMatchesNaive(shape: [Int]) {
        let x = randomTensor(shape, seed: 8), w = randomTensor([shape.last!], seed: 9)
        let y = x.rmsNorm(weight: w, eps: 1e-5)
        let d = shape.last!
        var naive = [Double]()
        for r in 0..<(x.count / d) {
            let row = x.data[(r * d)..<((r + 1) * d)].map(Double.init)
            let inv = 1 / (row.map { $0 * $0 }.reduce(0, +) / Double(d) + 1e-5).squareRoot()
            for j in 0..<d { naive.append(row[j] * inv * Double(w.data[j])) }
        }
        #expect(maxAbsDifference(y.data, naive) < 1e-5)
        let unweighted = x.rmsNorm(weight: nil, eps: 1e-5)
        #expect(unweighted.shape == x.shape)
    }

    @Test func softmaxMatchesNaiveAndSumsToOne() {
        let x = randomTensor([3, 11], seed: 10) * 20
        let y = x.softmax()
        for r in 0..<3 {
            let row = x.data[(r * 11)..<((r + 1) * 11)].map(Double.init)
            let m = row.max()!
            let e = row.map { Foundation.exp($0 - m) }
            let s = e.reduce(0, +)
            #expect(maxAbsDifference(Array(y.data[(r * 11)..<((r + 1) * 11)]), e.map { $0 / s }) < 1e-6)
        }
    }

    @Test func activationsMatchTheirDefinitions() {
        for x: Float in [-30, -3.5, -1, 0, 0.5, 2, 30] {
            let d = Double(x)
            #expect(abs(Double(Activation.sigmoid(x)) - 1 / (1 + Foundation.exp(-d))) < 1e-7)
            #expect(abs(Double(Activation.silu(x)) - d / (1 + Foundation.exp(-d))) < 1e-5)
            #expect(abs(Double(Activation.softplus(x)) - Foundation.log1p(Foundation.exp(d))) < 1e-5)
        }
        #expect(Activation.softplus(200) == 200)   // no overflow for large inputs
    }
}

@Suite struct LayoutTests {
    @Test func sliceAndConcatenateInvertEachOther() {
        let x = randomTensor([2, 7, 3], seed: 11)
        let parts = [x.slice(axis: 1, start: 0, length: 2), x.slice(axis: 1, start: 2, length: 4), x.slice(axis: 1, start: 6, length: 1)]
        #expect(Tensor.concatenate(parts, axis: 1) == x)
        let s = x.slice(axis: 1, start: 2, length: 4)
        for b in 0..<2 { for t in 0..<4 { for c in 0..<3 { #expect(s.data[(b * 4 + t) * 3 + c] == x.data[(b * 7 + t + 2) * 3 + c]) } } }
    }

    @Test func permutedMatchesIndexMaths() {
        let x = randomTensor([2, 3, 4, 5], seed: 12)
        let y = x.permuted([0, 2, 1, 3])
        #expect(y.shape == [2, 4, 3, 5])
        for a in 0..<2 { for b in 0..<3 { for c in 0..<4 { for d in 0..<5 {
            #expect(y.data[((a * 4 + c) * 3 + b) * 5 + d] == x.data[((a * 3 + b) * 4 + c) * 5 + d])
        } } } }
        #expect(x.transposed(1, 2) == y)
    }
}
