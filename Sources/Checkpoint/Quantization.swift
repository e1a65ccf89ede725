import Foundation
import ParityTensor

// Affine quantization as mlx stores it (mx.quantize, mode "affine"): every `groupSize`
// consecutive elements of a row share a scale s and a bias β; element i is the unsigned
// `bits`-bit integer q_i, packed into uint32 words from the least significant bit up (a
// little-endian bit stream, so 3-, 5- and 6-bit values may straddle two words), and
//     w_i = s · q_i + β
// The arithmetic happens in the scales' dtype: float32 scales give one f32 multiply and one
// f32 add; bf16/f16 scales round the product and then the sum to 16 bits (measured bit for bit
// against mx.dequantize on the CPU backend, mlx 0.32.4).

public enum QuantizationError: Error, CustomStringConvertible, Equatable {
    case badConfig(source: String, reason: String)
    case unsupportedMode(source: String, module: String, mode: String)
    case shapeMismatch(source: String, module: String, reason: String)
    case incompleteTriple(source: String, module: String, missing: String)

    public var description: String {
        switch self {
        case let .badConfig(source, reason): return "\(source): quantization config: \(reason)"
        case let .unsupportedMode(source, module, mode):
            return "\(source): '\(module)' is quantized with mode '\(mode)'; only 'affine' is supported"
        case let .shapeMismatch(source, module, reason): return "\(source): quantized '\(module)': \(reason)"
        case let .incompleteTriple(source, module, missing):
            return "\(source): quantized '\(module)' has no '\(missing)'"
        }
    }
}

public struct QuantizationParameters: Equatable, Sendable, CustomStringConvertible {
    public var groupSize: Int
    public var bits: Int
    public var mode: String

    public init(groupSize: Int, bits: Int, mode: String = "affine") {
        self.groupSize = groupSize
        self.bits = bits
        self.mode = mode
    }

    /// What `to_quantized()` uses for keys a per-layer dict leaves out: mlx's per-mode defaults.
    static func modeDefaults(_ mode: String) -> (groupSize: Int, bits: Int)? {
        switch mode {
        case "affine": return (64, 4)
        case "mxfp4": return (32, 4)
        case "nvfp4": return (16, 4)
        case "mxfp8": return (32, 8)
        default: return nil
        }
    }

    /// The widths mx.quantize accepts per mode (mlx 0.32).
    static func supportedBits(_ mode: String) -> [Int]? {
        switch mode {
        case "affine": return [2, 3, 4, 5, 6, 8]
        case "mxfp4", "nvfp4": return [4]
        case "mxfp8": return [8]
        default: return nil
        }
    }

    public var description: String { "\(bits)-bit/group \(groupSize) \(mode)" }
}

/// The `quantization` block of an mlx-lm config.json: defaults plus per-module entries keyed by
/// module path (`quantize_model` records every module its predicate gave a dict, e.g. the MoE
/// router `…mlp.gate` at 8 bits, group 64; `false` means "left unquantized").
public struct QuantizationConfig: Equatable, Sendable {
    public enum Entry: Equatable, Sendable { case quantized(QuantizationParameters), unquantized }

    public var defaults: QuantizationParameters
    public var perModule: [String: Entry]

    public init(defaults: QuantizationParameters, perModule: [String: Entry] = [:]) {
        self.defaults = defaults
        self.perModule = perModule
    }

