import Foundation

// Machine-readable reports of an invariant run: JSON, JUnit XML (for CI) and a markdown summary.

public enum ReportFiles {
    /// Writes `parity.json`, `parity-junit.xml` and `parity.md` into `directory`, each through a
    /// temporary file renamed into place, so a killed run never leaves a half-written report.
    public static func write(_ rows: [InvariantRow], to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try atomicWrite(json(rows), to: directory + "/parity.json")
        try atomicWrite(Data(junit(rows).utf8), to: directory + "/parity-junit.xml")
        try atomicWrite(Data(markdown(rows).utf8), to: directory + "/parity.md")
    }

    /// Through `AtomicFile`: flushed before the rename, and temporaries of killed runs swept.
    static func atomicWrite(_ data: Data, to path: String) throws {
        try AtomicFile.write(data, to: URL(fileURLWithPath: path))
    }

    static func json(_ rows: [InvariantRow]) throws -> Data {
        struct Row: Encodable {
            var invariant, compares, scenario, tolerance, verdict, detail, reproduce: String
            var maxAbs: Float?, differingElements: Int?, maxULP: UInt32?, pairs: Int, worstPair: String
        }
        let encoded = rows.map {
            Row(invariant: $0.invariant, compares: $0.compares, scenario: $0.scenario, tolerance: "\($0.tolerance)",
                verdict: $0.verdict.rawValue, detail: $0.detail, reproduce: $0.reproduce,
                maxAbs: $0.worst?.maxAbs.isFinite == true ? $0.worst?.maxAbs : nil,
                differingElements: $0.worst?.differingElements, maxULP: $0.worst?.maxULP,
                pairs: $0.pairs, worstPair: $0.worstLabel)
        }
        struct Finding: Encodable {
            var invariant, scenario, library, detail: String
            var libraryMaxAbs: Float, upstreamBound: Float
        }
        struct Report: Encodable { var rows: [Row]; var libraryFindings: [Finding] }
        let findings = rows.filter { $0.verdict == .finding }.map {
            Finding(invariant: $0.invariant, scenario: $0.scenario, library: $0.library ?? "", detail: $0.detail,
                    libraryMaxAbs: $0.libraryWorst ?? 0, upstreamBound: $0.upstreamBound ?? 0)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(Report(rows: encoded, libraryFindings: findings))
    }

    static func junit(_ rows: [InvariantRow]) -> String {
        func escape(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
        }
        let failures = rows.filter { $0.verdict == .fail || $0.verdict == .notRun }.count
        let errors = rows.filter { $0.verdict == .error }.count
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        xml += "<testsuite name=\"qwen-parity\" tests=\"\(rows.count)\" failures=\"\(failures)\" errors=\"\(errors)\">\n"
        for row in rows {
            xml += "  <testcase classname=\"\(escape(row.scenario))\" name=\"\(escape(row.invariant))\">"
            switch row.verdict {
            case .pass: break
            case .notApplicable: xml += "<skipped message=\"\(escape("not applicable: " + row.detail))\"/>"
            case .finding: xml += "<system-out>\(escape("library finding: " + row.detail))</system-out>"
            case .fail, .notRun:
                xml += "<failure message=\"\(escape(row.verdict.rawValue + ": " + row.detail))\">\(escape(row.reproduce))</failure>"
            case .error:
                xml += "<error message=\"\(escape(row.detail))\">\(escape(row.reproduce))</error>"
            }
            xml += "</testcase>\n"
        }
        xml += "</testsuite>\n"
        // Findings about the library, apart from the port's verdicts: a suite of their own.
        let findings = rows.filter { $0.verdict == .finding }
        if !findings.isEmpty {
            xml += "<testsuite name=\"library-findings\" tests=\"\(findings.count)\" failures=\"0\" errors=\"0\">\n"
            for row in findings {
                xml += "  <testcase classname=\"\(escape(row.scenario))\" name=\"\(escape(row.invariant))\">"
                xml += "<system-out>\(escape(row.detail))</system-out></testcase>\n"
            }
            xml += "</testsuite>\n"
        }
        return xml
    }

    static func markdown(_ rows: [InvariantRow]) -> String {
        var md = "# qwen-parity invariants\n\n" + TextReport.summary(rows) + "\n\n"
        md += "| invariant | scenario | tolerance | max abs | differing | verdict |\n|---|---|---|---|---|---|\n"
        for row in rows {
            md += "| \(row.invariant) | \(row.scenario) | \(row.tolerance) | "
            md += "\(row.worst.map { TextReport.format($0.maxAbs) } ?? "-") | \(row.worst.map { "\($0.differingElements)" } ?? "-") | "
            md += "\(row.verdict.rawValue)\(row.detail.isEmpty ? "" : ": " + row.detail) |\n"
        }
        let findings = rows.filter { $0.verdict == .finding }
        if !findings.isEmpty {
            md += "\n## Library findings\n\nThe port reproduces its library pair by pair; the library itself exceeds "
                + "the bound of upstream's tests.\n\n| invariant | golden | library max abs | upstream bound | detail |\n|---|---|---|---|---|\n"
            for f in findings {
                md += "| \(f.invariant) | \(f.scenario) | \(TextReport.format(f.libraryWorst ?? 0)) | "
                    + "\(TextReport.format(f.upstreamBound ?? 0)) | \(f.detail) |\n"
            }
        }
        return md
    }
}
