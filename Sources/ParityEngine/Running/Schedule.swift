import ParityCore
import ParityTensor
import VLMMirror

// Runs one scenario's call schedule on an implementation and keeps what the goldens store.

/// One explicit call of mlx-vlm's LanguageModel: its arguments, what happens to the cache
/// before it, and whether the model's stored positions are cleared first.
public struct ScheduledCall: Sendable {
    public enum CacheAction: Sendable, Equatable {
        /// `cache=None`.
        case none
        /// A fresh cache (`leftPadding`: BatchKVCache + ArraysCache with that padding).
        case new(leftPadding: [Int]?)
        /// The cache of the previous call.
        case keep
    }

    public var call: VLMCall
    public var cache: CacheAction
    public var resetState: Bool

    public init(call: VLMCall, cache: CacheAction, resetState: Bool) {
        self.call = call
        self.cache = cache
        self.resetState = resetState
    }
}

/// The inputs of a schedule: one sequence split into calls, a left-padded batch then decodes,
/// or explicit LanguageModel calls (the mlx-vlm paths).
public enum ScheduleInput: Sendable {
    case single(tokens: [Int], calls: [Int], cached: Bool)
    case batch(rows: [[Int]], leftPadding: [Int], decodeSteps: [[Int]])
    case calls([ScheduledCall])

    public var batchSize: Int {
        switch self {
        case .single: return 1
        case .batch(let rows, _, _): return rows.count
        case .calls(let calls): return calls.first?.call.inputs.count ?? 0
        }
    }

    /// Time positions `t` of row `b` that hold a real token (left padding excluded).
    public var leftPadding: [Int] {
        switch self {
        case .single: return []
        case .batch(_, let padding, _): return padding
        case .calls(let calls):
            for c in calls { if case .new(let padding?) = c.cache { return padding } }
            return []
        }
    }
}

public struct ScheduleResult {
    /// `[n_layers + 1, B, T, D]`: embeddings, then every layer's output.
    public var hiddenStates: Tensor
    public var finalNorm: Tensor      // [B, T, D]
    public var logits: Tensor         // [B, T, V], every position
    /// Cache contents right after the prompt (before any batch decode step).
    public var cacheAfterPrompt: [LayerCache]?
    /// Explicit-call schedules: the positions each call ran with, and the stored state after it.
    public var positionIds: [VLMPositions?] = []
    public var stateAfter: [VLMPositionState] = []
    /// Token count of every call, in order.
    public var callLengths: [Int] = []
}

public enum ScheduleError: Error, CustomStringConvertible {
    case inconsistent(String)
    public var description: String {
        switch self { case .inconsistent(let s): return "inconsistent schedule: \(s)" }
    }
}

public enum ScheduleRunner {
    public static func run(_ model: QwenLanguageModel, _ input: ScheduleInput,
                           trace extra: TraceRecorder? = nil) throws -> ScheduleResult {
        let recorder = extra ?? TraceRecorder()
        let layerCount = model.config.numHiddenLayers
        recorder.onLayer = { CheckProgress.shared.layer($0, of: layerCount) }
        var logits: [Tensor] = []
        var cache: PromptCache?
        var afterPrompt: [LayerCache]?
        var positions: [VLMPositions?] = []
        var states: [VLMPositionState] = []
        switch input {
        case let .single(tokens, calls, cached):
            // Bounding each call first keeps the sum from overflowing on absurd counts.
            guard calls.allSatisfy({ $0 > 0 && $0 <= tokens.count }), calls.reduce(0, +) == tokens.count else {
                throw ScheduleError.inconsistent("calls \(calls) do not add up to the \(tokens.count) prompt tokens")
            }
            guard cached || calls.count == 1 else {
                throw ScheduleError.inconsistent("an uncached schedule has exactly one call, got \(calls)")
            }
            cache = cached ? model.makeCache(leftPadding: nil) : nil
            var start = 0
            for n in calls {
                logits.append(try model.forward(.tokens([Array(tokens[start..<(start + n)])]), positionIds: nil,
                                                cache: cache, trace: recorder))
                start += n
            }
            afterPrompt = cache?.layers
        case let .calls(calls):
            guard let (vlm, sink) = FaultedModel.vlmMirror(model, tracing: recorder) else {
                throw ScheduleError.inconsistent("explicit LanguageModel calls need the mlx-vlm mirror")
            }
            for (i, scheduled) in calls.enumerated() {
                if scheduled.resetState { vlm.resetPositionState() }
                switch scheduled.cache {
                case .none: cache = nil
                case .new(let padding): cache = vlm.makeCache(leftPadding: padding)
                case .keep:
                    guard i > 0 else { throw ScheduleError.inconsistent("the first call keeps a cache it never had") }
                }
                let result = try vlm(scheduled.call, cache: cache, trace: sink)
                logits.append(result.logits)
                positions.append(result.positionIds)
                states.append(vlm.state)
            }
            afterPrompt = cache?.layers
        case let .batch(rows, leftPadding, decodeSteps):
            guard !rows.isEmpty, leftPadding.count == rows.count else {
                throw ScheduleError.inconsistent("\(rows.count) rows but \(leftPadding.count) left paddings")
            }
            let length = rows[0].count
            for (r, pad) in leftPadding.enumerated() where pad < 0 || pad >= length {
                throw ScheduleError.inconsistent("row \(r): left padding \(pad) leaves no real token in \(length) columns")
            }
            guard decodeSteps.allSatisfy({ $0.count == rows.count }) else {
                throw ScheduleError.inconsistent("every decode step needs one token per row")
            }
            cache = model.makeCache(leftPadding: leftPadding)
            logits.append(try model.forward(.tokens(rows), positionIds: nil, cache: cache, trace: recorder))
            afterPrompt = cache?.layers
            for step in decodeSteps {
                logits.append(try model.forward(.tokens(step.map { [$0] }), positionIds: nil, cache: cache, trace: recorder))
            }
        }
        let layers = model.config.numHiddenLayers
        var hidden = [recorder.joined(.embeddings)!]
        for i in 0..<layers { hidden.append(recorder.joined(.layerOutput(i))!) }
        let stacked = Tensor.concatenate(hidden.map { $0.reshaped([1] + $0.shape) }, axis: 0)
        return ScheduleResult(hiddenStates: stacked, finalNorm: recorder.joined(.finalNorm)!,
                              logits: logits.count == 1 ? logits[0] : Tensor.concatenate(logits, axis: 1),
                              cacheAfterPrompt: afterPrompt, positionIds: positions, stateAfter: states,
                              callLengths: logits.map { $0.shape[1] })
    }

    /// The calls mlx-lm's generate_step makes for a prompt of `length` tokens and a prefill step:
    /// chunks of `min(step, remaining − 1)` while more than one token remains, then the last alone.
    public static func generateCalls(promptLength length: Int, prefillStep step: Int) -> [Int] {
        precondition(step > 0 && length > 0, "[generateCalls] step \(step), length \(length)")
        var calls: [Int] = []
        var remaining = length
        while remaining > 1 {
            let n = min(step, remaining - 1)
            calls.append(n)
            remaining -= n
        }
        calls.append(1)
        return calls
    }
}
