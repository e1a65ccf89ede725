import Foundation
import Testing
@testable import Checkpoint

@Suite struct SafetensorsTests {
    @Test func readsEveryDTypeAndTheMetadata() throws {
        var b = SafetensorsBuilder()
        b.f32("a", [2, 2], [1, -2, 0.5, 3.25])
        b.bf16("b", [3], bits: [0x3F80, 0xC000, 0x3EAA])        // 1, -2, 0.33203125
        b.add("c", "F16", [2], le16(0x3C00) + le16(0x0001))      // 1, 2^-24
        b.u32("d", [1, 2], [0xDEAD_BEEF, 7])
        b.add("empty", "F32", [0, 4], [])
        let file = try SafetensorsFile(bytes: b.build(), source: "t")
        #expect(file.metadata == ["format": "mlx"])
        #expect(file.names == ["a", "b", "c", "d", "empty"])
        #expect(try file.floats("a").data == [1, -2, 0.5, 3.25])
        #expect(try file.floats("a").shape == [2, 2])
        #expect(try file.floats("b").data == [1, -2, 0.33203125])
        #expect(try file.floats("c").data == [1, 0x1p-24])
        #expect(try file.uint32s("d").values == [0xDEAD_BEEF, 7])
        #expect(try file.floats("empty").shape == [0, 4])
        #expect(throws: SafetensorsError.wrongDType(file: "t", tensor: "d", found: "U32", wanted: "F32, F16 or BF16")) {
            try file.floats("d")
        }
        #expect(throws: SafetensorsError.noSuchTensor(file: "t", tensor: "zz")) { try file.floats("zz") }
    }

    /// A header that lies is a named error that mentions the tensor, never a crash.
    @Test func lyingHeadersAreNamedErrors() throws {
        var b = SafetensorsBuilder()
        b.f32("w", [2, 2], [1, 2, 3, 4])
        b.f32("v", [2], [5, 6])
        let good = b.parts()

        func load(_ header: [String: Any], data: [UInt8]? = nil, claimed: UInt64? = nil) throws {
            _ = try SafetensorsFile(bytes: SafetensorsBuilder.assemble(header: header, data: data ?? good.data, claimedLength: claimed),
                                    source: "lie")
        }
        func edit(_ name: String, _ key: String, _ value: Any) -> [String: Any] {
            var h = good.header
            var entry = h[name] as! [String: Any]
            entry[key] = value
            h[name] = entry
            return h
        }

        #expect(throws: SafetensorsError.truncated(file: "short", size: 3)) {
            _ = try SafetensorsFile(bytes: Data([1, 2, 3]), source: "short")
        }
        #expect(throws: SafetensorsError.self) { try load(good.header, claimed: 1 << 40) }
        if case .headerLengthExceedsFile(_, let n, _)? = catching({ try load(good.header, claimed: 1 << 40) }) {
            #expect(n == 1 << 40)
        } else { Issue.record("expected headerLengthExceedsFile") }
        #expect(throws: SafetensorsError.offsetsOutOfRange(file: "lie", tensor: "w", begin: 0, end: 400, dataSize: 24)) {
            try load(edit("w", "data_offsets", [0, 400]))
        }
        #expect(throws: SafetensorsError.offsetsOutOfRange(file: "lie", tensor: "w", begin: 12, end: 8, dataSize: 24)) {
            try load(edit("w", "data_offsets", [12, 8]))
        }
        #expect(throws: SafetensorsError.sizeMismatch(file: "lie", tensor: "w", shape: [3, 2], dtype: "F32", expectedBytes: 24, foundBytes: 16)) {
            try load(edit("w", "shape", [3, 2]))
        }
        #expect(throws: SafetensorsError.sizeMismatch(file: "lie", tensor: "w", shape: [1 << 40, 1 << 40], dtype: "F32",
                                                      expectedBytes: Int.max, foundBytes: 16)) {
            try load(edit("w", "shape", [1 << 40, 1 << 40]))
        }
        #expect(throws: SafetensorsError.overlapping(file: "lie", first: "w", second: "v")) {
            try load(edit("v", "data_offsets", [8, 16]), data: good.data)
        }
        #expect(throws: SafetensorsError.unsupportedDType(file: "lie", tensor: "w", dtype: "I64")) {
            try load(edit("w", "dtype", "I64"))
        }
        #expect(throws: SafetensorsError.badEntry(file: "lie", tensor: "w", reason: "negative dimension in shape [-4, -1]")) {
            try load(edit("w", "shape", [-4, -1]))
        }
        #expect(throws: SafetensorsError.badEntry(file: "lie", tensor: "w", reason: "'shape' has the wrong type")) {
            try load(edit("w", "shape", [true, 2]))
        }
        #expect(throws: SafetensorsError.badEntry(file: "lie", tensor: "w", reason: "'data_offsets' is missing")) {
            var h = good.header
            var entry = h["w"] as! [String: Any]
            entry.removeValue(forKey: "data_offsets")
            h["w"] = entry
            try load(h)
        }
        #expect(throws: SafetensorsError.badEntry(file: "lie", tensor: "w", reason: "data_offsets must be two integers, found [0]")) {
            try load(edit("w", "data_offsets", [0]))
        }
        // Not JSON at all: the length field points at garbage.
        var garbage = Data(le(UInt64(4)))
        garbage.append(contentsOf: Array("{{{{".utf8))
        if case .badHeader? = catching({ _ = try SafetensorsFile(bytes: garbage, source: "g") }) {} else {
            Issue.record("expected badHeader")
        }
        // The error texts name the file and the tensor.
        let text = catching { try load(edit("w", "data_offsets", [0, 400])) }?.description ?? ""
        #expect(text.contains("lie") && text.contains("'w'") && text.contains("400"))
    }

    @Test func sha256MatchesTheStandardVectors() {
        #expect(SHA256.hex(Data()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Data("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Fed in pieces that straddle blocks: same digest.
        var s = SHA256()
        let text = Data(String(repeating: "0123456789", count: 50).utf8)
        for chunk in stride(from: 0, to: text.count, by: 37) { s.update(text.subdata(in: chunk..<min(chunk + 37, text.count))) }
        #expect(s.finalize() == SHA256.hex(text))
    }
}

func catching(_ body: () throws -> Void) -> SafetensorsError? {
    do { try body(); return nil } catch let e as SafetensorsError { return e } catch { return nil }
}
