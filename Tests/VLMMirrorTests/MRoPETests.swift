import TestSupport
import Foundation
import Testing
import ParityTensor
@testable import VLMMirror

@Suite struct MRoPETests {
    @Test func interleavedSelectorOfRealQwen35() {
        // r = 64 → 32 frequencies, mrope_section [11, 11, 10].
        let s = MRoPE.interleavedSelector(section: [11, 11, 10], frequencies: 32)
        #expect(s.indices.filter { s[$0] == 1 } == Array(stride(from: 1, through: 31, by: 3)))   // H: 11
        #expect(s.indices.filter { s[$0] == 2 } == Array(stride(from: 2, through: 29, by: 3)))   // W: 10
        #expect(s.filter { $0 == 0 }.count == 11)                                                // T
    }

    @Test func interleavedSelectorOfTheTinyConfig() {
        // r = 16 → 8 frequencies: T H W T H W T H.
        #expect(MRoPE.interleavedSelector(section: [11, 11, 10], frequencies: 8) == [0, 1, 2, 0, 1, 2, 0, 1])
        // Short sections end their axis early: s₂ = 1 gives W only at frequency 2.
        #expect(MRoPE.interleavedSelector(section: [5, 2, 1], frequencies: 8) == [0, 1, 2, 0, 1, 0, 0, 0])
    }

    @Test func inverseFrequenciesAreOneOverBaseToTheTwoIOverR() {
        let rope = MRoPE(dims: 16, base: 100_000, mropeSection: [11, 11, 10])
        for (i, f) in rope.inverseFrequencies.enumerated() {
            let exact = 1 / Foundation.pow(100_000.0, Double(2 * i) / 16)
            #expect(abs(Double(f) - exact) <= exact * 1e-6, "i = \(i): \(f) vs \(exact)")
        }
    }

    /// The slow, obvious MRoPE in double: θᵢ = position on axis(i) · base^(−2i/r); the pair
    /// (i, i + r/2) rotates by θᵢ; dims ≥ r pass through.
    func reference(_ x: Tensor, positions p: VLMPositions, dims r: Int, base: Double, section: [Int]) -> [Double] {
        let (B, H, L, hd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let axis = MRoPE.interleavedSelector(section: section, frequencies: r / 2)
        var out = x.data.map(Double.init)
        for b in 0..<B { for h in 0..<H { for t in 0..<L {
            let row = ((b * H + h) * L + t) * hd
            for i in 0..<(r / 2) {
                let theta = Double(p.at(axis: axis[i], row: b, t: t)) * Foundation.pow(base, -Double(2 * i) / Double(r))
                let (x1, x2) = (Double(x.data[row + i]), Double(x.data[row + i + r / 2]))
                out[row + i] = x1 * Foundation.cos(theta) - x2 * Foundation.sin(theta)
                out[row + i + r / 2] = x2 * Foundation.cos(theta) + x1 * Foundation.sin(theta)
            }
        } } }
        return out
    }

    @Test(arguments: [[2, 1, 1], [11, 11, 10], [1, 0, 3]])
    func threeAxisRotationMatchesTheSlowReference(section: [Int]) {
        let (B, H, L, hd, r) = (2, 3, 5, 12, 8)
        let rope = MRoPE(dims: r, base: 10_000, mropeSection: section)
        var rng = SplitMix64(state: 11)
        let positions = VLMPositions(axes: 3, batch: B, length: L, values: (0..<(3 * B * L)).map { _ in Int.random(in: 0...40, using: &rng) })
        let original = randomTensor([B, H, L, hd], seed: 5)
        var x = original
        MRoPE.apply(&x, rope.angles(positions))
        let expected = reference(original, positions: positions, dims: r, base: 10_000, section: section)
        let worst = zip(x.data, expected).map { abs(Double($0) - $1) }.max()!
        #expect(worst < 2e-6, "max |Δ| \(worst)")
        for b in 0..<B { for h in 0..<H { for t in 0..<L { for d in r..<hd {
            let i = ((b * H + h) * L + t) * hd + d
            #expect(x.data[i] == original.data[i])
        } } } }
    }

    /// Text positions [B, L] feed every frequency; the same numbers on three equal axes give
    /// the same bits (numerics spec §3.1).
    @Test func textPositionsEqualThreeEqualAxesBitForBit() {
        let rope = MRoPE(dims: 16, base: 100_000, mropeSection: [11, 11, 10])
        let text = VLMPositions(rows: [[3, 4, 5, 6], [0, 1, 2, 3]])
        var a = randomTensor([2, 2, 4, 16], seed: 9), b = a
        MRoPE.apply(&a, rope.angles(text))
        MRoPE.apply(&b, rope.angles(text.threeAxes))
        #expect(a == b)
    }

    @Test func positionsSliceLikePython() {
        let p = VLMPositions(axes: 3, batch: 1, length: 4, values: [0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1])
        #expect(p.sliced(from: 3, count: 1).values == [1, 1, 1])
        #expect(p.sliced(from: 2, count: 5).length == 2)   // clamped at the end, like [..., 2:7]
        #expect(p.row(0, from: 1).values == [1, 0, 1, 0, 1, 1, 1, 1, 1])
    }
}
