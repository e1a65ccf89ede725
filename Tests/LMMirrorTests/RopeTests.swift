import Testing
import ParityTensor
@testable import LMMirror

/// mlx's CPU rope takes ln(base) as a float (its base is a C float, so std::log is logf) and
/// divides in float. With a double ln(base) rounded once, base 1e7 at r = 6 put sin off by 6 to
/// 20 ulps from position 1 on (found by the random-config sweep). Bits from mlx 0.32.4:
/// mx.fast.rope(x, 6, traditional=False, base=1e7, scale=1, offset=0) on unit vectors.
@Suite struct RopeFrequencyTests {
    static let sinBits: [[UInt32]] = [
        [0x3b981858, 0x3c1817ed, 0x3c6422d7, 0x3c98163f, 0x3cbe1a3d, 0x3ce41d2d, 0x3d050f6e],   // i = 1, t = 1…7
        [0x37b4ba2c, 0x3834ba2c, 0x38878ba1, 0x38b4ba2c, 0x38e1e8b7, 0x39078ba1, 0x391e22e6],   // i = 2
    ]

    @Test func matchesMLXForBase1e7AtSixRotaryDims() {
        let rope = Rope(dims: 6, base: 1e7)
        let (L, hd) = (8, 12)
        var x = Tensor(zeros: [1, 3, L, hd])
        for i in 0..<3 { for t in 0..<L { x.data[(i * L + t) * hd + i] = 1 } }   // head i: unit vector on dim i
        rope.apply(&x, offsets: [0])
        var differing = 0
        for (row, i) in [1, 2].enumerated() {
            for t in 1..<L where x.data[(i * L + t) * hd + i + 3].bitPattern != Self.sinBits[row][t - 1] { differing += 1 }
        }
        #expect(differing == 0, "\(differing) of 14 sines differ from mlx")
    }
}
