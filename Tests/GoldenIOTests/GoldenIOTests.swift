// GoldenIO against real files in a temporary directory. Serialized: HDF5 is
// one global resource, and the stderr test redirects file descriptor 2.

import Foundation
import Testing
@testable import GoldenIO

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fresh directory under the system temporary directory, removed on deinit.
final class Scratch {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("GoldenIOTests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func file(_ name: String) -> String { url.appendingPathComponent(name).path }
}

/// The GoldenIOError `body` throws, or nil (another error type fails the test).
func goldenError(_ body: () throws -> Void) -> GoldenIOError? {
    do {
        try body()
        return nil
    } catch let error as GoldenIOError {
        return error
    } catch {
        Issue.record("unexpected error type: \(error)")
        return nil
    }
}

/// `body` throws exactly `expected`, whose description is one line mentioning every string in `mentions`.
func expectError(_ expected: GoldenIOError, mentions: [String],
                 sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    let error = goldenError(body)
    #expect(error == expected, sourceLocation: sourceLocation)
    guard let error else { return }
    let text = error.description
    #expect(!text.contains("\n"), "description spans lines: \(text)", sourceLocation: sourceLocation)
    for needle in mentions {
        #expect(text.contains(needle), "\"\(text)\" does not mention \(needle)", sourceLocation: sourceLocation)
    }
}

/// Elements whose bit patterns differ (NaN-safe), as a count rather than a Bool.
func differingBits(_ a: [Float], _ b: [Float]) -> Int {
    guard a.count == b.count else { return max(a.count, b.count) }
    return zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
}

/// Values with signs, fractions, and the special floats, so conversions show.
func sampleFloats(_ count: Int) -> [Float] {
    let specials: [Float] = [.nan, .infinity, -.infinity, -0.0, .leastNonzeroMagnitude, .greatestFiniteMagnitude]
    return (0..<count).map { i in i < specials.count && count > 8 ? specials[i] : Float(i) * 0.37 - 5.5 }
}

@Suite(.serialized)
struct GoldenIOTests {

    // MARK: Round trips

    static let oddShapes: [[Int]] = [[3, 5, 7], [1], [], [0], [4, 0, 3], [2, 1, 1, 3], [17]]

    @Test(arguments: oddShapes)
    func floatsRoundTrip(shape: [Int]) throws {
        let scratch = try Scratch()
        let path = scratch.file("floats.h5")
        let count = shape.reduce(1, *)
        let values = sampleFloats(count)
        do {
            let file = try H5File.create(path)
            try file.writeFloats("/data/x", shape: shape, values: values)
            #expect(file.openIDCount == 1)
        }
        let file = try H5File.open(path)
        #expect(try file.datasetInfo("/data/x") == H5DatasetInfo(shape: shape, kind: .float(bits: 32)))
        let read = try file.readFloats("/data/x")
        #expect(read.shape == shape)
        #expect(differingBits(read.values, values) == 0)
        #expect(try file.readFloats("/data/x", expectingShape: shape).values.count == count)
        #expect(file.openIDCount == 1)
    }

    @Test(arguments: oddShapes)
    func int32sRoundTrip(shape: [Int]) throws {
        let scratch = try Scratch()
        let path = scratch.file("ints.h5")
        let count = shape.reduce(1, *)
        let values = (0..<count).map { Int32($0 * 7919 % 1000) - 500 }
        var all = values
        if count >= 2 { all[0] = .min; all[count - 1] = .max }
        do {
            let file = try H5File.create(path)
            try file.writeInt32s("/ids", shape: shape, values: all)
        }
        let file = try H5File.open(path)
        #expect(try file.datasetInfo("/ids") == H5DatasetInfo(shape: shape, kind: .integer(signed: true, bits: 32)))
        #expect(try file.readInt32s("/ids") == H5Array(shape: shape, values: all))
    }

