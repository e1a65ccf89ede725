import ParityCore
import ParityTensor

// One prediction the way mlx-engine's ModelKit.process_prompt drives the patched model: clear the
// prediction state, store the prompt's positions when it has images, prefill in chunks on a fresh
// cache, then one call per decode step.
// Shapes: B rows, Lp prompt tokens, V vocab.

/// A prompt and where its positions come from.
public struct UnifiedPrompt {
    public enum Positions {
        /// Text only: nothing is stored, every call takes the mlx-lm route.
        case text
        /// get_rope_index over these token ids (vision_start, image tokens) and image grids.
        case images(tokens: [[Int]], imageGrid: [[Int]])
        /// Precomputed `[3, B, Lp]` positions and rope deltas.
        case precomputed(PositionIDs, ropeDeltas: [Int])
    }

    /// `[B, L]` token ids or `[B, L, D]` embeddings (image features already merged). It may run
    /// past the stored positions; those tokens get the sequential tail.
    public var input: ModelInput
    public var positions: Positions

    public init(input: ModelInput, positions: Positions) {
        self.input = input
        self.positions = positions
    }
}

public struct UnifiedPrediction {
    /// `[B, L + decode steps, V]`: every prompt position, then each decode call's.
    public var logits: Tensor
    /// Every call as the model ran it, in order.
    public var calls: [UnifiedCall]
    public var cache: PromptCache
}

extension UnifiedTextModel {
    /// Runs one prediction: `calls` split the prompt (they add up to its length), `decode` are
    /// the following calls' token rows (`[B][n]` each, usually one token).
    public func predict(_ prompt: UnifiedPrompt, calls: [Int], decode: [[[Int]]] = [],
                        trace: TraceSink? = nil) throws -> UnifiedPrediction {
        let L = prompt.input.length
        guard calls.allSatisfy({ $0 > 0 }), calls.reduce(0, +) == L else {
            throw ForwardError.badInputShape("calls \(calls) do not add up to the \(L) prompt tokens")
        }
        clearPredictionState()
        switch prompt.positions {
        case .text: break
        case let .images(tokens, grid): try setMultimodalPrompt(tokens: tokens, imageGrid: grid)
        case let .precomputed(positions, deltas): setPositionState(positionIds: positions, ropeDeltas: deltas)
        }
        let cache = makeCache(leftPadding: nil)
        var logits: [Tensor] = []
        var record: [UnifiedCall] = []
        var start = 0
        for n in calls {
            logits.append(try forward(prompt.input.columns(start, n), positionIds: nil, cache: cache, trace: trace))
            if let last = lastCall { record.append(last) }
            start += n
        }
        for rows in decode {
            logits.append(try forward(.tokens(rows), positionIds: nil, cache: cache, trace: trace))
            if let last = lastCall { record.append(last) }
        }
        return UnifiedPrediction(logits: logits.count == 1 ? logits[0] : Tensor.concatenate(logits, axis: 1),
                                 calls: record, cache: cache)
    }
}

extension ModelInput {
    /// Columns `start ..< start + count` of every row.
    public func columns(_ start: Int, _ count: Int) -> ModelInput {
        switch self {
        case .tokens(let rows): return .tokens(rows.map { Array($0[start..<(start + count)]) })
        case .embeddings(let e): return .embeddings(e.slice(axis: 1, start: start, length: count))
        }
    }
}
