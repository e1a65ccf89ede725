import Foundation
import ParityCore

// Renders a DiffReport for a terminal (ANSI colours only when asked, i.e. when stdout is a
// terminal) and as JSON for machines.

/// ANSI styling, or none.
public struct TerminalStyle: Sendable {
    public var colours: Bool

    public init(colours: Bool) { self.colours = colours }

    /// Colours when stdout is a terminal, unless NO_COLOR is set or TERM is "dumb".
    public static func detect() -> TerminalStyle {
        let env = ProcessInfo.processInfo.environment
        return TerminalStyle(colours: isatty(STDOUT_FILENO) != 0 && env["NO_COLOR"] == nil && env["TERM"] != "dumb")
    }

    func paint(_ s: String, _ code: String) -> String { colours ? "\u{1B}[\(code)m\(s)\u{1B}[0m" : s }
    func red(_ s: String) -> String { paint(s, "31") }
    func boldRed(_ s: String) -> String { paint(s, "1;31") }
    func green(_ s: String) -> String { paint(s, "32") }
    func yellow(_ s: String) -> String { paint(s, "33") }
    func dim(_ s: String) -> String { paint(s, "2") }
    func bold(_ s: String) -> String { paint(s, "1") }
}

public enum DiffText {
    static func number(_ v: Float) -> String { TextReport.format(v) }

    static func number(_ v: Double) -> String {
        if v == 0 { return "0" }
        if !v.isFinite { return "\(v)" }
        return String(format: "%.2e", v)
    }

    /// "1", "1-3.2e-09" (below 1 by that much), or the value.
    static func cosine(_ c: Double) -> String {
        if c == 1 { return "1" }
        if c > 0.9999 { return String(format: "1-%.1e", 1 - c) }
        return String(format: "%.6f", c)
    }

    /// Log-scale bar of a max abs difference: empty at 1e-8 or less, 10 cells at 1.
    static func bar(_ maxAbs: Float) -> String {
        guard maxAbs > 0 else { return "" }
        guard maxAbs.isFinite else { return String(repeating: "█", count: 10) }
        let eighths = Int((((log10(Double(maxAbs)) + 8) / 8) * 80).rounded())
        let clamped = min(max(eighths, 1), 80)
        let partial = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"]
        return String(repeating: "█", count: clamped / 8) + partial[clamped % 8]
    }

    static func pad(_ s: String, _ width: Int) -> String { s.padding(toLength: max(width, s.count), withPad: " ", startingAt: 0) }

    static func status(_ row: DiffRow, _ style: TerminalStyle) -> String {
        let text = pad(row.status.rawValue, 4)
        switch row.status {
        case .identical: return style.green(text)
        case .within: return style.yellow(text)
        case .differs: return style.red(text)
        case .missing: return style.dim(text)
        }
    }

    static func metrics(_ row: DiffRow) -> String {
        guard let d = row.diff else { return "-".leftPadded(10) + "-".leftPadded(10) + "-".leftPadded(10) + "-".leftPadded(11) }
        return number(d.difference.maxAbs).leftPadded(10) + number(d.difference.meanAbs).leftPadded(10)
            + number(d.maxRelative).leftPadded(10) + cosine(d.cosine).leftPadded(11)
    }

