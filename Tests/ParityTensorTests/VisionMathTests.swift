import Foundation
import ParityTensor
import Testing

/// Bit patterns from mlx 0.32.4 (CPU) for the vision tower's elementwise maths: mx.erf,
/// nn.gelu (erf form), nn.gelu_approx (tanh form) and nn.LayerNorm(24, eps=1e-6). The last six
/// inputs are ones where computing x³ as x·x·x instead of powf(x, 3) changes gelu_approx.
@Suite struct VisionMathTests {
    static let inputs: [UInt32] = [0xc1180000, 0xc0500000, 0xbf800000, 0xbe99999a, 0xba83126f, 0x00000000,
                                   0x3951b717, 0x3f000000, 0x3f5db3d7, 0x3fd9999a, 0x40866666, 0x41300000,
                                   0xc050efc8, 0xbf1f2e1d, 0xc002af65, 0x3f81457c, 0x400b43c4, 0xbf9ce7c3]
    static let erf: [UInt32] = [0xbf800000, 0xbf7fffb8, 0xbf57bb3b, 0xbea841c2, 0xba93e72e, 0x80000000,
                                0x396cdd2d, 0x3f053f7f, 0x3f478213, 0x3f7bd9b1, 0x3f800000, 0x3f800000,
                                0xbf7fffbf, 0xbf1eec27, 0xbf7f01b7, 0x3f58c6c7, 0x3f7f771e, 0xbf6ac0f2]
    static let gelu: [UInt32] = [0x80000000, 0xbaf5d500, 0xbe227688, 0xbdeac158, 0xba02f7aa, 0x00000000,
                                 0x38d1bfaa, 0x3eb103ae, 0x3f32dc73, 0x3fcfe70f, 0x408665f0, 0x41300000,
                                 0xbaea87e7, 0xbe2a073c, 0xbd2c1c4a, 0x3f5a2459, 0x400934ef, 0xbe0a3e4a]
    static let geluTanh: [UInt32] = [0x80000000, 0xbacd99c0, 0xbe229e90, 0xbdeac2a7, 0xba02f7a9, 0x00000000,
                                     0x38d1bfa9, 0x3eb1016d, 0x3f32d587, 0x3fcfe2b4, 0x4086662f, 0x41300000,
                                     0xbac32d3d, 0xbe2a1101, 0xbd2b8f86, 0x3f5a1a1b, 0x400938fb, 0xbe0a77b6]

    func check(_ f: (Float) -> Float, _ expected: [UInt32]) {
        for (input, want) in zip(Self.inputs, expected) {
            let x = Float(bitPattern: input)
            let got = f(x).bitPattern
            #expect(got == want, "f(\(x)) = 0x\(String(got, radix: 16)), mlx gives 0x\(String(want, radix: 16))")
        }
    }

    @Test func erfMatchesMLX() { check(MLXMath.erf, Self.erf) }
    @Test func geluMatchesMLX() { check(MLXMath.gelu, Self.gelu) }
    @Test func geluTanhMatchesMLX() { check(MLXMath.geluTanh, Self.geluTanh) }

    /// The polynomial erf stays within its published 1.5e-7 (plus float rounding) of libm's.
    @Test func erfCloseToLibm() {
        for i in -600...600 {
            let x = Float(i) * 0.01
            #expect(abs(MLXMath.erf(x) - Foundation.erf(x)) <= 4e-7)
        }
    }

