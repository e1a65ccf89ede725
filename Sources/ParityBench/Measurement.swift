import Checkpoint
import Foundation
import LMMirror
import ParityCore
import ParityTensor

// What one engine process reports (the Python peers print the same JSON from tools/bench.py),
// and the timing protocol every engine follows:
//   warm-up   prefill of 8 tokens, then 2 decode steps (untimed);
//   prefill L one forward over the first L prompt tokens from an empty cache; hidden states for
//             every token, logits for the last one only (what a generator's prompt step needs);
//   decode    greedy, one token per call, `steps` calls after a prefill of `context` tokens.
// Each is repeated; tokens/s of every repeat is kept.

public struct BLASInfo: Codable, Sendable {
    public var libraries: [String]?
    public var openblasCore: String?
    public var openblasThreads: Int?
    public var openblasConfig: String?

    enum CodingKeys: String, CodingKey {
        case libraries
        case openblasCore = "openblas_core"
        case openblasThreads = "openblas_threads"
        case openblasConfig = "openblas_config"
    }

    public init(libraries: [String]? = nil, openblasCore: String? = nil, openblasThreads: Int? = nil, openblasConfig: String? = nil) {
        self.libraries = libraries
        self.openblasCore = openblasCore
        self.openblasThreads = openblasThreads
        self.openblasConfig = openblasConfig
    }
}

public struct EngineResult: Codable, Sendable {
    public var engine: String
    public var description: String?
    /// Set when the engine could not run here; the reason is printed instead of numbers.
    public var skipped: String?
    /// Tokens/s of every repeat, by prompt length.
    public var prefill: [String: [Double]]?
    public var decode: [Double]?
    public var peakRSSBytes: Int?
    public var loadSeconds: Double?
    public var weightsBytes: Int?
    public var blas: BLASInfo?
    public var env: [String: String]?
    public var check: LogitsCheck?

    enum CodingKeys: String, CodingKey {
        case engine, description, skipped, prefill, decode, blas, env, check
        case peakRSSBytes = "peak_rss_bytes"
        case loadSeconds = "load_seconds"
        case weightsBytes = "weights_bytes"
    }

    public init(engine: String, skipped: String) {
        self.engine = engine
        self.skipped = skipped
    }

    /// This round's result followed by a later round's of the same engine: every repeat of both,
    /// the higher peak RSS; a round that failed makes the engine skipped.
    func merged(with later: EngineResult) -> EngineResult {
        if skipped != nil { return self }
        if later.skipped != nil { return later }
        var all = self
        for (length, rates) in later.prefill ?? [:] { all.prefill?[length, default: []] += rates }
        all.decode = (decode ?? []) + (later.decode ?? [])
        all.peakRSSBytes = max(peakRSSBytes ?? 0, later.peakRSSBytes ?? 0)
        return all
    }

    public init(engine: String, description: String) {
        self.engine = engine
        self.description = description
    }
}

/// A fingerprint of one engine's last logits after a prefill of `tokens` prompt tokens: its
/// argmax and `sample` = logits[0, stride, 2·stride, …]. The report compares engines with it, a
/// loose sanity check (the engines round differently), never a gate. `sha256` digests all
/// `count` logits as little-endian float32: equal digests are equal bits.
public struct LogitsCheck: Codable, Sendable, Equatable {
    public static let tokens = 16
    public static let samples = 64
    public var tokens: Int
    public var argmax: Int
    public var stride: Int
    public var sample: [Float]
    public var count: Int?
    public var sha256: String?

    public init(tokens: Int, logits: [Float]) {
        self.tokens = tokens
        argmax = Measurement.argmax(logits)
        let stride = max(1, logits.count / LogitsCheck.samples)
        self.stride = stride
        sample = (0..<LogitsCheck.samples).map { $0 * stride }.filter { $0 < logits.count }.map { logits[$0] }
        count = logits.count
        var digest = SHA256()
        digest.update(logits.withUnsafeBufferPointer { Data(buffer: $0) })   // little-endian on every host we run
        sha256 = digest.finalize()
    }
}

