import Foundation
import ParityCore
import ParityTensor

// `qwen-parity diff`: two sides (goldens or implementations) on one golden scenario, compared
// tensor by tensor: every layer's output with its cache and state, the final norm and the
// logits; the first divergent layer, then that layer's sub-steps; logit metrics; and with a
// third side a 2-of-3 vote on which side departs.

/// A compared tensor, in the order the forward pass produces them.
public enum DiffItem: Hashable, Sendable {
    /// Image prompts: a vision tower step ("patch_embed", "block_01_out", …) or "merged embeddings".
    case vision(String)
    case embeddings
    case layer(Int)
    /// Cache or state of a layer after the prompt: "keys", "values", "conv_state", "recurrent_state".
    case cache(layer: Int, name: String)
    case finalNorm
    case logits
    case subStep(layer: Int, name: String)

    public var layer: Int? {
        switch self {
        case .layer(let i), .cache(let i, _), .subStep(let i, _): return i
        default: return nil
        }
    }

    /// "layer 2", "layer 0 conv state", "layer 3 sdpa".
    public var label: String {
        switch self {
        case .vision(let step): return step == ImagePromptParity.mergedStep ? step : "vision \(step)"
        case .embeddings: return "embeddings"
        case .layer(let i): return "layer \(i)"
        case let .cache(i, name): return "layer \(i) \(DiffItem.cacheLabel(name))"
        case .finalNorm: return "final norm"
        case .logits: return "logits"
        case let .subStep(i, name): return "layer \(i) \(name)"
        }
    }

    static func cacheLabel(_ name: String) -> String {
        switch name {
        case "conv_state": return "conv state"
        case "recurrent_state": return "recurrent state"
        case "keys": return "cached keys"
        case "values": return "cached values"
        default: return name
        }
    }
}

/// How two tensors differ, with the per-element verdict of the pair's tolerance.
public struct TensorDiff: Sendable {
    public var difference: Difference
    /// `max |b − a| / (|a| + ε)` over elements, ε = 2.22e-16 as Polygraphy adds to reference zeros.
    public var maxRelative: Float
    /// `Σ a·b / (‖a‖ ‖b‖)`, in double; 1 when both are zero.
    public var cosine: Double
    /// The earliest token index holding an element past the tolerance (nil: none, or no time axis).
    public var firstPosition: Int?
    public var passes: Bool

    /// Compares `b` with the reference `a` over the valid elements. `timeAxis` indexes tokens and
    /// axis 0 rows; `valid(row, t)` drops left padding.
    public static func measure(_ a: Tensor, _ b: Tensor, timeAxis: Int?, valid: ((Int, Int) -> Bool)?,
                               tolerance: Tolerance) -> TensorDiff {
        precondition(a.shape == b.shape, "[TensorDiff] \(a.shape) vs \(b.shape)")
        var filter: ((Int) -> Bool)?
        if let valid, let timeAxis, a.rank > timeAxis {
            filter = Difference.positionFilter(shape: a.shape, batchAxis: 0, timeAxis: timeAxis, keep: valid)
        }
        let difference = Difference.measure(b, a, include: filter)
        var strides = [Int](repeating: 1, count: a.rank)
        for i in stride(from: a.rank - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * a.shape[i + 1] }
        var maxRelative: Float = 0
        var dot = 0.0, normA = 0.0, normB = 0.0
        var first: Int?
        for i in 0..<a.count where filter?(i) ?? true {
            let (x, y) = (a.data[i], b.data[i])
            dot += Double(x) * Double(y); normA += Double(x) * Double(x); normB += Double(y) * Double(y)
            let fails: Bool
            if !x.isFinite || !y.isFinite {
                fails = x.bitPattern != y.bitPattern
                if fails { maxRelative = .infinity }
            } else {
                maxRelative = max(maxRelative, abs(y - x) / (abs(x) + 2.22e-16))
                switch tolerance {
                case .exact: fails = x.bitPattern != y.bitPattern
                case .ulp(let k): fails = x.ulpDistance(to: y) > UInt32(k)
                case .atol(let limit): fails = abs(y - x) > limit
                case .library, .ratio: fails = x.bitPattern != y.bitPattern
                }
            }
            if fails, let timeAxis, a.rank > timeAxis {
                let t = (i / strides[timeAxis]) % a.shape[timeAxis]
                first = min(first ?? t, t)
            }
        }
        var cosine = 1.0
        if difference.differingElements > 0 {
            cosine = normA == 0 && normB == 0 ? 1 : (normA == 0 || normB == 0 ? 0 : min(1, dot / (normA * normB).squareRoot()))
        }
        return TensorDiff(difference: difference, maxRelative: maxRelative, cosine: cosine,
                          firstPosition: first, passes: tolerance.accepts(difference))
    }
}

