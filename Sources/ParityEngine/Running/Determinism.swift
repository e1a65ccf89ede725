import ParityCore
import ParityTensor

// An implementation must give the same bits every time it runs the same schedule; only then does
// comparing it with a reference mean anything. Every scenario therefore runs twice, and a side
// that differs from itself is reported as such, first, and is not compared with anything else.

public enum Determinism {
    /// One traced tensor whose two runs differ.
    public struct Mismatch: Sendable, Equatable, CustomStringConvertible {
        public var item: String
        public var differing: Int
        public var count: Int
        public var description: String { "\(item): \(differing) of \(count) elements differ" }
    }

    public static let item = "self, 2 runs (bitwise)"

    /// Runs `input` twice on `model`: the first result, and every tensor where the second differs.
    public static func runTwice(_ model: QwenLanguageModel, _ input: ScheduleInput) throws -> (ScheduleResult, [Mismatch]) {
        let first = try ScheduleRunner.run(model, input)
        let second = try ScheduleRunner.run(model, input)
        return (first, mismatches(first, second))
    }

    public static func mismatches(_ a: ScheduleResult, _ b: ScheduleResult) -> [Mismatch] {
        var found: [Mismatch] = []
        func check(_ item: String, _ x: Tensor?, _ y: Tensor?) {
            guard let x, let y else {
                if (x == nil) != (y == nil) { found.append(Mismatch(item: item, differing: 1, count: 1)) }
                return
            }
            guard x.shape == y.shape else {
                found.append(Mismatch(item: item + " (shape \(x.shape) vs \(y.shape))", differing: max(x.count, y.count),
                                      count: max(x.count, y.count)))
                return
            }
            let differing = zip(x.data, y.data).reduce(0) { $0 + ($1.0.bitPattern != $1.1.bitPattern ? 1 : 0) }
            if differing > 0 { found.append(Mismatch(item: item, differing: differing, count: x.count)) }
        }
        check("hidden states", a.hiddenStates, b.hiddenStates)
        check("final norm", a.finalNorm, b.finalNorm)
        check("logits", a.logits, b.logits)
        let (ca, cb) = (a.cacheAfterPrompt ?? [], b.cacheAfterPrompt ?? [])
        if ca.count != cb.count { found.append(Mismatch(item: "cache layer count", differing: 1, count: 1)) }
        for (i, (x, y)) in zip(ca, cb).enumerated() {
            switch (x, y) {
            case let (.attention(p), .attention(q)):
                check("cache layer \(i) keys", p.keys, q.keys)
                check("cache layer \(i) values", p.values, q.values)
            case let (.deltaNet(p), .deltaNet(q)):
                check("cache layer \(i) conv state", p.convState, q.convState)
                check("cache layer \(i) recurrent state", p.recurrentState, q.recurrentState)
            default:
                found.append(Mismatch(item: "cache layer \(i) kind", differing: 1, count: 1))
            }
        }
        return found
    }

    /// The row that leads a scenario report: `pass`, or `nondeterministic` naming what differed.
    static func row(_ mismatches: [Mismatch], of report: ScenarioReport) -> ParityRow {
        ParityRow(file: report.file, scenario: report.scenario.name, reference: report.reference,
                  implementation: report.implementation, item: item, difference: nil, tolerance: .exact,
                  verdict: mismatches.isEmpty ? .pass : .nondeterministic,
                  note: mismatches.prefix(3).map(\.description).joined(separator: "; ")
                      + (mismatches.count > 3 ? "; … (\(mismatches.count) tensors)" : ""))
    }
}