    @Test func nestedGroupsDottedNamesAndSortedChildren() throws {
        let scratch = try Scratch()
        let path = scratch.file("tree.h5")
        let up = "/weights/language_model.model.layers.0.mlp.up_proj.weight"
        do {
            let file = try H5File.create(path)
            try file.writeFloats(up, shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
            try file.writeFloats("/weights/language_model.model.embed_tokens.weight", shape: [1], values: [9])
            try file.writeFloats("/a/b/c/d/deep", shape: [], values: [42])   // four groups made on the way
            try file.writeInt32s("/weights/Z_upper", shape: [1], values: [1])
            try file.createGroup("/weights/empty")
            try file.createGroup("/weights/empty")   // an existing group is fine
            #expect(file.openIDCount == 1)
        }
        let file = try H5File.open(path)
        #expect(try file.children(of: "/") == ["a", "weights"])
        #expect(try file.children(of: "/weights") == [
            "Z_upper", "empty", "language_model.model.embed_tokens.weight", up.split(separator: "/").map(String.init).last!,
        ])
        #expect(try file.children(of: "/weights/empty") == [])
        #expect(try file.children(of: "a/b/c/") == ["d"])   // relative and trailing-slash spellings
        #expect(file.isGroup("/a/b/c/d"))
        #expect(!file.isGroup("/a/b/c/d/deep"))
        #expect(file.isGroup("/"))
        #expect(file.exists(up))
        #expect(file.exists("/a/b/c/d/deep"))
        #expect(!file.exists("/weights/language_model"))   // dots are not separators
        #expect(try file.readFloats(up).values == [1, 2, 3, 4, 5, 6])
        #expect(try file.readFloats("/a/b/c/d/deep") == H5Array(shape: [], values: [42]))
        expectError(.wrongKind(file: path, path: "/weights/empty", expected: "a dataset", found: "a group"),
                    mentions: [path, "/weights/empty"]) { _ = try file.readFloats("/weights/empty") }
        expectError(.wrongKind(file: path, path: up, expected: "a group", found: "a dataset"),
                    mentions: [path, up]) { _ = try file.children(of: up) }
        #expect(file.openIDCount == 1)
    }

    // MARK: Attributes

    @Test func attributesRoundTrip() throws {
        let scratch = try Scratch()
        let path = scratch.file("attrs.h5")
        do {
            let file = try H5File.create(path)
            try file.writeFloats("/g/x", shape: [2], values: [1, 2])
            try file.setAttribute("model", string: "Qwen3.5 – ünïcode ✓", on: "/")
            try file.setAttribute("empty", string: "", on: "/")
            try file.setAttribute("layers", int: -24, on: "/")
            try file.setAttribute("big", int: Int.max, on: "/")
            try file.setAttribute("theta", double: 1_000_000.5, on: "/")
            try file.setAttribute("whole", double: 3.0, on: "/")
            try file.setAttribute("half", double: 2.5, on: "/")
            try file.setAttribute("shape", ints: [3, 5, 7], on: "/g/x")
            try file.setAttribute("none", ints: [], on: "/g/x")
            try file.setAttribute("kind", string: "first", on: "/g")
            try file.setAttribute("kind", string: "replaced", on: "/g")   // replacing is allowed
            #expect(file.openIDCount == 1)
        }
        let file = try H5File.open(path)
        #expect(try file.attributeNames(of: "/") == ["big", "empty", "half", "layers", "model", "theta", "whole"])
        #expect(try file.attributeNames(of: "/g") == ["kind"])
        #expect(try file.stringAttribute("model", of: "/") == "Qwen3.5 – ünïcode ✓")
        #expect(try file.stringAttribute("empty", of: "/") == "")
        #expect(try file.stringAttribute("kind", of: "/g") == "replaced")
        #expect(try file.intAttribute("layers", of: "/") == -24)
        #expect(try file.intAttribute("big", of: "/") == Int.max)
        #expect(try file.intAttribute("whole", of: "/") == 3)
        #expect(try file.doubleAttribute("theta", of: "/") == 1_000_000.5)
        #expect(try file.doubleAttribute("layers", of: "/") == -24)
        #expect(try file.intArrayAttribute("shape", of: "/g/x") == [3, 5, 7])
        #expect(try file.intArrayAttribute("layers", of: "/") == [-24])
        #expect(try file.intArrayAttribute("none", of: "/g/x") == [])
        #expect(file.hasAttribute("shape", of: "/g/x"))
        #expect(!file.hasAttribute("shape", of: "/g"))
        #expect(!file.hasAttribute("shape", of: "/no/such/object"))

        expectError(.missingAttribute(file: path, object: "/g/x", name: "dtype"),
                    mentions: [path, "/g/x", "dtype"]) { _ = try file.stringAttribute("dtype", of: "/g/x") }
        expectError(.missingObject(file: path, path: "/nope"),
                    mentions: [path, "/nope"]) { _ = try file.intAttribute("n", of: "/nope") }
        expectError(.wrongKind(file: path, path: "/ attribute \"layers\"", expected: "a string", found: "int64"),
                    mentions: [path, "layers"]) { _ = try file.stringAttribute("layers", of: "/") }
        expectError(.wrongKind(file: path, path: "/ attribute \"model\"", expected: "a number", found: "string"),
                    mentions: [path, "model"]) { _ = try file.doubleAttribute("model", of: "/") }
        expectError(.wrongKind(file: path, path: "/ attribute \"half\"", expected: "whole numbers",
                               found: "float64 value 2.5"),
                    mentions: [path, "half", "2.5"]) { _ = try file.intAttribute("half", of: "/") }
        expectError(.wrongShape(file: path, path: "/g/x attribute \"shape\"", expected: [], found: [3]),
                    mentions: [path, "/g/x", "shape"]) { _ = try file.intAttribute("shape", of: "/g/x") }
        expectError(.readOnly(file: path, path: "/ attribute \"x\""),
                    mentions: [path, "x"]) { try file.setAttribute("x", int: 1, on: "/") }
        #expect(file.openIDCount == 1)
    }