/// One compared item.
public struct DiffRow: Sendable {
    public enum Status: String, Sendable {
        /// Every compared bit is equal.
        case identical = "="
        /// Not bit-identical but within the tolerance.
        case within = "ok"
        case differs = "DIFF"
        /// Not available on one side (e.g. a sub-step the golden does not store).
        case missing = "-"
    }

    public var item: DiffItem
    public var shape: [Int]?
    public var diff: TensorDiff?
    public var status: Status
    public var note: String = ""
    /// CRADLE/LEMON rate of change of the mean abs deviation (hidden-state rows only).
    public var rate: Double?
    /// For sub-step rows: what the sub-step is.
    public var meaning: String = ""
    /// For sub-step rows: the earliest token whose value differs; for a state, the last token
    /// of the first call after which it differs.
    public var eventToken: Int?
    /// For state sub-steps of a multi-call scenario: the first call (0-based) after which it differs.
    public var eventCall: Int?
}

/// Where two sides first part.
public struct DivergencePoint: Sendable {
    public var item: DiffItem
    /// Earliest token index with an element past the tolerance, if the item has a time axis.
    public var position: Int?
    /// The call (0-based) that token belongs to, and the number of calls.
    public var call: Int?
    public var calls: Int
    /// The first divergent sub-step of the item's layer, when both sides provide sub-steps.
    public var subStep: String?
    /// Set when that sub-step is a state that already differed after an earlier call (0-based)
    /// and was carried into the call where the outputs part.
    public var stateCall: Int?
    public var carriedState: Bool { stateCall != nil }

    public var sentence: String {
        var s = item.label
        if let subStep {
            s += ", sub-step \(subStep)"
            if let c = stateCall { s += " after call \(c + 1) of \(calls), carried into the next call" }
        }
        if let position {
            s += " (outputs from token \(position)"
            if let call, calls > 1 { s += ", call \(call + 1) of \(calls)" }
            s += ")"
        }
        return s
    }
}

/// The sub-steps of one layer, side by side.
public struct SubStepTable: Sendable {
    public var layer: Int
    public var kind: LayerKind
    public var rows: [DiffRow]

    /// The differing sub-step with the earliest event token; at equal tokens the earlier one in
    /// computation order (a change can only reach sub-steps after it).
    public var firstDivergentRow: DiffRow? {
        rows.enumerated().filter { $0.element.status == .differs }
            .min { ($0.element.eventToken ?? .max, $0.offset) < ($1.element.eventToken ?? .max, $1.offset) }?.element
    }

    public var firstDivergent: String? { firstDivergentRow?.item.subStepName }
}

extension DiffItem {
    var subStepName: String? { if case .subStep(_, let name) = self { return name } else { return nil } }
}

/// Distribution-level comparison of the logits (`a` is the reference).
public struct LogitMetrics: Sendable {
    public struct Flip: Sendable {
        public var row: Int
        public var position: Int
        public var referenceTop: Int
        public var otherTop: Int
        /// The reference's top-1 minus top-2 logit.
        public var margin: Float
    }

    public static let topK = 5

    /// A top-1 flip whose reference margin is at most this is within noise: twice the largest
    /// logit distance the libraries themselves show for this pair on this golden (a margin moves
    /// by at most twice what each logit moves); 0 for sides that must agree bit for bit.
    public var noiseFloor: Float
    /// Where the floor comes from, printed beside it.
    public var noiseFloorSource: String

