import ParityTensor

// The protocol both Qwen 3.5 implementations (and the unified model) implement.

public enum ForwardError: Error, CustomStringConvertible, Equatable {
    case tokenOutOfRange(row: Int, position: Int, id: Int, vocabSize: Int)
    case badInputShape(String)
    case unsupported(String)
    case cacheMismatch(String)

    public var description: String {
        switch self {
        case let .tokenOutOfRange(row, position, id, vocabSize):
            return "token id \(id) at row \(row), position \(position) is outside the vocabulary 0..<\(vocabSize)"
        case let .badInputShape(s): return "bad input shape: \(s)"
        case let .unsupported(s): return "unsupported: \(s)"
        case let .cacheMismatch(s): return "cache mismatch: \(s)"
        }
    }
}

/// What a forward call consumes: token ids `[B][L]` or input embeddings `[B, L, D]`.
public enum ModelInput: Sendable {
    case tokens([[Int]])
    case embeddings(Tensor)

    public var batchSize: Int {
        switch self {
        case .tokens(let rows): return rows.count
        case .embeddings(let t): return t.shape.first ?? 0
        }
    }

    public var length: Int {
        switch self {
        case .tokens(let rows): return rows.first?.count ?? 0
        case .embeddings(let t): return t.rank == 3 ? t.shape[1] : 0
        }
    }
}

/// MRoPE position ids `[3, B, L]` (temporal, height, width rows).
public struct PositionIDs: Sendable, Equatable {
    public var batch: Int
    public var length: Int
    public var values: [Int]

    public init(batch: Int, length: Int, values: [Int]) {
        precondition(values.count == 3 * batch * length, "[PositionIDs] \(values.count) values for [3, \(batch), \(length)]")
        self.batch = batch
        self.length = length
        self.values = values
    }

    public func at(axis: Int, row: Int, t: Int) -> Int { values[(axis * batch + row) * length + t] }
}

/// Where a traced tensor came from.
public enum TraceKey: Hashable, Sendable, CustomStringConvertible {
    case embeddings
    case layerOutput(Int)
    case finalNorm
    case subStep(layer: Int, name: String)

    public var description: String {
        switch self {
        case .embeddings: return "embeddings"
        case .layerOutput(let i): return "layer \(i)"
        case .finalNorm: return "final norm"
        case let .subStep(layer, name): return "layer \(layer) \(name)"
        }
    }
}

/// Receives intermediate tensors during a forward pass.
public protocol TraceSink: AnyObject {
    /// Whether sub-step tensors of `layer` are wanted (they cost a copy each).
    func wantsSubSteps(layer: Int) -> Bool
    func record(_ key: TraceKey, _ tensor: Tensor)
}

/// Keeps every traced tensor; several calls of one schedule are joined along time.
public final class TraceRecorder: TraceSink {
    public private(set) var records: [TraceKey: [Tensor]] = [:]
    private let subStepLayers: Set<Int>

    public init(subStepLayers: Set<Int> = []) { self.subStepLayers = subStepLayers }

    public func wantsSubSteps(layer: Int) -> Bool { subStepLayers.contains(layer) }

    /// Told each layer's index as its output is recorded (progress on long work).
    public var onLayer: ((Int) -> Void)?

    public func record(_ key: TraceKey, _ tensor: Tensor) {
        records[key, default: []].append(tensor)
        if case .layerOutput(let i) = key { onLayer?(i) }
    }

    /// The tensors recorded under `key`, joined along `timeAxis` (1 for `[B, L, …]` activations).
    public func joined(_ key: TraceKey, timeAxis: Int = 1) -> Tensor? {
        guard let parts = records[key], !parts.isEmpty else { return nil }
        return parts.count == 1 ? parts[0] : Tensor.concatenate(parts, axis: timeAxis)
    }
}

public protocol QwenLanguageModel: AnyObject {
    var config: TextConfig { get }
    /// An empty cache for this model; `leftPadding` makes a left-padded batch cache.
    func makeCache(leftPadding: [Int]?) -> PromptCache
    /// Logits `[B, L, V]` for one call. `positionIds` are MRoPE positions; a text path rejects them.
    func forward(_ input: ModelInput, positionIds: PositionIDs?, cache: PromptCache?, trace: TraceSink?) throws -> Tensor
}

extension QwenLanguageModel {
    public func forward(_ input: ModelInput, cache: PromptCache? = nil, trace: TraceSink? = nil) throws -> Tensor {
        try forward(input, positionIds: nil, cache: cache, trace: trace)
    }
}

/// Records the sub-steps of one layer when the sink wants them; free otherwise.
public struct SubStepTrace {
    let sink: TraceSink?
    let layer: Int
    public let isActive: Bool

    public init(sink: TraceSink?, layer: Int) {
        self.sink = sink
        self.layer = layer
        isActive = sink?.wantsSubSteps(layer: layer) ?? false
    }

    public func callAsFunction(_ name: String, _ tensor: @autoclosure () -> Tensor) {
        if isActive { sink?.record(.subStep(layer: layer, name: name), tensor()) }
    }
}
