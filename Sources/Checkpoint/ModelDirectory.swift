import Foundation
import ParityCore
import ParityTensor

// An MLX model directory as mlx-lm saves it (mlx_lm.utils.save_model / save_config): config.json
// and model*.safetensors, float weights in F32/F16/BF16 and affine-quantized modules stored as
// `<module>.weight` (U32, packed) + `<module>.scales` + `<module>.biases`. Loaded the way
// mlx_lm.utils.load_model does: every model*.safetensors file, sanitize, then each quantized
// module with the config's per-module entry or parameters inferred from the shapes. Like mlx,
// matrices stay in their stored form (memory-mapped, so a 4-bit model takes 4 bits a weight):
// products decode them a panel at a time, bf16/f16 widened exactly and quantized weights
// dequantized (w = s·q + β, in the scales' dtype, bit for bit as mx.dequantize).

public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case notADirectory(String)
    case missingConfig(String)
    case noWeightFiles(String)
    case unsupportedModelType(source: String, modelType: String)
    case duplicateTensor(name: String, first: String, second: String)
    case strayPackedWeight(source: String, name: String)
    case missingShard(directory: String, file: String, shard: Int, of: Int)
    case inconsistentShards(directory: String, totals: [String])
    case badIndex(index: String, reason: String)
    case indexNamesMissingFile(index: String, tensor: String, file: String)
    case indexTensorNotInFile(index: String, tensor: String, file: String, foundIn: String?)
    case tensorDisagreesWithConfig(file: String, tensor: String, reason: String)
    case visionWeightsWithoutVisionConfig(file: String, tensor: String, config: String)

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
        case let .missingShard(directory, file, shard, total):
            return "\(directory)/\(file): missing (shard \(shard) of \(total); the other shards are there)"
        case let .inconsistentShards(directory, totals):
            return "\(directory): shard files disagree on their count (-of-\(totals.joined(separator: ", -of-")))"
        case let .badIndex(index, reason): return "\(index): \(reason)"
        case let .indexNamesMissingFile(index, tensor, file):
            return "\(index): weight_map['\(tensor)'] names \(file), which is not in the directory"
        case let .indexTensorNotInFile(index, tensor, file, foundIn):
            return "\(index): weight_map['\(tensor)'] names \(file), but "
                + (foundIn.map { "the tensor is in \($0)" } ?? "no weight file holds that tensor")
        case let .tensorDisagreesWithConfig(file, tensor, reason): return "\(file): tensor '\(tensor)': \(reason)"
        case let .visionWeightsWithoutVisionConfig(file, tensor, config):
            return "\(file): tensor '\(tensor)' is a vision-tower weight, but \(config) has no vision_config to build the tower from"
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
    /// The vision tower's tensors as stored (mapped), by checkpoint name: `visionWeights(config:)`.
    let visionStored: [String: SourceTensor]
    /// The file each stored tensor comes from, for errors.
    let fileOf: [String: String]

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

        // mlx_lm.utils.load_model globs model*.safetensors; shard names and the index are checked first.
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        let weightFiles = try ShardLayout.weightFiles(directory: path, names: names)
        guard !weightFiles.isEmpty else { throw CheckpointError.noWeightFiles(path) }
        let index = try ShardLayout.index(directory: directory, files: weightFiles)
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

        if let index { try ShardLayout.checkIndex(index, index: directory.appendingPathComponent(ShardLayout.indexName).path, owner: owner) }
        // Sanitize drops the vision tower (mlx-lm never builds it); without a vision_config nothing could.
        if !Self.hasVisionConfig(configData),
           let vision = owner.keys.sorted().first(where: { Sanitize.outerName($0) == nil && !$0.contains("mtp.") }) {
            throw CheckpointError.visionWeightsWithoutVisionConfig(file: owner[vision]!.source, tensor: vision, config: source)
        }

        let loaded = try Self.storedTensors(owner, config: config, quantization: quantization, source: path)
        let sanitized = Sanitize.mlxLM(loaded.tensors, modelType: modelType, config: config)
        visionStored = loaded.tensors.filter { VisionSanitize.isVision($0.key) }
        fileOf = owner.mapValues(\.source)
        do {
            weights = try Weights(values: sanitized.mapValues(\.value), config: config, source: path)
        } catch let error as WeightError {
            throw Self.naming(error, owner: owner)
        }
        summary = CheckpointSummary(files: weightFiles, dtypes: dtypes, quantized: loaded.quantized)
    }

    /// The checkpoint's own vision tower by mlx-vlm runtime name (`vision_tower.…`), sanitized as
    /// mlx-vlm's load_model does; projections stay in their stored form. Empty for a text-only one.
    public func visionWeights(config: VisionConfig) throws -> [String: WeightValue] {
        try VisionSanitize.tower(visionStored, config: config) { runtime in
            let stored = visionStored.keys.first { VisionSanitize.runtimeName($0) == runtime } ?? runtime
            return (fileOf[stored] ?? path, stored)
        }
    }

    static func hasVisionConfig(_ data: Data) -> Bool {
        ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any])?["vision_config"] is [String: Any]
    }

    /// A weight the config does not expect, or expects in another shape, named by the file
    /// and the stored tensor it came from (checkpoint names may differ from runtime ones).
    static func naming(_ error: WeightError, owner: [String: SafetensorsFile]) -> Error {
        func stored(_ runtime: String) -> (file: String, tensor: String)? {
            let moduleName = runtime.hasSuffix(".weight") ? String(runtime.dropLast(".weight".count)) : runtime
            for (name, file) in owner.sorted(by: { $0.key < $1.key }) {
                let candidate = Sanitize.outerName(name)
                if candidate == runtime || (name.hasSuffix(".scales") && candidate == moduleName + ".scales") {
                    return (file.source, name)
                }
            }
            return nil
        }
        switch error {
        case let .wrongShape(_, name, expected, found):
            guard let origin = stored(name) else { return error }
            return CheckpointError.tensorDisagreesWithConfig(file: origin.file, tensor: origin.tensor,
                reason: "shape \(found) after loading, but config.json implies \(expected) for '\(name)'")
        case let .unexpected(_, names):
            guard let first = names.first, let origin = stored(first) else { return error }
            return CheckpointError.tensorDisagreesWithConfig(file: origin.file, tensor: origin.tensor,
                reason: "config.json implies no such weight ('\(first)'\(names.count > 1 ? " and \(names.count - 1) more" : ""))")
        case let .notFinite(_, name, index):
            guard let origin = stored(name) else { return error }
            return CheckpointError.tensorDisagreesWithConfig(file: origin.file, tensor: origin.tensor,
                reason: "holds a NaN or Inf at flat index \(index)")
        case let .missing(source, name):
            // In the published layout the key the directory lacks is not the runtime name.
            guard owner.keys.contains(where: { $0.hasPrefix("model.language_model") }),
                  name.hasPrefix("language_model.model") else { return error }
            let storedName = "model.language_model" + name.dropFirst("language_model.model".count)
            return CheckpointError.tensorDisagreesWithConfig(file: source, tensor: storedName,
                reason: "missing: config.json implies it ('\(name)' after sanitize)")
        }
    }

    /// Every stored tensor: quantized triples and float matrices left in their stored form (read
    /// in place, decoded where used, bit for bit as mx.dequantize and the exact widening give
    /// them), small tensors widened to float32.
    static func storedTensors(_ owner: [String: SafetensorsFile], config: TextConfig,
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
            let packed = try weightFile.entry(weightName)
            guard packed.dtype == .u32 else {
                throw SafetensorsError.wrongDType(file: weightFile.source, tensor: weightName, found: packed.dtype.rawValue, wanted: "U32")
            }
            let scales = try scalesFile.entry(name), biases = try biasesFile.entry(biasesName)
            for (file, entry) in [(scalesFile, scales), (biasesFile, biases)] where !entry.dtype.isFloat || entry.dtype != scales.dtype {
                throw SafetensorsError.wrongDType(file: file.source, tensor: entry.name, found: entry.dtype.rawValue,
                                                  wanted: scales.dtype.isFloat ? scales.dtype.rawValue : "F32, F16 or BF16")
            }
            // The per-module key is the module path after sanitize (mlx quantizes the built model).
            let runtimeModule = Sanitize.runtimeName(module) ?? module
            let inputDim = Sanitize.runtimeName(weightName).flatMap { expectedShapes[$0]?.last }
            guard let quantization else {
                throw QuantizationError.badConfig(source: source, reason: "'\(name)' is stored but config.json has no quantization block (mlx-lm would not quantize '\(module)')")
            }
            let parameters = try quantization.parameters(module: runtimeModule, inputDim: inputDim, packedLastDim: packed.shape.last ?? 0,
                            scalesLastDim: scales.shape.last ?? 0, source: source)
            let shape = try AffineQuantization.unpackedShape(packedShape: packed.shape, scalesShape: scales.shape,
                                                             biasesShape: biases.shape, parameters: parameters,
                                                             module: runtimeModule, source: source)
            let columns = shape.last!
            let matrix = EncodedMatrix(
                owner: KeepAlive([weightFile.owner, scalesFile.owner, biasesFile.owner]),
                values: weightFile.address(of: packed), scales: scalesFile.address(of: scales), biases: biasesFile.address(of: biases),
                rows: shape.dropLast().reduce(1, *), columns: columns,
                encoding: .affine(bits: parameters.bits, groupSize: parameters.groupSize, scales: scaleType(scales.dtype)))
            tensors[weightName] = SourceTensor(.encoded(matrix, shape: shape), dtype: scales.dtype)
            quantizedCounts[parameters.description, default: 0] += 1
            consumed.formUnion([name, weightName, biasesName])
        }
        for (name, file) in owner where !consumed.contains(name) {
            let entry = try file.entry(name)
            guard entry.dtype.isFloat else { throw CheckpointError.strayPackedWeight(source: file.source, name: name) }
            if keepsStoredForm(name, entry) {
                tensors[name] = SourceTensor(.encoded(try file.matrix(name), shape: entry.shape), dtype: entry.dtype)
            } else {
                tensors[name] = SourceTensor(try file.floats(name), dtype: entry.dtype)
            }
        }
        return (tensors, quantizedCounts)
    }

    /// Projections and embeddings stay in their stored form; norms, biases and the depthwise
    /// conv (which sanitize may move or shift) are widened.
    static func keepsStoredForm(_ name: String, _ entry: SafetensorsEntry) -> Bool {
        entry.shape.count >= 2 && name.hasSuffix(".weight") && !name.contains("conv1d") && entry.count >= 4096
    }

    static func scaleType(_ dtype: SafetensorsDType) -> EncodedMatrix.ScaleType {
        switch dtype {
        case .bf16: return .bfloat16
        case .f16: return .float16
        default: return .float32
        }
    }
}

/// Keeps the files a quantized matrix reads from mapped (its weight, scales and biases may live
/// in different shards).
final class KeepAlive: @unchecked Sendable {
    let objects: [AnyObject]
    init(_ objects: [AnyObject]) { self.objects = objects }
}
