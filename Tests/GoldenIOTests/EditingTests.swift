// The editing calls test generators use to derive bad goldens from good ones.

import Foundation
import Testing
@testable import GoldenIO

@Suite(.serialized)
struct EditingTests {
    @Test func deleteObjectUnlinksDatasetsAndGroups() throws {
        let scratch = try Scratch()
        let path = scratch.file("tree.h5")
        let file = try H5File.create(path)
        try file.writeFloats("/w/a.weight", shape: [2], values: [1, 2])
        try file.writeFloats("/w/b.weight", shape: [2], values: [3, 4])
        try file.writeFloats("/g/deep/x", shape: [], values: [5])

        try file.deleteObject("/w/a.weight")
        #expect(!file.exists("/w/a.weight"))
        #expect(try file.children(of: "/w") == ["b.weight"])
        expectError(.missingObject(file: path, path: "/w/a.weight"), mentions: [path, "/w/a.weight"]) {
            _ = try file.readFloats("/w/a.weight")
        }
        expectError(.missingObject(file: path, path: "/w/a.weight"), mentions: [path]) {
            try file.deleteObject("/w/a.weight")
        }
        try file.deleteObject("g")   // a whole group, relative spelling
        #expect(!file.exists("/g/deep/x"))
        expectError(.wrongKind(file: path, path: "/", expected: "a dataset or group below the root",
                               found: "the root group"), mentions: [path]) { try file.deleteObject("/") }
        // The name is free again: a dataset of another type can take it.
        try file.writeInt32s("/w/a.weight", shape: [1], values: [7])
        #expect(try file.datasetInfo("/w/a.weight").kind == .integer(signed: true, bits: 32))
        file.close()

        let readOnly = try H5File.open(path)
        expectError(.readOnly(file: path, path: "/w/b.weight"), mentions: [path]) {
            try readOnly.deleteObject("/w/b.weight")
        }
        #expect(readOnly.exists("/w/b.weight"))
    }

    @Test func deleteAttributeRemovesOnlyThatAttribute() throws {
        let scratch = try Scratch()
        let path = scratch.file("attrs.h5")
        let file = try H5File.create(path)
        try file.createGroup("/config")
        try file.setAttribute("raw_json", string: "{}", on: "/config")
        try file.setAttribute("effective_json", string: "{}", on: "/config")
        try file.setAttribute("format_version", int: 1, on: "/")

        try file.deleteAttribute("raw_json", of: "/config")
        #expect(try file.attributeNames(of: "/config") == ["effective_json"])
        expectError(.missingAttribute(file: path, object: "/config", name: "raw_json"), mentions: [path, "raw_json"]) {
            _ = try file.stringAttribute("raw_json", of: "/config")
        }
        expectError(.missingAttribute(file: path, object: "/config", name: "raw_json"), mentions: [path]) {
            try file.deleteAttribute("raw_json", of: "/config")
        }
        try file.deleteAttribute("format_version", of: "/")
        #expect(!file.hasAttribute("format_version", of: "/"))
        expectError(.missingObject(file: path, path: "/nowhere"), mentions: [path, "/nowhere"]) {
            try file.deleteAttribute("x", of: "/nowhere")
        }
    }

    @Test func int64DatasetsReadAsInt32OnlyWhenTheyFit() throws {
        let scratch = try Scratch()
        let path = scratch.file("ids.h5")
        let file = try H5File.create(path)
        try file.writeInt64s("/small", shape: [3], values: [-5, 0, 999])
        try file.writeInt64s("/big", shape: [2], values: [1, Int64(Int32.max) + 1])
        #expect(try file.datasetInfo("/small") == H5DatasetInfo(shape: [3], kind: .integer(signed: true, bits: 64)))
        #expect(try file.readInt32s("/small") == H5Array(shape: [3], values: [-5, 0, 999]))
        let error = goldenError { _ = try file.readInt32s("/big") }
        guard case .wrongKind(path, "/big", _, let found)? = error else {
            Issue.record("expected wrongKind, got \(String(describing: error))")
            return
        }
        #expect(found.contains("outside the int32 range"))
    }

    @Test func stringDatasetsAreNotNumbers() throws {
        let scratch = try Scratch()
        let path = scratch.file("strings.h5")
        let file = try H5File.create(path)
        try file.writeStrings("/names", shape: [2], values: ["embed", "ünïcode"])
        try file.writeStrings("/scalar", shape: [], values: [""])
        #expect(try file.datasetInfo("/names") == H5DatasetInfo(shape: [2], kind: .string))
        #expect(try file.datasetInfo("/scalar") == H5DatasetInfo(shape: [], kind: .string))
        expectError(.wrongKind(file: path, path: "/names", expected: "numbers (float32-convertible)", found: "string"),
                    mentions: [path, "/names", "float32", "string"]) { _ = try file.readFloats("/names") }
        expectError(.wrongKind(file: path, path: "/names", expected: "integers (int32-convertible)", found: "string"),
                    mentions: [path]) { _ = try file.readInt32s("/names") }
        #expect(goldenError { try file.writeStrings("/nul", shape: [1], values: ["a\u{0}b"]) } != nil)
        #expect(file.openIDCount == 1)
    }

    /// The range points at the elements themselves: little-endian float32, row-major.
    @Test func rawDataRangeLocatesTheElements() throws {
        let scratch = try Scratch()
        let path = scratch.file("raw.h5")
        let values = sampleFloats(37)
        do {
            let file = try H5File.create(path)
            try file.writeFloats("/pad", shape: [100], values: [Float](repeating: 0, count: 100))
            try file.writeFloats("/x", shape: [37], values: values)
            try file.writeFloats("/empty", shape: [0], values: [])
        }
        let file = try H5File.open(path)
        let range = try #require(try file.rawDataRange("/x"))
        #expect(range.count == 37 * 4)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let stored: [Float] = (0..<37).map { i in
            let b = bytes[(range.lowerBound + 4 * i)..<(range.lowerBound + 4 * i + 4)]
            return Float(bitPattern: b.reversed().reduce(0) { $0 << 8 | UInt32($1) })
        }
        #expect(differingBits(stored, values) == 0)
        #expect(try file.rawDataRange("/empty") == nil)
        expectError(.missingObject(file: path, path: "/nope"), mentions: [path]) { _ = try file.rawDataRange("/nope") }
    }
}
