import Foundation
import ParityCore
import ParityTensor

// An MLX model directory as mlx-lm saves it (mlx_lm.utils.save_model / save_config): config.json
// and model*.safetensors, float weights in F32/F16/BF16 and affine-quantized modules stored as
// `<module>.weight` (U32, packed) + `<module>.scales` + `<module>.biases`. Loaded the way
// mlx_lm.utils.load_model does: every model*.safetensors file, sanitize, then each quantized
// module with the config's per-module entry or parameters inferred from the shapes. Unlike mlx,
// everything ends up float32: bf16/f16 are widened exactly, quantized weights are dequantized
// (w = s·q + β, in the scales' dtype, bit for bit as mx.dequantize).

public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case notADirectory(String)
    case missingConfig(String)
    case noWeightFiles(String)
    case unsupportedModelType(source: String, modelType: String)
    case duplicateTensor(name: String, first: String, second: String)
    case strayPackedWeight(source: String, name: String)

    public var description: String {
        switch self {
        case .notADirectory(let p): return "\(p): not a directory"
        case .missingConfig(let p): return "\(p): no config.json"
        case .noWeightFiles(let p): return "\(p): no model*.safetensors files"
        case let .unsupportedModelType(source, t):
            return "\(source): model_type '\(t)' is not a Qwen 3.5 text model (qwen3_5, qwen3_5_moe)"
        case let .duplicateTensor(name, first, second): return "tensor '\(name)' appears in both \(first) and \(second)"
        case let .strayPackedWeight(source, name):
            return "\(source): '\(name)' is U32 but has no '.scales' beside it (not an affine-quantized module)"
        }
    }
}

/// What was found in a model directory, for reports.
public struct CheckpointSummary: Sendable, Equatable {
    public var files: [String]
    /// Stored tensor count per dtype ("F32", "BF16", …).
    public var dtypes: [String: Int]
    /// Quantized modules per parameter set, e.g. "4-bit/group 64 affine": 27.
    public var quantized: [String: Int]

    public var text: String {
        let d = dtypes.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        let q = quantized.sorted { $0.key < $1.key }.map { "\($0.value) × \($0.key)" }.joined(separator: ", ")
        return "\(files.count) file(s), tensors: \(d)" + (q.isEmpty ? "" : "; quantized modules: \(q)")
    }
}

public struct ModelDirectory: Sendable {
    public static let supportedModelTypes = ["qwen3_5", "qwen3_5_moe"]

    public let path: String
    public let modelType: String
    public let rawConfigJSON: String
    public let config: TextConfig
    public let quantization: QuantizationConfig?
    public let weights: Weights
    public let summary: CheckpointSummary

    public init(path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CheckpointError.notADirectory(path)
        }
        let directory = URL(fileURLWithPath: path)
        let configURL = directory.appendingPathComponent("config.json")
        guard let configData = try? Data(contentsOf: configURL) else { throw CheckpointError.missingConfig(path) }
        let source = configURL.path
        self.path = path
        rawConfigJSON = String(decoding: configData, as: UTF8.self)

        struct TopLevel: Decodable { var model_type: String? }
        let top = try? JSONDecoder().decode(TopLevel.self, from: configData)
        modelType = top?.model_type ?? ""
        guard Self.supportedModelTypes.contains(modelType) else {
            throw CheckpointError.unsupportedModelType(source: source, modelType: modelType)
        }
        config = try TextConfig.mlxLM(json: configData, source: source)
        quantization = try QuantizationConfig.from(configJSON: configData, source: source)

        // mlx_lm.utils.load_model globs model*.safetensors.
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        let weightFiles = names.filter { $0.hasPrefix("model") && $0.hasSuffix(".safetensors") }.sorted()
        guard !weightFiles.isEmpty else { throw CheckpointError.noWeightFiles(path) }
        let files = try weightFiles.map { try SafetensorsFile.open(directory.appendingPathComponent($0).path) }
        var owner: [String: SafetensorsFile] = [:]
        var dtypes: [String: Int] = [:]
        for file in files {
            for entry in file.entries.values {
                if let first = owner[entry.name] {
                    throw CheckpointError.duplicateTensor(name: entry.name, first: first.source, second: file.source)
                }
                owner[entry.name] = file
                dtypes[entry.dtype.rawValue, default: 0] += 1
            }
        }

        let loaded = try Self.widenAndDequantize(owner, config: config, quantization: quantization, source: path)
        let sanitized = Sanitize.mlxLM(loaded.tensors, modelType: modelType, config: config)
        weights = try Weights(sanitized.mapValues(\.tensor), config: config, source: path)
        summary = CheckpointSummary(files: weightFiles, dtypes: dtypes, quantized: loaded.quantized)
    }

    /// Every stored tensor as float32: floats widened, quantized triples dequantized.
    static func widenAndDequantize(_ owner: [String: SafetensorsFile], config: TextConfig,
                                   quantization: QuantizationConfig?, source: String)
        throws -> (tensors: [String: SourceTensor], quantized: [String: Int]) {
        let expectedShapes = Dictionary(WeightNames.expected(for: config).map { ($0.name, $0.shape) },
                                        uniquingKeysWith: { a, _ in a })
        var tensors: [String: SourceTensor] = [:]
        var quantizedCounts: [String: Int] = [:]
        var consumed = Set<String>()
        for name in owner.keys.sorted() where name.hasSuffix(".scales") {
            let module = String(name.dropLast(".scales".count))
            let weightName = module + ".weight", biasesName = module + ".biases"
            guard let weightFile = owner[weightName] else {
                throw QuantizationError.incompleteTriple(source: source, module: module, missing: weightName)
            }
            guard let biasesFile = owner[biasesName] else {
                throw QuantizationError.incompleteTriple(source: source, module: module, missing: biasesName)
            }
            let scalesFile = owner[name]!
            let packed = try weightFile.uint32s(weightName)
            let scalesEntry = try scalesFile.entry(name)
            let scales = try scalesFile.floats(name)
            let biases = try biasesFile.floats(biasesName)
            // The per-module key is the module path after sanitize (mlx quantizes the built model).
            let runtimeModule = Sanitize.runtimeName(module) ?? module
            let inputDim = Sanitize.runtimeName(weightName).flatMap { expectedShapes[$0]?.last }
            guard let quantization else {
                throw QuantizationError.badConfig(source: source, reason: "'\(name)' is stored but config.json has no quantization block (mlx-lm would not quantize '\(module)')")
            }
            let parameters = try quantization.parameters(module: runtimeModule, inputDim: inputDim, packedLastDim: packed.shape.last ?? 0,
                            scalesLastDim: scales.shape.last ?? 0, source: source)
            let dense = try AffineQuantization.dequantize(
                packed: packed.values, packedShape: packed.shape, scales: scales, biases: biases,
                parameters: parameters, arithmetic: ScaleArithmetic(scalesEntry.dtype),
                module: runtimeModule, source: source)
            tensors[weightName] = SourceTensor(dense, dtype: scalesEntry.dtype)
            quantizedCounts[parameters.description, default: 0] += 1
            consumed.formUnion([name, weightName, biasesName])
        }
        for (name, file) in owner where !consumed.contains(name) {
            let entry = try file.entry(name)
            guard entry.dtype.isFloat else { throw CheckpointError.strayPackedWeight(source: file.source, name: name) }
            tensors[name] = SourceTensor(try file.floats(name), dtype: entry.dtype)
        }
        return (tensors, quantizedCounts)
    }
}
