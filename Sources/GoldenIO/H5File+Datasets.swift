// Reading and writing datasets. Reads always use the memory type the caller
// wants (native float32 or int32) and let HDF5 convert whatever the file stores.

internal import CHDF5

extension H5File {
    public func datasetInfo(_ datasetPath: String) throws -> H5DatasetInfo {
        let datasetPath = Self.normalize(datasetPath)
        return try withH5Lock {
            let did = try openObject(datasetPath, expecting: .dataset)
            defer { _ = H5Oclose(did) }
            let kind = try datasetKind(did, datasetPath)
            return H5DatasetInfo(shape: try datasetShape(did, datasetPath), kind: kind)
        }
    }

    /// Any integer or floating-point dataset, converted to float32 by HDF5
    /// (float64 values beyond float32's range become ±inf, as numpy's astype does).
    public func readFloats(_ datasetPath: String) throws -> H5Array<Float> {
        try readFloats(datasetPath, shape: nil)
    }

    /// As `readFloats(_:)`, but throws `wrongShape` unless the stored shape is `expectingShape`.
    public func readFloats(_ datasetPath: String, expectingShape: [Int]) throws -> H5Array<Float> {
        try readFloats(datasetPath, shape: expectingShape)
    }

    /// Any integer or floating-point dataset, converted to float64 by HDF5 (the float64 oracle,
    /// which a float32 read would round).
    public func readDoubles(_ datasetPath: String) throws -> H5Array<Double> {
        let datasetPath = Self.normalize(datasetPath)
        return try withH5Lock {
            try readDataset(datasetPath, memoryType: qp_H5T_NATIVE_DOUBLE(), expectedShape: nil,
                            expected: "numbers (float64-convertible)", abortOnOverflow: false) { $0.isNumeric }
        }
    }

    /// Any integer dataset, converted to int32. Floating-point data is `wrongKind`
    /// (no silent truncation), and so is an integer that does not fit in int32.
    public func readInt32s(_ datasetPath: String) throws -> H5Array<Int32> {
        let datasetPath = Self.normalize(datasetPath)
        return try withH5Lock {
            try readDataset(datasetPath, memoryType: qp_H5T_NATIVE_INT32(), expectedShape: nil,
                            expected: "integers (int32-convertible)", abortOnOverflow: true) { kind in
                if case .integer(_, let bits) = kind { return bits <= 64 }
                return false
            }
        }
    }

    /// Writes a new float32 dataset, creating missing parent groups. An existing
    /// object at `datasetPath` is `alreadyExists`; shape [] writes a scalar.
    public func writeFloats(_ datasetPath: String, shape: [Int], values: [Float]) throws {
        let datasetPath = Self.normalize(datasetPath)
        try withH5Lock {
            try writeDataset(datasetPath, shape: shape, values: values,
                             fileType: qp_H5T_IEEE_F32LE(), memoryType: qp_H5T_NATIVE_FLOAT())
        }
    }

    /// Writes a new int32 dataset; see `writeFloats`.
    public func writeInt32s(_ datasetPath: String, shape: [Int], values: [Int32]) throws {
        let datasetPath = Self.normalize(datasetPath)
        try withH5Lock {
            try writeDataset(datasetPath, shape: shape, values: values,
                             fileType: qp_H5T_STD_I32LE(), memoryType: qp_H5T_NATIVE_INT32())
        }
    }

    /// Replaces the contents of an existing floating-point dataset with the same
    /// number of elements, in place (its shape and stored precision are kept).
    public func overwriteFloats(_ datasetPath: String, values: [Float]) throws {
        let datasetPath = Self.normalize(datasetPath)
        try withH5Lock {
            _ = try liveFileID()
            guard mode == .readWrite else { throw GoldenIOError.readOnly(file: path, path: datasetPath) }
            let did = try openObject(datasetPath, expecting: .dataset)
            defer { _ = H5Oclose(did) }
            let kind = try datasetKind(did, datasetPath)
            guard case .float = kind else {
                throw GoldenIOError.wrongKind(file: path, path: datasetPath,
                                              expected: "a floating-point dataset", found: kind.description)
            }
            let shape = try datasetShape(did, datasetPath)
            guard elementCount(shape) == values.count else {
                throw GoldenIOError.wrongShape(file: path, path: datasetPath, expected: shape, found: [values.count])
            }
            if values.isEmpty { return }
            let status = values.withUnsafeBufferPointer {
                H5Dwrite(did, qp_H5T_NATIVE_FLOAT(), qp_H5S_ALL(), qp_H5S_ALL(), qp_H5P_DEFAULT(), $0.baseAddress)
            }
            guard status >= 0 else { throw GoldenIOError.writeFailed(file: path, path: datasetPath) }
        }
    }

    // MARK: Internals (lock held)

    private func readFloats(_ datasetPath: String, shape: [Int]?) throws -> H5Array<Float> {
        let datasetPath = Self.normalize(datasetPath)
        return try withH5Lock {
            try readDataset(datasetPath, memoryType: qp_H5T_NATIVE_FLOAT(), expectedShape: shape,
                            expected: "numbers (float32-convertible)", abortOnOverflow: false) { $0.isNumeric }
        }
    }

    func datasetKind(_ did: hid_t, _ datasetPath: String) throws -> H5ElementKind {
        let type = H5Dget_type(did)
        guard type >= 0 else { throw GoldenIOError.readFailed(file: path, path: datasetPath) }
        defer { _ = H5Tclose(type) }
        return h5ElementKind(ofType: type)
    }

    func datasetShape(_ did: hid_t, _ datasetPath: String) throws -> [Int] {
        let space = H5Dget_space(did)
        guard space >= 0 else { throw GoldenIOError.readFailed(file: path, path: datasetPath) }
        defer { _ = H5Sclose(space) }
        return try shape(of: space, datasetPath)
    }

