// Removing objects and attributes, writing the less common element types, and where a
// dataset's bytes sit in the file. The harness never edits a golden; test generators use
// these to derive bad inputs (a missing dataset, a string where numbers belong, a flipped bit
// inside a tensor) from real goldens.

internal import CHDF5
import Foundation

extension H5File {
    /// Unlinks a dataset or group (H5Ldelete). The bytes stay in the file, unreachable; an
    /// object that has another hard link (goldens share repeated tensors) stays alive there.
    public func deleteObject(_ objectPath: String) throws {
        let objectPath = Self.normalize(objectPath)
        try withH5Lock {
            let fid = try liveFileID()
            guard objectPath != "/" else {
                throw GoldenIOError.wrongKind(file: path, path: objectPath,
                                              expected: "a dataset or group below the root", found: "the root group")
            }
            guard mode == .readWrite else { throw GoldenIOError.readOnly(file: path, path: objectPath) }
            guard objectExists(objectPath) else { throw GoldenIOError.missingObject(file: path, path: objectPath) }
            guard H5Ldelete(fid, objectPath, qp_H5P_DEFAULT()) >= 0 else {
                throw GoldenIOError.writeFailed(file: path, path: objectPath)
            }
        }
    }

    /// Removes attribute `name` of `object`; a missing one is `missingAttribute`.
    public func deleteAttribute(_ name: String, of object: String) throws {
        let object = Self.normalize(object)
        let site = Self.attributeSite(name, object)
        try withH5Lock {
            _ = try liveFileID()
            guard mode == .readWrite else { throw GoldenIOError.readOnly(file: path, path: site) }
            let oid = try openObject(object, expecting: nil)
            defer { _ = H5Oclose(oid) }
            guard H5Aexists(oid, name) > 0 else {
                throw GoldenIOError.missingAttribute(file: path, object: object, name: name)
            }
            guard H5Adelete(oid, name) >= 0 else { throw GoldenIOError.writeFailed(file: path, path: site) }
        }
    }

    /// Writes a new int64 dataset; see `writeFloats`.
    public func writeInt64s(_ datasetPath: String, shape: [Int], values: [Int64]) throws {
        let datasetPath = Self.normalize(datasetPath)
        try withH5Lock {
            try writeDataset(datasetPath, shape: shape, values: values,
                             fileType: qp_H5T_STD_I64LE(), memoryType: qp_H5T_NATIVE_INT64())
        }
    }

    /// Writes a new dataset of variable-length UTF-8 strings (h5py's `str` dtype); see `writeFloats`.
    public func writeStrings(_ datasetPath: String, shape: [Int], values: [String]) throws {
        let datasetPath = Self.normalize(datasetPath)
        guard values.allSatisfy({ !$0.utf8.contains(0) }) else {
            throw GoldenIOError.wrongKind(file: path, path: datasetPath,
                                          expected: "strings without NUL characters", found: "a NUL character")
        }
        // HDF5 reads the pointers during H5Dwrite; strdup keeps them valid until then.
        let pointers: [UnsafePointer<CChar>?] = values.map { UnsafePointer(strdup($0)) }
        defer { for p in pointers { free(UnsafeMutablePointer(mutating: p)) } }
        try withH5Lock {
            let type = H5Tcopy(qp_H5T_C_S1())
            defer { _ = H5Tclose(type) }
            _ = H5Tset_size(type, qp_H5T_VARIABLE())
            _ = H5Tset_cset(type, H5T_CSET_UTF8)
            try writeDataset(datasetPath, shape: shape, values: pointers, fileType: type, memoryType: type)
        }
    }

    /// The byte range a contiguous dataset's elements occupy in the file, or nil when they do
    /// not sit in one range (chunked, compact, or never written).
    public func rawDataRange(_ datasetPath: String) throws -> Range<Int>? {
        let datasetPath = Self.normalize(datasetPath)
        return try withH5Lock {
            let did = try openObject(datasetPath, expecting: .dataset)
            defer { _ = H5Oclose(did) }
            let offset = H5Dget_offset(did)   // HADDR_UNDEF (all ones) unless contiguous and allocated
            let size = H5Dget_storage_size(did)
            guard offset != haddr_t.max, size > 0,
                  let start = Int(exactly: offset), let count = Int(exactly: size),
                  case (let end, false) = start.addingReportingOverflow(count) else { return nil }
            return start..<end
        }
    }
}