    // MARK: Conversions

    @Test func int32DatasetReadsAsFloats() throws {
        let scratch = try Scratch()
        let path = scratch.file("conv.h5")
        let file = try H5File.create(path)
        try file.writeInt32s("/i", shape: [3], values: [1, 2, 3])
        try file.writeInt32s("/big", shape: [2], values: [16_777_217, -2_147_483_648])
        #expect(try file.readFloats("/i") == H5Array(shape: [3], values: [1, 2, 3]))
        // Nearest float32, like numpy's astype: 2^24 + 1 rounds to 2^24.
        #expect(try file.readFloats("/big").values == [16_777_216, -2_147_483_648])
    }

    @Test func floatDatasetReadAsInt32IsWrongKind() throws {
        let scratch = try Scratch()
        let path = scratch.file("conv.h5")
        let file = try H5File.create(path)
        try file.writeFloats("/f", shape: [2], values: [1, 2.5])
        expectError(.wrongKind(file: path, path: "/f", expected: "integers (int32-convertible)", found: "float32"),
                    mentions: [path, "/f", "float32"]) { _ = try file.readInt32s("/f") }
    }

    // MARK: Errors

    @Test func missingFileDirectoryAndTextFile() throws {
        let scratch = try Scratch()
        let missing = scratch.file("missing.h5")
        expectError(.fileNotFound(file: missing), mentions: [missing]) { _ = try H5File.open(missing) }
        let inMissingDir = scratch.file("no/such/dir/x.h5")
        expectError(.fileNotFound(file: inMissingDir), mentions: [inMissingDir]) { _ = try H5File.open(inMissingDir) }
        expectError(.notAFile(file: scratch.url.path), mentions: [scratch.url.path]) {
            _ = try H5File.open(scratch.url.path)
        }
        let text = scratch.file("notes.txt")
        try "just some text\n".write(toFile: text, atomically: true, encoding: .utf8)
        expectError(.notHDF5(file: text), mentions: [text]) { _ = try H5File.open(text) }
        let empty = scratch.file("empty.h5")
        try #require(FileManager.default.createFile(atPath: empty, contents: Data()))
        expectError(.notHDF5(file: empty), mentions: [empty]) { _ = try H5File.open(empty) }

        let cannot = scratch.file("no/such/dir/out.h5")
        let error = goldenError { _ = try H5File.create(cannot) }
        guard case .cannotCreate(cannot, _)? = error else {
            Issue.record("expected cannotCreate, got \(String(describing: error))")
            return
        }
        #expect(error!.description.contains(cannot))
        #expect(goldenError { _ = try H5File.create(scratch.url.path) } != nil)
    }

