import TestSupport
import Foundation
import Testing
import ParityCore
import ParityTensor
@testable import VLMMirror

@Suite struct ChunkedScanTests {
    struct Inputs {
        var q, k, v, g, beta: Tensor
    }

    /// q, k l2-normalised like the model's, so the recurrence stays in its usual range.
    func inputs(B: Int, S: Int, Hk: Int, Hv: Int, d: Int, seed: UInt64, gRange: ClosedRange<Float> = 0.3...1) -> Inputs {
        func normalised(_ t: Tensor, scale: Float) -> Tensor { t.rmsNorm(weight: nil, eps: 1e-6) * scale }
        let inv = 1 / Float(d).squareRoot()
        return Inputs(q: normalised(randomTensor([B, S, Hk, d], seed: seed), scale: inv * inv),
                      k: normalised(randomTensor([B, S, Hk, d], seed: seed + 1), scale: inv),
                      v: randomTensor([B, S, Hv, d], seed: seed + 2),
                      g: randomTensor([B, S, Hv], seed: seed + 3, range: gRange),
                      beta: randomTensor([B, S, Hv], seed: seed + 4, range: 0...1))
    }

    func gdn() throws -> GatedDeltaNet {
        let c = try tinyConfig()
        return GatedDeltaNet(weights: try randomWeights(c), layer: 0, config: c)
    }

    /// The recurrence in double, HF layout (state [dk, dv]): S ← g·S; S += k ⊗ β(v − Sᵀk); y = Sᵀq.
    func reference(_ x: Inputs, state initial: Tensor) -> (y: [Double], state: [Double]) {
        let (B, S, Hk, dk) = (x.q.shape[0], x.q.shape[1], x.q.shape[2], x.q.shape[3])
        let (Hv, dv) = (x.v.shape[2], x.v.shape[3])
        var y = [Double](repeating: 0, count: B * S * Hv * dv)
        var final = [Double](repeating: 0, count: B * Hv * dv * dk)
        for b in 0..<B { for h in 0..<Hv {
            let kh = h / (Hv / Hk)
            var s = (0..<dk).map { j in (0..<dv).map { i in Double(initial.data[((b * Hv + h) * dv + i) * dk + j]) } }
            for t in 0..<S {
                let g = Double(x.g.data[(b * S + t) * Hv + h]), beta = Double(x.beta.data[(b * S + t) * Hv + h])
                let k = (0..<dk).map { Double(x.k.data[((b * S + t) * Hk + kh) * dk + $0]) }
                let q = (0..<dk).map { Double(x.q.data[((b * S + t) * Hk + kh) * dk + $0]) }
                for j in 0..<dk { for i in 0..<dv { s[j][i] *= g } }
                for i in 0..<dv {
                    var m = 0.0
                    for j in 0..<dk { m += s[j][i] * k[j] }
                    let delta = (Double(x.v.data[((b * S + t) * Hv + h) * dv + i]) - m) * beta
                    for j in 0..<dk { s[j][i] += k[j] * delta }
                }
                for i in 0..<dv {
                    var o = 0.0
                    for j in 0..<dk { o += s[j][i] * q[j] }
                    y[((b * S + t) * Hv + h) * dv + i] = o
                }
            }
            for i in 0..<dv { for j in 0..<dk { final[((b * Hv + h) * dv + i) * dk + j] = s[j][i] } }
        } }
        return (y, final)
    }

    func worst(_ a: [Float], _ b: [Double]) -> Double { zip(a, b).map { abs(Double($0) - $1) }.max() ?? 0 }

    /// Several chunks (150 = 64 + 64 + 22, the last padded), repeated key heads, a non-zero start.
    @Test(arguments: [1, 63, 64, 65, 150])
    func chunkedScanEqualsTheRecurrence(S: Int) throws {
        let net = try gdn()
        let x = inputs(B: 2, S: S, Hk: 2, Hv: 4, d: 8, seed: 21)
        let start = randomTensor([2, 4, 8, 8], seed: 99, range: -0.5...0.5)
        var chunked = start, sequential = start
        let yc = net.chunkedDeltaRule(q: x.q, k: x.k, v: x.v, g: x.g, beta: x.beta, state: &chunked, mask: nil)
        let ys = net.sequentialDeltaRule(q: x.q, k: x.k, v: x.v, g: x.g, beta: x.beta, state: &sequential, mask: nil)
        let exact = reference(x, state: start)
        #expect(worst(yc.data, exact.y) < 2e-5, "chunked y vs double: \(worst(yc.data, exact.y))")
        #expect(worst(ys.data, exact.y) < 2e-5, "sequential y vs double: \(worst(ys.data, exact.y))")
        #expect(worst(chunked.data, exact.state) < 2e-5, "chunked state vs double: \(worst(chunked.data, exact.state))")
        #expect(worst(sequential.data, exact.state) < 2e-5)
    }

