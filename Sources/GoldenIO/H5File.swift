// An open HDF5 file: opening, creating, closing, and walking groups.
// Datasets are in H5File+Datasets.swift, attributes in H5File+Attributes.swift.
//
// Object paths are absolute HDF5 paths ("/weights/model.layers.0.mlp.up_proj.weight");
// a missing leading "/" and doubled or trailing slashes are tolerated. Dots are
// ordinary characters in HDF5 names.

internal import CHDF5
import Foundation
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

public final class H5File: @unchecked Sendable {  // all mutable state is guarded by the HDF5 lock
    public enum Mode: Sendable { case readOnly, readWrite }

    public let path: String
    public let mode: Mode
    /// The HDF5 file id; negative once closed. Read and written only under the lock.
    var fileID: hid_t

    private init(path: String, mode: Mode, fileID: hid_t) {
        self.path = path
        self.mode = mode
        self.fileID = fileID
    }

    deinit { close() }

    // MARK: Opening and closing

    /// Opens an existing HDF5 file. Checks, in order: the path exists, is a regular
    /// file, is readable (and writable for `.readWrite`), carries the HDF5
    /// signature, and opens (a truncated file fails here, as `notHDF5`).
    public static func open(_ path: String, mode: Mode = .readOnly) throws -> H5File {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let code = errno
            if code == ENOENT || code == ENOTDIR { throw GoldenIOError.fileNotFound(file: path) }
            throw GoldenIOError.cannotOpen(file: path, reason: String(cString: strerror(code)))
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw GoldenIOError.notAFile(file: path) }
        guard access(path, R_OK) == 0 else {
            throw GoldenIOError.cannotOpen(file: path, reason: "not readable (permission denied)")
        }
        if mode == .readWrite, access(path, W_OK) != 0 {
            throw GoldenIOError.cannotOpen(file: path, reason: "not writable, so it cannot be opened read-write")
        }
        return try withH5Lock {
            guard H5Fis_hdf5(path) > 0 else { throw GoldenIOError.notHDF5(file: path) }
            let fapl = makeFileAccessList()
            defer { _ = H5Pclose(fapl) }
            let flags = mode == .readOnly ? qp_H5F_ACC_RDONLY() : qp_H5F_ACC_RDWR()
            let fid = H5Fopen(path, flags, fapl)
            guard fid >= 0 else { throw openFailure(path: path, messages: h5ErrorMessages()) }
            return H5File(path: path, mode: mode, fileID: fid)
        }
    }

    /// Creates `path`, truncating any existing file, opened read-write.
    public static func create(_ path: String) throws -> H5File {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw GoldenIOError.cannotCreate(file: path, reason: "it is a directory")
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty, !FileManager.default.fileExists(atPath: parent) {
            throw GoldenIOError.cannotCreate(file: path, reason: "directory \(parent) does not exist")
        }
        return try withH5Lock {
            let fapl = makeFileAccessList()
            defer { _ = H5Pclose(fapl) }
            let fid = H5Fcreate(path, qp_H5F_ACC_TRUNC(), qp_H5P_DEFAULT(), fapl)
            guard fid >= 0 else {
                throw GoldenIOError.cannotCreate(file: path, reason: h5ErrorMessages().first ?? "HDF5 gave no reason")
            }
            return H5File(path: path, mode: .readWrite, fileID: fid)
        }
    }

    /// Closes the file (flushing writes). Idempotent; `deinit` calls it too.
    /// Every later call throws `closed` (or returns false for the Bool queries).
    public func close() {
        withH5Lock {
            if fileID >= 0 {
                _ = H5Fclose(fileID)
                fileID = -1
            }
        }
    }

    public var isOpen: Bool { withH5Lock { fileID >= 0 } }

    private static func makeFileAccessList() -> hid_t {
        let fapl = H5Pcreate(qp_H5P_FILE_ACCESS())
        // Keep HDF5's file locking, but don't fail on file systems that disable it.
        if fapl >= 0 { _ = H5Pset_file_locking(fapl, true, true) }
        return fapl
    }

    /// A file with the HDF5 signature that still fails to open is truncated or
    /// corrupt, unless HDF5 says it is busy (open read-only here, or locked).
    private static func openFailure(path: String, messages: [String]) -> GoldenIOError {
        let busy = messages.first { m in
            let lower = m.lowercased()
            return lower.contains("already open") || lower.contains("lock")
        }
        if let busy { return .cannotOpen(file: path, reason: busy) }
        return .notHDF5(file: path)
    }

    // MARK: Navigation

    /// True if a dataset, group or named type lives at `objectPath`. Never throws
    /// or prints, also when intermediate groups are missing or are datasets.
    public func exists(_ objectPath: String) -> Bool {
        withH5Lock { fileID >= 0 && objectExists(Self.normalize(objectPath)) }
    }

    public func isGroup(_ objectPath: String) -> Bool {
        withH5Lock { fileID >= 0 && objectType(Self.normalize(objectPath)) == .group }
    }

    /// Names of the immediate members of `group`, sorted.
    public func children(of group: String) throws -> [String] {
        let group = Self.normalize(group)
        return try withH5Lock {
            let gid = try openObject(group, expecting: .group)
            defer { _ = H5Oclose(gid) }
            // Walked in index order with a callback, not by index: see qp_link_names in the shim.
            final class Names { var list: [String] = [] }
            let names = Names()
            let status = qp_link_names(gid, { name, context in
                guard let name, let context else { return -1 }
                Unmanaged<Names>.fromOpaque(context).takeUnretainedValue().list.append(String(cString: name))
                return 0
            }, Unmanaged.passUnretained(names).toOpaque())
            guard status >= 0 else { throw GoldenIOError.readFailed(file: path, path: group) }
            return names.list.sorted()
        }
    }

    /// Creates a group and any missing parents. An existing group is fine;
    /// an existing dataset at that path is `alreadyExists`.
    public func createGroup(_ groupPath: String) throws {
        let groupPath = Self.normalize(groupPath)
        try withH5Lock {
            let fid = try liveFileID()
            switch objectType(groupPath) {
            case .group: return
            case .dataset, .other: throw GoldenIOError.alreadyExists(file: path, path: groupPath)
            case nil: break
            }
            guard mode == .readWrite else { throw GoldenIOError.readOnly(file: path, path: groupPath) }
            let lcpl = h5MakeLinkCreateList()
            defer { _ = H5Pclose(lcpl) }
            let gid = H5Gcreate2(fid, groupPath, lcpl, qp_H5P_DEFAULT(), qp_H5P_DEFAULT())
            guard gid >= 0 else { throw GoldenIOError.writeFailed(file: path, path: groupPath) }
            _ = H5Gclose(gid)
        }
    }

    // MARK: Internals (lock held)

    enum ObjectType { case group, dataset, other }

    static func components(_ objectPath: String) -> [Substring] {
        objectPath.split(separator: "/", omittingEmptySubsequences: true)
    }

    /// "/a/b" for "a/b", "/a//b/", "/a/b"; "/" for "" or "/".
    static func normalize(_ objectPath: String) -> String {
        "/" + components(objectPath).joined(separator: "/")
    }

    func liveFileID() throws -> hid_t {
        guard fileID >= 0 else { throw GoldenIOError.closed(file: path) }
        return fileID
    }

    /// Checks each prefix with H5Lexists, so a missing parent is a plain `false`
    /// (H5Lexists on "/a/b" fails outright when "/a" is missing), then that the
    /// last link resolves (a dangling soft link does not count).
    func objectExists(_ objectPath: String) -> Bool {
        let parts = Self.components(objectPath)
        if parts.isEmpty { return true }
        var prefix = ""
        for part in parts {
            prefix += "/" + part
            guard H5Lexists(fileID, prefix, qp_H5P_DEFAULT()) > 0 else { return false }
        }
        return H5Oexists_by_name(fileID, prefix, qp_H5P_DEFAULT()) > 0
    }

    func objectType(_ objectPath: String) -> ObjectType? {
        guard objectExists(objectPath) else { return nil }
        let oid = H5Oopen(fileID, objectPath, qp_H5P_DEFAULT())
        guard oid >= 0 else { return nil }
        defer { _ = H5Oclose(oid) }
        switch H5Iget_type(oid) {
        case H5I_GROUP: return .group
        case H5I_DATASET: return .dataset
        default: return .other
        }
    }

    /// Opens any object (`expecting: nil`) or one of the given type; the caller
    /// closes the id with H5Oclose. Missing → `missingObject`; wrong type → `wrongKind`.
    func openObject(_ objectPath: String, expecting wanted: ObjectType?) throws -> hid_t {
        let fid = try liveFileID()
        guard objectExists(objectPath) else { throw GoldenIOError.missingObject(file: path, path: objectPath) }
        let oid = H5Oopen(fid, objectPath, qp_H5P_DEFAULT())
        guard oid >= 0 else { throw GoldenIOError.readFailed(file: path, path: objectPath) }
        let found: ObjectType
        switch H5Iget_type(oid) {
        case H5I_GROUP: found = .group
        case H5I_DATASET: found = .dataset
        default: found = .other
        }
        if let wanted, wanted != found {
            _ = H5Oclose(oid)
            throw GoldenIOError.wrongKind(file: path, path: objectPath,
                                          expected: Self.name(of: wanted), found: Self.name(of: found))
        }
        return oid
    }

    private static func name(of type: ObjectType) -> String {
        switch type {
        case .group: return "a group"
        case .dataset: return "a dataset"
        case .other: return "a named datatype"
        }
    }

    /// Open HDF5 ids in this file, the file itself included (1 when nothing leaked).
    var openIDCount: Int {
        withH5Lock { fileID >= 0 ? Int(H5Fget_obj_count(fileID, qp_H5F_OBJ_ALL())) : 0 }
    }
}