    public static func render(_ r: DiffReport, style: TerminalStyle) -> String {
        var lines: [String] = []
        let calls = r.scenario.calls.count > 8 ? "\(r.scenario.calls.count) calls" : "calls \(r.scenario.calls)"
        lines.append(style.bold("\(r.file) · \(r.scenario.name) (\(calls)) · tolerance \(r.tolerance)"))
        if r.tolerance.isMeasured {
            lines.append(style.dim("  bound per item: the libraries' own distance, \(r.tolerance.source)"))
        }
        lines.append("  a = \(r.a.id) (\(r.a.title))   b = \(r.b.id) (\(r.b.title))")
        let width = 20
        lines.append(style.dim("  " + pad("item", width) + "max abs".leftPadded(10) + "mean abs".leftPadded(10) + "max rel".leftPadded(10)
                               + "cosine".leftPadded(11) + "R_l".leftPadded(10) + "differ".leftPadded(8) + "  ·"))
        let kinds = rowKinds(r)
        for row in r.rows {
            var label: String
            switch row.item {
            case .layer(let i): label = "layer \(i)  " + (kinds[i] ?? "")
            case .cache(_, let name): label = "  " + DiffItem.cacheLabel(name)
            default: label = row.item.label
            }
            let isFirst = r.first?.item == row.item
            let plain = TerminalStyle(colours: false), cellStyle = isFirst ? plain : style
            var line = "  " + pad(label, width) + metrics(row)
            line += (row.rate.map { number($0) } ?? "").leftPadded(10)
            line += (row.diff.map { "\($0.difference.differingElements)" } ?? "").leftPadded(8)
            line += "  " + status(row, cellStyle)
            if let d = row.diff { line += " " + (row.status == .differs ? cellStyle.red(bar(d.difference.maxAbs)) : bar(d.difference.maxAbs)) }
            if !row.note.isEmpty { line += "  " + cellStyle.dim(row.note) }
            lines.append(isFirst ? style.boldRed(line + "  ◀ first divergence") : line)
        }
        lines.append(style.dim("  R_l = (δ_l − max δ_k<l) / (max δ_k<l + 1e-12), δ = mean abs; = bit-identical, ok within tolerance"))
        lines.append("")
        if let first = r.first {
            lines.append(style.boldRed("first divergence: \(first.sentence)"))
            if first.subStep == nil, let call = first.call, call > 0, let t = first.position,
               t == r.scenario.calls.prefix(call).reduce(0, +) {
                lines.append("  token \(t) opens call \(call + 1): call \(call + 1) itself differs, or state carried from call \(call) does (see the cache rows)")
            }
        } else {
            let identical = r.rows.filter { $0.status == .identical }.count
            let within = r.rows.filter { $0.status == .within }.count
            lines.append(style.green("no divergence: \(identical) item(s) bit-identical, \(within) within \(r.tolerance)"))
        }
        if let table = r.drillDown {
            lines.append("")
            lines += render(table, a: r.a, b: r.b, style: style)
        }
        if let note = r.drillNote { lines.append(style.dim("  " + note)) }
        if let logits = r.logits, let row = r.rows.first(where: { $0.item == .logits }) {
            lines.append("")
            lines += render(logits, row: row, style: style)
        }
        if let vote = r.vote {
            lines.append("")
            lines += render(vote, style: style)
        }
        lines.append("")
        lines.append("reproduce: \(r.reproduce)")
        return lines.joined(separator: "\n")
    }

    static func rowKinds(_ r: DiffReport) -> [Int: String] {
        var kinds: [Int: String] = [:]
        for row in r.rows {
            if case .cache(let i, let name) = row.item { kinds[i] = name == "keys" || name == "values" ? "attn" : "gdn" }
        }
        if let t = r.drillDown { kinds[t.layer] = SubSteps.shortName(t.kind) }
        return kinds
    }

    static func render(_ table: SubStepTable, a: SideLabel, b: SideLabel, style: TerminalStyle) -> [String] {
        var lines: [String] = []
        let kind = table.kind == .linearAttention ? "GatedDeltaNet" : "attention"
        lines.append(style.bold("layer \(table.layer) (\(kind)) sub-steps, a = \(a.id), b = \(b.id)"))
        lines.append(style.dim("  " + pad("sub-step", 15) + pad("shape", 17) + "max abs".leftPadded(10) + "mean abs".leftPadded(10)
                               + "max rel".leftPadded(10) + "cosine".leftPadded(11) + "differ".leftPadded(8) + "  ·     what"))
        let first = table.firstDivergent
        for row in table.rows {
            guard case .subStep(_, let name) = row.item else { continue }
            let cellStyle = name == first ? TerminalStyle(colours: false) : style
            var line = "  " + pad(name, 15) + pad(row.shape.map { "\($0)" } ?? "-", 17) + metrics(row)
            line += (row.diff.map { "\($0.difference.differingElements)" } ?? "").leftPadded(8)
            line += "  " + status(row, cellStyle) + "  " + cellStyle.dim(row.status == .missing ? "\(row.meaning) (\(row.note))" : row.meaning)
            lines.append(name == first ? style.boldRed(line + "  ◀ first divergent sub-step") : line)
        }
        let compared = table.rows.filter { $0.status != .missing }.count
        if let first, let row = table.firstDivergentRow {
            var text = "  first divergent sub-step: \(first)"
            if let c = row.eventCall { text += ", after call \(c + 1) (token \(row.eventToken ?? 0))" }
            else if let t = row.eventToken { text += ", from token \(t)" }
            lines.append(text + "  (earliest token first, then computation order)")
        } else {
            lines.append("  no sub-step differs (\(compared) compared)")
        }
        return lines
    }

