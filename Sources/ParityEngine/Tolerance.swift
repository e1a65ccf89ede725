import ParityTensor

/// How close two tensors must be for an invariant to hold.
public enum Tolerance: Sendable, Equatable, CustomStringConvertible {
    /// Zero differing bits.
    case exact
    /// Every element within `k` units in the last place of its counterpart.
    case ulp(Int)
    /// Every element within an absolute distance.
    case atol(Float)

    public var description: String {
        switch self {
        case .exact: return "exact"
        case .ulp(let k): return "ulp(\(k))"
        case .atol(let x): return "atol(\(TextReport.format(x)))"
        }
    }

    public func accepts(_ d: Difference) -> Bool {
        guard d.nonFinite == 0 else { return false }
        switch self {
        case .exact: return d.differingElements == 0
        case .ulp(let k): return d.maxULP <= UInt32(k)
        case .atol(let x): return d.maxAbs <= x
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
