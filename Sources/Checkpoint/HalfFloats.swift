// bfloat16 and float16 as stored in checkpoints: widening to float32 (exact) and rounding back
// (round to nearest, ties to even), the latter only to mirror mlx arithmetic done in 16 bits.

public enum HalfFloat {
    /// bfloat16 bits → float32: the bf16 bits are the top half of the float32 bits, so this is exact.
    @inline(__always)
    public static func widenBF16(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// IEEE binary16 bits → float32, exact (subnormals, infinities and NaN included).
    @inline(__always)
    public static func widenF16(_ bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = Int((bits >> 10) & 0x1F)
        let mantissa = UInt32(bits & 0x03FF)
        switch exponent {
        case 0:
            // Zero or subnormal: mantissa · 2^-24, exactly representable in float32.
            let magnitude = Float(mantissa) * 0x1p-24
            return Float(bitPattern: sign | magnitude.bitPattern)
        case 0x1F:
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        default:
            return Float(bitPattern: sign | (UInt32(exponent - 15 + 127) << 23) | (mantissa << 13))
        }
    }

    /// float32 → nearest bfloat16 (ties to even), returned widened. NaN stays NaN.
    @inline(__always)
    public static func roundToBF16(_ x: Float) -> Float {
        let bits = x.bitPattern
        if x.isNaN { return Float(bitPattern: (bits | 0x0040_0000) & 0xFFFF_0000) }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return Float(bitPattern: rounded & 0xFFFF_0000)
    }

    /// float32 → nearest float16 (ties to even), returned widened; overflow gives ±Inf.
    @inline(__always)
    public static func roundToF16(_ x: Float) -> Float {
        widenF16(f16Bits(x))
    }

    /// float32 → binary16 bits, round to nearest even.
    public static func f16Bits(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        let sign = UInt16((bits >> 16) & 0x8000)
        if x.isNaN { return sign | 0x7E00 }
        let magnitude = abs(x)
        if magnitude >= 65520 { return sign | 0x7C00 }            // rounds to infinity
        if magnitude < 0x1p-14 {                                  // subnormal or zero in f16
            // Scale so one f16 subnormal ulp (2^-24) is 1, then round to nearest even.
            let scaled = magnitude * 0x1p24
            return sign | UInt16(scaled.rounded(.toNearestOrEven))
        }
        let m = bits & 0x7FFF_FFFF
        // Rebias the exponent (127 → 15) and round the 23-bit mantissa to 10 bits.
        let rebased = m &- (112 << 23)
        let rounded = rebased &+ 0x0FFF &+ ((rebased >> 13) & 1)
        return sign | UInt16(truncatingIfNeeded: rounded >> 13)
    }
}