public struct MeasurementPlan: Sendable {
    public var lengths: [Int] = [16, 128, 512]
    public var decodeSteps = 32
    public var decodeContext = 16
    public var repeats = 3
    public init() {}
}

/// A model the Swift side can time: the lm mirror now, the vlm mirror's text path when it lands.
public protocol BenchModel {
    func makeBenchCache() -> PromptCache
    /// Logits `[1, 1, V]` of the last token of `tokens`, advancing `cache`.
    func lastLogits(tokens: [Int], cache: PromptCache) throws -> Tensor
}

extension LMTextModel: BenchModel {
    public func makeBenchCache() -> PromptCache { makeCache(leftPadding: nil) }
    public func lastLogits(tokens: [Int], cache: PromptCache) throws -> Tensor {
        try lastLogits(.tokens([tokens]), cache: cache)
    }
}

public enum Measurement {
    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    static func argmax(_ values: [Float]) -> Int {
        var best = 0
        for i in values.indices where values[i] > values[best] { best = i }
        return best
    }

    static func prefill(_ model: BenchModel, _ tokens: [Int]) throws -> Double {
        let cache = model.makeBenchCache()
        return try seconds { _ = try model.lastLogits(tokens: tokens, cache: cache) }
    }

    static func decode(_ model: BenchModel, context: [Int], steps: Int) throws -> Double {
        let cache = model.makeBenchCache()
        var logits = try model.lastLogits(tokens: context, cache: cache)
        return try seconds {
            for _ in 0..<steps {
                logits = try model.lastLogits(tokens: [argmax(logits.data)], cache: cache)
            }
        }
    }

    /// Runs the protocol above; `log` receives one progress line per measurement.
    public static func run(_ model: BenchModel, prompt: [Int], plan: MeasurementPlan, name: String,
                           log: (String) -> Void) throws -> (prefill: [String: [Double]], decode: [Double], check: LogitsCheck) {
        guard let longest = (plan.lengths + [plan.decodeContext, 8, LogitsCheck.tokens]).max(), longest <= prompt.count else {
            throw BenchError.data("the prompt holds \(prompt.count) tokens; the plan needs more")
        }
        _ = try prefill(model, Array(prompt.prefix(8)))
        _ = try decode(model, context: Array(prompt.prefix(8)), steps: 2)
        let checked = try model.lastLogits(tokens: Array(prompt.prefix(LogitsCheck.tokens)), cache: model.makeBenchCache())
        let check = LogitsCheck(tokens: LogitsCheck.tokens, logits: checked.data)
        var prefillRates: [String: [Double]] = [:]
        for L in plan.lengths {
            var rates: [Double] = []
            for _ in 0..<plan.repeats { rates.append(Double(L) / (try prefill(model, Array(prompt.prefix(L))))) }
            prefillRates[String(L)] = rates
            log(String(format: "%@: prefill %d: %.2f tok/s", name, L, Summary(rates).median))
        }
        var decodeRates: [Double] = []
        for _ in 0..<plan.repeats {
            decodeRates.append(Double(plan.decodeSteps) / (try decode(model, context: Array(prompt.prefix(plan.decodeContext)), steps: plan.decodeSteps)))
        }
        log(String(format: "%@: decode: %.2f tok/s", name, Summary(decodeRates).median))
        return (prefillRates, decodeRates, check)
    }

    /// This process's peak resident set (VmHWM), in bytes.
    public static func peakRSSBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 2, let kb = Int(fields[1]) { return kb * 1024 }
        }
        return 0
    }
}

/// Median with min and max.
public struct Summary: Sendable {
    public let median: Double, min: Double, max: Double

    public init(_ values: [Double]) {
        let sorted = values.sorted()
        if sorted.isEmpty { (median, min, max) = (.nan, .nan, .nan); return }
        let mid = sorted.count / 2
        median = sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
        min = sorted.first!
        max = sorted.last!
    }
}
