import ParityTensor

/// How far one tensor is from a reference: max and mean absolute difference, the reference's
/// scale, and how many elements were not finite on either side.
public struct Difference: Sendable, Equatable {
    public var maxAbs: Float = 0
    public var meanAbs: Float = 0
    public var referenceMaxAbs: Float = 0
    public var compared: Int = 0
    public var nonFinite: Int = 0
    /// Elements whose bits differ (NaN counts as differing).
    public var differingElements: Int = 0
    /// Flat index of the largest difference.
    public var worstIndex: Int = 0
    /// Largest distance in units in the last place, and how many elements fall in each bucket
    /// of `ulpBuckets` (1, 2, 3–4, 5–8, 9–16, 17–256, more).
    public var maxULP: UInt32 = 0
    public var ulpHistogram: [Int] = Array(repeating: 0, count: Difference.ulpBuckets.count)
    public static let ulpBuckets: [(label: String, upTo: UInt32)] =
        [("1", 1), ("2", 2), ("3-4", 4), ("5-8", 8), ("9-16", 16), ("17-256", 256), (">256", .max)]

    /// `maxAbs` relative to the reference's largest magnitude.
    public var relative: Float { referenceMaxAbs > 0 ? maxAbs / referenceMaxAbs : (maxAbs > 0 ? .infinity : 0) }

    /// The worse of two differences over disjoint element sets.
    public func merged(with other: Difference) -> Difference {
        var d = maxAbs >= other.maxAbs ? self : other
        let total = compared + other.compared
        d.meanAbs = total > 0 ? (meanAbs * Float(compared) + other.meanAbs * Float(other.compared)) / Float(total) : 0
        d.compared = total
        d.referenceMaxAbs = max(referenceMaxAbs, other.referenceMaxAbs)
        d.nonFinite = nonFinite + other.nonFinite
        d.differingElements = differingElements + other.differingElements
        d.maxULP = max(maxULP, other.maxULP)
        d.ulpHistogram = zip(ulpHistogram, other.ulpHistogram).map(+)
        return d
    }

    /// "3 differ: 1:2 2:1" — the ULP histogram's non-empty buckets.
    public var histogramText: String {
        zip(Difference.ulpBuckets, ulpHistogram).filter { $0.1 > 0 }.map { "\($0.0.label)ulp:\($0.1)" }.joined(separator: " ")
    }

    /// Compares `actual` with `reference` (same shape) over the elements `include` admits.
    public static func measure(_ actual: Tensor, _ reference: Tensor, include: ((Int) -> Bool)? = nil) -> Difference {
        precondition(actual.shape == reference.shape, "[Difference] \(actual.shape) vs \(reference.shape)")
        var d = Difference()
        var sum: Double = 0
        for i in 0..<actual.count where include?(i) ?? true {
            let a = actual.data[i], r = reference.data[i]
            d.compared += 1
            if a.bitPattern != r.bitPattern || a.isNaN { d.differingElements += 1 }
            guard a.isFinite, r.isFinite else { d.nonFinite += 1; continue }
            let ulps = a.ulpDistance(to: r)
            if ulps > 0 {
                d.maxULP = max(d.maxULP, ulps)
                d.ulpHistogram[Difference.ulpBuckets.firstIndex { ulps <= $0.upTo }!] += 1
            }
            let diff = abs(a - r)
            sum += Double(diff)
            if diff > d.maxAbs { d.maxAbs = diff; d.worstIndex = i }
            d.referenceMaxAbs = max(d.referenceMaxAbs, abs(r))
        }
        d.meanAbs = d.compared > 0 ? Float(sum / Double(d.compared)) : 0
        return d
    }

    /// An element filter for a tensor whose axes `batchAxis` and `timeAxis` index rows and
    /// positions: keeps the elements where `keep(row, position)` holds.
    public static func positionFilter(shape: [Int], batchAxis: Int, timeAxis: Int,
                                      keep: @escaping (Int, Int) -> Bool) -> (Int) -> Bool {
        var strides = [Int](repeating: 1, count: shape.count)
        for i in stride(from: shape.count - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * shape[i + 1] }
        let (bStride, bSize, tStride, tSize) = (strides[batchAxis], shape[batchAxis], strides[timeAxis], shape[timeAxis])
        return { index in keep((index / bStride) % bSize, (index / tStride) % tSize) }
    }
}