    public var compared: Int
    public var klMean: Double
    public var klMax: Double
    public var klMaxRow: Int
    public var klMaxPosition: Int
    public var top1Agree: Int
    /// Flips where the reference's margin exceeds the noise floor.
    public var flips: [Flip]
    /// Flips inside the noise floor.
    public var noiseFlips: [Flip]
    /// Mean of |top-k(a) ∩ top-k(b)| / k.
    public var topKOverlap: Double

    /// `a`, `b`: `[B, P, V]`; `positions[p]` is the token index of column p; `valid(row, t)`.
    public static func measure(_ a: Tensor, _ b: Tensor, positions: [Int], valid: ((Int, Int) -> Bool)?,
                               noiseFloor: (value: Float, source: String)) -> LogitMetrics {
        precondition(a.shape == b.shape && a.rank == 3, "[LogitMetrics] \(a.shape) vs \(b.shape)")
        let (B, P, V) = (a.shape[0], a.shape[1], a.shape[2])
        var m = LogitMetrics(noiseFloor: noiseFloor.value, noiseFloorSource: noiseFloor.source, compared: 0, klMean: 0,
                             klMax: 0, klMaxRow: 0, klMaxPosition: 0, top1Agree: 0, flips: [], noiseFlips: [], topKOverlap: 0)
        var klSum = 0.0, overlapSum = 0.0
        for r in 0..<B {
            for p in 0..<P where valid?(r, positions[p]) ?? true {
                let base = (r * P + p) * V
                let x = Array(a.data[base..<(base + V)]), y = Array(b.data[base..<(base + V)])
                let kl = klDivergence(x, y)
                klSum += kl
                if kl > m.klMax || m.compared == 0 { m.klMax = kl; m.klMaxRow = r; m.klMaxPosition = positions[p] }
                let topA = topIndices(x, k: topK), topB = topIndices(y, k: topK)
                overlapSum += Double(Set(topA).intersection(topB).count) / Double(topK)
                if topA[0] == topB[0] {
                    m.top1Agree += 1
                } else {
                    let flip = Flip(row: r, position: positions[p], referenceTop: topA[0], otherTop: topB[0],
                                    margin: V > 1 ? x[topA[0]] - x[topA[1]] : .infinity)
                    if flip.margin > m.noiseFloor { m.flips.append(flip) } else { m.noiseFlips.append(flip) }
                }
                m.compared += 1
            }
        }
        if m.compared > 0 {
            m.klMean = klSum / Double(m.compared)
            m.topKOverlap = overlapSum / Double(m.compared)
        }
        return m
    }

    /// KL(p‖q) of the softmax distributions of two logit rows, in double.
    static func klDivergence(_ x: [Float], _ y: [Float]) -> Double {
        func logSoftmax(_ v: [Float]) -> [Double] {
            let m = Double(v.max() ?? 0)
            let total = v.reduce(0.0) { $0 + Foundation.exp(Double($1) - m) }
            let log = Foundation.log(total) + m
            return v.map { Double($0) - log }
        }
        let (lp, lq) = (logSoftmax(x), logSoftmax(y))
        var kl = 0.0
        for i in lp.indices { kl += Foundation.exp(lp[i]) * (lp[i] - lq[i]) }
        return max(kl, 0)
    }

    /// Indices of the `k` largest values, largest first; ties go to the lower index.
    static func topIndices(_ v: [Float], k: Int) -> [Int] {
        Array(v.indices.sorted { v[$0] != v[$1] ? v[$0] > v[$1] : $0 < $1 }.prefix(k))
    }
}

/// The 2-of-3 vote: with three sides, which one departs from the other two.
public struct Vote: Sendable {
    public struct Pair: Sendable {
        public var a: String
        public var b: String
        public var tolerance: PairBound
        public var firstDivergence: DiffItem?
    }

