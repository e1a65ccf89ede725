import Foundation
import ParityTensor

// A safetensors reader: an 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data.
// Offsets count from the first byte after the header. Every claim the header makes is checked
// against the file before a byte of data is read: a lying header is a named error, never a crash.

public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    case unreadable(file: String, reason: String)
    case truncated(file: String, size: Int)
    case headerLengthExceedsFile(file: String, headerLength: UInt64, available: Int)
    case badHeader(file: String, reason: String)
    case badEntry(file: String, tensor: String, reason: String)
    case unsupportedDType(file: String, tensor: String, dtype: String)
    case offsetsOutOfRange(file: String, tensor: String, begin: Int, end: Int, dataSize: Int)
    case sizeMismatch(file: String, tensor: String, shape: [Int], dtype: String, expectedBytes: Int, foundBytes: Int)
    case overlapping(file: String, first: String, second: String)
    case wrongDType(file: String, tensor: String, found: String, wanted: String)
    case noSuchTensor(file: String, tensor: String)

    public var description: String {
        switch self {
        case let .unreadable(file, reason): return "\(file): cannot read: \(reason)"
        case let .truncated(file, size): return "\(file): \(size) bytes, too short for a safetensors header length"
        case let .headerLengthExceedsFile(file, n, available):
            return "\(file): header claims \(n) bytes but only \(available) follow the length field"
        case let .badHeader(file, reason): return "\(file): bad safetensors header: \(reason)"
        case let .badEntry(file, tensor, reason): return "\(file): tensor '\(tensor)': \(reason)"
        case let .unsupportedDType(file, tensor, dtype):
            return "\(file): tensor '\(tensor)': dtype \(dtype) is not supported (F32, F16, BF16, U32)"
        case let .offsetsOutOfRange(file, tensor, begin, end, dataSize):
            return "\(file): tensor '\(tensor)': data_offsets [\(begin), \(end)] outside the \(dataSize)-byte data section"
        case let .sizeMismatch(file, tensor, shape, dtype, expected, found):
            return "\(file): tensor '\(tensor)': shape \(shape) of \(dtype) needs \(expected) bytes, data_offsets span \(found)"
        case let .overlapping(file, first, second):
            return "\(file): tensors '\(first)' and '\(second)' overlap in the data section"
        case let .wrongDType(file, tensor, found, wanted):
            return "\(file): tensor '\(tensor)' is \(found), expected \(wanted)"
        case let .noSuchTensor(file, tensor): return "\(file): no tensor '\(tensor)'"
        }
    }
}

public enum SafetensorsDType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", u32 = "U32"

    public var byteSize: Int {
        switch self {
        case .f32, .u32: return 4
        case .f16, .bf16: return 2
        }
    }

    public var isFloat: Bool { self != .u32 }
}

public struct SafetensorsEntry: Sendable, Equatable {
    public var name: String
    public var dtype: SafetensorsDType
    public var shape: [Int]
    /// Byte range inside the data section.
    public var begin: Int
    public var end: Int

    public var count: Int { shape.reduce(1, *) }
}

public struct SafetensorsFile: Sendable {
    /// Largest header accepted (the format's own limit is 100 MB).
    public static let maxHeaderLength: UInt64 = 100_000_000

    public let source: String
    public let metadata: [String: String]
    public let entries: [String: SafetensorsEntry]
    private let store: ByteStore
    private let dataStart: Int

    public var names: [String] { entries.keys.sorted() }

    /// The file memory-mapped: tensors are read in place, and pages no tensor is read from stay on disk.
    public static func open(_ path: String) throws -> SafetensorsFile {
        try SafetensorsFile(store: ByteStore(mapping: path), source: path)
    }

    public init(bytes: Data, source: String) throws {
        try self.init(store: ByteStore(copying: bytes), source: source)
    }

