import Foundation
import ParityTensor
import Testing
import TestSupport
@testable import Checkpoint

/// Bytes a test hands to an `EncodedMatrix`, kept alive by the matrix.
private final class Bytes {
    let pointer: UnsafeMutableRawPointer
    init(_ bytes: [UInt8]) {
        pointer = .allocate(byteCount: max(bytes.count, 1), alignment: 1)
        bytes.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
    }
    deinit { pointer.deallocate() }
}

private func bytes(_ values: [Float], _ type: EncodedMatrix.ScaleType) -> [UInt8] {
    values.flatMap { v -> [UInt8] in
        switch type {
        case .float32: return le(v.bitPattern)
        case .bfloat16: return le(UInt16(truncatingIfNeeded: v.bitPattern >> 16))
        case .float16: return le(HalfFloat.f16Bits(v))
        }
    }
}

/// Matrices kept in their stored form decode to the bits of the dense copy, and products over
/// them are bit-identical to the dense products at every row count.
@Suite struct EncodedWeightTests {
    struct Case {
        let matrix: EncodedMatrix
        let dense: Tensor
    }

    static func affine(bits: Int, group: Int, type: EncodedMatrix.ScaleType, rows: Int, columns: Int, seed: UInt64) throws -> Case {
        var rng = SplitMix64(state: seed)
        let wordsPerRow = columns * bits / 32
        let words = (0..<(rows * wordsPerRow)).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
        let groups = rows * columns / group
        func round(_ x: Float) -> Float {
            switch type {
            case .float32: return x
            case .bfloat16: return HalfFloat.roundToBF16(x)
            case .float16: return HalfFloat.roundToF16(x)
            }
        }
        let scales = (0..<groups).map { _ in round(Float.random(in: 0.001...0.1, using: &rng)) }
        let biases = (0..<groups).map { _ in round(Float.random(in: -1...1, using: &rng)) }
        let arithmetic: ScaleArithmetic = type == .float32 ? .float32 : type == .bfloat16 ? .bfloat16 : .float16
        let dense = try AffineQuantization.dequantize(
            packed: words, packedShape: [rows, wordsPerRow],
            scales: Tensor(shape: [rows, columns / group], data: scales), biases: Tensor(shape: [rows, columns / group], data: biases),
            parameters: .init(groupSize: group, bits: bits), arithmetic: arithmetic, module: "m", source: "t")
        let (v, s, b) = (Bytes(words.flatMap { le($0) }), Bytes(bytes(scales, type)), Bytes(bytes(biases, type)))
        let matrix = EncodedMatrix(owner: KeepAlive([v, s, b]), values: v.pointer, scales: s.pointer, biases: b.pointer,
                                   rows: rows, columns: columns, encoding: .affine(bits: bits, groupSize: group, scales: type))
        return Case(matrix: matrix, dense: dense)
    }

    @Test(arguments: [(2, 64), (3, 64), (4, 64), (4, 32), (5, 32), (6, 64), (8, 64), (8, 32)])
    func affineDecodesAsDequantize(bits: Int, group: Int) throws {
        for type in [EncodedMatrix.ScaleType.float32, .bfloat16, .float16] {
            let c = try Self.affine(bits: bits, group: group, type: type, rows: 5, columns: 128, seed: UInt64(bits * 100 + group))
            #expect(differingBits(c.matrix.decoded().data, c.dense.data) == 0, "\(bits)-bit/\(group), \(type)")
            #expect(differingBits(c.matrix.row(3), Array(c.dense.data[(3 * 128)..<(4 * 128)])) == 0)
            #expect(c.matrix.firstNonFiniteRow == nil)
        }
    }

