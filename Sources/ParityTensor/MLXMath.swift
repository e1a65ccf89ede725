import Foundation

// Float32 elementary functions as the mlx CPU backend evaluates them. mlx does not call libm for
// exp, sin and cos: it evaluates Cephes-style polynomials with fused multiply-adds. Both mirrors
// mirror mlx, so they share these; with them the Swift mirrors reproduce mlx's exp, sigmoid,
// softplus, softmax, RMSNorm and RoPE bit for bit (checked against mlx 0.32.4 on 200k inputs).
// log1p and sqrt do come from libm in mlx, as they do here.

public enum MLXMath {
    /// `eˣ` as `2^round(x·log₂e) · p(frac)`, a degree-6 polynomial; 0 below −88, ∞ above 88.
    @inline(__always)
    public static func exp(_ input: Float) -> Float {
        if input.isNaN { return input }
        if input > 88 { return .infinity }
        if input < -88 { return 0 }
        let x = input * 1.442695
        let whole = (x + 0.5).rounded(.down)
        let fraction = x - whole
        var p: Float = 1.535336188319500e-4
        p = Float(1.339887440266574e-3).addingProduct(p, fraction)
        p = Float(9.618437357674640e-3).addingProduct(p, fraction)
        p = Float(5.550332471162809e-2).addingProduct(p, fraction)
        p = Float(2.402264791363012e-1).addingProduct(p, fraction)
        p = Float(6.931472028550421e-1).addingProduct(p, fraction)
        p = Float(1.0).addingProduct(p, fraction)
        let scale = Float(bitPattern: UInt32(bitPattern: (Int32(whole) + 127) << 23))
        return scale * p
    }

    /// `1 / (1 + e^|x|)`, mirrored for positive x: stable at both ends.
    @inline(__always)
    public static func sigmoid(_ x: Float) -> Float {
        let y = 1 / (1 + exp(abs(x)))
        return x < 0 ? y : 1 - y
    }

    @inline(__always)
    public static func silu(_ x: Float) -> Float { x * sigmoid(x) }

    /// `logaddexp(x, y) = max + log1p(e^(min − max))`.
    @inline(__always)
    public static func logAddExp(_ x: Float, _ y: Float) -> Float {
        let high = max(x, y), low = min(x, y)
        if low == -.infinity || high == .infinity { return high }
        return high + Foundation.log1p(exp(low - high))
    }

    /// `log(1 + eˣ)` as mlx.nn.softplus writes it: `logaddexp(x, 0)`.
    @inline(__always)
    public static func softplus(_ x: Float) -> Float { logAddExp(x, 0) }

    public static func sin(_ x: Float) -> Float { sinCos(x).sin }
    public static func cos(_ x: Float) -> Float { sinCos(x).cos }

    /// Cephes sin/cos: reduce by π/4 in three parts, then one of two polynomials per octant.
    /// Beyond 2²³ the reduction loses meaning and mlx falls back to libm, as here.
    public static func sinCos(_ input: Float) -> (sin: Float, cos: Float) {
        if !(abs(input) <= 8_388_608) {
            return (Foundation.sin(input), Foundation.cos(input))
        }
        var negateSin = input < 0
        var x = abs(input)
        var octant = UInt32(x * 1.27323954473516)
        octant = (octant + 1) & ~1
        let y = Float(octant)
        let swapPolynomials = (octant & 2) != 0
        x = x.addingProduct(y, -0.78515625)
        x = x.addingProduct(y, -2.4187564849853515625e-4)
        x = x.addingProduct(y, -3.77489497744594108e-8)
        negateSin = negateSin != ((octant & 4) != 0)
        let negateCos = ((octant &- 2) & 4) != 0
        let z = x * x
        var c = Float(-1.388731625493765e-3).addingProduct(z, 2.443315711809948e-5)
        var s = Float(8.3321608736e-3).addingProduct(z, -1.9515295891e-4)
        c = Float(4.166664568298827e-2).addingProduct(c, z)
        s = Float(-1.6666654611e-1).addingProduct(s, z)
        c = c * z
        s = s * z
        c = c * z
        s = x.addingProduct(x, s)
        c = c.addingProduct(z, -0.5)
        c = c + 1
        let sinValue = swapPolynomials ? c : s
        let cosValue = swapPolynomials ? s : c
        return (negateSin ? -sinValue : sinValue, negateCos ? cosValue : -cosValue)
    }

    /// mlx's `erf`: the Abramowitz–Stegun 7.1.26 form PyTorch vectorises, with mlx's own exp,
    /// `t = 1/(1 + 0.3275911|x|)` and the polynomial in fused multiply-adds.
    public static func erf(_ x: Float) -> Float {
        let t = 1 / Float(1).addingProduct(0.3275911, abs(x))
        var r = Float(-1.453152027).addingProduct(1.061405429, t)
        r = Float(1.421413741).addingProduct(r, t)
        r = Float(-0.284496736).addingProduct(r, t)
        r = Float(0.254829592).addingProduct(r, t)
        let e = -exp(-x * x)
        let result = Float(1).addingProduct(e * t, r)
        return x > 0 ? result : -result
    }

    // Python floats become float32 scalars by rounding the double, not the decimal text.
    private static let sqrtTwo = Float(Double(2).squareRoot())
    private static let sqrtTwoOverPi = Float((2 / Double.pi).squareRoot())
    private static let cubicCoefficient = Float(Double(0.044715))

    /// `mlx.nn.gelu`: `x · (1 + erf(x / √2)) / 2`, in that order.
    public static func gelu(_ x: Float) -> Float {
        (x * (1 + erf(x / sqrtTwo))) / 2
    }

    /// `mlx.nn.gelu_approx` (GELU(approx="tanh")): `0.5·x · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    /// mlx takes `x**3` and tanh from libm (`powf`, `tanhf`), as this does.
    public static func geluTanh(_ x: Float) -> Float {
        let inner = x + cubicCoefficient * Foundation.pow(x, 3)
        return (0.5 * x) * (1 + Foundation.tanh(sqrtTwoOverPi * inner))
    }
}