    static let lnInput: [UInt32] = [
        0xbfa6e4fa, 0xc0165165, 0xbe4971d1, 0x3f9208b3, 0x40249d2c, 0x3f04f83d, 0xbf4e27ca, 0xbfa280f7, 0x3fe61434, 0x406473c5,
        0x3f587526, 0xc00aaa83, 0xbfceea78, 0x406000a0, 0x3f34ad02, 0xc04a8365, 0x3e07ca4a, 0xc001b164, 0xbf756540, 0xbf2d0f19,
        0xbf90354e, 0x3fb4109d, 0x3e31fffb, 0xbf60fd22, 0x3f8f446d, 0x3ffad7cc, 0xc03f1b64, 0xbe5a9553, 0xbfd4abdc, 0xbd3db007,
        0xc011d879, 0x3eaec976, 0x3e659c29, 0xbe9e0ab7, 0xbfe5de83, 0xbefc1951, 0xbff0faee, 0xc01a4448, 0x3f3fe3ea, 0xbff597f5,
        0x4028ff76, 0x3fddd8b0, 0xc06c8542, 0x3f582146, 0xbff3a3b3, 0x3ebb735a, 0x3ec64777, 0xc06b51ab]
    static let lnWeight: [UInt32] = [
        0x3f7a063e, 0x3f7973a8, 0x3f8c5049, 0x3f61c145, 0x3f89726a, 0x3f63ddc6, 0x3f7784da, 0x3f6a7be0, 0x3f928b34, 0x3f8745ec,
        0x3f9f204d, 0x3f88376e, 0x3f8ad0df, 0x3f8ac2c0, 0x3f707883, 0x3f7e3510, 0x3f9148f4, 0x3f75d92a, 0x3f826aa9, 0x3f7f74e9,
        0x3f87cc48, 0x3f76a889, 0x3f7c197b, 0x3f831a3c]
    static let lnBias: [UInt32] = [
        0x3c28cb09, 0xbdb1257c, 0x3db774d4, 0xbe04f6e8, 0xbdf5fd0c, 0xbe0353c1, 0x3dc60932, 0xbd13b487, 0xbdc6de46, 0xbde8a83d,
        0x3d2c7ecd, 0xbdd80808, 0xbe0242c4, 0x3d7b7dd7, 0xbdf515f3, 0xbd041217, 0xba313fee, 0xbd3668cc, 0xbbb1414e, 0x3e091725,
        0xbd53b848, 0xbe00f3fb, 0xbe3c1530, 0xbca7be91]
    static let lnOutput: [UInt32] = [
        0xbf2a562a, 0xbfababe6, 0x3cbe5c60, 0x3efa92a6, 0x3fc14ff0, 0x3e39b60f, 0xbe983cae, 0xbf26de25, 0x3f915790, 0x4005e47c,
        0x3f34a9a2, 0xbfaec196, 0xbf891192, 0x4011fb3e, 0x3e9d1f21, 0xbfe2e5a9, 0x3e133b6b, 0xbf8d6435, 0xbf027b50, 0xbe4c034f,
        0xbf2dae96, 0x3f325c94, 0xbd1029f8, 0xbef632f2, 0x3f7e1bfd, 0x3faef51f, 0xbfb450d1, 0x3d9f7ff2, 0xbf440b46, 0x3e2b6cdd,
        0xbf5463ff, 0x3ef262c1, 0x3eeca320, 0x3d9e1425, 0xbf4d4c6d, 0xbcd7d95c, 0xbf6afe3e, 0xbf87a350, 0x3f1fd8ec, 0xbf46e5e8,
        0x4008e36a, 0x3fa18c4f, 0xbfe86e05, 0x3f7a9b06, 0xbf568544, 0x3ed8f7a6, 0x3ec7c61e, 0xbfea2792]

    /// Width 24 is not a power of two, so mean = Σ·(1/24) and Σ/24 round differently: mlx's is the former.
    @Test func layerNormMatchesMLX() {
        func tensor(_ bits: [UInt32], _ shape: [Int]) -> Tensor { Tensor(shape: shape, data: bits.map(Float.init(bitPattern:))) }
        let out = tensor(Self.lnInput, [2, 24]).layerNorm(weight: tensor(Self.lnWeight, [24]), bias: tensor(Self.lnBias, [24]),
                                                          eps: Float(Double(1e-6)))
        let differing = zip(out.data, Self.lnOutput).filter { $0.0.bitPattern != $0.1 }.count
        #expect(differing == 0, "\(differing) of 48 LayerNorm outputs differ from mlx")
    }
}
