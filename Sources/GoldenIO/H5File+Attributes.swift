// Attributes on any object ("/" is the root group). Written the way h5py
// writes them: strings as variable-length UTF-8 scalars, ints as int64,
// doubles as float64.

internal import CHDF5

extension H5File {
    /// Attribute names of `object`, sorted.
    public func attributeNames(of object: String) throws -> [String] {
        let object = Self.normalize(object)
        return try withH5Lock {
            let oid = try openObject(object, expecting: nil)
            defer { _ = H5Oclose(oid) }
            final class Collector { var names: [String] = [] }
            let collector = Collector()
            let collect: H5A_operator2_t = { _, name, _, data in
                guard let name, let data else { return -1 }
                Unmanaged<Collector>.fromOpaque(data).takeUnretainedValue().names.append(String(cString: name))
                return 0
            }
            var index: hsize_t = 0
            let status = withExtendedLifetime(collector) {
                H5Aiterate2(oid, H5_INDEX_NAME, H5_ITER_INC, &index, collect,
                            Unmanaged.passUnretained(collector).toOpaque())
            }
            guard status >= 0 else { throw GoldenIOError.readFailed(file: path, path: object) }
            return collector.names.sorted()
        }
    }

    /// False also when the object is missing or the file is closed.
    public func hasAttribute(_ name: String, of object: String) -> Bool {
        let object = Self.normalize(object)
        return withH5Lock {
            guard fileID >= 0, objectExists(object) else { return false }
            let oid = H5Oopen(fileID, object, qp_H5P_DEFAULT())
            guard oid >= 0 else { return false }
            defer { _ = H5Oclose(oid) }
            return H5Aexists(oid, name) > 0
        }
    }

    /// A string attribute, variable-length (h5py `str`) or fixed-length (numpy
    /// `bytes`), stored as a scalar or a one-element array. Must be valid UTF-8.
    public func stringAttribute(_ name: String, of object: String) throws -> String {
        let object = Self.normalize(object)
        let site = Self.attributeSite(name, object)
        return try withH5Lock {
            let aid = try openAttribute(name, of: object)
            defer { _ = H5Aclose(aid) }
            let type = H5Aget_type(aid)
            guard type >= 0 else { throw GoldenIOError.readFailed(file: path, path: site) }
            defer { _ = H5Tclose(type) }
            let kind = h5ElementKind(ofType: type)
            guard kind == .string else {
                throw GoldenIOError.wrongKind(file: path, path: site, expected: "a string", found: kind.description)
            }
            _ = try attributeCount(aid, site, requireSingle: true)

            let bytes: [UInt8]
            if H5Tis_variable_str(type) > 0 {
                let memoryType = H5Tcopy(qp_H5T_C_S1())
                defer { _ = H5Tclose(memoryType) }
                _ = H5Tset_size(memoryType, qp_H5T_VARIABLE())
                _ = H5Tset_cset(memoryType, H5Tget_cset(type))
                var pointer: UnsafeMutablePointer<CChar>? = nil
                guard H5Aread(aid, memoryType, &pointer) >= 0 else {
                    throw GoldenIOError.readFailed(file: path, path: site)
                }
                defer { if let pointer { _ = H5free_memory(pointer) } }
                bytes = pointer.map(Self.bytesOfCString) ?? []   // HDF5 may hand back NULL for ""
            } else {
                let size = H5Tget_size(type)
                guard size > 0, allocationIsSane(count: size, stride: 1) else {
                    throw GoldenIOError.readFailed(file: path, path: site)
                }
                let memoryType = H5Tcopy(type)
                defer { _ = H5Tclose(memoryType) }
                var buffer = [UInt8](repeating: 0, count: size)
                guard H5Aread(aid, memoryType, &buffer) >= 0 else {
                    throw GoldenIOError.readFailed(file: path, path: site)
                }
                if H5Tget_strpad(type) == H5T_STR_SPACEPAD {
                    while buffer.last == UInt8(ascii: " ") { buffer.removeLast() }
                }
                bytes = Array(buffer.prefix { $0 != 0 })   // NULLTERM and NULLPAD
            }
            guard let string = String(validating: bytes, as: UTF8.self) else {
                throw GoldenIOError.wrongKind(file: path, path: site, expected: "a UTF-8 string",
                                              found: "\(bytes.count) bytes that are not valid UTF-8")
            }
            return string
        }
    }

    /// Any numeric scalar (or one-element) attribute, converted to Double.
    public func doubleAttribute(_ name: String, of object: String) throws -> Double {
        let object = Self.normalize(object)
        let site = Self.attributeSite(name, object)
        return try withH5Lock {
            let aid = try openAttribute(name, of: object)
            defer { _ = H5Aclose(aid) }
            let kind = try attributeKind(aid, site)
            guard kind.isNumeric else {
                throw GoldenIOError.wrongKind(file: path, path: site, expected: "a number", found: kind.description)
            }
            let count = try attributeCount(aid, site, requireSingle: true)
            let values: [Double] = try readAttribute(aid, site, count: count, memoryType: qp_H5T_NATIVE_DOUBLE())
            return values[0]
        }
    }

