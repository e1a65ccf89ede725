import TestSupport
import Foundation
import Testing
import ParityTensor

/// Bit patterns produced by mlx 0.32.4 (CPU) for these inputs: mx.exp, mx.sigmoid, nn.softplus,
/// mx.sin, mx.cos. The mirrors depend on reproducing them exactly.
@Suite struct MLXMathTests {
    static let inputs: [UInt32] = [0xc2af0000, 0xc1a20000, 0xc0533333, 0xbf333333, 0xba83126f, 0x00000000,
                                   0x3e99999a, 0x3f800000, 0x40200000, 0x41320000, 0x42700000, 0x42afcccd]
    static let exp: [UInt32] = [0x006cb2b8, 0x30dc9eef, 0x3d1712d0, 0x3efe406e, 0x3f7fbe7f, 0x3f800000,
                                0x3facc82c, 0x402df854, 0x4142eb7f, 0x47848324, 0x6abcedc7, 0x7ee0dcb3]
    static let sigmoid: [UInt32] = [0x006cb2b8, 0x30dc9eef, 0x3d11b31a, 0x3ea9e34b, 0x3effdf3c, 0x3f000000,
                                    0x3f130eaa, 0x3f3b26a8, 0x3f6c948f, 0x3f7fff09, 0x3f800000, 0x3f800000]
    static let softplus: [UInt32] = [0x006cb2b8, 0x30dc9eef, 0x3d145aa7, 0x3ece6e67, 0x3f315155, 0x3f317218,
                                     0x3f5ab707, 0x3fa818f6, 0x40250c88, 0x4132000f, 0x42700000, 0x42afcccd]
    static let angles: [UInt32] = [0xc47a2000, 0xc0490fd0, 0xbf000000, 0x00000000, 0x3e800000, 0x3fc90fdb,
                                   0x40400000, 0x40d00000, 0x42c88000, 0x459c4600]
    static let sin: [UInt32] = [0xbf7eca46, 0xb62a2217, 0xbef57744, 0x00000000, 0x3e7d5777, 0x3f800000,
                                0x3e1081c3, 0x3e5c486a, 0xbe8df805, 0xbf1e119a]
    static let cos: [UInt32] = [0x3dc6dffc, 0xbf800000, 0x3f60a940, 0x3f800000, 0x3f780aa5, 0xb33bbd2e,
                                0xbf7d7026, 0x3f7a01a6, 0x3f75f639, 0x3f495ef8]

    func check(_ f: (Float) -> Float, inputs: [UInt32], expected: [UInt32]) {
        for (input, want) in zip(inputs, expected) {
            let x = Float(bitPattern: input)
            let got = f(x).bitPattern
            #expect(got == want, "f(\(x)) = 0x\(String(got, radix: 16)), mlx gives 0x\(String(want, radix: 16))")
        }
    }

    @Test func expMatchesMLX() { check(MLXMath.exp, inputs: Self.inputs, expected: Self.exp) }
    @Test func sigmoidMatchesMLX() { check(MLXMath.sigmoid, inputs: Self.inputs, expected: Self.sigmoid) }
    @Test func softplusMatchesMLX() { check(MLXMath.softplus, inputs: Self.inputs, expected: Self.softplus) }
    @Test func sinMatchesMLX() { check(MLXMath.sin, inputs: Self.angles, expected: Self.sin) }
    @Test func cosMatchesMLX() { check(MLXMath.cos, inputs: Self.angles, expected: Self.cos) }

    @Test func edgeCases() {
        #expect(MLXMath.exp(.nan).isNaN)
        #expect(MLXMath.exp(89) == .infinity && MLXMath.exp(-89) == 0)
        #expect(MLXMath.sin(1e9) == Foundation.sin(Float(1e9)))   // beyond 2²³: libm, like mlx
        #expect(MLXMath.softplus(.infinity) == .infinity)
    }

    /// Close to libm: the polynomials are approximations, not bugs. exp's relative error grows
    /// with |x| (x·log₂e is rounded before the split), about |x|·2⁻²³.
    @Test func closeToLibm() {
        for i in -380...380 {
            let x = Float(i) * 0.21
            let exact = Foundation.exp(Double(x))
            #expect(abs(Double(MLXMath.exp(x)) - exact) <= (4 + Double(abs(x))) * 0x1p-23 * exact)
            #expect(abs(MLXMath.sin(x) - Foundation.sin(x)) <= 2e-7)
            #expect(abs(MLXMath.cos(x) - Foundation.cos(x)) <= 2e-7)
        }
    }
}