    /// A split call continues from the state the first part left: chunk boundaries of the
    /// schedule only move rounding.
    @Test func stateCarriesAcrossChunkedCalls() throws {
        let net = try gdn()
        let x = inputs(B: 1, S: 90, Hk: 2, Hv: 4, d: 8, seed: 3)
        var whole = Tensor(zeros: [1, 4, 8, 8]), split = whole
        let all = net.chunkedDeltaRule(q: x.q, k: x.k, v: x.v, g: x.g, beta: x.beta, state: &whole, mask: nil)
        var parts: [Tensor] = []
        for (start, n) in [(0, 70), (70, 20)] {
            func s(_ t: Tensor) -> Tensor { t.slice(axis: 1, start: start, length: n) }
            parts.append(net.chunkedDeltaRule(q: s(x.q), k: s(x.k), v: s(x.v), g: s(x.g), beta: s(x.beta), state: &split, mask: nil))
        }
        let joined = Tensor.concatenate(parts, axis: 1)
        #expect(zip(joined.data, all.data).map { abs($0 - $1) }.max()! < 1e-5)
        #expect(zip(split.data, whole.data).map { abs($0 - $1) }.max()! < 1e-5)
    }

    /// mlx-vlm clips g at 1e-6 before its log (compute_g can underflow to 0): a g of exactly 0
    /// behaves like 1e-6, where the recurrence would wipe the state.
    @Test func decayIsClippedAtOneMillionth() throws {
        let net = try gdn()
        var x = inputs(B: 1, S: 12, Hk: 2, Hv: 2, d: 8, seed: 8)
        for i in x.g.data.indices where i % 5 == 0 { x.g.data[i] = 0 }
        var clippedInput = x
        clippedInput.g = x.g.map { max($0, 1e-6) }
        let start = randomTensor([1, 2, 8, 8], seed: 4)
        var chunked = start, sequential = start
        let yc = net.chunkedDeltaRule(q: x.q, k: x.k, v: x.v, g: x.g, beta: x.beta, state: &chunked, mask: nil)
        let ys = net.sequentialDeltaRule(q: clippedInput.q, k: clippedInput.k, v: clippedInput.v, g: clippedInput.g,
                                         beta: clippedInput.beta, state: &sequential, mask: nil)
        #expect(zip(yc.data, ys.data).map { abs($0 - $1) }.max()! < 1e-5)
        #expect(zip(chunked.data, sequential.data).map { abs($0 - $1) }.max()! < 1e-5)
    }

    /// Masked steps: the chunked scan sets g = 1, β = 0 (state unchanged), the ops step restores
    /// the old state; both leave the same state and the same outputs at real steps.
    @Test func maskedStepsLeaveTheStateAlone() throws {
        let net = try gdn()
        let (B, S) = (2, 10)
        let x = inputs(B: B, S: S, Hk: 2, Hv: 4, d: 8, seed: 30)
        let mask = (0..<(B * S)).map { r in r % S >= (r / S) * 4 }   // row 1: 4 padded steps
        var chunked = Tensor(zeros: [B, 4, 8, 8]), sequential = chunked
        let yc = net.chunkedDeltaRule(q: x.q, k: x.k, v: x.v, g: x.g, beta: x.beta, state: &chunked, mask: mask)
        let ys = net.sequentialDeltaRule(q: x.q, k: x.k, v: x.v, g: x.g, beta: x.beta, state: &sequential, mask: mask)
        #expect(zip(chunked.data, sequential.data).map { abs($0 - $1) }.max()! < 1e-5)
        for r in 0..<(B * S) where mask[r] {
            for i in 0..<(4 * 8) { #expect(abs(yc.data[r * 32 + i] - ys.data[r * 32 + i]) < 1e-5) }
        }
    }
}

/// The fast forms of the vlm scan's pieces give the bits of the plain forms they replaced.
@Suite struct ScanPiecesTests {
    /// Rows of (I + A)⁻¹ as 1×i by i×C products through MatrixProduct, one row at a time.
    func inverseByRowProducts(_ A: Matrix) -> Matrix {
        let C = A.rows
        var inverse = Matrix(rows: C, columns: C)
        inverse[0, 0] = 1
        for i in 1..<C {
            let coefficients = Matrix(rows: 1, columns: i, Array(A.values[(i * C)..<(i * C + i)]))
            let above = Matrix(rows: i, columns: C, Array(inverse.values[0..<(i * C)]))
            let combination = coefficients.times(above)
            for j in 0..<C { inverse[i, j] = (i == j ? 1 : 0) - combination[0, j] }
        }
        return inverse
    }