    /// An integer scalar (or one-element) attribute. A floating-point attribute
    /// is accepted only if its value is a whole number that fits in Int.
    public func intAttribute(_ name: String, of object: String) throws -> Int {
        let object = Self.normalize(object)
        let site = Self.attributeSite(name, object)
        return try withH5Lock {
            let (values, _) = try readIntegers(name, object, site, requireSingle: true)
            return values[0]
        }
    }

    /// A numeric scalar or 1-D attribute as [Int] (a scalar gives one element);
    /// same conversion rules as `intAttribute`.
    public func intArrayAttribute(_ name: String, of object: String) throws -> [Int] {
        let object = Self.normalize(object)
        let site = Self.attributeSite(name, object)
        return try withH5Lock {
            let (values, shape) = try readIntegers(name, object, site, requireSingle: false)
            guard shape.count <= 1 else {
                throw GoldenIOError.wrongKind(file: path, path: site, expected: "a scalar or 1-D integer attribute",
                                              found: "shape \(shape)")
            }
            return values
        }
    }

    /// Sets (or replaces) a string attribute, as a variable-length UTF-8 scalar like h5py.
    public func setAttribute(_ name: String, string: String, on object: String) throws {
        let object = Self.normalize(object)
        guard !string.utf8.contains(0) else {
            throw GoldenIOError.wrongKind(file: path, path: Self.attributeSite(name, object),
                                          expected: "a string without NUL characters", found: "a NUL character")
        }
        try withH5Lock {
            let type = H5Tcopy(qp_H5T_C_S1())
            defer { _ = H5Tclose(type) }
            _ = H5Tset_size(type, qp_H5T_VARIABLE())
            _ = H5Tset_cset(type, H5T_CSET_UTF8)
            try writeAttribute(name, on: object, fileType: type) { aid in
                string.withCString { cString in
                    var pointer: UnsafePointer<CChar>? = cString
                    return H5Awrite(aid, type, &pointer)
                }
            }
        }
    }

    /// Sets (or replaces) an int64 scalar attribute.
    public func setAttribute(_ name: String, int: Int, on object: String) throws {
        let object = Self.normalize(object)
        try withH5Lock {
            var value = Int64(int)
            try writeAttribute(name, on: object, fileType: qp_H5T_STD_I64LE()) { aid in
                H5Awrite(aid, qp_H5T_NATIVE_INT64(), &value)
            }
        }
    }

    /// Sets (or replaces) a float64 scalar attribute.
    public func setAttribute(_ name: String, double: Double, on object: String) throws {
        let object = Self.normalize(object)
        try withH5Lock {
            var value = double
            try writeAttribute(name, on: object, fileType: qp_H5T_IEEE_F64LE()) { aid in
                H5Awrite(aid, qp_H5T_NATIVE_DOUBLE(), &value)
            }
        }
    }

    /// Sets (or replaces) a 1-D int64 array attribute (shapes, token ids, ...).
    public func setAttribute(_ name: String, ints: [Int], on object: String) throws {
        let object = Self.normalize(object)
        try withH5Lock {
            // H5Awrite rejects a NULL buffer even for zero elements, so [] still passes one slot.
            let values = ints.isEmpty ? [Int64(0)] : ints.map { Int64($0) }
            try writeAttribute(name, on: object, fileType: qp_H5T_STD_I64LE(), shape: [ints.count]) { aid in
                values.withUnsafeBufferPointer { H5Awrite(aid, qp_H5T_NATIVE_INT64(), $0.baseAddress) }
            }
        }
    }

    // MARK: Internals (lock held)

    /// The bytes before the terminating NUL, unvalidated.
    private static func bytesOfCString(_ pointer: UnsafeMutablePointer<CChar>) -> [UInt8] {
        var length = 0
        while pointer[length] != 0 { length += 1 }
        return UnsafeRawBufferPointer(start: pointer, count: length).map { $0 }
    }

    /// How errors name an attribute: `/weights attribute "n_layers"`.
    static func attributeSite(_ name: String, _ object: String) -> String {
        "\(object) attribute \"\(name)\""
    }

    private func openAttribute(_ name: String, of object: String) throws -> hid_t {
        let oid = try openObject(object, expecting: nil)
        defer { _ = H5Oclose(oid) }
        guard H5Aexists(oid, name) > 0 else {
            throw GoldenIOError.missingAttribute(file: path, object: object, name: name)
        }
        let aid = H5Aopen(oid, name, qp_H5P_DEFAULT())
        guard aid >= 0 else { throw GoldenIOError.readFailed(file: path, path: Self.attributeSite(name, object)) }
        return aid
    }

    private func attributeKind(_ aid: hid_t, _ site: String) throws -> H5ElementKind {
        let type = H5Aget_type(aid)
        guard type >= 0 else { throw GoldenIOError.readFailed(file: path, path: site) }
        defer { _ = H5Tclose(type) }
        return h5ElementKind(ofType: type)
    }

