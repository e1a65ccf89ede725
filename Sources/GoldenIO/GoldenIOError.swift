// Every failure GoldenIO can report. A golden file comes from outside the
// program, so nothing here traps: each problem is one of these, and its
// description is a single line naming the file, the object, and what was
// expected versus what was found.

public enum GoldenIOError: Error, CustomStringConvertible, Equatable {
    case fileNotFound(file: String)
    /// The path exists but is a directory, device, socket, ...
    case notAFile(file: String)
    /// Exists, but is not HDF5, or is truncated/corrupt so the library cannot open it.
    case notHDF5(file: String)
    /// Exists and is HDF5, but cannot be opened as asked (permissions, already open
    /// read-only in this process, file lock held elsewhere).
    case cannotOpen(file: String, reason: String)
    case cannotCreate(file: String, reason: String)
    /// A dataset or group (or one of its parent groups) is missing.
    case missingObject(file: String, path: String)
    case missingAttribute(file: String, object: String, name: String)
    /// Writing a dataset that is already there (datasets are never silently replaced).
    case alreadyExists(file: String, path: String)
    /// The file was opened with `.readOnly` and a write was asked for.
    case readOnly(file: String, path: String)
    /// Element type (or object type) unusable as asked, e.g. expected float32-convertible, found string.
    case wrongKind(file: String, path: String, expected: String, found: String)
    case wrongShape(file: String, path: String, expected: [Int], found: [Int])
    case readFailed(file: String, path: String)
    case writeFailed(file: String, path: String)
    case closed(file: String)

    public var description: String {
        switch self {
        case .fileNotFound(let file):
            return "\(file): no such file"
        case .notAFile(let file):
            return "\(file): not a regular file (a directory or special file); expected an HDF5 file"
        case .notHDF5(let file):
            return "\(file): not an HDF5 file, or truncated/corrupt so HDF5 cannot open it"
        case .cannotOpen(let file, let reason):
            return "\(file): cannot open HDF5 file: \(reason)"
        case .cannotCreate(let file, let reason):
            return "\(file): cannot create HDF5 file: \(reason)"
        case .missingObject(let file, let path):
            return "\(file): no dataset or group at \(path)"
        case .missingAttribute(let file, let object, let name):
            return "\(file): \(object) has no attribute \"\(name)\""
        case .alreadyExists(let file, let path):
            return "\(file): \(path) already exists; expected a new name (datasets are never replaced)"
        case .readOnly(let file, let path):
            return "\(file): cannot write \(path): file was opened read-only"
        case .wrongKind(let file, let path, let expected, let found):
            return "\(file): \(path): expected \(expected), found \(found)"
        case .wrongShape(let file, let path, let expected, let found):
            return "\(file): \(path): expected shape \(Self.describe(expected)), found \(Self.describe(found))"
        case .readFailed(let file, let path):
            return "\(file): reading \(path) failed; the file may be truncated or corrupt"
        case .writeFailed(let file, let path):
            return "\(file): writing \(path) failed"
        case .closed(let file):
            return "\(file): file is closed"
        }
    }

    /// "[3, 5] (15 elements)"; the count makes element-count mismatches obvious.
    private static func describe(_ shape: [Int]) -> String {
        let (count, overflow) = shape.reduce((1, false)) { acc, d in
            let (p, o) = acc.0.multipliedReportingOverflow(by: d)
            return (p, acc.1 || o)
        }
        let n = overflow ? "overflowing" : "\(count)"
        return "[\(shape.map(String.init).joined(separator: ", "))] (\(n) element\(count == 1 ? "" : "s"))"
    }
}
