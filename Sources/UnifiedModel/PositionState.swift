import ParityCore
import VLMMirror

// mirrors mlx-engine's PatchedQwen3_5TextModel position bookkeeping (the "Qwen 3.5 Unified"
// change, lmstudio-ai/mlx-engine #298; numerics spec §3.6): the patched text model stores the
// prompt's MRoPE position ids [3, B, Lp] and rope deltas, and _compute_position_ids picks each
// call's positions from them and the cache offset.
// Shapes: B rows, L tokens in this call, Lp stored prompt positions, T/H/W the three MRoPE axes.

public enum UnifiedModelError: Error, CustomStringConvertible, Equatable {
    /// Stored position ids without rope deltas: the decode positions would be unknown.
    case positionsWithoutRopeDeltas(length: Int)
    /// Stored rope deltas without position ids: the prompt's positions would be unknown.
    case ropeDeltasWithoutPositions(deltas: [Int])
    /// The stored state (or explicit positions) has another batch size than the call.
    case batchMismatch(state: Int, call: Int)
    case invalidState(String)
    /// The lm and vlm configs do not describe one set of weights.
    case incompatibleConfigs([String])

    public var description: String {
        switch self {
        case let .positionsWithoutRopeDeltas(length):
            return "unified model: \(length) stored MRoPE positions but no rope deltas; set both (or clear the prediction state)"
        case let .ropeDeltasWithoutPositions(deltas):
            return "unified model: stored rope deltas \(deltas) but no MRoPE positions; set both (or clear the prediction state)"
        case let .batchMismatch(state, call): return "unified model: positions for \(state) row(s), the call has \(call)"
        case let .invalidState(s): return "unified model: \(s)"
        case let .incompatibleConfigs(d): return "unified model: the lm and vlm configs differ: " + d.joined(separator: "; ")
        }
    }
}

/// What the patched text model keeps between the calls of one prediction.
public struct MultimodalPositionState: Equatable, Sendable {
    /// The prompt's MRoPE positions `[3, B, Lp]` (`position_ids`).
    public var positionIds: PositionIDs?
    /// `rope_deltas`, one per row (or one for every row): max position + 1 − prompt length.
    public var ropeDeltas: [Int]?

    public init(positionIds: PositionIDs? = nil, ropeDeltas: [Int]? = nil) {
        self.positionIds = positionIds
        self.ropeDeltas = ropeDeltas
    }

    public var isEmpty: Bool { positionIds == nil && ropeDeltas == nil }
}

/// One forward call as the unified model ran it: the observable hook the invariants read.
public struct UnifiedCall: Equatable, Sendable {
    public enum Route: String, Sendable {
        /// No 3-D positions: the mlx-lm mirror's maths (RoPE from the cache offset, sequential GDN).
        case text = "mlx-lm"
        /// 3-D positions: the mlx-vlm mirror's MRoPE attention and GatedDeltaNet.
        case mrope = "mlx-vlm MRoPE"
    }
    public var route: Route
    /// The first attention layer's offset before the call: where this chunk starts.
    public var cacheOffset: Int
    public var length: Int
    /// The `[3, B, L]` positions the call ran with (nil on the text route).
    public var positions: PositionIDs?
}

/// Deliberate mistakes, for tests that prove each invariant can fail. Internal: reachable only
/// through `@testable import`.
enum UnifiedFault: String, CaseIterable, Sendable {
    /// clearPredictionState does nothing: the previous prompt's positions leak into the next.
    case skipClearPredictionState
    /// Every chunk inside the stored positions takes them from index 0, not from the cache offset.
    case restartPositionsPerChunk
    /// The stored slice starts one past the cache offset.
    case offByOneSlice
    /// A chunk that runs past the stored positions gets sequential positions for all its tokens
    /// instead of the stored slice stitched to a sequential tail.
    case noStitchPastStoredEnd
    /// The cache is put back as it was after every call.
    case cacheDoesNotAdvance
}

extension MultimodalPositionState {
    /// `_compute_position_ids`: the `[3, B, L]` positions of a call of `L` tokens starting at
    /// cache offset `offset`, or nil (the mlx-lm route) when nothing is stored.
    /// - inside the stored positions: their slice `[offset, offset + L)`; tokens past the stored end
    ///   are stitched on as `index + delta`, i.e. `offset + delta + arange` continued;
    /// - after them: `offset + delta + arange(L)` on all three axes.
    func positions(batch B: Int, length L: Int, offset: Int, faults: Set<UnifiedFault> = []) throws -> PositionIDs? {
        let stored: PositionIDs, deltas: [Int]
        switch (positionIds, ropeDeltas) {
        case (nil, nil): return nil
        case let (p?, nil): throw UnifiedModelError.positionsWithoutRopeDeltas(length: p.length)
        case let (nil, d?): throw UnifiedModelError.ropeDeltasWithoutPositions(deltas: d)
        case let (p?, d?): (stored, deltas) = (p, d)
        }
        guard stored.batch == B else { throw UnifiedModelError.batchMismatch(state: stored.batch, call: B) }
        guard deltas.count == 1 || deltas.count == B else {
            throw UnifiedModelError.invalidState("\(deltas.count) rope deltas for \(B) row(s)")
        }
        let Lp = stored.length
        let inside = offset < Lp
        let crossesEnd = offset + L > Lp
        let sliceStart = faults.contains(.restartPositionsPerChunk) ? 0
            : faults.contains(.offByOneSlice) ? offset + 1 : offset
        let useStored = inside && !(faults.contains(.noStitchPastStoredEnd) && crossesEnd)
        var values = [Int](repeating: 0, count: 3 * B * L)
        for b in 0..<B {
            let delta = deltas[deltas.count == 1 ? 0 : b]
            for t in 0..<L {
                let j = sliceStart + t
                for axis in 0..<3 {
                    values[(axis * B + b) * L + t] = useStored && j < Lp
                        ? stored.at(axis: axis, row: b, t: j)
                        : offset + t + delta
                }
            }
        }
        return PositionIDs(batch: B, length: L, values: values)
    }
}

extension PositionIDs {
    init(_ p: VLMPositions) {
        let three = p.threeAxes
        self.init(batch: three.batch, length: three.length, values: three.values)
    }

    var vlm: VLMPositions { VLMPositions(axes: 3, batch: batch, length: length, values: values) }

    /// `positions[..., start : start + count]`.
    func sliced(from start: Int, count: Int) -> PositionIDs {
        PositionIDs(vlm.sliced(from: start, count: count))
    }
}
