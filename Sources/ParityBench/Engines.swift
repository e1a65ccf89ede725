import Checkpoint
import Foundation
import LMMirror
import ParityTensor

// The engines `qwen-parity bench` runs, each in a process of its own (so peak RSS is its own):
// the Swift mirror through `qwen-parity bench-engine`, the Python peers through tools/bench.py.

public enum EngineKind: String, CaseIterable, Sendable {
    /// The lm mirror with the default in-order kernel: bit-exact against mlx-lm.
    case swiftLM = "swift-lm"
    /// The vlm mirror's language model on the text path (get_rope_index positions, chunked scan).
    case swiftVLM = "swift-vlm"
    /// The lm mirror with OpenBLAS sgemm (QWEN_PARITY_GEMM=openblas): fast, not row-invariant.
    case swiftLMOpenBLAS = "swift-lm-openblas"
    /// The lm mirror with the in-order FMA kernel (QWEN_PARITY_GEMM=fma): row-invariant, not exact.
    case swiftLMFMA = "swift-lm-fma"
    /// mlx-lm on the MLX CPU backend as the wheel installs it (its bundled reference BLAS).
    case mlx
    /// mlx-lm with Debian's OpenBLAS preloaded in place of the wheel's reference BLAS.
    case mlxOpenBLAS = "mlx-openblas"
    /// transformers' Qwen 3.5 on torch CPU.
    case torch
    /// The lm mirror on a quantized model directory (--q4-dir), its matrices left packed.
    case swiftLMQ4 = "swift-lm-q4"
    /// mlx-lm on the same directory, loaded by mlx_lm.utils.load_model.
    case mlxQ4 = "mlx-lm-q4"

    public var isSwift: Bool { [.swiftLM, .swiftVLM, .swiftLMOpenBLAS, .swiftLMFMA, .swiftLMQ4].contains(self) }
    public var usesOpenBLASCore: Bool { self == .swiftLMOpenBLAS || self == .mlxOpenBLAS }
    /// Runs on the model directory of --q4-dir instead of the float32 bench data.
    public var usesQ4Directory: Bool { self == .swiftLMQ4 || self == .mlxQ4 }

    /// The default line-up: the exact Swift path against every peer, then the fast mode, then the
    /// quantized pair (skipped without --q4-dir).
    public static let defaults: [EngineKind] = [.swiftLM, .swiftVLM, .swiftLMOpenBLAS, .swiftLMFMA, .mlx, .mlxOpenBLAS, .torch,
                                                .swiftLMQ4, .mlxQ4]
}

public struct BenchOptions: Sendable {
    public var dataPath = "bench-data/qwen3.5-0.8b.h5"
    public var plan = MeasurementPlan()
    public var engines = EngineKind.defaults
    public var python = "tools/.venv/bin/python"
    public var script = "tools/bench.py"
    /// Threads for every engine (the Swift kernel, OpenBLAS, torch).
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    /// OPENBLAS_CORETYPE for the OpenBLAS engines' processes only; nil keeps the library's choice.
    public var openBLASCore: String? = BenchOptions.bestOpenBLASCore()
    /// Where Debian's OpenBLAS lives, for preloading into mlx.
    public var openBLASLibrary = "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"
    /// A quantized model directory of the bench's shape, for the q4 engines (nil: they are skipped).
    public var q4Directory: String?
    /// Times the whole engine list runs, one engine after another in each round, each round with
    /// `plan.repeats` repeats: the load of a shared machine then moves under every engine alike.
    public var rounds = 1
    public init() {}

    /// How to make the directory the q4 engines need.
    public static let q4Hint = "pass --q4-dir DIR (make one with: tools/.venv/bin/python tools/make_golden.py "
        + "--config tools/bench/qwen3.5-0.8b-text.json --make-checkpoint q4 --out DIR)"