    public var sides: [String]
    public var pairs: [Pair]
    /// The side that disagrees with both others while they agree, if any.
    public var departing: String?
    public var agreeing: [String]
    /// Where the departing side leaves the others, and the first divergent sub-step there.
    public var at: DiffItem?
    public var subStep: String?
    public var verdict: String
}

public struct SideLabel: Sendable {
    public var id: String
    public var title: String
}

public struct DiffReport: Sendable {
    public var file: String
    public var path: String
    public var scenario: GoldenScenario
    public var a: SideLabel
    public var b: SideLabel
    public var tolerance: PairBound
    public var rows: [DiffRow]
    public var first: DivergencePoint?
    public var drillDown: SubStepTable?
    /// Why there is no sub-step table, or what it lacks.
    public var drillNote: String?
    public var logits: LogitMetrics?
    public var vote: Vote?
    public var reproduce: String

    public var agrees: Bool { first == nil && (vote?.departing == nil) }
}

public enum Diff {
    /// `sides[0]` is the reference `a`, `sides[1]` the compared `b`; a third side adds the vote.
    /// `layer` asks for that layer's sub-steps (default: the first divergent layer's).
    public static func run(_ golden: GoldenFile, scenario name: String, sides: [DiffSide], layer: Int? = nil,
                           tolerance override: Tolerance? = nil, reproduce: String? = nil) throws -> DiffReport {
        precondition(sides.count >= 2, "[Diff] needs two sides")
        let scenario = try golden.scenario(name)
        let config = golden.config
        if let layer, layer < 0 || layer >= config.layerKinds.count {
            throw DiffError.badLayer(layer, layers: config.layerKinds.count)
        }
        let valid = try validity(golden, scenario)
        let request = DiffRequest(golden: golden, scenario: scenario, subStepLayers: Set(config.layerKinds.indices))
        let captures = try sides.map { try $0.capture(request) }
        let (a, b) = (sides[0], sides[1])
        let bounds = PairBounds(golden: golden, scenario: scenario, override: override)
        let tolerance = try bounds(a, b)

        var rows = layerRows(captures[0], captures[1], config: config, bound: tolerance, valid: valid)
        addRates(&rows)
        var first = divergence(rows, calls: scenario.calls)
        let drillLayer = layer ?? first?.item.layer
        var drill: SubStepTable?
        var drillNote: String?
        if let drillLayer {
            let table = subStepTable(drillLayer, captures[0], captures[1], sides: (a.id, b.id), config: config,
                                     bound: tolerance, valid: valid, calls: scenario.calls)
            let missing = [(a, captures[0]), (b, captures[1])].filter { $0.1.subSteps[drillLayer]?.isEmpty ?? true }.map { $0.0 }
            if missing.count == 2 || (missing.count == 1 && table.rows.allSatisfy({ $0.status == .missing })) {
                drillNote = "no sub-steps for layer \(drillLayer): " + missing.map { subStepAvailability($0, golden: golden, scenario: scenario) }.joined(separator: "; ")
            } else {
                drill = table
                if !missing.isEmpty {
                    drillNote = missing.map { subStepAvailability($0, golden: golden, scenario: scenario) }.joined(separator: "; ")
                }
                if first?.item.layer == drillLayer, let row = table.firstDivergentRow {
                    first?.subStep = row.item.subStepName
                    if let c = row.eventCall, let call = first?.call, c < call { first?.stateCall = c }
                }
            }
        }
        var logits: LogitMetrics?
        if let aligned = alignedLogits(captures[0], captures[1]) {
            logits = LogitMetrics.measure(aligned.0, aligned.1, positions: aligned.2, valid: valid,
                                          noiseFloor: try bounds.noiseFloor(a, b))
        }
        var vote: Vote?
        if sides.count >= 3 {
            vote = try self.vote(sides, captures, config: config, valid: valid, bounds: bounds, calls: scenario.calls)
        }
        let names = sides.map(\.id)
        return DiffReport(file: golden.name, path: golden.path, scenario: scenario,
                          a: SideLabel(id: a.id, title: a.title), b: SideLabel(id: b.id, title: b.title),
                          tolerance: tolerance, rows: rows, first: first, drillDown: drill, drillNote: drillNote,
                          logits: logits, vote: vote,
                          reproduce: reproduce ?? "qwen-parity diff \(golden.path) --scenario \(name) --a \(names[0]) --b \(names[1])"
                            + (names.count > 2 ? " --c \(names[2])" : ""))
    }


