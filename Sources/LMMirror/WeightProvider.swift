import ParityCore
import ParityTensor

/// Where a model's constructor takes its tensors from, one name at a time.
///
/// A validated `Weights` serves them from memory. A loader that reads each tensor from disk when
/// asked lets the constructor pack a weight and drop its raw copy before the next one is read,
/// so a large checkpoint is never held twice (the benchmark loads the 0.8B shape that way).
public protocol WeightProvider {
    subscript(_ name: String) -> Tensor { get }
}

extension Weights: WeightProvider {}