    /// The widest OpenBLAS core this CPU runs: SkylakeX needs AVX-512F (forced on a CPU without
    /// it, OpenBLAS dies of an illegal instruction), Haswell AVX2 and FMA; else the library's choice.
    public static func bestOpenBLASCore(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) -> String? {
        guard let flags = cpuinfo?.split(separator: "\n").first(where: { $0.hasPrefix("flags") })?
            .split(separator: " ").map(String.init) else { return nil }
        if flags.contains("avx512f") { return "SkylakeX" }
        if flags.contains("avx2") && flags.contains("fma") { return "Haswell" }
        return nil
    }
}

public enum SwiftEngine {
    /// Runs inside `qwen-parity bench-engine`: loads the mirror and times it in this process.
    public static func run(_ kind: EngineKind, options: BenchOptions, log: (String) -> Void) throws -> EngineResult {
        let wanted: MatrixProduct.Backend = kind == .swiftLMOpenBLAS ? .openblas : kind == .swiftLMFMA ? .fma : .sequential
        guard MatrixProduct.backend == wanted else {
            throw BenchError.engine("\(kind.rawValue) needs QWEN_PARITY_GEMM=\(wanted.rawValue); this process runs \(MatrixProduct.backend.rawValue)")
        }
        let data = try BenchData(path: options.dataPath)
        var model: BenchModel?
        var directory: ModelDirectory?
        let load = try Measurement.seconds {
            if kind == .swiftLMQ4 {
                guard let path = options.q4Directory else { throw BenchError.engine("\(kind.rawValue): " + BenchOptions.q4Hint) }
                let dir = try ModelDirectory(path: path)
                guard dir.config.vocabSize == data.config.vocabSize else {
                    throw BenchError.data("\(path): vocabulary of \(dir.config.vocabSize), the bench prompt's is \(data.config.vocabSize)")
                }
                model = LMTextModel(config: dir.config, weights: dir.weights)
                directory = dir
            } else {
                model = kind == .swiftVLM ? try data.vlmModel() : try data.lmModel()
            }
        }
        let gemm: String
        switch wanted {
        case .sequential: gemm = "in-order kernel (\(MatrixProduct.kernelName), \(MatrixProduct.threads) threads)"
        case .fma: gemm = "in-order FMA kernel, not exact (\(MatrixProduct.kernelName)+fma, \(MatrixProduct.threads) threads)"
        case .openblas: gemm = "OpenBLAS sgemm (\(MatrixProduct.openBLASCore), \(MatrixProduct.openBLASThreads) threads)"
        }
        let mirror = kind == .swiftVLM ? "vlm" : "lm"
        let weights = directory.map { ", packed checkpoint: \($0.summary.text)" } ?? ""
        var result = EngineResult(engine: kind.rawValue, description: "Swift \(mirror) mirror, \(gemm)\(weights)")
        log(String(format: "%@: %@; loaded in %.1f s", kind.rawValue, result.description!, load))
        let measured = try Measurement.run(model!, prompt: data.prompt, plan: options.plan, name: kind.rawValue, log: log)
        result.prefill = measured.prefill
        result.decode = measured.decode
        result.check = measured.check
        result.loadSeconds = load
        result.weightsBytes = directory.map { BenchOptions.directoryBytes($0.path) } ?? data.weightBytes
        result.peakRSSBytes = Measurement.peakRSSBytes()
        if wanted == .openblas {
            result.blas = BLASInfo(openblasCore: MatrixProduct.openBLASCore, openblasThreads: MatrixProduct.openBLASThreads)
        }
        let keys = ["QWEN_PARITY_GEMM", "QWEN_PARITY_THREADS", "QWEN_PARITY_KERNEL", "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS"]
        result.env = ProcessInfo.processInfo.environment.filter { keys.contains($0.key) }
        return result
    }
}

