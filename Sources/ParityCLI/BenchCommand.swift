import ArgumentParser
import Foundation
import ParityBench
import ParityCore
import ParityTensor

/// Options every bench command shares: what to measure.
struct BenchPlanOptions: ParsableArguments {
    @Option(help: "Benchmark data (tools/bench.py weights writes it; make bench does so when missing).")
    var data = "bench-data/qwen3.5-0.8b.h5"

    @Option(help: "Prefill lengths, comma-separated.")
    var lengths = "16,128,512"

    @Option(help: "Greedy decode steps per repeat.")
    var decodeSteps = 32

    @Option(help: "Prompt tokens prefilled before the decode steps.")
    var decodeContext = 16

    @Option(help: "Repeats of every measurement (the table shows median and min–max).")
    var repeats = 3

    @Option(help: "A quantized model directory of the bench's shape for swift-lm-q4 and mlx-lm-q4 (without it they are skipped).")
    var q4Dir: String?

    func plan() throws -> MeasurementPlan {
        var plan = MeasurementPlan()
        let lengths = self.lengths.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !lengths.isEmpty, lengths.allSatisfy({ $0 > 0 }) else { throw ValidationError("--lengths: positive integers, comma-separated") }
        guard repeats > 0, decodeSteps > 0, decodeContext > 0 else { throw ValidationError("--repeats, --decode-steps and --decode-context must be positive") }
        plan.lengths = lengths
        plan.decodeSteps = decodeSteps
        plan.decodeContext = decodeContext
        plan.repeats = repeats
        return plan
    }
}