    static func validity(_ golden: GoldenFile, _ scenario: GoldenScenario) throws -> ((Int, Int) -> Bool)? {
        guard scenario.kind == .batch else { return nil }
        let padding = try golden.ints("/inputs/batch/left_padding", expectingRank: 1).values.map { Int($0) }
        return { row, t in row >= padding.count || t >= padding[row] }
    }

    /// The canonical items: embeddings, each layer followed by its cache, final norm, logits.
    static func layerRows(_ x: DiffCapture, _ y: DiffCapture, config: TextConfig, bound: PairBound,
                          valid: ((Int, Int) -> Bool)?) -> [DiffRow] {
        func row(_ item: DiffItem, _ a: Tensor?, _ b: Tensor?, timeAxis: Int?, _ bound: PairBound,
                 _ valid: ((Int, Int) -> Bool)?) -> DiffRow {
            var r = Diff.row(item, a, b, timeAxis: timeAxis, bound.tolerance(for: item), valid)
            if bound.unmeasured(item), a != nil, b != nil {
                r.status = .missing
                r.note = "no library distance for this item in the golden: not judged"
            }
            return r
        }
        var rows: [DiffRow] = []
        for step in x.visionOrder where y.vision[step] != nil || x.vision[step] != nil {
            rows.append(row(.vision(step), x.vision[step], y.vision[step], timeAxis: nil, bound, valid))
        }
        rows.append(row(.embeddings, x.hidden.first, y.hidden.first, timeAxis: 1, bound, valid))
        for (i, kind) in config.layerKinds.enumerated() {
            rows.append(row(.layer(i), x.hidden.count > i + 1 ? x.hidden[i + 1] : nil,
                            y.hidden.count > i + 1 ? y.hidden[i + 1] : nil, timeAxis: 1, bound, valid))
            let names = kind == .linearAttention ? ["conv_state", "recurrent_state"] : ["keys", "values"]
            for name in names {
                let (p, q) = (x.cache[i]?[name], y.cache[i]?[name])
                if p == nil && q == nil { continue }   // uncached scenario
                rows.append(row(.cache(layer: i, name: name), p, q, timeAxis: name == "keys" || name == "values" ? 2 : nil, bound, valid))
            }
        }
        rows.append(row(.finalNorm, x.finalNorm, y.finalNorm, timeAxis: 1, bound, valid))
        if var aligned = alignedLogits(x, y) {
            if let measuredAt = bound.logitsPositions {   // judged only where the library measured
                let keep = aligned.2.indices.filter { measuredAt.contains(aligned.2[$0]) }
                if keep.count < aligned.2.count, !keep.isEmpty {
                    func pick(_ t: Tensor) -> Tensor { Tensor.concatenate(keep.map { t.slice(axis: 1, start: $0, length: 1) }, axis: 1) }
                    aligned = (pick(aligned.0), pick(aligned.1), keep.map { aligned.2[$0] })
                }
            }
            let positions = aligned.2
            var r = row(.logits, aligned.0, aligned.1, timeAxis: 1, bound, valid.map { v in { b, i in v(b, positions[i]) } })
            if let first = r.diff?.firstPosition { r.diff?.firstPosition = positions[first] }
            rows.append(r)
        } else {
            rows.append(DiffRow(item: .logits, shape: nil, diff: nil, status: .missing, note: "no logits at common positions"))
        }
        return rows
    }