    /// Element count and shape of an attribute; with `requireSingle`, anything
    /// but a scalar or a one-element array is `wrongShape`.
    @discardableResult
    private func attributeCount(_ aid: hid_t, _ site: String, requireSingle: Bool) throws -> Int {
        try attributeShapeAndCount(aid, site, requireSingle: requireSingle).count
    }

    private func attributeShapeAndCount(_ aid: hid_t, _ site: String,
                                        requireSingle: Bool) throws -> (shape: [Int], count: Int) {
        let space = H5Aget_space(aid)
        guard space >= 0 else { throw GoldenIOError.readFailed(file: path, path: site) }
        defer { _ = H5Sclose(space) }
        let shape = try shape(of: space, site)
        guard let count = elementCount(shape), allocationIsSane(count: count, stride: 8) else {
            throw GoldenIOError.readFailed(file: path, path: site)
        }
        if requireSingle, count != 1 {
            throw GoldenIOError.wrongShape(file: path, path: site, expected: [], found: shape)
        }
        return (shape, count)
    }

    private func readAttribute<Element>(_ aid: hid_t, _ site: String, count: Int,
                                        memoryType: hid_t) throws -> [Element] {
        if count == 0 { return [] }
        var ok = false
        let values = [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
            ok = H5Aread(aid, memoryType, buffer.baseAddress) >= 0
            initialized = ok ? count : 0   // Element is a trivial number type
        }
        guard ok else { throw GoldenIOError.readFailed(file: path, path: site) }
        return values
    }

    /// Integer attributes are read as int64 (uint64 separately, to catch values
    /// above Int.max); floating-point ones must hold whole numbers.
    private func readIntegers(_ name: String, _ object: String, _ site: String,
                              requireSingle: Bool) throws -> ([Int], [Int]) {
        let aid = try openAttribute(name, of: object)
        defer { _ = H5Aclose(aid) }
        let kind = try attributeKind(aid, site)
        let (shape, count) = try attributeShapeAndCount(aid, site, requireSingle: requireSingle)
        switch kind {
        case .integer(signed: false, bits: 64):
            let raw: [UInt64] = try readAttribute(aid, site, count: count, memoryType: qp_H5T_NATIVE_UINT64())
            let values = raw.compactMap { Int(exactly: $0) }
            guard values.count == raw.count else {
                throw GoldenIOError.wrongKind(file: path, path: site, expected: "integers that fit in Int",
                                              found: "uint64 values above \(Int.max)")
            }
            return (values, shape)
        case .integer(_, let bits) where bits <= 64:
            let raw: [Int64] = try readAttribute(aid, site, count: count, memoryType: qp_H5T_NATIVE_INT64())
            return (raw.map { Int($0) }, shape)
        case .float:
            let raw: [Double] = try readAttribute(aid, site, count: count, memoryType: qp_H5T_NATIVE_DOUBLE())
            let values = raw.compactMap { Int(exactly: $0) }
            guard values.count == raw.count else {
                let bad = raw.first { Int(exactly: $0) == nil }.map { "\($0)" } ?? "?"
                throw GoldenIOError.wrongKind(file: path, path: site, expected: "whole numbers",
                                              found: "\(kind) value \(bad)")
            }
            return (values, shape)
        default:
            throw GoldenIOError.wrongKind(file: path, path: site, expected: "integers", found: kind.description)
        }
    }

    /// Replaces attribute `name` on `object` with a new one of `fileType` and
    /// `shape` ([] for a scalar), filled by `write` (which returns H5Awrite's status).
    private func writeAttribute(_ name: String, on object: String, fileType: hid_t, shape: [Int] = [],
                                write: (hid_t) -> herr_t) throws {
        let site = Self.attributeSite(name, object)
        _ = try liveFileID()
        guard mode == .readWrite else { throw GoldenIOError.readOnly(file: path, path: site) }
        let oid = try openObject(object, expecting: nil)
        defer { _ = H5Oclose(oid) }
        if H5Aexists(oid, name) > 0, H5Adelete(oid, name) < 0 {
            throw GoldenIOError.writeFailed(file: path, path: site)
        }
        let space = h5CreateSpace(shape)
        guard space >= 0 else { throw GoldenIOError.writeFailed(file: path, path: site) }
        defer { _ = H5Sclose(space) }
        let acpl = H5Pcreate(qp_H5P_ATTRIBUTE_CREATE())
        defer { _ = H5Pclose(acpl) }
        _ = H5Pset_char_encoding(acpl, H5T_CSET_UTF8)
        let aid = H5Acreate2(oid, name, fileType, space, acpl, qp_H5P_DEFAULT())
        guard aid >= 0 else { throw GoldenIOError.writeFailed(file: path, path: site) }
        let status = write(aid)
        _ = H5Aclose(aid)
        guard status >= 0 else {
            _ = H5Adelete(oid, name)   // don't leave an attribute with no value behind
            throw GoldenIOError.writeFailed(file: path, path: site)
        }
    }
}
