// Value types GoldenIO hands out. No HDF5 type appears here.

/// A dataset's contents: `values` in row-major order, `shape == []` for a scalar.
public struct H5Array<Element> {
    public var shape: [Int]
    public var values: [Element]

    public init(shape: [Int], values: [Element]) {
        self.shape = shape
        self.values = values
    }
}

extension H5Array: Equatable where Element: Equatable {}
extension H5Array: Sendable where Element: Sendable {}

/// What a dataset or attribute stores, as HDF5 reports it.
public enum H5ElementKind: Equatable, Sendable, CustomStringConvertible {
    case float(bits: Int)
    case integer(signed: Bool, bits: Int)
    case string
    /// Any other HDF5 class, by name: "compound", "enum", "opaque", "bitfield", ...
    case other(String)

    /// numpy-style names: "float32", "int64", "uint8", "string", "compound".
    public var description: String {
        switch self {
        case .float(let bits): return "float\(bits)"
        case .integer(let signed, let bits): return "\(signed ? "" : "u")int\(bits)"
        case .string: return "string"
        case .other(let name): return name
        }
    }

    public var isNumeric: Bool {
        switch self {
        case .float, .integer: return true
        case .string, .other: return false
        }
    }
}

public struct H5DatasetInfo: Sendable, Equatable {
    public var shape: [Int]
    public var kind: H5ElementKind

    public init(shape: [Int], kind: H5ElementKind) {
        self.shape = shape
        self.kind = kind
    }
}