    /// One JSON value of the block. JSONDecoder keeps booleans and numbers apart (JSONSerialization
    /// on Linux does not), so `true` is never taken for 1 nor 1 for `true`.
    indirect enum Value: Decodable {
        case flag(Bool), integer(Int), number(Double), text(String), object([String: Value]), other

        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let b = try? c.decode(Bool.self) { self = .flag(b) }
            else if let i = try? c.decode(Int.self) { self = .integer(i) }
            else if let d = try? c.decode(Double.self) { self = .number(d) }
            else if let s = try? c.decode(String.self) { self = .text(s) }
            else if let o = try? c.decode([String: Value].self) { self = .object(o) }
            else { self = .other }
        }
    }

    private struct Blocks: Decodable {
        var quantization: Value?
        var quantizationConfig: Value?
        enum CodingKeys: String, CodingKey {
            case quantization
            case quantizationConfig = "quantization_config"
        }
    }

    /// Reads `quantization` from a config.json (mlx-lm writes the same dict again as
    /// `quantization_config`, which is the fallback). A `quantization_config` with a
    /// `quant_method` (AWQ, GPTQ, fp8, …) is a different format and refused. Returns nil for an
    /// unquantized config.
    public static func from(configJSON data: Data, source: String) throws -> QuantizationConfig? {
        let blocks: Blocks
        do {
            blocks = try JSONDecoder().decode(Blocks.self, from: data)
        } catch {
            throw QuantizationError.badConfig(source: source, reason: "config.json is not a JSON object")
        }
        var chosen = blocks.quantization
        if chosen == nil, case .object(let legacy)? = blocks.quantizationConfig {
            if let method = legacy["quant_method"] {
                throw QuantizationError.badConfig(source: source, reason: "quantization_config has quant_method \(method); not an mlx affine checkpoint")
            }
            chosen = blocks.quantizationConfig
        }
        guard let chosen else { return nil }
        guard case .object(let dict) = chosen else {
            throw QuantizationError.badConfig(source: source, reason: "'quantization' is not an object")
        }
        let defaults = try parameters(dict, source: source, key: "quantization")
        var perModule: [String: Entry] = [:]
        for (key, value) in dict where !["group_size", "bits", "mode"].contains(key) {
            switch value {
            case .flag(let on): perModule[key] = on ? .quantized(defaults) : .unquantized
            case .object(let sub): perModule[key] = .quantized(try parameters(sub, source: source, key: "quantization.\(key)"))
            default:
                throw QuantizationError.badConfig(source: source, reason: "'quantization.\(key)' is neither a boolean nor an object")
            }
        }
        return QuantizationConfig(defaults: defaults, perModule: perModule)
    }

    private static func parameters(_ dict: [String: Value], source: String, key: String) throws -> QuantizationParameters {
        var mode = "affine"
        switch dict["mode"] {
        case nil: break
        case .text(let m)?: mode = m
        default: throw QuantizationError.badConfig(source: source, reason: "'\(key).mode' is not a string")
        }
        guard let modeDefaults = QuantizationParameters.modeDefaults(mode) else {
            throw QuantizationError.badConfig(source: source, reason: "'\(key).mode' is '\(mode)', not an mlx quantization mode")
        }
        func int(_ name: String, _ fallback: Int) throws -> Int {
            switch dict[name] {
            case nil: return fallback
            case .integer(let n)? where n > 0: return n
            default: throw QuantizationError.badConfig(source: source, reason: "'\(key).\(name)' must be a positive integer")
            }
        }
        let bits = try int("bits", modeDefaults.bits)
        // mx.quantize refuses other widths; a checkpoint claiming one was not written by mlx.
        if let widths = QuantizationParameters.supportedBits(mode), !widths.contains(bits) {
            throw QuantizationError.badConfig(source: source, reason: "'\(key).bits' is \(bits); mlx's \(mode) mode takes "
                + widths.map(String.init).joined(separator: ", ") + " bits")
        }
        return QuantizationParameters(groupSize: try int("group_size", modeDefaults.groupSize), bits: bits, mode: mode)
    }

    /// What mlx-lm's load_model does for a module whose `.scales` exist: the per-module entry if
    /// the config names the module, otherwise (group size, bits) inferred from the unquantized
    /// input dim and the stored shapes. Without a known input dim the defaults apply.
    public func parameters(module: String, inputDim: Int?, packedLastDim: Int, scalesLastDim: Int,
                           source: String) throws -> QuantizationParameters {
        switch perModule[module] {
        case .quantized(let p)?: return p
        case .unquantized?:
            throw QuantizationError.shapeMismatch(source: source, module: module,
                                                  reason: "the config marks it unquantized but the checkpoint stores scales")
        case nil:
            guard let inputDim else { return defaults }
            guard let p = AffineQuantization.infer(inputDim: inputDim, packedLastDim: packedLastDim, scalesLastDim: scalesLastDim) else {
                throw QuantizationError.shapeMismatch(source: source, module: module,
                    reason: "\(packedLastDim) packed words and \(scalesLastDim) scales per row fit no bits/group size for input dim \(inputDim)")
            }
            return p
        }
    }
}

public enum ScaleArithmetic: Sendable, Equatable {
    case float32, bfloat16, float16

    init(_ dtype: SafetensorsDType) {
        switch dtype {
        case .bf16: self = .bfloat16
        case .f16: self = .float16
        default: self = .float32
        }
    }
}