    /// Shape of a dataspace, with `objectPath` (a dataset or an attribute) for errors.
    func shape(of space: hid_t, _ objectPath: String) throws -> [Int] {
        switch h5Shape(ofSpace: space) {
        case .success(let shape):
            return shape
        case .failure(.null):
            throw GoldenIOError.wrongKind(file: path, path: objectPath,
                                          expected: "data", found: "an empty (null) dataspace")
        case .failure(.unreadable):
            throw GoldenIOError.readFailed(file: path, path: objectPath)
        }
    }

    private func readDataset<Element>(
        _ datasetPath: String, memoryType: hid_t, expectedShape: [Int]?,
        expected: String, abortOnOverflow: Bool, accepts: (H5ElementKind) -> Bool
    ) throws -> H5Array<Element> {
        let did = try openObject(datasetPath, expecting: .dataset)
        defer { _ = H5Oclose(did) }
        let kind = try datasetKind(did, datasetPath)
        guard accepts(kind) else {
            throw GoldenIOError.wrongKind(file: path, path: datasetPath, expected: expected, found: kind.description)
        }
        let shape = try datasetShape(did, datasetPath)
        if let expectedShape, expectedShape != shape {
            throw GoldenIOError.wrongShape(file: path, path: datasetPath, expected: expectedShape, found: shape)
        }
        guard let count = elementCount(shape),
              allocationIsSane(count: count, stride: MemoryLayout<Element>.stride),
              storageMatchesExtent(did, count: count) else {
            throw GoldenIOError.readFailed(file: path, path: datasetPath)
        }
        if count == 0 { return H5Array(shape: shape, values: []) }

        let transfer = H5Pcreate(qp_H5P_DATASET_XFER())
        guard transfer >= 0 else { throw GoldenIOError.readFailed(file: path, path: datasetPath) }
        defer { _ = H5Pclose(transfer) }
        var overflowed = false
        let values: [Element]? = withUnsafeMutablePointer(to: &overflowed) { flag in
            if abortOnOverflow { _ = H5Pset_type_conv_cb(transfer, h5AbortOnRangeException, flag) }
            var ok = false
            let values = [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
                ok = H5Dread(did, memoryType, qp_H5S_ALL(), qp_H5S_ALL(), transfer, buffer.baseAddress) >= 0
                initialized = ok ? count : 0   // Element is a trivial number type
            }
            return ok ? values : nil
        }
        guard let values else {
            if overflowed {
                throw GoldenIOError.wrongKind(file: path, path: datasetPath, expected: expected,
                                              found: "\(kind) values outside the int32 range")
            }
            throw GoldenIOError.readFailed(file: path, path: datasetPath)
        }
        return H5Array(shape: shape, values: values)
    }

    /// For unchunked data, the bytes on disk must be exactly count × element size.
    /// HDF5 1.10 catches a stored extent larger than the data, but a smaller one
    /// silently reads a prefix. Chunked (maybe compressed) and never-written
    /// (fill value) datasets are left to HDF5.
    private func storageMatchesExtent(_ did: hid_t, count: Int) -> Bool {
        let dcpl = H5Dget_create_plist(did)
        guard dcpl >= 0 else { return false }
        defer { _ = H5Pclose(dcpl) }
        let layout = H5Pget_layout(dcpl)
        guard layout == H5D_CONTIGUOUS || layout == H5D_COMPACT, H5Pget_external_count(dcpl) == 0 else { return true }
        let stored = H5Dget_storage_size(did)
        if stored == 0 { return true }
        let type = H5Dget_type(did)
        guard type >= 0 else { return false }
        defer { _ = H5Tclose(type) }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: H5Tget_size(type))
        return !overflow && UInt64(bytes) == stored
    }

    func writeDataset<Element>(
        _ datasetPath: String, shape: [Int], values: [Element], fileType: hid_t, memoryType: hid_t
    ) throws {
        let fid = try liveFileID()
        guard mode == .readWrite else { throw GoldenIOError.readOnly(file: path, path: datasetPath) }
        guard datasetPath != "/" else {
            throw GoldenIOError.wrongKind(file: path, path: datasetPath,
                                          expected: "a dataset name", found: "the root group")
        }
        guard shape.count <= h5MaxRank, let count = elementCount(shape), count == values.count else {
            throw GoldenIOError.wrongShape(file: path, path: datasetPath, expected: shape, found: [values.count])
        }
        guard !objectExists(datasetPath) else {
            throw GoldenIOError.alreadyExists(file: path, path: datasetPath)
        }
        let space = h5CreateSpace(shape)
        guard space >= 0 else { throw GoldenIOError.writeFailed(file: path, path: datasetPath) }
        defer { _ = H5Sclose(space) }
        let lcpl = h5MakeLinkCreateList()
        defer { _ = H5Pclose(lcpl) }
        let did = H5Dcreate2(fid, datasetPath, fileType, space, lcpl, qp_H5P_DEFAULT(), qp_H5P_DEFAULT())
        guard did >= 0 else { throw GoldenIOError.writeFailed(file: path, path: datasetPath) }
        defer { _ = H5Dclose(did) }
        if count == 0 { return }
        let status = values.withUnsafeBufferPointer {
            H5Dwrite(did, memoryType, qp_H5S_ALL(), qp_H5S_ALL(), qp_H5P_DEFAULT(), $0.baseAddress)
        }
        guard status >= 0 else {
            _ = H5Ldelete(fid, datasetPath, qp_H5P_DEFAULT())   // don't leave a half-written dataset behind
            throw GoldenIOError.writeFailed(file: path, path: datasetPath)
        }
    }
}
