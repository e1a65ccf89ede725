import TestSupport
import Foundation
import Testing
import ParityCore
import ParityTensor
@testable import LMMirror

@Suite struct DeltaRuleTests {
    /// The recurrence written the HF way, in double: state [dk, dv], S ← g·S; S += k ⊗ β(v − Sᵀk); y = Sᵀq.
    func reference(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, mask: [Bool]?) -> [Double] {
        let (B, S, Hk, dk) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (Hv, dv) = (v.shape[2], v.shape[3])
        var y = [Double](repeating: 0, count: B * S * Hv * dv)
        for b in 0..<B {
            for h in 0..<Hv {
                let kh = h / (Hv / Hk)
                var state = [[Double]](repeating: [Double](repeating: 0, count: dv), count: dk)
                for t in 0..<S {
                    let before = state
                    let gt = Double(g.data[(b * S + t) * Hv + h]), bt = Double(beta.data[(b * S + t) * Hv + h])
                    let kv = (0..<dk).map { Double(k.data[((b * S + t) * Hk + kh) * dk + $0]) }
                    let qv = (0..<dk).map { Double(q.data[((b * S + t) * Hk + kh) * dk + $0]) }
                    let vv = (0..<dv).map { Double(v.data[((b * S + t) * Hv + h) * dv + $0]) }
                    for j in 0..<dk { for i in 0..<dv { state[j][i] *= gt } }
                    for i in 0..<dv {
                        var memory = 0.0
                        for j in 0..<dk { memory += state[j][i] * kv[j] }
                        let delta = (vv[i] - memory) * bt
                        for j in 0..<dk { state[j][i] += kv[j] * delta }
                    }
                    for i in 0..<dv {
                        var out = 0.0
                        for j in 0..<dk { out += state[j][i] * qv[j] }
                        y[((b * S + t) * Hv + h) * dv + i] = out
                    }
                    if let mask, !mask[b * S + t] { state = before }
                }
            }
        }
        return y
    }

    @Test(arguments: [false, true])
    func matchesDoubleReferenceWithRepeatedKeyHeads(masked: Bool) throws {
        let c = try tinyConfig()
        let gdn = GatedDeltaNet(weights: try randomWeights(c), layer: 0, config: c)
        let (B, S) = (2, 9)
        let q = randomTensor([B, S, 2, 8], seed: 1, range: -0.3...0.3), k = randomTensor([B, S, 2, 8], seed: 2, range: -0.3...0.3)
        let v = randomTensor([B, S, 4, 8], seed: 3), g = randomTensor([B, S, 4], seed: 4, range: 0.5...1)
        let beta = randomTensor([B, S, 4], seed: 5, range: 0...1)
        let mask: [Bool]? = masked ? (0..<(B * S)).map { $0 % S >= ($0 / S) * 3 } : nil
        var state = Tensor(zeros: [B, 4, 8, 8])
        let y = gdn.deltaRule(q: q, k: k, v: v, g: g, beta: beta, state: &state, mask: mask)
        let expected = reference(q: q, k: k, v: v, g: g, beta: beta, mask: mask)
        let worst = zip(y.data, expected).map { abs(Double($0) - $1) }.max()!
        #expect(worst < 1e-5, "max |Δ| \(worst)")
    }

    @Test func stateCarriesAcrossCalls() throws {
        let c = try tinyConfig()
        let gdn = GatedDeltaNet(weights: try randomWeights(c), layer: 0, config: c)
        let q = randomTensor([1, 6, 2, 8], seed: 1), k = randomTensor([1, 6, 2, 8], seed: 2)
        let v = randomTensor([1, 6, 4, 8], seed: 3), g = randomTensor([1, 6, 4], seed: 4, range: 0.5...1)
        let beta = randomTensor([1, 6, 4], seed: 5, range: 0...1)
        var whole = Tensor(zeros: [1, 4, 8, 8])
        let all = gdn.deltaRule(q: q, k: k, v: v, g: g, beta: beta, state: &whole, mask: nil)
        var split = Tensor(zeros: [1, 4, 8, 8])
        var parts: [Tensor] = []
        for (start, n) in [(0, 4), (4, 2)] {
            parts.append(gdn.deltaRule(q: q.slice(axis: 1, start: start, length: n), k: k.slice(axis: 1, start: start, length: n),
                                       v: v.slice(axis: 1, start: start, length: n), g: g.slice(axis: 1, start: start, length: n),
                                       beta: beta.slice(axis: 1, start: start, length: n), state: &split, mask: nil))
        }
        #expect(Tensor.concatenate(parts, axis: 1) == all)
        #expect(split == whole)
    }
}

@Suite struct ConvStateTests {
    @Test func keepsTheLastKMinusOneInputsOrTheLastRealOnes() throws {
        let c = try tinyConfig()
        let gdn = GatedDeltaNet(weights: try randomWeights(c), layer: 0, config: c)
        // [B=2, K−1+S = 2+4, Cc=1]: values encode (row, step).
        let input = Tensor(shape: [2, 6, 1], data: (0..<12).map(Float.init))
        #expect(gdn.nextConvState(input, lengths: nil, steps: 4).data == [4, 5, 10, 11])
        // With lengths (right padding) the window ends after each row's last real input.
        #expect(gdn.nextConvState(input, lengths: [1, 9], steps: 4).data == [1, 2, 10, 11])
    }

    @Test func depthwiseConvolutionIsACrossCorrelation() throws {
        let c = try tinyConfig()
        let gdn = GatedDeltaNet(weights: try randomWeights(c), layer: 0, config: c)
        let Cc = c.convDim
        let input = randomTensor([1, 2 + 3, Cc], seed: 9)
        let out = gdn.depthwiseConvSilu(input, steps: 3)
        for t in 0..<3 {
            for ch in 0..<Cc {
                var sum = 0.0
                for j in 0..<3 { sum += Double(input.data[(t + j) * Cc + ch]) * Double(gdn.convWeight.data[ch * 3 + j]) }
                let expected = sum / (1 + Foundation.exp(-sum))
                #expect(abs(Double(out.data[t * Cc + ch]) - expected) < 1e-6)
            }
        }
    }
}

@Suite struct RopeTests {
    @Test func rotatesHalfSplitPairsAndLeavesTheRestAlone() {
        let rope = Rope(dims: 4, base: 10_000)
        var x = randomTensor([1, 1, 3, 6], seed: 3)
        let original = x
        rope.apply(&x, offsets: [5])
        for t in 0..<3 {
            let p = Double(5 + t)
            for i in 0..<2 {
                let theta = p * Foundation.pow(10_000, -Double(i) / 2)
                let (x1, x2) = (Double(original.data[t * 6 + i]), Double(original.data[t * 6 + i + 2]))
                #expect(abs(Double(x.data[t * 6 + i]) - (x1 * Foundation.cos(theta) - x2 * Foundation.sin(theta))) < 1e-5)
                #expect(abs(Double(x.data[t * 6 + i + 2]) - (x1 * Foundation.sin(theta) + x2 * Foundation.cos(theta))) < 1e-5)
            }
            #expect(x.data[t * 6 + 4] == original.data[t * 6 + 4] && x.data[t * 6 + 5] == original.data[t * 6 + 5])
        }
    }
}