    static func render(_ m: LogitMetrics, row: DiffRow, style: TerminalStyle) -> [String] {
        var lines: [String] = []
        lines.append(style.bold("logits over \(m.compared) position(s), a is the reference"))
        lines.append("  KL(a‖b)       mean \(number(m.klMean)), max \(number(m.klMax)) at row \(m.klMaxRow), token \(m.klMaxPosition)")
        let flipText = m.flips.isEmpty ? "none" : m.flips.prefix(5).map(flip).joined(separator: "; ")
            + (m.flips.count > 5 ? "; … \(m.flips.count - 5) more" : "")
        let top1 = "  top-1 agree   \(m.top1Agree)/\(m.compared); flips past the noise floor (margin > \(number(m.noiseFloor)), \(m.noiseFloorSource)): \(m.flips.count)"
        lines.append(m.flips.isEmpty ? top1 : style.red(top1))
        if !m.flips.isEmpty { lines.append("                " + flipText) }
        let noise = m.noiseFlips.isEmpty ? "none" : m.noiseFlips.prefix(5).map(flip).joined(separator: "; ")
        lines.append("  within noise  \(m.noiseFlips.count) flip(s): \(noise)")
        lines.append(String(format: "  top-%d overlap %.1f %%", LogitMetrics.topK, m.topKOverlap * 100))
        if let d = row.diff?.difference {
            var text = "  exact         \(d.differingElements) of \(d.compared) elements differ"
            if d.differingElements > 0 { text += "; ULP \(d.histogramText), max \(d.maxULP)" }
            lines.append(text)
        }
        return lines
    }

    static func flip(_ f: LogitMetrics.Flip) -> String {
        "row \(f.row) token \(f.position): a top-1 \(f.referenceTop), b top-1 \(f.otherTop), a's margin \(number(f.margin))"
    }

    static func render(_ v: Vote, style: TerminalStyle) -> [String] {
        var lines = [style.bold("2-of-3 vote: \(v.sides.joined(separator: ", "))")]
        let width = v.pairs.map { $0.a.count + $0.b.count + 3 }.max() ?? 10
        for p in v.pairs {
            let text = p.firstDivergence.map { "part at \($0.label)" } ?? "agree on every item"
            lines.append("  " + pad("\(p.a) ~ \(p.b)", width) + "  " + pad("\(p.tolerance)", 10) + text)
        }
        for source in Set(v.pairs.filter(\.tolerance.isMeasured).map(\.tolerance.source)).sorted() {
            lines.append(style.dim("  library bound per item: \(source)"))
        }
        let verdict = "verdict: " + v.verdict
        lines.append(v.departing == nil && v.at != nil ? style.yellow(verdict) : (v.departing == nil ? style.green(verdict) : style.boldRed(verdict)))
        return lines
    }

    // MARK: - JSON

