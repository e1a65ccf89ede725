import ParityCore
import ParityTensor

/// Where a model's constructor takes its tensors from, one name at a time.
///
/// A validated `Weights` serves them from memory and packs each projection once, shared by every
/// model built from it (the unified model's two routes). A loader that reads each tensor from disk
/// when asked lets the constructor pack a weight and drop its raw copy before the next one is
/// read, so a large checkpoint is never held twice (the benchmark loads the 0.8B shape that way).
public protocol WeightProvider {
    subscript(_ name: String) -> Tensor { get }
    /// The projection `name` `[N, K]` packed for `x Wᵀ`.
    func linear(_ name: String) -> LinearWeight
    /// Expert `e` of a stacked `[E, N, K]` projection, packed.
    func linear(_ name: String, expert e: Int) -> LinearWeight
}

extension WeightProvider {
    public func linear(_ name: String) -> LinearWeight { LinearWeight(self[name]) }

    public func linear(_ name: String, expert e: Int) -> LinearWeight {
        let stacked = self[name]
        return LinearWeight(stacked.slice(axis: 0, start: e, length: 1).reshaped([stacked.shape[1], stacked.shape[2]]))
    }
}

extension Weights: WeightProvider {}
