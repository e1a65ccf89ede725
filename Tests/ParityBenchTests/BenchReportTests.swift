import Foundation
import ParityCore
import Testing
@testable import ParityBench

@Suite struct BenchReportTests {
    static let config: TextConfig = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("tools/bench/qwen3.5-0.8b-text.json")
        return try! TextConfig.mlxLM(json: Data(contentsOf: url), source: url.path)
    }()

    @Test func summaryIsMedianWithRange() {
        let s = Summary([3, 1, 2])
        #expect(s.median == 2 && s.min == 1 && s.max == 3)
        #expect(Summary([1, 2, 3, 10]).median == 2.5)
    }

    /// 0.8B shape: ~0.99 GFLOP per token in the layers, 0.51 GFLOP for the last token's lm head.
    @Test func prefillFLOPsOfTheSmallModel() {
        let one = Roofline.prefillFLOPs(Self.config, tokens: 1)
        #expect(one > 1.45e9 && one < 1.55e9, "\(one)")
        let perToken = (Roofline.prefillFLOPs(Self.config, tokens: 129) - one) / 128
        #expect(perToken > 0.95e9 && perToken < 1.05e9, "\(perToken)")
    }

    @Test func decodeRooflineIsBandwidthBound() {
        let roof = Roofline(peakFLOPs: 294e9, bandwidth: 28.8e9, label: "r")
        #expect(abs(roof.decode(Self.config, weightBytes: 3_009_572_096) - 28.8 / 3.009572096) < 1e-9)
    }

    @Test func tableHasEveryEngineRatiosAndReasons() {
        var plan = MeasurementPlan()
        plan.lengths = [16, 128]
        var swift = EngineResult(engine: "swift-lm", description: "Swift lm mirror")
        swift.prefill = ["16": [20, 22, 21], "128": [100, 90, 95]]
        swift.decode = [6, 7, 6.5]
        swift.peakRSSBytes = 3_300_000_000
        var mlx = EngineResult(engine: "mlx", description: "mlx-lm")
        mlx.prefill = ["16": [2, 2, 2], "128": [2.5, 2.5, 2.5]]
        mlx.decode = [1.5, 1.5, 1.5]
        mlx.peakRSSBytes = 3_900_000_000
        let torch = EngineResult(engine: "torch", skipped: "not installed")
        let text = BenchReport.render([swift, mlx, torch], plan: plan, config: Self.config, weightBytes: 3_000_000_000,
                                      rooflines: [Roofline(peakFLOPs: 294e9, bandwidth: 28.8e9, label: "roofline")])
        #expect(text.contains("21.0 (20.0–22.0)"))
        #expect(text.contains("skipped: not installed"))
        #expect(text.contains("swift-lm / mlx"))
        #expect(text.contains("10.50×"))     // prefill 16: 21 / 2
        #expect(text.contains("38.00×"))     // prefill 128: 95 / 2.5
        #expect(text.contains("1.10×"))      // RSS / weights of swift-lm
    }

    @Test func logitsCheckComparesEveryEngineWithTheFirst() {
        let logits = (0..<640).map { Float($0 % 7) - 3 }
        var shifted = logits
        shifted[60] += 0.5
        var other = logits
        other[639] = 100
        var a = EngineResult(engine: "swift-lm", description: "a")
        a.check = LogitsCheck(tokens: 16, logits: logits)
        var b = EngineResult(engine: "torch", description: "b")
        b.check = LogitsCheck(tokens: 16, logits: shifted)
        var c = EngineResult(engine: "mlx", description: "c")
        c.check = LogitsCheck(tokens: 16, logits: other)
        #expect(a.check?.stride == 10 && a.check?.sample.count == 64)
        let lines = BenchReport.checkLines([a, b, c]).joined(separator: "\n")
        #expect(lines.contains("torch: same argmax (6); max |Δ| 0.5 with max |logit| 3"), "\(lines)")
        #expect(lines.contains("mlx: argmax 639, not 6"), "\(lines)")
    }

    /// The q4 engines run on their own weights: compared with each other, bit for bit by digest.
    @Test func q4EnginesAreCheckedAgainstEachOther() {
        let logits = (0..<640).map { Float($0 % 7) - 3 }
        var changed = logits
        changed[1] = changed[1].nextUp
        var lm = EngineResult(engine: "swift-lm", description: "f32")
        lm.check = LogitsCheck(tokens: 16, logits: changed)
        var q4 = EngineResult(engine: "swift-lm-q4", description: "q4")
        q4.check = LogitsCheck(tokens: 16, logits: logits)
        var mlx = EngineResult(engine: "mlx-lm-q4", description: "mlx q4")
        mlx.check = LogitsCheck(tokens: 16, logits: logits)
        var vlm = EngineResult(engine: "swift-vlm", description: "vlm")
        vlm.check = LogitsCheck(tokens: 16, logits: logits)
        let lines = BenchReport.checkLines([lm, q4, vlm, mlx]).joined(separator: "\n")
        #expect(lines.contains("against swift-lm-q4"), "\(lines)")
        #expect(lines.contains("mlx-lm-q4: same argmax (6); max |Δ| 0 with max |logit| 3; all 640 logits bit-identical (SHA-256)"), "\(lines)")
        #expect(lines.contains("swift-vlm: same argmax (6); max |Δ| 0 with max |logit| 3; the 640 logits differ in bits (SHA-256)"), "\(lines)")
    }

    @Test func ratiosPairEnginesOnTheSameWeights() {
        var plan = MeasurementPlan()
        plan.lengths = [16]
        func result(_ name: String, _ decode: Double) -> EngineResult {
            var r = EngineResult(engine: name, description: name)
            r.prefill = ["16": [1]]
            r.decode = [decode]
            return r
        }
        let text = BenchReport.render([result("swift-lm", 4), result("swift-lm-q4", 8), result("mlx", 2), result("mlx-lm-q4", 1)],
                                      plan: plan, config: Self.config, weightBytes: 1, rooflines: [],
                                      bounds: [DecodeBound(label: "q4 bound", tokensPerSecond: 20, how: "how")])
        #expect(text.contains("swift-lm / mlx ") && text.contains("swift-lm-q4 / mlx-lm-q4"), "\(text)")
        #expect(!text.contains("swift-lm / mlx-lm-q4") && !text.contains("swift-lm-q4 / mlx "), "\(text)")
        #expect(text.contains("8.00×") && text.contains("q4 bound: how"), "\(text)")
    }

    @Test func q4EnginesWithoutADirectoryAreSkippedWithTheWayToMakeOne() throws {
        for kind in [EngineKind.swiftLMQ4, .mlxQ4] {
            let result = try BenchRunner.runChild(kind, options: BenchOptions(), executable: "/nonexistent")
            #expect(result.skipped?.contains("--make-checkpoint q4") == true, "\(result.skipped ?? "ran")")
        }
    }

    @Test func openBLASCoreFollowsTheCPUFlags() {
        #expect(BenchOptions.bestOpenBLASCore(cpuinfo: "processor : 0\nflags\t\t: fpu sse2 avx2 fma avx512f\n") == "SkylakeX")
        #expect(BenchOptions.bestOpenBLASCore(cpuinfo: "flags\t\t: fpu sse2 avx avx2 fma bmi2\n") == "Haswell")
        #expect(BenchOptions.bestOpenBLASCore(cpuinfo: "flags\t\t: fpu sse2 avx\n") == nil)
        #expect(BenchOptions.bestOpenBLASCore(cpuinfo: nil) == nil)
    }
}