    static func row(_ item: DiffItem, _ a: Tensor?, _ b: Tensor?, timeAxis: Int?, _ tolerance: Tolerance,
                    _ valid: ((Int, Int) -> Bool)?) -> DiffRow {
        guard let a, let b else {
            return DiffRow(item: item, shape: (a ?? b)?.shape, diff: nil, status: .missing,
                           note: a == nil ? "missing on side a" : "missing on side b")
        }
        guard a.shape == b.shape else {
            return DiffRow(item: item, shape: a.shape, diff: nil, status: .differs, note: "shape \(a.shape) vs \(b.shape)")
        }
        let d = TensorDiff.measure(a, b, timeAxis: timeAxis, valid: valid, tolerance: tolerance)
        let status: DiffRow.Status = !d.passes ? .differs : (d.difference.differingElements == 0 ? .identical : .within)
        return DiffRow(item: item, shape: a.shape, diff: d, status: status)
    }

    /// R_l = (δ_l − max δ_k<l) / (max δ_k<l + ε) over the hidden-state rows, δ = mean abs deviation.
    /// ε sits far below one ulp of an O(1) activation spread over a tensor, so the first layer
    /// that moves off an exact match stands out.
    static let rateEpsilon = 1e-12

    static func addRates(_ rows: inout [DiffRow]) {
        var previousMax: Double?
        for i in rows.indices {
            switch rows[i].item {
            case .embeddings, .layer, .finalNorm: break
            default: continue
            }
            guard let d = rows[i].diff else { continue }
            let delta = Double(d.difference.meanAbs)
            if let m = previousMax { rows[i].rate = (delta - m) / (m + rateEpsilon) }
            previousMax = max(previousMax ?? delta, delta)
        }
    }

    static func divergence(_ rows: [DiffRow], calls: [Int]) -> DivergencePoint? {
        guard let row = rows.first(where: { $0.status == .differs }) else { return nil }
        var point = DivergencePoint(item: row.item, position: row.diff?.firstPosition, call: nil, calls: calls.count)
        if let t = point.position {
            var start = 0
            for (k, n) in calls.enumerated() {
                if t < start + n { point.call = k; break }
                start += n
            }
        }
        return point
    }

    /// A layer's sub-steps side by side. A state sub-step (no time axis) of a multi-call scenario
    /// is stacked per call, `[calls, …]` (ImplementationSide does so), and dated by the last token
    /// of the first call after which it differs.
    static func subStepTable(_ layer: Int, _ x: DiffCapture, _ y: DiffCapture, sides: (String, String), config: TextConfig,
                             bound: PairBound, valid: ((Int, Int) -> Bool)?, calls: [Int]) -> SubStepTable {
        let kind = config.layerKinds[layer]
        var ends: [Int] = []
        for n in calls { ends.append((ends.last ?? -1) + n) }
        let rows = SubSteps.catalogue(for: kind, isMoE: config.isMoE).map { step -> DiffRow in
            let (p, q) = (x.subSteps[layer]?[step.name], y.subSteps[layer]?[step.name])
            let stacked = step.timeAxis == nil && calls.count > 1
            var r = row(.subStep(layer: layer, name: step.name), p, q, timeAxis: stacked ? 0 : step.timeAxis,
                        bound.tolerance(for: .subStep(layer: layer, name: step.name)),
                        stacked ? nil : valid)
            r.meaning = step.meaning
            if r.status == .missing { r.note = "not in " + (p == nil ? sides.0 : sides.1) }
            if !bound.subStepsFromLayer, bound.unmeasured(.subStep(layer: layer, name: step.name)), p != nil, q != nil {
                r.status = .missing
                r.note = "no library distance for this sub-step in the golden: not judged"
            }
            if r.status == .differs {
                if step.timeAxis != nil {
                    r.eventToken = r.diff?.firstPosition
                } else if stacked, let c = r.diff?.firstPosition, c < ends.count {
                    r.eventCall = c
                    r.eventToken = step.isCallInput ? ends[c] - calls[c] + 1 : ends[c]
                    if step.isCallInput { r.eventCall = nil }
                } else {
                    r.eventToken = step.isCallInput ? 0 : ends.last
                }
            }
            return r
        }
        return SubStepTable(layer: layer, kind: kind, rows: rows)
    }

