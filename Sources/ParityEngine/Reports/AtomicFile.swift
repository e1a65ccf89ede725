import Foundation
#if canImport(Glibc)
import Glibc
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
import Darwin
private let systemWrite = Darwin.write
#endif

// Reports and any other file qwen-parity writes go through here, so no reader, and no crash or
// SIGKILL of the writer, ever leaves a half-written file at the destination.
//
// The bytes go to a hidden temporary `.<name>.<pid>.tmp` beside the destination, are flushed to
// disk, and the temporary is renamed over the destination (rename is atomic within a directory);
// then the directory is flushed so the rename itself survives a power cut. A writer killed
// part-way leaves only its temporary, never a damaged destination, and cannot clean up after
// itself; so every write first removes the temporaries of its destination whose process is
// gone. tools/make_golden.py follows the same scheme for goldens (docs/reliability.md).

public enum AtomicFileError: Error, CustomStringConvertible, Equatable {
    case cannotWrite(file: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotWrite(file, reason): return "\(file): cannot write: \(reason)"
        }
    }
}

public enum AtomicFile {
    /// `.<name>.<pid>.tmp` in the destination's directory.
    public static func temporary(for destination: URL, pid: Int32 = getpid()) -> URL {
        destination.deletingLastPathComponent().appendingPathComponent(".\(destination.lastPathComponent).\(pid).tmp")
    }

    /// Writes `data` to `destination`: the old contents or the new, never a mixture, whenever the
    /// writer stops.
    public static func write(_ data: Data, to destination: URL) throws {
        removeStaleTemporaries(for: destination)
        let temporary = temporary(for: destination)
        func failure(_ what: String) -> AtomicFileError {
            .cannotWrite(file: destination.path, reason: "\(what): \(String(cString: strerror(errno)))")
        }
        let fd = open(temporary.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure("creating \(temporary.lastPathComponent)") }
        do {
            try data.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = systemWrite(fd, raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw failure("writing \(temporary.lastPathComponent)") }
                    offset += n
                }
            }
            guard fsync(fd) == 0 else { throw failure("flushing \(temporary.lastPathComponent)") }
            guard close(fd) == 0 else { throw failure("closing \(temporary.lastPathComponent)") }
        } catch {
            close(fd)
            unlink(temporary.path)
            throw error
        }
        guard rename(temporary.path, destination.path) == 0 else {
            let error = failure("renaming \(temporary.lastPathComponent) over it")
            unlink(temporary.path)
            throw error
        }
        let directory = open(destination.deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 { _ = fsync(directory); close(directory) }
    }

    /// Removes the temporaries of `destination` left by writers that are no longer running;
    /// returns what it removed. A temporary of a live process (another writer) is left alone.
    @discardableResult
    public static func removeStaleTemporaries(for destination: URL) -> [URL] {
        let directory = destination.deletingLastPathComponent()
        let prefix = ".\(destination.lastPathComponent)."
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return [] }
        var removed: [URL] = []
        for name in names where name.hasPrefix(prefix) && name.hasSuffix(".tmp") {
            let middle = name.dropFirst(prefix.count).dropLast(".tmp".count)
            guard let pid = Int32(middle), pid > 0, pid != getpid() else { continue }
            guard kill(pid, 0) != 0 && errno == ESRCH else { continue }   // still running (or not ours to signal)
            let url = directory.appendingPathComponent(name)
            if unlink(url.path) == 0 { removed.append(url) }
        }
        return removed
    }
}
