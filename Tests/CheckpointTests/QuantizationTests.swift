import Foundation
import ParityTensor
import Testing
@testable import Checkpoint

@Suite struct HalfFloatTests {
    /// Every binary16 bit pattern widens to the value Swift's own Float16 has.
    @Test func float16WideningIsExactForAllPatterns() {
        var wrong = 0
        for bits in 0...UInt16.max {
            let ours = HalfFloat.widenF16(bits)
            let reference = Float(Float16(bitPattern: bits))
            if ours.isNaN ? !reference.isNaN : ours.bitPattern != reference.bitPattern { wrong += 1 }
        }
        #expect(wrong == 0, "\(wrong) of 65536 patterns widen wrongly")
    }

    /// Rounding float32 → float16 agrees with Float16(x) (round to nearest even) on ties,
    /// subnormals, overflow and random values.
    @Test func float16RoundingMatchesTheStandardConversion() {
        var rng = SplitMix64(state: 11)
        var samples: [Float] = [0, -0, 1, 65504, 65519.99, 65520, 1e-8, 0x1p-24, 0x1p-25, 0x1.8p-25, 0x1p-14, 0x1.ffcp-15,
                                1 + 0x1p-11, 1 + 0x3p-11, -2.5, .infinity]
        for _ in 0..<20_000 {
            samples.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())))
        }
        var wrong = 0
        for x in samples where !x.isNaN {
            if HalfFloat.roundToF16(x).bitPattern != Float(Float16(x)).bitPattern { wrong += 1 }
        }
        #expect(wrong == 0)
    }

    @Test func bfloat16WideningAndRounding() {
        #expect(HalfFloat.widenBF16(0x3F80) == 1)
        #expect(HalfFloat.widenBF16(0xC040) == -3)
        #expect(HalfFloat.widenBF16(0x7F80) == .infinity)
        #expect(HalfFloat.widenBF16(0x0001) == Float(bitPattern: 0x0001_0000))
        // Ties to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 → 1 (even mantissa).
        #expect(HalfFloat.roundToBF16(1 + 0x1p-8) == 1)
        #expect(HalfFloat.roundToBF16(1 + 0x3p-8) == 1 + 0x1p-6)
        #expect(HalfFloat.roundToBF16(0.0123 + 1) == 1.015625)  // the +1 folded in bf16 (numerics §1)
        #expect(HalfFloat.roundToBF16(Float(bitPattern: 0x7F7F_A00F)) == .infinity)  // past the top: overflow
        // Slow reference: the nearest of the two bf16 neighbours, ties to the even one.
        var rng = SplitMix64(state: 5)
        var wrong = 0
        for _ in 0..<20_000 {
            // Finite and below the largest bf16, where rounding up would overflow to infinity.
            let x = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0x7EFF_FFFF)
            let down = Float(bitPattern: x.bitPattern & 0xFFFF_0000)
            let up = Float(bitPattern: (x.bitPattern & 0xFFFF_0000) &+ 0x1_0000)
            let (dd, du) = (Double(x) - Double(down), Double(up) - Double(x))
            let expected = dd < du ? down : du < dd ? up : ((down.bitPattern >> 16) & 1 == 0 ? down : up)
            if HalfFloat.roundToBF16(x).bitPattern != expected.bitPattern { wrong += 1 }
        }
        #expect(wrong == 0)
    }
}

@Suite struct DequantizationTests {
    /// The obvious reading of mlx's packing: write every element's bits, least significant first,
    /// into one long bit list; then read it back in `bits`-sized pieces.
    static func slowDequantize(words: [UInt32], rows: Int, inputDim: Int, bits: Int, groupSize: Int,
                               scales: [Float], biases: [Float], arithmetic: ScaleArithmetic) -> [Float] {
        var bitList: [UInt32] = []
        for w in words { for k in 0..<32 { bitList.append((w >> UInt32(k)) & 1) } }
        let wordsPerRow = words.count / rows
        var out: [Float] = []
        for r in 0..<rows {
            for i in 0..<inputDim {
                var q: UInt32 = 0
                for k in 0..<bits { q |= bitList[r * wordsPerRow * 32 + i * bits + k] << UInt32(k) }
                let g = r * (inputDim / groupSize) + i / groupSize
                switch arithmetic {
                case .float32: out.append(scales[g] * Float(q) + biases[g])
                case .bfloat16:
                    out.append(HalfFloat.roundToBF16(HalfFloat.roundToBF16(scales[g] * Float(q)) + biases[g]))
                case .float16:
                    out.append(Float(Float16(Float(Float16(scales[g] * Float(q))) + biases[g])))
                }
            }
        }
        return out
    }