    init(store: ByteStore, source: String) throws {
        self.source = source
        self.store = store
        let bytes = store.buffer
        guard bytes.count >= 8 else { throw SafetensorsError.truncated(file: source, size: bytes.count) }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        let available = bytes.count - 8
        guard headerLength <= UInt64(available) else {
            throw SafetensorsError.headerLengthExceedsFile(file: source, headerLength: headerLength, available: available)
        }
        guard headerLength <= Self.maxHeaderLength else {
            throw SafetensorsError.badHeader(file: source, reason: "header length \(headerLength) exceeds \(Self.maxHeaderLength)")
        }
        let n = Int(headerLength)
        dataStart = 8 + n
        let dataSize = bytes.count - dataStart
        let headerBytes = Data(bytes[8..<dataStart])
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: headerBytes)
        } catch {
            throw SafetensorsError.badHeader(file: source, reason: "not JSON (\(error.localizedDescription))")
        }
        guard let object = parsed as? [String: Any] else {
            throw SafetensorsError.badHeader(file: source, reason: "not a JSON object")
        }
        var metadata: [String: String] = [:]
        var entries: [String: SafetensorsEntry] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw SafetensorsError.badHeader(file: source, reason: "__metadata__ is not an object")
                }
                for (k, v) in m {
                    guard let s = v as? String else {
                        throw SafetensorsError.badHeader(file: source, reason: "__metadata__ value for '\(k)' is not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            entries[name] = try Self.entry(name, value, source: source, dataSize: dataSize)
        }
        // Spans may not overlap (empty tensors occupy nothing).
        let spans = entries.values.filter { $0.end > $0.begin }.sorted { ($0.begin, $0.name) < ($1.begin, $1.name) }
        for (a, b) in zip(spans, spans.dropFirst()) where b.begin < a.end {
            throw SafetensorsError.overlapping(file: source, first: a.name, second: b.name)
        }
        self.metadata = metadata
        self.entries = entries
    }

    /// The fields of one header entry; JSONDecoder rejects booleans, fractions and overflowing
    /// numbers where integers are required.
    private struct RawEntry: Decodable {
        var dtype: String
        var shape: [Int]
        var dataOffsets: [Int]
        enum CodingKeys: String, CodingKey {
            case dtype, shape
            case dataOffsets = "data_offsets"
        }
    }

    private static func entry(_ name: String, _ value: Any, source: String, dataSize: Int) throws -> SafetensorsEntry {
        guard value is [String: Any], let json = try? JSONSerialization.data(withJSONObject: value) else {
            throw SafetensorsError.badEntry(file: source, tensor: name, reason: "not a JSON object")
        }
        let raw: RawEntry
        do {
            raw = try JSONDecoder().decode(RawEntry.self, from: json)
        } catch let DecodingError.keyNotFound(key, _) {
            throw SafetensorsError.badEntry(file: source, tensor: name, reason: "'\(key.stringValue)' is missing")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let key = context.codingPath.first?.stringValue ?? "?"
            throw SafetensorsError.badEntry(file: source, tensor: name, reason: "'\(key)' has the wrong type")
        } catch {
            throw SafetensorsError.badEntry(file: source, tensor: name, reason: "\(error)")
        }
        guard let dtype = SafetensorsDType(rawValue: raw.dtype) else {
            throw SafetensorsError.unsupportedDType(file: source, tensor: name, dtype: raw.dtype)
        }
        let shape = raw.shape
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw SafetensorsError.badEntry(file: source, tensor: name, reason: "negative dimension in shape \(shape)")
        }
        let offsets = raw.dataOffsets
        guard offsets.count == 2 else {
            throw SafetensorsError.badEntry(file: source, tensor: name, reason: "data_offsets must be two integers, found \(offsets)")
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin >= 0, begin <= end, end <= dataSize else {
            throw SafetensorsError.offsetsOutOfRange(file: source, tensor: name, begin: begin, end: end, dataSize: dataSize)
        }
        // Element count and byte size with overflow checks: a header may claim absurd shapes.
        var bytesNeeded = dtype.byteSize
        var overflow = false
        for d in shape where !overflow {
            (bytesNeeded, overflow) = bytesNeeded.multipliedReportingOverflow(by: d)
        }
        guard !overflow, bytesNeeded == end - begin else {
            throw SafetensorsError.sizeMismatch(file: source, tensor: name, shape: shape, dtype: dtype.rawValue,
                                                expectedBytes: overflow ? Int.max : bytesNeeded, foundBytes: end - begin)
        }
        return SafetensorsEntry(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
    }

    public func entry(_ name: String) throws -> SafetensorsEntry {
        guard let e = entries[name] else { throw SafetensorsError.noSuchTensor(file: source, tensor: name) }
        return e
    }

    /// A floating-point tensor widened to float32 (exact for F16 and BF16).
    public func floats(_ name: String) throws -> Tensor {
        let e = try entry(name)
        guard e.dtype.isFloat else {
            throw SafetensorsError.wrongDType(file: source, tensor: name, found: e.dtype.rawValue, wanted: "F32, F16 or BF16")
        }
        let count = e.count
        let base = dataStart + e.begin
        var out = [Float](repeating: 0, count: count)
        do {
            let raw = store.buffer
            switch e.dtype {
            case .f32:
                for i in 0..<count {
                    out[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: base + 4 * i, as: UInt32.self)))
                }
            case .bf16:
                for i in 0..<count {
                    out[i] = HalfFloat.widenBF16(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: base + 2 * i, as: UInt16.self)))
                }
            case .f16:
                for i in 0..<count {
                    out[i] = HalfFloat.widenF16(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: base + 2 * i, as: UInt16.self)))
                }
            case .u32:
                break
            }
        }
        return Tensor(shape: e.shape, data: out)
    }

    /// A U32 tensor (packed quantized weights).
    public func uint32s(_ name: String) throws -> (shape: [Int], values: [UInt32]) {
        let e = try entry(name)
        guard e.dtype == .u32 else {
            throw SafetensorsError.wrongDType(file: source, tensor: name, found: e.dtype.rawValue, wanted: "U32")
        }
        let base = dataStart + e.begin
        let raw = store.buffer
        let values = (0..<e.count).map { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: base + 4 * $0, as: UInt32.self)) }
        return (e.shape, values)
    }

    /// Where a tensor's bytes start, in place; valid while `owner` lives.
    func address(of e: SafetensorsEntry) -> UnsafeRawPointer { store.base + dataStart + e.begin }

    /// What keeps the bytes alive.
    var owner: AnyObject { store }

    /// A floating-point weight `[…, K]` as `[count / K, K]` rows, read in place and decoded where used.
    public func matrix(_ name: String) throws -> EncodedMatrix {
        let e = try entry(name)
        let encoding: EncodedMatrix.Encoding
        switch e.dtype {
        case .f32: encoding = .float32
        case .bf16: encoding = .bfloat16
        case .f16: encoding = .float16
        case .u32: throw SafetensorsError.wrongDType(file: source, tensor: name, found: e.dtype.rawValue, wanted: "F32, F16 or BF16")
        }
        let columns = e.shape.last ?? 1
        return EncodedMatrix(owner: store, values: address(of: e), rows: columns == 0 ? 0 : e.count / columns,
                             columns: columns, encoding: encoding)
    }
}
