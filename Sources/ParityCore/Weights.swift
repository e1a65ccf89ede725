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

/// A complete, validated set of runtime weights: every expected tensor present with its shape,
/// every provided tensor used, every value finite.
public struct Weights: Sendable {
    private let tensors: [String: Tensor]

    public init(_ provided: [String: Tensor], config: TextConfig, source: String) throws {
        let expected = WeightNames.expected(for: config)
        for (name, shape) in expected {
            guard let t = provided[name] else { throw WeightError.missing(source: source, name: name) }
            guard t.shape == shape else {
                throw WeightError.wrongShape(source: source, name: name, expected: shape, found: t.shape)
            }
            if let bad = t.data.firstIndex(where: { !$0.isFinite }) {
                throw WeightError.notFinite(source: source, name: name, index: bad)
            }
        }
        let known = Set(expected.map(\.name))
        let extra = provided.keys.filter { !known.contains($0) }.sorted()
        guard extra.isEmpty else { throw WeightError.unexpected(source: source, names: extra) }
        tensors = provided
    }

    /// The tensor named `name`; names come from `WeightNames`, so a miss is a programming error.
    public subscript(_ name: String) -> Tensor {
        guard let t = tensors[name] else { preconditionFailure("[Weights] '\(name)' was not validated") }
        return t
    }

    public var names: [String] { tensors.keys.sorted() }
}