    @Test func truncatedCopiesThrowAtEveryOffset() throws {
        let scratch = try Scratch()
        let path = scratch.file("whole.h5")
        do {
            let file = try H5File.create(path)
            try file.writeFloats("/w/a", shape: [64, 16], values: sampleFloats(1024))
            try file.setAttribute("note", string: "x", on: "/w/a")
        }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        var offsets = [0, 1, 7, 8, 9, 48, 96, 200, 512, 800, 1024, 2048]
        offsets += [bytes.count / 3, bytes.count / 2, bytes.count - 4096, bytes.count - 100, bytes.count - 1]
        for offset in offsets where offset >= 0 && offset < bytes.count {
            let cut = scratch.file("cut-\(offset).h5")
            try bytes.prefix(offset).write(to: URL(fileURLWithPath: cut))
            let error = goldenError {
                let file = try H5File.open(cut)
                _ = try file.readFloats("/w/a")
                _ = try file.stringAttribute("note", of: "/w/a")
            }
            #expect(error != nil, "truncated at \(offset) of \(bytes.count) bytes did not throw")
            #expect(error?.description.contains(cut) ?? false)
        }
    }

    /// A dataspace whose dimensions were overwritten (smaller or larger than the
    /// stored data, or absurd) must throw, not drive an allocation or a crash.
    @Test(arguments: [UInt64(100), 5000, UInt64(1) << 40, UInt64(1) << 62, UInt64.max - 1])
    func corruptedDimensionsThrow(dimension: UInt64) throws {
        let scratch = try Scratch()
        let path = scratch.file("dims.h5")
        do {
            let file = try H5File.create(path)
            try file.writeFloats("/x", shape: [4099, 3], values: [Float](repeating: 1, count: 4099 * 3))
        }
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        // Dimensions are stored as 8-byte little-endian sizes: 4099 then 3.
        let pattern = Data([0x03, 0x10, 0, 0, 0, 0, 0, 0, 0x03, 0, 0, 0, 0, 0, 0, 0])
        var patched = 0
        var start = bytes.startIndex
        while let found = bytes.range(of: pattern, in: start..<bytes.endIndex) {
            withUnsafeBytes(of: dimension.littleEndian) { bytes.replaceSubrange(found.lowerBound..<found.lowerBound + 8, with: $0) }
            patched += 1
            start = found.upperBound
        }
        try #require(patched > 0)
        try bytes.write(to: URL(fileURLWithPath: path))
        let error = goldenError {
            let file = try H5File.open(path)
            _ = try file.readFloats("/x")
        }
        #expect(error != nil)
        #expect(error?.description.contains(path) ?? false)
        if dimension < 1 << 32 { #expect(error == .readFailed(file: path, path: "/x")) }
    }

    @Test func missingDatasetInMissingGroup() throws {
        let scratch = try Scratch()
        let path = scratch.file("sparse.h5")
        let file = try H5File.create(path)
        try file.writeFloats("/weights/present", shape: [2], values: [1, 2])
        #expect(!file.exists("/nothing/here/at_all"))
        #expect(!file.exists("/weights/present/child"))   // a dataset as a parent
        #expect(!file.isGroup("/nothing"))
        let missing = "/nothing/here/model.layers.3.weight"
        expectError(.missingObject(file: path, path: missing), mentions: [path, missing]) {
            _ = try file.readFloats(missing)
        }
        expectError(.missingObject(file: path, path: "/nothing"), mentions: [path, "/nothing"]) {
            _ = try file.children(of: "/nothing")
        }
        expectError(.missingObject(file: path, path: missing), mentions: [path, missing]) {
            _ = try file.datasetInfo(missing)
        }
        #expect(file.openIDCount == 1)
    }

    @Test func wrongShapeNamesBothShapes() throws {
        let scratch = try Scratch()
        let path = scratch.file("shape.h5")
        let file = try H5File.create(path)
        try file.writeFloats("/w", shape: [3, 5], values: [Float](repeating: 0, count: 15))
        expectError(.wrongShape(file: path, path: "/w", expected: [5, 3], found: [3, 5]),
                    mentions: [path, "/w", "[5, 3]", "[3, 5]"]) { _ = try file.readFloats("/w", expectingShape: [5, 3]) }
        expectError(.wrongShape(file: path, path: "/v", expected: [2, 2], found: [3]),
                    mentions: [path, "/v"]) { try file.writeFloats("/v", shape: [2, 2], values: [1, 2, 3]) }
        expectError(.wrongShape(file: path, path: "/n", expected: [-1], found: [0]),
                    mentions: [path, "/n"]) { try file.writeFloats("/n", shape: [-1], values: []) }
        expectError(.alreadyExists(file: path, path: "/w"), mentions: [path, "/w"]) {
            try file.writeFloats("/w", shape: [1], values: [1])
        }
        #expect(!file.exists("/v"))
    }

    @Test func closedFileThrowsClosed() throws {
        let scratch = try Scratch()
        let path = scratch.file("closed.h5")
        let file = try H5File.create(path)
        try file.writeFloats("/x", shape: [1], values: [1])
        file.close()
        file.close()   // idempotent
        #expect(!file.isOpen)
        #expect(!file.exists("/x"))
        expectError(.closed(file: path), mentions: [path]) { _ = try file.readFloats("/x") }
        #expect(try H5File.open(path).readFloats("/x").values == [1])
    }

    // MARK: Writing in place

    @Test func overwriteFloatsChangesDataInPlace() throws {
        let scratch = try Scratch()
        let path = scratch.file("perturb.h5")
        do {
            let file = try H5File.create(path)
            try file.writeFloats("/weights/w", shape: [2, 2], values: [1, 2, 3, 4])
            try file.writeInt32s("/weights/ids", shape: [2], values: [1, 2])
        }
        do {
            let file = try H5File.open(path, mode: .readWrite)
            try file.overwriteFloats("/weights/w", values: [1, 2, 3, 4.5])
            expectError(.wrongShape(file: path, path: "/weights/w", expected: [2, 2], found: [3]),
                        mentions: [path, "/weights/w"]) { try file.overwriteFloats("/weights/w", values: [1, 2, 3]) }
            expectError(.wrongKind(file: path, path: "/weights/ids", expected: "a floating-point dataset",
                                   found: "int32"),
                        mentions: [path, "/weights/ids"]) { try file.overwriteFloats("/weights/ids", values: [1, 2]) }
            expectError(.missingObject(file: path, path: "/weights/nope"), mentions: [path, "/weights/nope"]) {
                try file.overwriteFloats("/weights/nope", values: [1])
            }
        }
        let file = try H5File.open(path)
        #expect(try file.readFloats("/weights/w") == H5Array(shape: [2, 2], values: [1, 2, 3, 4.5]))
        expectError(.readOnly(file: path, path: "/weights/w"), mentions: [path, "/weights/w"]) {
            try file.overwriteFloats("/weights/w", values: [0, 0, 0, 0])
        }
        expectError(.readOnly(file: path, path: "/new"), mentions: [path, "/new"]) {
            try file.writeFloats("/new", shape: [1], values: [0])
        }
    }

    // MARK: Threads and stderr

    /// HDF5's error printing is per thread in thread-safe builds; a failure on a
    /// brand-new thread must still print nothing.
    @Test func failuresOnOtherThreadsPrintNothing() throws {
        let scratch = try Scratch()
        let path = scratch.file("ok.h5")
        do {
            let file = try H5File.create(path)
            try file.writeFloats("/x", shape: [4], values: [1, 2, 3, 4])
        }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let cut = scratch.file("cut.h5")
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: cut))
        let captured = scratch.file("stderr.txt")