/// `qwen-parity bench`: every engine on the same weights, side by side, in one run.
public struct Bench: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Time the Swift mirror against mlx-lm and torch on the Qwen3.5-0.8B shape, side by side.",
        discussion: """
        Every engine runs in its own process on the same random weights: \(EngineKind.allCases.map(\.rawValue).joined(separator: ", ")).
        Prefill: one forward over L prompt tokens from an empty cache, logits for the last token.
        Decode: greedy single-token calls after a short prefill. The table shows tokens/s as
        median (min–max) over the repeats, peak RSS of each process, two roofline rows, and
        Swift/peer ratios of the medians. Only the OpenBLAS engines get OPENBLAS_CORETYPE.
        swift-lm-q4 and mlx-lm-q4 run on the quantized model directory of --q4-dir (skipped
        without it) and add three q4 decode bounds to the table.
        """)

    @OptionGroup var plan: BenchPlanOptions

    @Option(help: "Engines to run, comma-separated (default: all).")
    var engines = EngineKind.defaults.map(\.rawValue).joined(separator: ",")

    @Option(help: "Python with mlx-lm (and torch, if installed).")
    var python = "tools/.venv/bin/python"

    @Option(help: "Threads for every engine.")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "OPENBLAS_CORETYPE for the OpenBLAS engines ('' keeps the library's own choice; default: SkylakeX with AVX-512F, else Haswell with AVX2 and FMA).")
    var openblasCore: String?

    @Option(help: "Memory bandwidth for the roofline, GB/s.")
    var bandwidthGBs = 28.8

    @Option(help: "Peak FMA throughput for the roofline, GFLOP/s (default: cores × clock × the FLOP per cycle of this CPU, from /proc/cpuinfo).")
    var peakGflops: Double?

    @Option(help: "Vector instructions one core issues per cycle, for the q4 exact-arithmetic bound (Zen 3: 2 multiply + 2 add pipes).")
    var vectorPipes = 4.0

    @Option(help: "Run the engine list this many times, round robin, each round with --repeats repeats (on a shared machine, --rounds 3 --repeats 1 puts every engine under the same load).")
    var rounds = 1

    @Option(help: "Also write the results as JSON here.")
    var json: String?

    public init() {}

    public func run() throws {
        var options = BenchOptions()
        options.dataPath = plan.data
        options.plan = try plan.plan()
        options.q4Directory = plan.q4Dir
        options.python = python
        options.threads = threads
        guard rounds > 0 else { throw ValidationError("--rounds must be positive") }
        options.rounds = rounds
        if let openblasCore { options.openBLASCore = openblasCore.isEmpty ? nil : openblasCore }
        options.engines = try engines.split(separator: ",").map { name in
            guard let kind = EngineKind(rawValue: String(name)) else {
                throw ValidationError("unknown engine '\(name)'; known: \(EngineKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return kind
        }
        let data = try BenchData(path: options.dataPath)
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let results = BenchRunner.run(options, executable: executable) { line in
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
        let core = Roofline.corePeak(cpuinfo: (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "")
        // The clock the cores run at, measured (a turbo clock is above /proc/cpuinfo's nominal
        // one, and a peak below what a kernel reaches is no ceiling).
        let clock = MatrixProduct.measuredClockHz() ?? Roofline.nominalClock() ?? 2.3e9
        let perCycle = cores * clock
        let peak = (peakGflops.map { $0 * 1e9 }) ?? perCycle * core.fused
        let separate = peakGflops.map { $0 * 1e9 * core.separate / core.fused } ?? perCycle * core.separate
        let rooflines = [
            Roofline(peakFLOPs: peak, bandwidth: bandwidthGBs * 1e9, label: "roofline (FMA peak)"),
            Roofline(peakFLOPs: separate, bandwidth: bandwidthGBs * 1e9, label: "roofline without FMA"),
        ]
        FileHandle.standardError.write(Data(String(format: "roofline: %d FLOP/cycle fused, %d separate per core (%@), %.2f GHz measured, %d cores\n",
                                                   Int(core.fused), Int(core.separate), core.why as NSString, clock / 1e9, Int(cores)).utf8))
        let repeats = rounds > 1 ? "\(rounds) rounds of \(options.plan.repeats) repeat(s), engines round robin" : "\(options.plan.repeats) repeats"
        print(String(format: "Qwen3.5-0.8B text shape, float32, random weights (%@, %.2f GB), %@; tokens/s as median (min–max)",
                     options.dataPath, Double(data.weightBytes) / 1e9, repeats as NSString))
        let bounds = options.q4Directory.map { q4Bounds(directory: $0, config: data.config, threads: options.threads) } ?? []
        print(BenchReport.render(results, plan: options.plan, config: data.config, weightBytes: data.weightBytes,
                                 rooflines: rooflines, bounds: bounds))
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(results).write(to: URL(fileURLWithPath: json))
        }
    }
}

extension Bench {
    /// The q4 decode bounds: bandwidth, the instruction count of exact arithmetic, and the
    /// measured register-path kernel. Weights per token: every matrix once (a tied embedding
    /// as the lm head; an untied one's lookup is one row, left out).
    func q4Bounds(directory: String, config: TextConfig, threads: Int) -> [DecodeBound] {
        let bytes = Double(BenchOptions.directoryBytes(directory))
        var weights = 0.0
        for (name, shape) in WeightNames.expected(for: config) where shape.count >= 2 {
            if name == WeightNames.embedTokens && !(config.tieWordEmbeddings ?? false) { continue }
            weights += Double(shape.reduce(1, *))
        }
        let clock = MatrixProduct.measuredClockHz() ?? Roofline.nominalClock() ?? 2.3e9
        let ns = KernelBench.q4NanosecondsPerWeight()
        let floor = MatrixProduct.q4FloorCyclesPer8(clockHz: clock)
        let cores = Double(threads)
        return [
            DecodeBound(label: "q4 roofline, bandwidth", tokensPerSecond: bandwidthGBs * 1e9 / bytes,
                        how: String(format: "%.3f GB read per token (the model*.safetensors of %@) at %.1f GB/s (--bandwidth-gbs)",
                                    bytes / 1e9, directory, bandwidthGBs)),
            DecodeBound(label: "q4 bound, exact arithmetic", tokensPerSecond: cores * clock * vectorPipes * 8 / (6 * weights),
                        how: String(format: "6 vector instructions per 8 weights at M = 1 (nibble mask in place, convert, s·q, +β, ·x, +acc; "
                                    + "no FMA), %.0f per cycle (--vector-pipes), 8 lanes, %.2f GHz measured, %d cores, %.3f G weights per token",
                                    vectorPipes, clock / 1e9, threads, weights / 1e9)),
            floor.map { cycles in
                DecodeBound(label: "q4 bound, exact loop alone", tokensPerSecond: cores * clock * 8 / (cycles * weights),
                            how: String(format: "those 6 instructions in a loop with every operand in L1 (no load of W, no scales "
                                        + "gathered, nothing else of the step): %.2f cycles per 8 weights measured, %d cores", cycles, threads))
            },
            DecodeBound(label: "q4 bound, measured kernel", tokensPerSecond: cores / (ns * 1e-9 * weights),
                        how: String(format: "the register-path q4 product alone, M = 1, 6144×1024, f32 scales: %.3f ns per weight "
                                    + "on one thread, times %d threads, %.3f G weights per token", ns, threads, weights / 1e9)),
        ].compactMap { $0 }
    }
}

/// `qwen-parity bench-engine`: one Swift engine, timed in this process (run by `bench`).
public struct BenchEngine: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bench-engine",
        abstract: "Time one Swift engine in this process and print its result as a JSON line (used by 'bench').",
        shouldDisplay: false)

    @Argument(help: "swift-lm, swift-vlm, swift-lm-openblas, swift-lm-fma or swift-lm-q4.")
    var engine: String

    @OptionGroup var plan: BenchPlanOptions

    public init() {}

    public func run() throws {
        guard let kind = EngineKind(rawValue: engine), kind.isSwift else {
            throw ValidationError("bench-engine runs swift-lm, swift-vlm, swift-lm-openblas, swift-lm-fma or swift-lm-q4, not '\(engine)'")
        }
        var options = BenchOptions()
        options.dataPath = plan.data
        options.plan = try plan.plan()
        options.q4Directory = plan.q4Dir
        let result = try SwiftEngine.run(kind, options: options) { line in
            FileHandle.standardError.write(Data(("bench: " + line + "\n").utf8))
        }
        let line = try JSONEncoder().encode(result)
        print(String(decoding: line, as: UTF8.self))
    }
}