    static func subStepAvailability(_ side: DiffSide, golden: GoldenFile, scenario: GoldenScenario) -> String {
        if let g = side as? GoldenSide {
            return "\(side.id) stores sub-steps only as probes" + (g.probeSummary(golden).map { " (\($0))" } ?? " (this golden has none)")
        }
        return "\(side.id) traced none"
    }

    /// Both sides' logits at the token indices both store, in `a`'s order.
    static func alignedLogits(_ x: DiffCapture, _ y: DiffCapture) -> (Tensor, Tensor, [Int])? {
        guard let p = x.logits, let q = y.logits else { return nil }
        let index = Dictionary(y.logitsPositions.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        let common = x.logitsPositions.enumerated().compactMap { i, t in index[t].map { (i, $0, t) } }
        guard !common.isEmpty, p.shape[0] == q.shape[0], p.shape[2] == q.shape[2] else { return nil }
        func pick(_ t: Tensor, _ columns: [Int]) -> Tensor {
            columns.count == t.shape[1] && columns == Array(0..<t.shape[1]) ? t
                : Tensor.concatenate(columns.map { t.slice(axis: 1, start: $0, length: 1) }, axis: 1)
        }
        return (pick(p, common.map(\.0)), pick(q, common.map(\.1)), common.map(\.2))
    }

    // MARK: - Vote

    static func vote(_ sides: [DiffSide], _ captures: [DiffCapture], config: TextConfig,
                     valid: ((Int, Int) -> Bool)?, bounds: PairBounds, calls: [Int]) throws -> Vote {
        let n = sides.count
        var pairRows: [[Int]: [DiffRow]] = [:]
        var pairs: [Vote.Pair] = []
        for i in 0..<n {
            for j in (i + 1)..<n {
                let tolerance = try bounds(sides[i], sides[j])
                let rows = layerRows(captures[i], captures[j], config: config, bound: tolerance, valid: valid)
                pairRows[[i, j]] = rows
                pairs.append(Vote.Pair(a: sides[i].id, b: sides[j].id, tolerance: tolerance,
                                       firstDivergence: rows.first { $0.status == .differs }?.item))
            }
        }
        var result = Vote(sides: sides.map(\.id), pairs: pairs, departing: nil, agreeing: [], at: nil, subStep: nil, verdict: "")
        if let oracle = sides.firstIndex(where: { bounds.numerics($0) == OracleSide.numerics }) {
            return try oracleVote(result, oracle: oracle, sides, captures, pairRows, config: config, valid: valid,
                                  bounds: bounds, calls: calls)
        }
        // The earliest item where any pair parts. Pairs can list different rows (a cache only one
        // side stores), so items are matched by value, ordered as the longest pair lists them.
        let canonical = pairRows.values.max { $0.count < $1.count }!.map(\.item)
        let firsts = pairRows.values.compactMap { $0.first { $0.status == .differs }?.item }
        guard let item = firsts.min(by: { (canonical.firstIndex(of: $0) ?? .max) < (canonical.firstIndex(of: $1) ?? .max) }) else {
            result.agreeing = sides.map(\.id)
            result.verdict = "all \(n) sides agree on every layer, cache, logit and the final norm"
            return result
        }
        func agree(_ i: Int, _ j: Int) -> Bool {
            pairRows[[min(i, j), max(i, j)]]!.first { $0.item == item }.map { $0.status != .differs } ?? true
        }
        result.at = item
        // A side departs when it disagrees with every other side while those all agree.
        let departing = (0..<n).filter { s in
            let others = (0..<n).filter { $0 != s }
            return others.allSatisfy { !agree(s, $0) }
                && others.allSatisfy { p in others.allSatisfy { q in p == q || agree(p, q) } }
        }
        guard departing.count == 1, let d = departing.first else {
            let parted = pairs.filter { p in
                let (i, j) = (result.sides.firstIndex(of: p.a)!, result.sides.firstIndex(of: p.b)!)
                return !agree(i, j)
            }.map { "\($0.a) ≠ \($0.b)" }
            result.verdict = "no majority at \(item.label): \(parted.joined(separator: ", "))"
            return result
        }
        let majority = (0..<n).filter { $0 != d }
        result.departing = sides[d].id
        result.agreeing = majority.map { sides[$0].id }
        // Name the sub-step against a majority side that has this layer's sub-steps: an
        // implementation first (it traces every layer), else a golden with probes there.
        if let layer = item.layer {
            // A witness of the departing side's own library compares bit for bit.
            func rank(_ s: Int) -> Int {
                (bounds.numerics(sides[s]) == bounds.numerics(sides[d]) ? 0 : 2) + (sides[s].isGolden ? 1 : 0)
            }
            let witness = majority.sorted { rank($0) < rank($1) }
                .first { !(captures[$0].subSteps[layer]?.isEmpty ?? true) }
            if let w = witness, !(captures[d].subSteps[layer]?.isEmpty ?? true) {
                let tolerance = try bounds(sides[w], sides[d])
                result.subStep = subStepTable(layer, captures[w], captures[d], sides: (sides[w].id, sides[d].id), config: config,
                                              bound: tolerance, valid: valid, calls: calls).firstDivergent
            }
        }
        let titles = majority.map { sides[$0].title }
        var verdict = titles.count == 2 ? "\(titles[0]) agrees with \(titles[1])" : "\(titles.joined(separator: ", ")) agree"
        verdict += "; \(sides[d].title) departs at \(item.label)"
        if let s = result.subStep { verdict += ", \(s)" }
        result.verdict = verdict
        return result
    }

    /// With the float64 oracle as a side, the oracle is the arbiter rather than one vote of three:
    /// two MLX-side implementations that share a fault agree with each other and would outvote it.
    /// Every side that departs from the oracle by more than its own library's distance from it is
    /// named, with the layer and sub-step where it leaves.
    static func oracleVote(_ base: Vote, oracle o: Int, _ sides: [DiffSide], _ captures: [DiffCapture],
                           _ pairRows: [[Int]: [DiffRow]], config: TextConfig, valid: ((Int, Int) -> Bool)?,
                           bounds: PairBounds, calls: [Int]) throws -> Vote {
        var result = base
        let others = sides.indices.filter { $0 != o }
        func rows(_ s: Int) -> [DiffRow] { pairRows[[min(s, o), max(s, o)]]! }
        let departures = try others.compactMap { s -> (side: Int, item: DiffItem, subStep: String?)? in
            guard let item = rows(s).first(where: { $0.status == .differs })?.item else { return nil }
            var subStep: String?
            if let layer = item.layer, !(captures[o].subSteps[layer]?.isEmpty ?? true), !(captures[s].subSteps[layer]?.isEmpty ?? true) {
                subStep = subStepTable(layer, captures[o], captures[s], sides: (sides[o].id, sides[s].id), config: config,
                                       bound: try bounds(sides[o], sides[s]), valid: valid, calls: calls).firstDivergent
            }
            return (s, item, subStep)
        }
        let staying = others.filter { s in !departures.contains { $0.side == s } }
        result.agreeing = ([o] + staying).map { sides[$0].id }
        guard let first = departures.first else {
            result.verdict = "every side is within its library's own distance from the float64 oracle on every layer, cache, logit and the final norm"
            return result
        }
        result.departing = departures.map { sides[$0.side].id }.joined(separator: " and ")
        result.at = first.item
        result.subStep = first.subStep
        let named = departures.map { d in
            "\(sides[d.side].title) departs from the float64 oracle at \(d.item.label)" + (d.subStep.map { ", \($0)" } ?? "")
        }
        result.verdict = named.joined(separator: "; ")
        if departures.count == 2, let i = others.first, let j = others.last,
           !(pairRows[[min(i, j), max(i, j)]]!.contains { $0.status == .differs }) {
            result.verdict += " — and they agree with each other: a fault they share, which a 2-of-3 vote without the oracle would miss"
        } else if !staying.isEmpty {
            result.verdict += "; " + staying.map { sides[$0].title }.joined(separator: ", ") + " stays within its library's distance"
        }
        return result
    }
}
