// mlx's CPU `argpartition`: indices 0..<n arranged by the C++ standard library's nth_element
// (libstdc++'s introselect), ordered by value with ties to the lower index. Only the partition
// property is specified, but the MoE sums its top-k experts in the order the indices are left
// in, so for k > 2 the arrangement itself decides the last bits of the result.

public enum ArgPartition {
    /// The indices of `values` after mlx's `argpartition(values, kth:)` along one row.
    public static func indices(_ values: [Float], kth: Int) -> [Int] {
        precondition(values.isEmpty || (0..<values.count).contains(kth), "[argpartition] kth \(kth) out of 0..<\(values.count)")
        var idx = Array(values.indices)
        guard idx.count > 1 else { return idx }
        var selection = Selection(values: values)
        selection.nthElement(&idx, nth: kth)
        return idx
    }

    /// mlx-lm's router selection `argpartition(p, kth: -k)[..., -k:]`: the k largest values'
    /// indices, in the order argpartition leaves them.
    public static func topK(_ values: [Float], k: Int) -> [Int] {
        precondition(k >= 1 && k <= values.count, "[argpartition] top-\(k) of \(values.count)")
        return Array(indices(values, kth: values.count - k).suffix(k))
    }
}

/// The introselect algorithm step by step: median-of-three pivot moved to the front, an
/// unguarded Hoare partition, a heap select once the depth budget 2·⌊log2 n⌋ is spent, and an
/// insertion sort for the last three or fewer elements.
private struct Selection {
    let values: [Float]

    func less(_ a: Int, _ b: Int) -> Bool {
        values[a] < values[b] || (values[a] == values[b] && a < b)
    }

    mutating func nthElement(_ idx: inout [Int], nth: Int) {
        var first = 0, last = idx.count
        var depth = 2 * (Int.bitWidth - 1 - idx.count.leadingZeroBitCount)
        while last - first > 3 {
            if depth == 0 {
                heapSelect(&idx, first: first, middle: nth + 1, last: last)
                idx.swapAt(first, nth)
                return
            }
            depth -= 1
            let cut = partitionAroundMedian(&idx, first: first, last: last)
            if cut <= nth { first = cut } else { last = cut }
        }
        insertionSort(&idx, first: first, last: last)
    }

    private func partitionAroundMedian(_ idx: inout [Int], first: Int, last: Int) -> Int {
        let a = first + 1, b = first + (last - first) / 2, c = last - 1
        let median: Int
        if less(idx[a], idx[b]) {
            median = less(idx[b], idx[c]) ? b : (less(idx[a], idx[c]) ? c : a)
        } else {
            median = less(idx[a], idx[c]) ? a : (less(idx[b], idx[c]) ? c : b)
        }
        idx.swapAt(first, median)
        var lo = first + 1, hi = last
        while true {
            while less(idx[lo], idx[first]) { lo += 1 }
            hi -= 1
            while less(idx[first], idx[hi]) { hi -= 1 }
            if !(lo < hi) { return lo }
            idx.swapAt(lo, hi)
            lo += 1
        }
    }

    private func insertionSort(_ idx: inout [Int], first: Int, last: Int) {
        guard last - first > 1 else { return }
        for i in (first + 1)..<last {
            let v = idx[i]
            if less(v, idx[first]) {
                for j in stride(from: i, to: first, by: -1) { idx[j] = idx[j - 1] }
                idx[first] = v
            } else {
                var j = i
                while less(v, idx[j - 1]) { idx[j] = idx[j - 1]; j -= 1 }
                idx[j] = v
            }
        }
    }

    private func heapSelect(_ idx: inout [Int], first: Int, middle: Int, last: Int) {
        let length = middle - first
        if length >= 2 {
            var parent = (length - 2) / 2
            while true {
                adjustHeap(&idx, first: first, hole: parent, length: length, value: idx[first + parent])
                if parent == 0 { break }
                parent -= 1
            }
        }
        for i in middle..<last where less(idx[i], idx[first]) {
            let v = idx[i]
            idx[i] = idx[first]
            adjustHeap(&idx, first: first, hole: 0, length: length, value: v)
        }
    }

    /// Sifts the hole down to a leaf along the larger children, then pushes `value` back up.
    private func adjustHeap(_ idx: inout [Int], first: Int, hole start: Int, length: Int, value: Int) {
        var hole = start, child = start
        while child < (length - 1) / 2 {
            child = 2 * (child + 1)
            if less(idx[first + child], idx[first + child - 1]) { child -= 1 }
            idx[first + hole] = idx[first + child]
            hole = child
        }
        if length % 2 == 0 && child == (length - 2) / 2 {
            child = 2 * (child + 1)
            idx[first + hole] = idx[first + child - 1]
            hole = child - 1
        }
        var parent = (hole - 1) / 2
        while hole > start && less(idx[first + parent], value) {
            idx[first + hole] = idx[first + parent]
            hole = parent
            parent = (hole - 1) / 2
        }
        idx[first + hole] = value
    }
}
