import Foundation
import ParityTensor

public enum WeightError: Error, CustomStringConvertible, Equatable {
    case missing(source: String, name: String)
    case unexpected(source: String, names: [String])
    case wrongShape(source: String, name: String, expected: [Int], found: [Int])
    case notFinite(source: String, name: String, index: Int)

    public var description: String {
        switch self {
        case let .missing(source, name): return "\(source): weight '\(name)' is missing"
        case let .unexpected(source, names):
            let shown = names.prefix(3).map { "'\($0)'" }.joined(separator: ", ")
            return "\(source): \(names.count) unexpected weight(s) the model does not use: \(shown)\(names.count > 3 ? ", …" : "")"
        case let .wrongShape(source, name, expected, found):
            return "\(source): weight '\(name)' has shape \(found), expected \(expected)"
        case let .notFinite(source, name, index):
            return "\(source): weight '\(name)' holds a NaN or Inf at flat index \(index)"
        }
    }
}

/// One runtime weight: float32 in memory, or a matrix (stacked experts `[E, N, K]` included) in
/// the form its checkpoint stores it, decoded where it is used.
public enum WeightValue: Sendable {
    case dense(Tensor)
    case encoded(EncodedMatrix, shape: [Int])

    public var shape: [Int] {
        switch self {
        case .dense(let t): return t.shape
        case .encoded(_, let shape): return shape
        }
    }

    /// The float32 values (decoded: for small weights and tests).
    public var tensor: Tensor {
        switch self {
        case .dense(let t): return t
        case .encoded(let m, let shape): return m.decoded().reshaped(shape)
        }
    }

    /// The flat index of the first NaN or infinity, or nil (an encoded matrix names its row's first element).
    public var firstNonFinite: Int? {
        switch self {
        case .dense(let t): return t.data.firstIndex { !$0.isFinite }
        case .encoded(let m, _): return m.firstNonFiniteRow.map { $0 * m.columns }
        }
    }
}

/// A complete, validated set of runtime weights: every expected tensor present with its shape,
/// every provided tensor used, every value finite.
public struct Weights: Sendable {
    private let tensors: [String: WeightValue]
    /// Set for weights read on demand (`init(names:source:load:)`): nothing is held but the packs.
    private let loader: (@Sendable (String) -> Tensor)?
    private let loadedNames: [String]
    /// Packed projections, shared by every copy of this value (see `linear`).
    private let packs = LinearPacks()

    public init(_ provided: [String: Tensor], config: TextConfig, source: String) throws {
        try self.init(values: provided.mapValues { .dense($0) }, config: config, source: source)
    }

    /// Weights some of which stay encoded (a checkpoint's quantized or 16-bit matrices).
    public init(values provided: [String: WeightValue], config: TextConfig, source: String) throws {
        let expected = WeightNames.expected(for: config)
        for (name, shape) in expected {
            guard let t = provided[name] else { throw WeightError.missing(source: source, name: name) }
            guard t.shape == shape else {
                throw WeightError.wrongShape(source: source, name: name, expected: shape, found: t.shape)
            }
            if let bad = t.firstNonFinite {
                throw WeightError.notFinite(source: source, name: name, index: bad)
            }
        }
        let known = Set(expected.map(\.name))
        let extra = provided.keys.filter { !known.contains($0) }.sorted()
        guard extra.isEmpty else { throw WeightError.unexpected(source: source, names: extra) }
        tensors = provided
        loader = nil
        loadedNames = []
    }

    /// Weights read when a model's constructor asks for them, never held here: a model built from
    /// them keeps only what it keeps (packed projections, small tensors), so a large checkpoint is
    /// not held twice while it loads. The caller has checked that `names` are exactly the
    /// expected ones with their shapes; `load` returns the tensor of a name, finite, or stops.
    public init(names: [String], source: String, load: @escaping @Sendable (String) -> Tensor) {
        tensors = [:]
        loader = load
        loadedNames = names.sorted()
    }

    /// The tensor named `name`; names come from `WeightNames`, so a miss is a programming error.
    public subscript(_ name: String) -> Tensor {
        if let loader {
            precondition(loadedNames.contains(name), "[Weights] '\(name)' was not validated")
            return loader(name)
        }
        guard let t = tensors[name] else { preconditionFailure("[Weights] '\(name)' was not validated") }
        return t.tensor
    }

    public var names: [String] { loader == nil ? tensors.keys.sorted() : loadedNames }

    /// The projection `name` (`[N, K]`) packed for `x Wᵀ`, packed once and shared: every model built
    /// from these weights (the lm and vlm mirrors inside the unified model) holds the same copy.
    public func linear(_ name: String) -> LinearWeight {
        packs.packed(name) {
            if case .encoded(let m, let shape)? = tensors[name], shape.count == 2 { return LinearWeight(encoded: m) }
            return LinearWeight(self[name])
        }
    }

    /// Expert `e` of a stacked `[E, N, K]` projection (`switch_mlp.*`), packed once and shared.
    public func linear(_ name: String, expert e: Int) -> LinearWeight {
        packs.packed("\(name)[\(e)]") {
            if case .encoded(let m, let shape)? = tensors[name], shape.count == 3 {
                precondition(e >= 0 && e < shape[0], "[Weights.linear] expert \(e) of \(name) \(shape)")
                return LinearWeight(encoded: m.rows(e * shape[1], shape[1]))
            }
            let stacked = self[name]
            precondition(stacked.rank == 3 && e >= 0 && e < stacked.shape[0], "[Weights.linear] expert \(e) of \(name) \(stacked.shape)")
            return LinearWeight(stacked.slice(axis: 0, start: e, length: 1).reshaped([stacked.shape[1], stacked.shape[2]]))
        }
    }

    /// How many projections have been packed so far (each at most once).
    public var packedCount: Int { packs.count }
}

/// A thread-safe memo of packed projections, keyed by weight name (and expert).
final class LinearPacks: @unchecked Sendable {
    private let lock = NSLock()
    private var packed: [String: LinearWeight] = [:]

    func packed(_ key: String, _ make: () -> LinearWeight) -> LinearWeight {
        lock.lock()
        defer { lock.unlock() }
        if let p = packed[key] { return p }
        let p = make()
        packed[key] = p
        return p
    }

    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return packed.count
    }
}