/// The roofline's FLOP per cycle follows the CPU: Zen's separate add pipes give an exact
/// (unfused) kernel the fused rate; Intel's shared FMA units halve it.
@Suite struct CorePeakTests {
    func cpuinfo(_ vendor: String, family: Int, model: Int, flags: String) -> String {
        "processor\t: 0\nvendor_id\t: \(vendor)\ncpu family\t: \(family)\nmodel name\t: x\nmodel\t\t: \(model)\nflags\t\t: fpu sse sse2 \(flags)\n"
    }

    @Test func zen3HasNoPenaltyForSeparateMultiplyAndAdd() {
        let p = Roofline.corePeak(cpuinfo: cpuinfo("AuthenticAMD", family: 25, model: 1, flags: "avx avx2 fma"))
        #expect(p.fused == 32 && p.separate == 32)
    }

    @Test func intelSharesItsFMAUnits() {
        let skx = Roofline.corePeak(cpuinfo: cpuinfo("GenuineIntel", family: 6, model: 85, flags: "avx avx2 fma avx512f"))
        #expect(skx.fused == 64 && skx.separate == 32)
        let hsw = Roofline.corePeak(cpuinfo: cpuinfo("GenuineIntel", family: 6, model: 63, flags: "avx avx2 fma"))
        #expect(hsw.fused == 32 && hsw.separate == 16)
    }

    @Test func zen1AndOldCPUs() {
        #expect(Roofline.corePeak(cpuinfo: cpuinfo("AuthenticAMD", family: 23, model: 1, flags: "avx avx2 fma")).fused == 16)
        #expect(Roofline.corePeak(cpuinfo: cpuinfo("GenuineIntel", family: 6, model: 23, flags: "ssse3")).fused == 8)
    }

    /// Rounds of one engine pool their repeats; the peak RSS is the highest; a failed round skips it.
    @Test func roundsPoolTheirRepeats() {
        var first = EngineResult(engine: "swift-lm", description: "Swift lm mirror")
        first.prefill = ["128": [100, 104]]
        first.decode = [9]
        first.peakRSSBytes = 3_000
        var second = EngineResult(engine: "swift-lm", description: "Swift lm mirror")
        second.prefill = ["128": [90]]
        second.decode = [11, 12]
        second.peakRSSBytes = 3_500
        let both = first.merged(with: second)
        #expect(both.prefill?["128"] == [100, 104, 90])
        #expect(both.decode == [9, 11, 12])
        #expect(both.peakRSSBytes == 3_500)
        #expect(both.skipped == nil)
        let failed = first.merged(with: EngineResult(engine: "swift-lm", skipped: "exited with status 9"))
        #expect(failed.skipped == "exited with status 9")
    }
}
