import Foundation
import GoldenIO
import LMMirror
import ParityCore
import ParityEngine
import ParityTensor
import VLMMirror

// The benchmark's shared data: one HDF5 file in the golden layout (written by
// `tools/bench.py weights`) holding the config, random runtime weights and a prompt.

public enum BenchError: Error, CustomStringConvertible {
    case data(String)
    case engine(String)

    public var description: String {
        switch self {
        case .data(let s): return "bench data: \(s)"
        case .engine(let s): return "bench engine: \(s)"
        }
    }
}

public final class BenchData {
    public let golden: GoldenFile
    /// The prompt `[L]`; prefill lengths are prefixes of it.
    public let prompt: [Int]
    /// Float32 bytes of every weight in the file.
    public let weightBytes: Int
    public let path: String

    public init(path: String) throws {
        self.path = path
        golden = try GoldenFile(path: path)
        prompt = try golden.promptTokens().first ?? []
        // Strict, as Weights is: every expected tensor present with its shape, nothing extra.
        let expected = WeightNames.expected(for: golden.config)
        let stored = Set(try golden.file.children(of: "/weights"))
        var bytes = 0
        for (name, shape) in expected {
            guard stored.contains(name) else { throw WeightError.missing(source: path, name: name) }
            let found = try golden.file.datasetInfo("/weights/" + name).shape
            guard found == shape else { throw WeightError.wrongShape(source: path, name: name, expected: shape, found: found) }
            bytes += 4 * shape.reduce(1, *)
        }
        let extra = stored.subtracting(expected.map(\.name)).sorted()
        guard extra.isEmpty else { throw WeightError.unexpected(source: path, names: extra) }
        weightBytes = bytes
    }

    public var config: TextConfig { golden.config }

    /// The lm mirror, its weights read one tensor at a time (never a second full copy).
    public func lmModel() throws -> LMTextModel {
        let stream = StreamingWeights(golden)
        let model = LMTextModel(config: golden.config, weights: stream)
        if let error = stream.firstError { throw error }
        return model
    }
}

extension BenchData {
    /// The vlm mirror's language model over weights read on demand (`Weights(names:source:load:)`):
    /// each projection is read, packed and dropped; the model keeps what it keeps (with tied
    /// embeddings, the packed lm head serves the embedding rows too).
    public func vlmModel() throws -> VLMTextModel {
        let stream = StreamingWeights(golden)
        let names = WeightNames.expected(for: golden.config).map(\.name)
        let box = UncheckedBox(value: stream)
        let weights = Weights(names: names, source: path) { box.value[$0] }
        let model = VLMTextModel(config: golden.config, weights: weights)
        if let error = stream.firstError { throw error }
        return model
    }
}

/// The streaming reader crosses into `Weights`' loader, which runs on the constructing thread only.
private struct UncheckedBox<T>: @unchecked Sendable { let value: T }

/// Reads each weight from the file when the model's constructor asks for it. Names and shapes
/// were validated when the file was opened; a read that still fails (or finds a NaN) is kept and
/// thrown by `BenchData.lmModel()` once the constructor returns, and a zero tensor stands in.
final class StreamingWeights: WeightProvider {
    private let golden: GoldenFile
    private(set) var firstError: Error?

    init(_ golden: GoldenFile) { self.golden = golden }

    subscript(_ name: String) -> Tensor {
        do {
            return try golden.tensor("/weights/" + name)
        } catch {
            if firstError == nil { firstError = error }
            let shape = (try? golden.file.datasetInfo("/weights/" + name).shape) ?? [0]
            return Tensor(zeros: shape)
        }
    }
}
