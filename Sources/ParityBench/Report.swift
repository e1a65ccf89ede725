import Foundation
import ParityCore

// The side-by-side table of `qwen-parity bench`, with roofline rows and Swift/peer ratios.

/// Tokens/s a machine could reach at best: time = max(FLOPs / peak, bytes / bandwidth), with the
/// model's weights read once per forward (prefill) or once per token (decode).
public struct Roofline: Sendable {
    public var peakFLOPs: Double      // per second
    public var bandwidth: Double      // bytes per second
    public var label: String

    public init(peakFLOPs: Double, bandwidth: Double, label: String) {
        self.peakFLOPs = peakFLOPs
        self.bandwidth = bandwidth
        self.label = label
    }

    /// FLOPs of a prefill of L tokens: every linear for every token, causal attention, the GDN
    /// recurrence, and the lm head for the last token.
    public static func prefillFLOPs(_ c: TextConfig, tokens L: Int) -> Double {
        let D = Double(c.hiddenSize), L64 = Double(L)
        var perToken = 0.0, attention = 0.0
        for kind in c.layerKinds {
            switch kind {
            case .fullAttention:
                let (H, Hkv, hd) = (Double(c.numAttentionHeads), Double(c.numKeyValueHeads), Double(c.headDim))
                perToken += 2 * D * (2 * H * hd + 2 * Hkv * hd) + 2 * H * hd * D
                attention += 4 * H * hd * L64 * (L64 + 1) / 2
            case .linearAttention:
                let (Hv, dk, dv) = (Double(c.linearNumValueHeads), Double(c.linearKeyHeadDim), Double(c.linearValueHeadDim))
                perToken += 2 * D * (Double(c.convDim) + Double(c.valueDim) + 2 * Hv) + 2 * Double(c.valueDim) * D
                perToken += 7 * Hv * dk * dv
            }
            perToken += c.isMoE ? 0 : 6 * D * Double(c.intermediateSize)
        }
        return L64 * perToken + attention + 2 * D * Double(c.vocabSize)
    }

    public func prefill(_ c: TextConfig, tokens L: Int, weightBytes: Int) -> Double {
        let seconds = max(Roofline.prefillFLOPs(c, tokens: L) / peakFLOPs, Double(weightBytes) / bandwidth)
        return Double(L) / seconds
    }

    public func decode(_ c: TextConfig, weightBytes: Int) -> Double {
        let flops = Roofline.prefillFLOPs(c, tokens: 1)
        return 1 / max(flops / peakFLOPs, Double(weightBytes) / bandwidth)
    }

    /// Floating-point operations one core can start per cycle, fused (FMA) and as a separate
    /// multiply and add (what a bit-exact kernel does), from /proc/cpuinfo's vendor, family and
    /// flags. Intel runs multiplies and adds on its FMA units, so separate ones get half the
    /// rate; AMD Zen has two add pipes beside its two multiply/FMA pipes, so they do not.
    public struct CorePeak: Sendable, Equatable {
        public var fused: Double
        public var separate: Double
        public var why: String
    }

    public static func corePeak(cpuinfo: String) -> CorePeak {
        func field(_ name: String) -> String? {
            for line in cpuinfo.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                if parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == name {
                    return parts[1].trimmingCharacters(in: .whitespaces)
                }
            }
            return nil
        }
        let flags = Set((field("flags") ?? "").split(separator: " ").map(String.init))
        let amd = field("vendor_id") == "AuthenticAMD"
        let family = field("cpu family").flatMap { Int($0) } ?? 0, model = field("model").flatMap { Int($0) } ?? 0
        if amd && (family >= 0x19 || (family == 0x17 && model >= 0x30)) && flags.contains("avx2") {
            return CorePeak(fused: 32, separate: 32, why: "AMD Zen 2 or later: 2 FMA and 2 add pipes of 8 lanes")
        }
        if amd && family == 0x17 && flags.contains("avx2") {
            return CorePeak(fused: 16, separate: 16, why: "AMD Zen 1: 2 FMA and 2 add pipes of 4 lanes")
        }
        if flags.contains("avx512f") {
            return CorePeak(fused: 64, separate: 32, why: "AVX-512: 2 FMA units of 16 lanes, shared by multiplies and adds")
        }
        if flags.contains("avx2") && flags.contains("fma") {
            return CorePeak(fused: 32, separate: 16, why: "AVX2: 2 FMA units of 8 lanes, shared by multiplies and adds")
        }
        return CorePeak(fused: 8, separate: 8, why: "SSE: a 4-lane multiply and add")
    }

    /// Nominal clock of this machine from /proc/cpuinfo, in Hz (nil when unknown).
    public static func nominalClock() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("cpu MHz") {
            if let value = line.split(separator: ":").last.flatMap({ Double($0.trimmingCharacters(in: .whitespaces)) }) {
                return value * 1e6
            }
        }
        return nil
    }
}

