import ParityTensor

// Cache contents with the references' semantics. Both implementations store the same things; how
// a call reads and advances them is each implementation's own code.

/// One attention layer: post-norm, post-RoPE keys and raw values, `[B, Hkv, T, hd]`.
/// `leftPadding == nil` is mlx-lm's `KVCache` (one scalar offset); otherwise its `BatchKVCache`,
/// where row `b` holds `length − leftPadding[b]` real tokens.
public struct AttentionCache: Sendable, Equatable {
    public var keys: Tensor?
    public var values: Tensor?
    /// Tokens written so far (`offset` of a KVCache, `_idx` of a BatchKVCache).
    public var length: Int = 0
    public var leftPadding: [Int]?

    public init(leftPadding: [Int]? = nil) { self.leftPadding = leftPadding }

    /// Per-row RoPE offsets before the next write: real tokens seen (negative inside the padding).
    public func offsets(batch: Int) -> [Int] {
        if let leftPadding { return leftPadding.map { length - $0 } }
        return [Int](repeating: length, count: batch)
    }
}

/// One GatedDeltaNet layer: the conv window `[B, K−1, Cc]` and the recurrent state
/// `[B, Hv, dv, dk]` (float32), plus the padding bookkeeping of mlx-lm's `ArraysCache`.
public struct DeltaNetCache: Sendable, Equatable {
    public var convState: Tensor?
    public var recurrentState: Tensor?
    /// Decremented by every call (`advance`), so it goes negative after the prompt.
    public var leftPadding: [Int]?
    public var lengths: [Int]?

    public init(leftPadding: [Int]? = nil, lengths: [Int]? = nil) {
        self.leftPadding = leftPadding
        self.lengths = lengths
    }
}

public enum LayerCache: Sendable, Equatable {
    case attention(AttentionCache)
    case deltaNet(DeltaNetCache)
}

/// The cache of a whole model, one entry per layer; a reference type, as the caller and the model
/// share it across calls.
public final class PromptCache: @unchecked Sendable {
    public var layers: [LayerCache]

    /// An empty cache; with `leftPadding` it is the left-padded batch cache of mlx-lm.
    public init(config: TextConfig, leftPadding: [Int]? = nil) {
        layers = config.layerKinds.map { kind in
            switch kind {
            case .fullAttention: return .attention(AttentionCache(leftPadding: leftPadding))
            case .linearAttention: return .deltaNet(DeltaNetCache(leftPadding: leftPadding))
            }
        }
    }

    /// A cache holding these layer caches (a row extracted from a batch cache, a merged one).
    public init(layers: [LayerCache]) { self.layers = layers }

    public var firstAttention: AttentionCache? {
        for case let .attention(c) in layers { return c }
        return nil
    }

    public var firstDeltaNet: DeltaNetCache? {
        for case let .deltaNet(c) in layers { return c }
        return nil
    }
}