/// `qwen-parity bench-kernel`: the matrix product alone at the 0.8B shapes.
public struct BenchKernel: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bench-kernel",
        abstract: "Time the matrix product alone at the Qwen3.5-0.8B shapes (GFLOP/s, and GB/s of weights at M = 1).")

    @Option(help: "in-order (the exact default) or openblas.")
    var backend = "in-order"

    @Option(help: "Kernel instruction set for in-order: avx512f, avx2 or generic (default: the CPU's best).")
    var kernel: String?

    @Flag(help: "Also time the packed q4 product at M = 1, 2, 4 on the register path and the panel path.")
    var q4 = false

    public init() {}

    public func run() throws {
        let chosen: MatrixProduct.Backend = backend == "openblas" ? .openblas : .sequential
        if let kernel, !MatrixProduct.selectKernel(kernel) { throw ValidationError("this CPU cannot run the \(kernel) kernel") }
        let what = chosen == .sequential
            ? "in-order kernel \(MatrixProduct.kernelName), \(MatrixProduct.threads) threads"
            : "OpenBLAS sgemm, core \(MatrixProduct.openBLASCore), \(MatrixProduct.openBLASThreads) threads"
        print(what)
        for line in KernelBench.run(backend: chosen) { print("  " + line) }
        if q4 { for line in KernelBench.q4Lines() { print("  " + line) } }
    }
}
