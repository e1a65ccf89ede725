import Foundation
@_exported import TestSupport
import ParityCore
import ParityTensor
@testable import Checkpoint

/// Builds safetensors bytes the way the format specifies, with optional lies for tests.
struct SafetensorsBuilder {
    struct Item {
        var name: String
        var dtype: String
        var shape: [Int]
        var bytes: [UInt8]
    }
    var items: [Item] = []
    var metadata: [String: String]? = ["format": "mlx"]

    mutating func add(_ name: String, _ dtype: String, _ shape: [Int], _ bytes: [UInt8]) {
        items.append(Item(name: name, dtype: dtype, shape: shape, bytes: bytes))
    }

    mutating func f32(_ name: String, _ shape: [Int], _ values: [Float]) {
        add(name, "F32", shape, values.flatMap { le($0.bitPattern) })
    }

    mutating func bf16(_ name: String, _ shape: [Int], bits: [UInt16]) {
        add(name, "BF16", shape, bits.flatMap { le16($0) })
    }

    mutating func u32(_ name: String, _ shape: [Int], _ values: [UInt32]) {
        add(name, "U32", shape, values.flatMap { le($0) })
    }

    /// The header as a JSON-compatible dictionary (tests edit it to lie), and the data section.
    func parts() -> (header: [String: Any], data: [UInt8]) {
        var header: [String: Any] = [:]
        var data: [UInt8] = []
        for item in items {
            header[item.name] = ["dtype": item.dtype, "shape": item.shape, "data_offsets": [data.count, data.count + item.bytes.count]]
            data += item.bytes
        }
        if let metadata { header["__metadata__"] = metadata }
        return (header, data)
    }

    static func assemble(header: [String: Any], data: [UInt8], claimedLength: UInt64? = nil) -> Data {
        let json = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        var out = Data(le(claimedLength ?? UInt64(json.count)))
        out.append(json)
        out.append(contentsOf: data)
        return out
    }

    func build() -> Data {
        let (header, data) = parts()
        return Self.assemble(header: header, data: data)
    }
}

func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
    withUnsafeBytes(of: v.littleEndian) { Array($0) }
}

func le16(_ v: UInt16) -> [UInt8] { le(v) }

/// A fresh directory under the system temporary directory, removed on deinit.
final class Scratch {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("CheckpointTests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
}

/// Elements whose bit patterns differ, as a count.
func differingBits(_ a: [Float], _ b: [Float]) -> Int {
    guard a.count == b.count else { return max(a.count, b.count) }
    return zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
}

/// A tiny Qwen 3.5 config as JSON (the real Codable path decodes it).
func tinyConfigObject(_ edit: (inout [String: Any]) -> Void = { _ in }) -> [String: Any] {
    var object: [String: Any] = [
        "model_type": "qwen3_5", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 64,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 40,
        "linear_num_key_heads": 2, "linear_num_value_heads": 2, "linear_key_head_dim": 8,
        "linear_value_head_dim": 8, "linear_conv_kernel_dim": 3, "rms_norm_eps": 1e-5,
        "full_attention_interval": 2, "tie_word_embeddings": false,
    ]
    edit(&object)
    return object
}
