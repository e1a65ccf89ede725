import Foundation

// Renders parity results for people: one table per scenario, a summary, and for every failure
// the command that reproduces it.

public enum TextReport {
    public static func format(_ value: Float) -> String {
        if value == 0 { return "0" }
        if !value.isFinite { return "\(value)" }
        return String(format: "%.2e", Double(value))
    }

    public static func render(_ report: ScenarioReport) -> String {
        var lines: [String] = []
        let calls = report.scenario.calls.count > 8
            ? "\(report.scenario.calls.count) calls"
            : "calls \(report.scenario.calls)"
        lines.append("\(report.file) · \(report.scenario.name) · \(report.reference) vs \(report.implementation) (\(calls))")
        if let error = report.error {
            lines.append("  ERROR  \(error)")
            lines.append("  reproduce: \(report.reproduce)")
            return lines.joined(separator: "\n")
        }
        let width = max(24, report.rows.map(\.item.count).max() ?? 0)
        lines.append("  " + "item".padding(toLength: width, withPad: " ", startingAt: 0)
                     + "max abs".leftPadded(10) + "mean abs".leftPadded(10) + "rel".leftPadded(10) + "  verdict")
        for row in report.rows {
            let d = row.difference
            var line = "  " + row.item.padding(toLength: width, withPad: " ", startingAt: 0)
            line += (d.map { format($0.maxAbs) } ?? "-").leftPadded(10)
            line += (d.map { format($0.meanAbs) } ?? "-").leftPadded(10)
            line += (d.map { format($0.relative) } ?? "-").leftPadded(10)
            line += "  " + row.verdict.rawValue
            if row.verdict == .fail { line += " (tolerance \(row.tolerance))" }
            if !row.note.isEmpty { line += "  " + row.note }
            lines.append(line)
        }
        if let first = report.firstDivergence {
            lines.append("  first divergence: \(first.item)")
            lines.append("  reproduce: \(report.reproduce)")
        }
        return lines.joined(separator: "\n")
    }

    /// One row per invariant × golden: tolerance class, measured value, verdict; failures add the
    /// reproduce command.
    public static func render(_ rows: [InvariantRow]) -> String {
        var lines: [String] = []
        let idWidth = max(10, rows.map(\.invariant.count).max() ?? 0)
        let scenarioWidth = max(8, rows.map(\.scenario.count).max() ?? 0)
        lines.append("invariant".padding(toLength: idWidth, withPad: " ", startingAt: 0) + "  "
                     + "scenario".padding(toLength: scenarioWidth, withPad: " ", startingAt: 0)
                     + "tolerance".leftPadded(11) + "max abs".leftPadded(10) + "differ".leftPadded(8) + "pairs".leftPadded(7) + "  verdict")
        for row in rows {
            var line = row.invariant.padding(toLength: idWidth, withPad: " ", startingAt: 0) + "  "
                + row.scenario.padding(toLength: scenarioWidth, withPad: " ", startingAt: 0)
                + "\(row.tolerance)".leftPadded(11)
                + (row.worst.map { format($0.maxAbs) } ?? "-").leftPadded(10)
                + (row.worst.map { "\($0.differingElements)" } ?? "-").leftPadded(8)
                + "\(row.pairs)".leftPadded(7) + "  " + row.verdict.rawValue
            if !row.detail.isEmpty { line += "  " + row.detail }
            lines.append(line)
            if row.verdict != .pass && row.verdict != .notApplicable { lines.append("    reproduce: \(row.reproduce)") }
        }
        return lines.joined(separator: "\n")
    }

    /// Exact checks of one file: get_rope_index cases and mlx-vlm's rotary tables.
    public static func renderExact(_ rows: [ParityRow], file: String) -> String {
        guard !rows.isEmpty else { return "" }
        let width = max(24, rows.map(\.item.count).max() ?? 0)
        var lines = ["\(file) · mlx-vlm position tables vs vlm mirror (exact)"]
        for row in rows {
            lines.append("  " + row.item.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
                         + row.verdict.rawValue + (row.note.isEmpty ? "" : "  " + row.note))
        }
        return lines.joined(separator: "\n")
    }

    /// "N passed, M failed": skipped or never-run invariants count as failed; a library finding
    /// is a pass of the port, listed on a line of its own after.
    public static func summary(_ rows: [InvariantRow]) -> String {
        let notApplicable = rows.filter { $0.verdict == .notApplicable }.count
        let passed = rows.filter { $0.verdict.isSuccess }.count - notApplicable
        let notRun = rows.filter { $0.verdict == .notRun }.count
        var text = "\(passed) passed, \(rows.count - passed - notApplicable) failed"
        if notRun > 0 { text += " (\(notRun) not run, counted as failed)" }
        if notApplicable > 0 { text += ", \(notApplicable) not applicable to the checkpoint (not failures)" }
        let findings = rows.filter { $0.verdict == .finding }
        if !findings.isEmpty {
            text += "\n\(findings.count) library finding(s): the reference library itself exceeds upstream's bound"
            for f in findings { text += "\n  \(f.invariant) · \(f.scenario): \(f.detail)" }
        }
        return text
    }

    /// Paths against each other: the library's distance beside Swift's, per layer and logits.
    public static func renderComparisons(_ comparisons: [PathComparison], file: String) -> String {
        guard !comparisons.isEmpty else { return "" }
        var lines: [String] = []
        for kind in [PathComparison.Kind.lmVersusVLM, .hazard, .schedules] {
            let group = comparisons.filter { $0.kind == kind }
            guard !group.isEmpty else { continue }
            let title: String
            switch kind {
            case .lmVersusVLM:
                title = "\(file) · mlx_lm ↔ mlx_vlm max abs on the same text schedule: library (goldens) / Swift (lm mirror ↔ vlm mirror)"
            case .hazard:
                title = "\(file) · hazards: max abs |library call − correct call|, library (goldens) / Swift (vlm mirror)"
            case .schedules:
                title = "\(file) · one prompt, two schedules (mlx_vlm): max abs, library (goldens) / Swift (vlm mirror)"
            }
            lines.append(title)
            let width = max(28, group.map(\.scenario.count).max() ?? 0) + 2
            for c in group {
                var line = "  " + c.scenario.padding(toLength: width, withPad: " ", startingAt: 0)
                if let l = c.logits { line += "logits " + format(l.library) + " / " + format(l.swift) }
                let layers = c.rows.filter { $0.item != "logits" }
                if !layers.isEmpty {
                    line += "   layers " + layers.map { "\($0.item.split(separator: " ")[1]):\(format($0.library))/\(format($0.swift))" }
                        .joined(separator: " ")
                }
                lines.append(line)
                lines.append("  " + String(repeating: " ", count: width) + c.explanation)
            }
        }
        return lines.joined(separator: "\n")
    }

    public static func summary(_ reports: [ScenarioReport]) -> String {
        let passed = reports.filter(\.passed).count
        let notRun = reports.filter { $0.rows.contains { $0.verdict == .notRun } }.count
        var text = "\(passed) passed, \(reports.count - passed) failed"
        if notRun > 0 { text += " (\(notRun) not run, counted as failed)" }
        let unstable = reports.filter { $0.rows.contains { $0.verdict == .nondeterministic } }.count
        if unstable > 0 { text += " (\(unstable) nondeterministic: an implementation differed from itself)" }
        return text
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? " " + self : String(repeating: " ", count: width - count) + self
    }
}
