import ParityTensor

/// How close two tensors must be for an invariant to hold.
public enum Tolerance: Sendable, Equatable, CustomStringConvertible {
    /// Zero differing bits.
    case exact
    /// Every element within `k` units in the last place of its counterpart.
    case ulp(Int)
    /// Every element within an absolute distance.
    case atol(Float)
    /// Pair by pair, the same distance as the reference library's own for the same two
    /// schedules (stored in the golden): what a bit-exact port of a library that is not
    /// schedule-invariant must show. Judged in InvariantRegistry with the stored pair.
    case library
    /// PyTorch's accuracy-checker form against a float64 oracle: a path's error within k × the
    /// better path's. Each measurement carries its own atol (k × the better error).
    case ratio(Double)

    public var description: String {
        switch self {
        case .exact: return "exact"
        case .ulp(let k): return "ulp(\(k))"
        case .atol(let x): return "atol(\(TextReport.format(x)))"
        case .library: return "= library"
        case .ratio(let k): return String(format: "<= %gx better", k)
        }
    }

    var isRatio: Bool { if case .ratio = self { return true } else { return false } }

    public func accepts(_ d: Difference) -> Bool {
        guard d.nonFinite == 0 else { return false }
        switch self {
        case .exact: return d.differingElements == 0
        case .ulp(let k): return d.maxULP <= UInt32(k)
        case .atol(let x): return d.maxAbs <= x
        case .library: return false   // needs the library's pair: see Measurement.library
        case .ratio: return false     // needs the better path's error: see Measurement.tolerance
        }
    }
}

extension Float {
    /// Units in the last place between two finite floats (0 for equal bits, +0 and −0 equal).
    public func ulpDistance(to other: Float) -> UInt32 {
        func ordered(_ f: Float) -> Int64 {
            let bits = Int64(Int32(bitPattern: f.bitPattern))
            return bits < 0 ? Int64(Int32.min) - bits : bits
        }
        return UInt32(clamping: abs(ordered(self) - ordered(other)))
    }
}