public enum BenchRunner {
    /// Runs every engine of `options` in its own process, in order, `options.rounds` times round
    /// robin, and collects their reports: each engine's repeats of every round together.
    public static func run(_ options: BenchOptions, executable: String, log: (String) -> Void) -> [EngineResult] {
        var results: [EngineResult?] = Array(repeating: nil, count: options.engines.count)
        for round in 1...max(1, options.rounds) {
            for (i, kind) in options.engines.enumerated() where results[i]?.skipped == nil {
                log(options.rounds > 1 ? "== \(kind.rawValue), round \(round) of \(options.rounds)" : "== \(kind.rawValue)")
                let result: EngineResult
                do {
                    result = try runChild(kind, options: options, executable: executable)
                } catch {
                    log("\(kind.rawValue): \(error)")
                    result = EngineResult(engine: kind.rawValue, skipped: "\(error)")
                }
                results[i] = results[i].map { $0.merged(with: result) } ?? result
            }
        }
        return results.map { $0! }
    }

    static func childEnvironment(_ kind: EngineKind, _ options: BenchOptions) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        for key in ["QWEN_PARITY_GEMM", "LD_PRELOAD"] { env.removeValue(forKey: key) }
        let threads = String(options.threads)
        env["QWEN_PARITY_THREADS"] = threads
        env["OPENBLAS_NUM_THREADS"] = threads
        env["OMP_NUM_THREADS"] = threads
        if kind.usesOpenBLASCore, let core = options.openBLASCore { env["OPENBLAS_CORETYPE"] = core }
        switch kind {
        case .swiftLMOpenBLAS: env["QWEN_PARITY_GEMM"] = "openblas"
        case .swiftLMFMA: env["QWEN_PARITY_GEMM"] = "fma"
        case .mlxOpenBLAS: env["LD_PRELOAD"] = options.openBLASLibrary
        default: break
        }
        return env
    }

    static func runChild(_ kind: EngineKind, options: BenchOptions, executable: String) throws -> EngineResult {
        let plan = options.plan
        var common = ["--data", options.dataPath, "--lengths", plan.lengths.map(String.init).joined(separator: ","),
                      "--decode-steps", String(plan.decodeSteps), "--decode-context", String(plan.decodeContext),
                      "--repeats", String(plan.repeats)]
        if kind.usesQ4Directory {
            guard let dir = options.q4Directory else { return EngineResult(engine: kind.rawValue, skipped: "no q4 model directory: " + BenchOptions.q4Hint) }
            common += kind.isSwift ? ["--q4-dir", dir] : ["--model-dir", dir]
        }
        let process = Process()
        if kind.isSwift {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["bench-engine", kind.rawValue] + common
        } else {
            guard FileManager.default.isExecutableFile(atPath: options.python) else {
                return EngineResult(engine: kind.rawValue, skipped: "no Python at \(options.python): run 'make venv'")
            }
            if kind == .mlxOpenBLAS && !FileManager.default.fileExists(atPath: options.openBLASLibrary) {
                return EngineResult(engine: kind.rawValue, skipped: "no OpenBLAS at \(options.openBLASLibrary) to preload")
            }
            process.executableURL = URL(fileURLWithPath: options.python)
            let engine = kind == .torch ? "torch" : kind == .mlxQ4 ? "mlx-q4" : "mlx"
            process.arguments = [options.script, "run", "--engine", engine, "--threads", String(options.threads)] + common
        }
        process.environment = childEnvironment(kind, options)
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let bytes = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: bytes, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw BenchError.engine("\(kind.rawValue) exited with status \(process.terminationStatus)")
        }
        guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else {
            throw BenchError.engine("\(kind.rawValue) printed no result")
        }
        var result = try JSONDecoder().decode(EngineResult.self, from: Data(line.utf8))
        result.engine = kind.rawValue
        return result
    }
}

extension BenchOptions {
    /// Bytes of a model directory's weight files (model*.safetensors): what one decode step reads.
    public static func directoryBytes(_ path: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { $0.hasPrefix("model") && $0.hasSuffix(".safetensors") }.reduce(0) { total, name in
            let attributes = try? FileManager.default.attributesOfItem(atPath: path + "/" + name)
            return total + ((attributes?[.size] as? Int) ?? 0)
        }
    }
}