    /// 140 outputs: two full panels and a partial one; a slice of rows is an expert of a stack.
    @Test func productsMatchTheDenseProductAtEveryRowCount() throws {
        let c = try Self.affine(bits: 4, group: 64, type: .bfloat16, rows: 140, columns: 192, seed: 3)
        let encoded = LinearWeight(encoded: c.matrix), dense = LinearWeight(c.dense)
        #expect(encoded.byteCount == 140 * 192 / 2 + 2 * 2 * 140 * 3)
        let expertRows = c.matrix.rows(70, 70)
        let expertDense = LinearWeight(c.dense.slice(axis: 0, start: 70, length: 70))
        for m in [1, 2, 5, 7, 13, 40] {
            let x = randomTensor([m, 192], seed: UInt64(m))
            #expect(differingBits(x.linear(encoded).data, x.linear(dense).data) == 0, "m = \(m)")
            #expect(differingBits(x.linear(LinearWeight(encoded: expertRows)).data, x.linear(expertDense).data) == 0, "expert, m = \(m)")
        }
        #expect(differingBits(Array(encoded.row(139)), Array(c.dense.data[(139 * 192)...])) == 0)
    }

    /// m ≤ 4 (a decode step) takes the register path, not the panel: 4 and 8 bits on transposed
    /// words, other widths on decoded rows. 37 rows leave a partial block of 8 and of 16;
    /// K = 96 leaves a partial block of 8 words; 1100 rows split over the pool.
    @Test(arguments: [2, 3, 4, 5, 6, 7, 8])
    func fewRowProductsMatchTheDenseProduct(bits: Int) throws {
        for type in [EncodedMatrix.ScaleType.float32, .bfloat16, .float16] {
            for (group, columns, rows) in [(32, 96, 37), (64, 192, 37), (128, 128, 1100)] {
                let c = try Self.affine(bits: bits, group: group, type: type, rows: rows, columns: columns,
                                        seed: UInt64(bits * 1000 + group + columns))
                let encoded = LinearWeight(encoded: c.matrix), dense = LinearWeight(c.dense)
                for m in [1, 2, 3, 4, 5] {
                    let x = randomTensor([m, columns], seed: UInt64(m * 7 + bits))
                    #expect(differingBits(x.linear(encoded).data, x.linear(dense).data) == 0,
                            "\(bits)-bit/\(group), \(type), \(rows)×\(columns), m = \(m)")
                }
            }
        }
    }

    @Test func sixteenBitMatricesWidenExactly() throws {
        var rng = SplitMix64(state: 9)
        let values = (0..<(66 * 64)).map { _ in HalfFloat.roundToBF16(Float.random(in: -2...2, using: &rng)) }
        for type in [EncodedMatrix.ScaleType.bfloat16, .float16, .float32] {
            let stored = type == .float16 ? values.map(HalfFloat.roundToF16) : values
            let b = Bytes(bytes(stored, type))
            let encoding: EncodedMatrix.Encoding = type == .bfloat16 ? .bfloat16 : type == .float16 ? .float16 : .float32
            let m = EncodedMatrix(owner: b, values: b.pointer, rows: 66, columns: 64, encoding: encoding)
            #expect(differingBits(m.decoded().data, stored) == 0, "\(type)")
            for rowsOfX in [1, 3, 8] {   // the register path and the panel path
                let x = randomTensor([rowsOfX, 64], seed: 4)
                #expect(differingBits(x.linear(LinearWeight(encoded: m)).data,
                                      x.linear(LinearWeight(Tensor(shape: [66, 64], data: stored))).data) == 0, "\(type), m = \(rowsOfX)")
            }
        }
    }

    @Test func nonFiniteScalesAndValuesAreFound() throws {
        let scales = Bytes(bytes([1, 1, .nan, 1], .bfloat16)), biases = Bytes(bytes([0, 0, 0, 0], .bfloat16))
        let words = Bytes([UInt8](repeating: 0x11, count: 4 * 64 / 2))
        let q = EncodedMatrix(owner: KeepAlive([scales, biases, words]), values: words.pointer, scales: scales.pointer,
                              biases: biases.pointer, rows: 4, columns: 64, encoding: .affine(bits: 4, groupSize: 64, scales: .bfloat16))
        #expect(q.firstNonFiniteRow == 2)
        let f = Bytes(bytes([1, 2, 3, .infinity, 5, 6], .float16))
        #expect(EncodedMatrix(owner: f, values: f.pointer, rows: 3, columns: 2, encoding: .float16).firstNonFiniteRow == 1)
    }
}