/// A decode-only bound in tokens/s with how it was reached (the q4 rows of the table).
public struct DecodeBound: Sendable {
    public var label: String
    public var tokensPerSecond: Double
    public var how: String

    public init(label: String, tokensPerSecond: Double, how: String) {
        self.label = label
        self.tokensPerSecond = tokensPerSecond
        self.how = how
    }
}

public enum BenchReport {
    static func rate(_ values: [Double]?) -> String {
        guard let values, !values.isEmpty else { return "–" }
        let s = Summary(values)
        return values.count == 1 ? fmt(s.median) : "\(fmt(s.median)) (\(fmt(s.min))–\(fmt(s.max)))"
    }

    static func fmt(_ v: Double) -> String {
        v >= 100 ? String(format: "%.0f", v) : v >= 10 ? String(format: "%.1f", v) : String(format: "%.2f", v)
    }

    static func gb(_ bytes: Int?) -> String {
        guard let bytes, bytes > 0 else { return "–" }
        return String(format: "%.2f GB", Double(bytes) / 1e9)
    }

    static func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
    }

    /// Every engine's logits fingerprint against the first engine's on the same weights (swift-lm
    /// by default; the q4 engines against the first q4 engine): does the argmax agree, how far
    /// apart are the sampled logits next to their scale, and are all logits the same bits.
    static func checkLines(_ results: [EngineResult]) -> [String] {
        var lines: [String] = []
        for onDirectory in [false, true] {
            let checked = results.filter { $0.check != nil && (EngineKind(rawValue: $0.engine)?.usesQ4Directory ?? false) == onDirectory }
            guard let reference = checked.first, let ref = reference.check, checked.count > 1 else { continue }
            lines += ["", "logits check, not a gate: the last logits of a \(ref.tokens)-token prefill at \(ref.sample.count) "
                      + "sampled vocabulary entries, against \(reference.engine)"]
            let scale = ref.sample.map { abs($0) }.max() ?? 0
            for r in checked.dropFirst() {
                guard let c = r.check, c.tokens == ref.tokens, c.stride == ref.stride, c.sample.count == ref.sample.count else {
                    lines.append("  \(r.engine): not comparable (another prefill length or sampling)")
                    continue
                }
                let delta = zip(c.sample, ref.sample).map { abs($0 - $1) }.max() ?? 0
                let agree = c.argmax == ref.argmax ? "same argmax (\(c.argmax))" : "argmax \(c.argmax), not \(ref.argmax)"
                var line = String(format: "  %@: %@; max |Δ| %.3g with max |logit| %.3g", r.engine, agree, delta, scale)
                if let a = c.sha256, let b = ref.sha256, let n = c.count, n == ref.count {
                    line += a == b ? "; all \(n) logits bit-identical (SHA-256)" : "; the \(n) logits differ in bits (SHA-256)"
                }
                lines.append(line)
            }
        }
        return lines
    }

    /// The table: one row per engine (median (min–max) tokens/s over the repeats), the roofline
    /// rows, then Swift/peer ratios of the medians and what each engine ran with.
    public static func render(_ results: [EngineResult], plan: MeasurementPlan, config: TextConfig,
                              weightBytes: Int, rooflines: [Roofline], bounds: [DecodeBound] = []) -> String {
        let columns = plan.lengths.map { "prefill \($0)" } + ["decode (\(plan.decodeSteps) steps)", "peak RSS", "RSS/weights"]
        var rows: [[String]] = []
        for r in results {
            if let reason = r.skipped { rows.append([r.engine, "skipped: \(reason)"]); continue }
            var row = [r.engine]
            row += plan.lengths.map { rate(r.prefill?[String($0)]) }
            row.append(rate(r.decode))
            row.append(gb(r.peakRSSBytes))
            row.append(r.peakRSSBytes.map { String(format: "%.2f×", Double($0) / Double(r.weightsBytes ?? weightBytes)) } ?? "–")
            rows.append(row)
        }
        for roof in rooflines {
            var row = [roof.label]
            row += plan.lengths.map { fmt(roof.prefill(config, tokens: $0, weightBytes: weightBytes)) }
            row.append(fmt(roof.decode(config, weightBytes: weightBytes)))
            row += ["", ""]
            rows.append(row)
        }
        for bound in bounds {
            rows.append([bound.label] + plan.lengths.map { _ in "" } + [fmt(bound.tokensPerSecond), "", ""])
        }
        // Ratios of medians, each Swift engine against each peer on the same weights (float32
        // data or the q4 directory), measured in this one run.
        let measured = results.filter { $0.skipped == nil }
        let swift = measured.filter { EngineKind(rawValue: $0.engine)?.isSwift ?? false }
        let peers = measured.filter { !(EngineKind(rawValue: $0.engine)?.isSwift ?? false) }
        func onDirectory(_ r: EngineResult) -> Bool { EngineKind(rawValue: r.engine)?.usesQ4Directory ?? false }
        var ratioRows: [[String]] = []
        for s in swift {
            for p in peers where onDirectory(p) == onDirectory(s) {
                var cells = ["\(s.engine) / \(p.engine)"]
                for L in plan.lengths {
                    let a = s.prefill?[String(L)].map { Summary($0).median }, b = p.prefill?[String(L)].map { Summary($0).median }
                    cells.append(a.flatMap { a in b.map { String(format: "%.2f×", a / $0) } } ?? "–")
                }
                let a = s.decode.map { Summary($0).median }, b = p.decode.map { Summary($0).median }
                cells.append(a.flatMap { a in b.map { String(format: "%.2f×", a / $0) } } ?? "–")
                cells.append(s.peakRSSBytes.flatMap { a in p.peakRSSBytes.map { String(format: "%.2f×", Double(a) / Double($0)) } } ?? "–")
                cells.append("")
                ratioRows.append(cells)
            }
        }

        let header = ["engine (tokens/s)"] + columns
        var widths = header.map(\.count)
        for row in rows + ratioRows where row.count == header.count {
            for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
        }
        var lines = [zip(header, widths).map { pad($0, $1) }.joined(separator: "  ")]
        for row in rows {
            lines.append(row.count == header.count
                         ? zip(row, widths).map { pad($0, $1) }.joined(separator: "  ")
                         : pad(row[0], widths[0]) + "  " + row[1])
        }
        if !ratioRows.isEmpty {
            lines.append("")
            lines.append("Swift / peer, ratio of medians from this run (RSS column: ratio of peak RSS)")
            for row in ratioRows { lines.append(zip(row, widths).map { pad($0, $1) }.joined(separator: "  ")) }
        }
        lines += checkLines(measured)
        lines.append("")
        lines.append("ran with")
        for r in results where r.skipped == nil {
            var what = r.description ?? ""
            if let core = r.blas?.openblasCore {
                what += "; OpenBLAS core \(core), \(r.blas?.openblasThreads ?? 0) threads"
            }
            if let libs = r.blas?.libraries, !libs.isEmpty {
                what += "; BLAS libraries: " + libs.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", ")
            }
            if let env = r.env, !env.isEmpty {
                what += "; env " + env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            }
            lines.append("  \(r.engine): \(what)")
        }
        for roof in rooflines {
            lines.append(String(format: "  %@: %.0f GFLOP/s, %.1f GB/s, %.2f GB of weights read per forward",
                                roof.label, roof.peakFLOPs / 1e9, roof.bandwidth / 1e9, Double(weightBytes) / 1e9))
        }
        for bound in bounds { lines.append("  \(bound.label): \(bound.how)") }
        return lines.joined(separator: "\n")
    }
}