    @Test(arguments: [(2, 64), (3, 64), (4, 64), (4, 32), (5, 32), (6, 64), (8, 64), (8, 32)])
    func matchesTheSlowReference(bits: Int, groupSize: Int) throws {
        var rng = SplitMix64(state: UInt64(bits * 1000 + groupSize))
        let (experts, rows, inputDim) = (2, 3, 128)       // a SwitchLinear-shaped [E, out, in] weight
        let wordsPerRow = inputDim * bits / 32
        let words = (0..<(experts * rows * wordsPerRow)).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
        let groups = inputDim / groupSize
        for arithmetic in [ScaleArithmetic.float32, .bfloat16, .float16] {
            func round(_ x: Float) -> Float {
                switch arithmetic {
                case .float32: return x
                case .bfloat16: return HalfFloat.roundToBF16(x)
                case .float16: return HalfFloat.roundToF16(x)
                }
            }
            let scales = (0..<(experts * rows * groups)).map { _ in round(Float.random(in: 0.001...0.1, using: &rng)) }
            let biases = (0..<(experts * rows * groups)).map { _ in round(Float.random(in: -1...1, using: &rng)) }
            let out = try AffineQuantization.dequantize(
                packed: words, packedShape: [experts, rows, wordsPerRow],
                scales: Tensor(shape: [experts, rows, groups], data: scales),
                biases: Tensor(shape: [experts, rows, groups], data: biases),
                parameters: .init(groupSize: groupSize, bits: bits), arithmetic: arithmetic, module: "m", source: "t")
            #expect(out.shape == [experts, rows, inputDim])
            let reference = Self.slowDequantize(words: words, rows: experts * rows, inputDim: inputDim, bits: bits,
                                                groupSize: groupSize, scales: scales, biases: biases, arithmetic: arithmetic)
            #expect(differingBits(out.data, reference) == 0, "\(arithmetic)")
        }
    }

    @Test func shapeMismatchesAreNamed() {
        let scales = Tensor(shape: [2, 2], data: [1, 1, 1, 1])
        #expect(throws: QuantizationError.shapeMismatch(source: "t", module: "m.q_proj",
                                                        reason: "scales have shape [2, 2], expected [2, 1] for 4-bit/group 64 affine")) {
            _ = try AffineQuantization.dequantize(packed: [UInt32](repeating: 0, count: 16), packedShape: [2, 8], scales: scales,
                                                  biases: scales, parameters: .init(groupSize: 64, bits: 4),
                                                  arithmetic: .float32, module: "m.q_proj", source: "t")
        }
        #expect(throws: QuantizationError.unsupportedMode(source: "t", module: "m", mode: "mxfp4")) {
            _ = try AffineQuantization.dequantize(packed: [0], packedShape: [1, 1], scales: scales, biases: scales,
                                                  parameters: .init(groupSize: 32, bits: 4, mode: "mxfp4"),
                                                  arithmetic: .float32, module: "m", source: "t")
        }
    }

    @Test func configBlockAndInference() throws {
        let json = """
            {"model_type": "qwen3_5_moe", "quantization": {"group_size": 64, "bits": 4, "mode": "affine",
              "language_model.model.layers.0.mlp.gate": {"group_size": 64, "bits": 8},
              "language_model.model.layers.0.mlp.shared_expert_gate": {"bits": 8},
              "language_model.lm_head": false, "language_model.model.embed_tokens": true}}
            """
        let q = try #require(try QuantizationConfig.from(configJSON: Data(json.utf8), source: "c"))
        #expect(q.defaults == .init(groupSize: 64, bits: 4))
        #expect(q.perModule["language_model.model.layers.0.mlp.gate"] == .quantized(.init(groupSize: 64, bits: 8)))
        // A dict without group_size takes the mode's default (to_quantized's), not the top level.
        #expect(q.perModule["language_model.model.layers.0.mlp.shared_expert_gate"] == .quantized(.init(groupSize: 64, bits: 8)))
        #expect(q.perModule["language_model.lm_head"] == .unquantized)
        #expect(q.perModule["language_model.model.embed_tokens"] == .quantized(q.defaults))
        // Unnamed modules: inferred from shapes as infer_quant_config does (8-bit/32 here).
        #expect(try q.parameters(module: "x", inputDim: 128, packedLastDim: 32, scalesLastDim: 4, source: "c")
                == .init(groupSize: 32, bits: 8))
        #expect(throws: QuantizationError.self) {
            _ = try q.parameters(module: "language_model.lm_head", inputDim: 128, packedLastDim: 16, scalesLastDim: 2, source: "c")
        }
        #expect(try QuantizationConfig.from(configJSON: Data(#"{"model_type": "qwen3_5"}"#.utf8), source: "c") == nil)
        #expect(throws: QuantizationError.self) {
            _ = try QuantizationConfig.from(configJSON: Data(#"{"quantization_config": {"quant_method": "awq", "bits": 4}}"#.utf8), source: "c")
        }
        #expect(throws: QuantizationError.self) {
            _ = try QuantizationConfig.from(configJSON: Data(#"{"quantization": {"group_size": true, "bits": 4}}"#.utf8), source: "c")
        }
    }
}
