import ParityTensor

// The sub-steps that are bookkeeping rather than arithmetic: which keys each query sees, which
// tokens the GatedDeltaNet treats as real, the cache offset a call starts at, and the rotary
// positions. Both mirrors record them in these shapes and compute on what the trace hands back,
// so a fault injected into one of them acts like the bug it stands for (a mask that lets a
// query see padding, an offset that advances wrongly, an MRoPE axis read from the wrong row).

/// The keys each query sees, one interval `[first, end)` per row and query: the `attn_mask`
/// sub-step `[B, L, 2]` (the libraries' masks are always one interval: left padding below,
/// causality above).
public struct KeyIntervals: Sendable {
    public let batch: Int, queries: Int
    var bounds: [Int]

    public init(batch: Int, queries: Int) {
        self.batch = batch; self.queries = queries
        bounds = [Int](repeating: 0, count: 2 * batch * queries)
    }

    public subscript(b: Int, i: Int) -> (Int, Int) {
        get { (bounds[2 * (b * queries + i)], bounds[2 * (b * queries + i) + 1]) }
        set { bounds[2 * (b * queries + i)] = newValue.0; bounds[2 * (b * queries + i) + 1] = newValue.1 }
    }

    public var tensor: Tensor { Tensor(shape: [batch, queries, 2], data: bounds.map(Float.init)) }

    /// Query `i` of row `b`'s keys from an explicit `[B, L, T]` mask, which must be one interval.
    public mutating func set(_ b: Int, _ i: Int, explicit mask: [Bool], keys T: Int) {
        let base = (b * queries + i) * T
        let row = Array(mask[base..<(base + T)])
        let first = row.firstIndex(of: true) ?? 0, end = (row.lastIndex(of: true) ?? -1) + 1
        precondition(row[first..<max(first, end)].allSatisfy { $0 }, "[attention mask] row \(b) query \(i) is not one interval")
        self[b, i] = (first, end)
    }

    init(_ t: Tensor) {
        batch = t.shape[0]; queries = t.shape[1]
        bounds = t.data.map { Int($0.rounded(.down)) }
    }

    /// Records `attn_mask` and returns the intervals the layer attends with.
    public func tapped(_ trace: SubStepTrace) -> KeyIntervals {
        guard trace.isActive else { return self }
        return KeyIntervals(trace.tap("attn_mask", tensor))
    }
}

public enum BookkeepingSteps {
    /// `ssm_mask` `[B, L]`: 1 for a real token, 0 for padding (all ones when the call has no
    /// mask). Returns the mask the layer computes with.
    public static func ssmMask(_ realTokens: [Bool]?, batch B: Int, steps S: Int, trace: SubStepTrace) -> [Bool]? {
        guard trace.isActive else { return realTokens }
        let values = (realTokens ?? [Bool](repeating: true, count: B * S)).map { $0 ? Float(1) : 0 }
        let tapped = trace.tap("ssm_mask", Tensor(shape: [B, S], data: values))
        if realTokens == nil && !tapped.data.contains(0) { return nil }
        return tapped.data.map { $0 != 0 }
    }

    /// `kv_offset` `[B]`: the cache position each row's call starts at. Returns the offsets the
    /// layer computes with.
    public static func cacheOffsets(_ offsets: [Int], trace: SubStepTrace) -> [Int] {
        guard trace.isActive else { return offsets }
        return trace.tap("kv_offset", Tensor(shape: [offsets.count], data: offsets.map(Float.init))).data.map { Int($0.rounded(.down)) }
    }

    /// `rope_positions` `[B, L, 3]` of a text call: `offset + t` on all three axes (T, H, W), the
    /// layout of the MRoPE positions of the vlm route (rows first, so padding can be left out).
    public static func textRopePositions(offsets: [Int], length L: Int) -> Tensor {
        ropePositions(batch: offsets.count, length: L) { _, b, t in offsets[b] + t }
    }

    /// `rope_positions` `[B, L, 3]` from any position function of (axis, row, token).
    public static func ropePositions(batch B: Int, length L: Int, _ position: (Int, Int, Int) -> Int) -> Tensor {
        var data = [Float](repeating: 0, count: B * L * 3)
        for b in 0..<B { for t in 0..<L { for axis in 0..<3 { data[(b * L + t) * 3 + axis] = Float(position(axis, b, t)) } } }
        return Tensor(shape: [B, L, 3], data: data)
    }
}