    @Test func unitLowerInverseMatchesRowProductsBitForBit() {
        let C = GatedDeltaNet.chunk
        let values = randomTensor([C, C], seed: 91, range: -0.3...0.3).data
        var A = Matrix(rows: C, columns: C)
        for i in 0..<C { for j in 0..<i { A[i, j] = values[i * C + j] } }
        let fast = GatedDeltaNet.unitLowerInverse(A), plain = inverseByRowProducts(A)
        #expect(fast.values.map(\.bitPattern) == plain.values.map(\.bitPattern))
    }

    @Test func timesTransposedMatchesAnExplicitTranspose() {
        let a = Matrix(rows: 7, columns: 33, randomTensor([7, 33], seed: 5).data)
        let b = Matrix(rows: 70, columns: 33, randomTensor([70, 33], seed: 6).data)
        #expect(a.timesTransposed(b).values.map(\.bitPattern) == a.times(b.transposed()).values.map(\.bitPattern))
    }

    /// The shared kernel runs mlx-vlm's one-token step: the scalar loop it replaced, bit for bit.
    @Test func sequentialStepMatchesTheScalarOpsBitForBit() throws {
        let c = try tinyConfig()
        let net = GatedDeltaNet(weights: try randomWeights(c), layer: 0, config: c)
        let (B, S, Hk, Hv, d) = (2, 5, 1, 2, 16)
        let q = randomTensor([B, S, Hk, d], seed: 11), k = randomTensor([B, S, Hk, d], seed: 12, range: -0.25...0.25)
        let v = randomTensor([B, S, Hv, d], seed: 13), g = randomTensor([B, S, Hv], seed: 14, range: 0.3...1)
        let beta = randomTensor([B, S, Hv], seed: 15, range: 0...1)
        let mask = (0..<(B * S)).map { $0 % 4 != 1 }
        var state = randomTensor([B, Hv, d, d], seed: 16)
        var scalarState = state
        let y = net.sequentialDeltaRule(q: q, k: k, v: v, g: g, beta: beta, state: &state, mask: mask)
        var expected = [Float](repeating: 0, count: B * S * Hv * d)
        for b in 0..<B { for h in 0..<Hv {
            let base = (b * Hv + h) * d * d
            for t in 0..<S {
                let old = Array(scalarState.data[base..<(base + d * d)])
                let kBase = ((b * S + t) * Hk + h / (Hv / Hk)) * d, vBase = ((b * S + t) * Hv + h) * d
                let (decay, rate) = (g.data[(b * S + t) * Hv + h], beta.data[(b * S + t) * Hv + h])
                var memory = [Float](repeating: 0, count: d)
                for i in 0..<d {
                    var m: Float = 0
                    for j in 0..<d { scalarState.data[base + i * d + j] *= decay; m += scalarState.data[base + i * d + j] * k.data[kBase + j] }
                    memory[i] = m
                }
                for i in 0..<d {
                    let delta = (v.data[vBase + i] - memory[i]) * rate
                    var out: Float = 0
                    for j in 0..<d { scalarState.data[base + i * d + j] += k.data[kBase + j] * delta; out += scalarState.data[base + i * d + j] * q.data[kBase + j] }
                    expected[vBase + i] = out
                }
                if !mask[b * S + t] { scalarState.data.replaceSubrange(base..<(base + d * d), with: old) }
            }
        } }
        #expect(y.data.map(\.bitPattern) == expected.map(\.bitPattern))
        #expect(state.data.map(\.bitPattern) == scalarState.data.map(\.bitPattern))
    }
}