    public static func json(_ r: DiffReport) throws -> Data {
        struct Metrics: Encodable {
            var maxAbs, meanAbs, maxRel: Float
            var cosine: Double
            var differing, compared: Int
            var maxULP: UInt32
            var ulpHistogram: [String: Int]
            var firstPosition: Int?
        }
        struct Row: Encodable {
            var item: String, layer: Int?, shape: [Int]?, status: String, note: String?
            var rate: Double?, metrics: Metrics?
        }
        struct Divergence: Encodable {
            var item: String, layer: Int?, subStep: String?, position: Int?, call: Int?, carriedState: Bool
        }
        struct Flip: Encodable { var row, position, referenceTop, otherTop: Int; var margin: Float }
        struct Logits: Encodable {
            var compared: Int, klMean, klMax: Double, klMaxRow, klMaxPosition, top1Agree: Int
            var noiseFloor: Float, noiseFloorSource: String, flips, noiseFlips: [Flip], topK: Int, topKOverlap: Double
        }
        struct Pair: Encodable { var a, b, tolerance: String; var firstDivergence: String? }
        struct VoteJSON: Encodable {
            var sides: [String], pairs: [Pair], departing: String?, agreeing: [String]
            var at: String?, subStep: String?, verdict: String
        }
        struct Side: Encodable { var id, title: String }
        struct Report: Encodable {
            var file, path, scenario: String, calls: [Int], a, b: Side, tolerance: String, agrees: Bool
            var rows: [Row], firstDivergence: Divergence?, subSteps: [Row]?, subStepLayer: Int?, subStepNote: String?
            var logits: Logits?, vote: VoteJSON?, reproduce: String
        }
        func metrics(_ d: TensorDiff?) -> Metrics? {
            d.map { d in
                Metrics(maxAbs: d.difference.maxAbs, meanAbs: d.difference.meanAbs, maxRel: d.maxRelative, cosine: d.cosine,
                        differing: d.difference.differingElements, compared: d.difference.compared, maxULP: d.difference.maxULP,
                        ulpHistogram: Dictionary(uniqueKeysWithValues: zip(Difference.ulpBuckets.map(\.label), d.difference.ulpHistogram).filter { $0.1 > 0 }),
                        firstPosition: d.firstPosition)
            }
        }
        func row(_ x: DiffRow) -> Row {
            Row(item: x.item.label, layer: x.item.layer, shape: x.shape, status: x.status.rawValue,
                note: x.note.isEmpty ? nil : x.note, rate: x.rate, metrics: metrics(x.diff))
        }
        func flips(_ f: [LogitMetrics.Flip]) -> [Flip] {
            f.map { Flip(row: $0.row, position: $0.position, referenceTop: $0.referenceTop, otherTop: $0.otherTop, margin: $0.margin) }
        }
        let report = Report(
            file: r.file, path: r.path, scenario: r.scenario.name, calls: r.scenario.calls,
            a: Side(id: r.a.id, title: r.a.title), b: Side(id: r.b.id, title: r.b.title), tolerance: "\(r.tolerance)",
            agrees: r.agrees, rows: r.rows.map(row),
            firstDivergence: r.first.map { Divergence(item: $0.item.label, layer: $0.item.layer, subStep: $0.subStep,
                                                     position: $0.position, call: $0.call, carriedState: $0.carriedState) },
            subSteps: r.drillDown.map { $0.rows.map(row) }, subStepLayer: r.drillDown?.layer, subStepNote: r.drillNote,
            logits: r.logits.map { m in
                Logits(compared: m.compared, klMean: m.klMean, klMax: m.klMax, klMaxRow: m.klMaxRow, klMaxPosition: m.klMaxPosition,
                       top1Agree: m.top1Agree, noiseFloor: m.noiseFloor, noiseFloorSource: m.noiseFloorSource, flips: flips(m.flips), noiseFlips: flips(m.noiseFlips),
                       topK: LogitMetrics.topK, topKOverlap: m.topKOverlap)
            },
            vote: r.vote.map { v in
                VoteJSON(sides: v.sides, pairs: v.pairs.map { Pair(a: $0.a, b: $0.b, tolerance: "\($0.tolerance)", firstDivergence: $0.firstDivergence?.label) },
                         departing: v.departing, agreeing: v.agreeing, at: v.at?.label, subStep: v.subStep, verdict: v.verdict)
            },
            reproduce: r.reproduce)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try encoder.encode(report)
    }
}