        fflush(nil)   // all C streams
        let saved = dup(2)
        let sink = open(captured, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        try #require(saved >= 0 && sink >= 0)
        dup2(sink, 2)
        let errors = Errors()
        let threads = (0..<4).map { _ in
            Thread {
                let file = try? H5File.open(path)
                errors.add(goldenError { _ = try H5File.open(cut) })
                errors.add(goldenError { _ = try file?.readFloats("/missing/y") })
                errors.add(goldenError { _ = try file?.readInt32s("/x") })
            }
        }
        threads.forEach { $0.start() }
        while threads.contains(where: { !$0.isFinished }) { usleep(1000) }
        fflush(nil)   // all C streams
        dup2(saved, 2)
        close(saved)
        close(sink)

        #expect(errors.count == 12)
        let printed = try String(contentsOfFile: captured, encoding: .utf8)
        #expect(printed.isEmpty, "HDF5 printed to stderr: \(printed.prefix(300))")
    }
}

final class Errors: @unchecked Sendable {
    private let lock = NSLock()
    private var errors: [GoldenIOError] = []
    func add(_ error: GoldenIOError?) {
        guard let error else { return }
        lock.lock(); errors.append(error); lock.unlock()
    }
    var count: Int { lock.lock(); defer { lock.unlock() }; return errors.count }
}