public enum AffineQuantization {
    /// Infers (group size, bits) the way mlx_lm.utils.infer_quant_config does, from the
    /// unquantized input dimension and the stored shapes.
    public static func infer(inputDim: Int, packedLastDim: Int, scalesLastDim: Int) -> QuantizationParameters? {
        guard inputDim > 0, scalesLastDim > 0, inputDim % scalesLastDim == 0, (packedLastDim * 32) % inputDim == 0 else {
            return nil
        }
        return QuantizationParameters(groupSize: inputDim / scalesLastDim, bits: packedLastDim * 32 / inputDim)
    }

    /// Unpacks and rescales `packed` `[…, out, in·bits/32]` with `scales`/`biases` `[…, out, in/g]`
    /// into `[…, out, in]`. Shapes are checked; a mismatch throws with `module` in the message.
    /// The unquantized shape `[…, out, in]` of a packed weight, once the stored shapes are checked
    /// against each other and against `p`; a mismatch throws with `module` in the message.
    public static func unpackedShape(packedShape: [Int], scalesShape: [Int], biasesShape: [Int],
                                     parameters p: QuantizationParameters, module: String, source: String) throws -> [Int] {
        func fail(_ reason: String) -> QuantizationError {
            .shapeMismatch(source: source, module: module, reason: reason)
        }
        guard p.mode == "affine" else { throw QuantizationError.unsupportedMode(source: source, module: module, mode: p.mode) }
        guard (1...8).contains(p.bits), p.groupSize > 0 else { throw fail("bits \(p.bits) / group size \(p.groupSize) not supported") }
        guard packedShape.count >= 2, let wordsPerRow = packedShape.last else { throw fail("packed weight has shape \(packedShape)") }
        guard (wordsPerRow * 32) % p.bits == 0 else { throw fail("\(wordsPerRow) words per row do not hold whole \(p.bits)-bit values") }
        let inputDim = wordsPerRow * 32 / p.bits
        guard inputDim % p.groupSize == 0 else { throw fail("input dim \(inputDim) is not a multiple of group size \(p.groupSize)") }
        let groups = inputDim / p.groupSize
        let lead = Array(packedShape.dropLast())
        guard scalesShape == lead + [groups] else {
            throw fail("scales have shape \(scalesShape), expected \(lead + [groups]) for \(p)")
        }
        guard biasesShape == scalesShape else { throw fail("biases have shape \(biasesShape), scales \(scalesShape)") }
        return lead + [inputDim]
    }

    public static func dequantize(packed: [UInt32], packedShape: [Int], scales: Tensor, biases: Tensor,
                                  parameters p: QuantizationParameters, arithmetic: ScaleArithmetic,
                                  module: String, source: String) throws -> Tensor {
        let shape = try unpackedShape(packedShape: packedShape, scalesShape: scales.shape, biasesShape: biases.shape,
                                      parameters: p, module: module, source: source)
        let inputDim = shape.last!, groups = inputDim / p.groupSize
        let lead = Array(shape.dropLast())
        let wordsPerRow = packedShape.last!
        let rows = lead.reduce(1, *)
        precondition(packed.count == rows * wordsPerRow, "[dequantize] \(packed.count) words for \(packedShape)")

        let mask: UInt32 = p.bits == 32 ? .max : (1 << UInt32(p.bits)) - 1
        var out = [Float](repeating: 0, count: rows * inputDim)
        packed.withUnsafeBufferPointer { words in
            scales.data.withUnsafeBufferPointer { s in
                biases.data.withUnsafeBufferPointer { b in
                    out.withUnsafeMutableBufferPointer { w in
                        for r in 0..<rows {
                            let wordBase = r * wordsPerRow
                            for i in 0..<inputDim {
                                let bit = i * p.bits
                                let word = wordBase + (bit >> 5)
                                let shift = UInt32(bit & 31)
                                var v = words[word] >> shift
                                if Int(shift) + p.bits > 32 { v |= words[word + 1] << (32 - shift) }
                                let q = Float(v & mask)
                                let g = r * groups + i / p.groupSize
                                switch arithmetic {
                                case .float32:
                                    let product = s[g] * q
                                    w[r * inputDim + i] = product + b[g]
                                case .bfloat16:
                                    let product = HalfFloat.roundToBF16(s[g] * q)
                                    w[r * inputDim + i] = HalfFloat.roundToBF16(product + b[g])
                                case .float16:
                                    let product = HalfFloat.roundToF16(s[g] * q)
                                    w[r * inputDim + i] = HalfFloat.roundToF16(product + b[g])
                                }
                            }
                        }
                    }
                }
            }
        }
        return Tensor(shape: lead + [inputDim], data: out)
    }
}
