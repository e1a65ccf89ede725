internal import ParityKernels

/// A weight matrix `[rows, columns]` kept as a checkpoint stores it (float32, bfloat16, float16,
/// or mlx's affine quantization), read in place and decoded a row or a panel at a time. Decoding
/// gives the bits a dense float32 copy would hold, so products over it are bit-identical to the
/// dense ones while the matrix takes its stored size: a 4-bit model stays a 4-bit model in memory.
public struct EncodedMatrix: @unchecked Sendable {
    public enum ScaleType: Sendable, Equatable { case float32, bfloat16, float16 }
    public enum Encoding: Sendable, Equatable {
        case float32, bfloat16, float16
        /// w = s·q + β per `groupSize` values of a row, in the scales' type (mx.dequantize).
        case affine(bits: Int, groupSize: Int, scales: ScaleType)
    }

    public let rows: Int
    public let columns: Int
    public let encoding: Encoding
    /// Keeps the bytes alive (a memory-mapped file, or an owned copy).
    private let owner: AnyObject
    private let values: UnsafeRawPointer
    private let scales: UnsafeRawPointer?
    private let biases: UnsafeRawPointer?

    /// `values` holds `rows` rows of `columns` elements; for `.affine`, `scales` and `biases` hold
    /// `rows · columns / groupSize` elements of the scale type. The caller checked the sizes.
    public init(owner: AnyObject, values: UnsafeRawPointer, scales: UnsafeRawPointer? = nil,
                biases: UnsafeRawPointer? = nil, rows: Int, columns: Int, encoding: Encoding) {
        if case let .affine(bits, group, _) = encoding {
            precondition(scales != nil && biases != nil && (1...8).contains(bits) && group > 0 && columns % group == 0
                         && (columns * bits) % 8 == 0, "[EncodedMatrix] affine \(bits)-bit/\(group) for \(columns) columns")
        }
        self.owner = owner
        self.values = values
        self.scales = scales
        self.biases = biases
        self.rows = rows
        self.columns = columns
        self.encoding = encoding
    }

    var kernelForm: pk_encoded {
        var form = pk_encoded(values: values, scales: scales, biases: biases, k: Int32(columns),
                              encoding: 0, bits: 0, group: 0, scale_type: 0)
        switch encoding {
        case .float32: form.encoding = Int32(PK_ENC_F32)
        case .bfloat16: form.encoding = Int32(PK_ENC_BF16)
        case .float16: form.encoding = Int32(PK_ENC_F16)
        case let .affine(bits, group, type):
            form.encoding = Int32(PK_ENC_AFFINE)
            form.bits = Int32(bits)
            form.group = Int32(group)
            switch type {
            case .float32: form.scale_type = Int32(PK_SCALE_F32)
            case .bfloat16: form.scale_type = Int32(PK_SCALE_BF16)
            case .float16: form.scale_type = Int32(PK_SCALE_F16)
            }
        }
        return form
    }

    private var scaleBytes: Int {
        guard case let .affine(_, _, type) = encoding else { return 0 }
        return type == .float32 ? 4 : 2
    }

    /// Bytes the stored form takes (values, and scales and biases).
    public var storedBytes: Int {
        var form = kernelForm
        let groups: Int
        if case let .affine(_, group, _) = encoding { groups = rows * columns / group } else { groups = 0 }
        return rows * pk_encoded_row_bytes(&form) + 2 * groups * scaleBytes
    }

    /// Rows `[start, start + count)`: an expert of a stacked `[E · N, K]` projection.
    public func rows(_ start: Int, _ count: Int) -> EncodedMatrix {
        precondition(start >= 0 && count >= 0 && start + count <= rows, "[EncodedMatrix] rows \(start)..<\(start + count) of \(rows)")
        var form = kernelForm
        let rowBytes = pk_encoded_row_bytes(&form)
        var groupOffset = 0
        if case let .affine(_, group, _) = encoding { groupOffset = start * (columns / group) * scaleBytes }
        return EncodedMatrix(owner: owner, values: values + start * rowBytes,
                             scales: scales.map { $0 + groupOffset }, biases: biases.map { $0 + groupOffset },
                             rows: count, columns: columns, encoding: encoding)
    }

    /// Row `r`, decoded.
    public func row(_ r: Int) -> [Float] {
        precondition(r >= 0 && r < rows, "[EncodedMatrix] row \(r) of \(rows)")
        var form = kernelForm
        return [Float](unsafeUninitializedCapacity: columns) { buffer, initialized in
            pk_decode_row(&form, Int32(r), buffer.baseAddress!)
            initialized = columns
        }
    }

    /// The whole matrix decoded, `[rows, columns]` (small weights and tests only).
    public func decoded() -> Tensor {
        var form = kernelForm
        let data = [Float](unsafeUninitializedCapacity: rows * columns) { buffer, initialized in
            for r in 0..<rows { pk_decode_row(&form, Int32(r), buffer.baseAddress! + r * columns) }
            initialized = rows * columns
        }
        return Tensor(shape: [rows, columns], data: data)
    }

    /// The first row holding a NaN or an infinity (affine: in its scales or biases), or nil.
    public var firstNonFiniteRow: Int? {
        var form = kernelForm
        let r = pk_first_nonfinite_row(&form, Int32(rows))
        return r < 0 ? nil : Int(r)
    }

    /// The address of the stored values: two matrices with the same address share one copy.
    public var address: UInt { UInt(bitPattern: values) }

    /// Measurements only: products with M ≤ `rows` take the register path, the rest the panel
    /// path (0: the panel path always). Returns the previous bound; the bits never change.
    @discardableResult
    public static func setRegisterPathRows(_ rows: Int) -> Int { Int(pk_set_encoded_fused_rows(Int32(clamping: rows))) }

    /// `x[M, columns] · selfᵀ` on this thread alone or on the pool (measurements).
    public func product(_ x: [Float], m: Int, parallel: Bool) -> [Float] {
        precondition(x.count == m * columns, "[EncodedMatrix.product] x holds \(x.count) values, not \(m) × \(columns)")
        return [Float](unsafeUninitializedCapacity: m * rows) { y, initialized in
            x.withUnsafeBufferPointer { product($0.baseAddress!, m: m, into: y.baseAddress!, parallel: parallel) }
            initialized = m * rows
        }
    }

    /// `y[M, rows] = x[M, columns] · selfᵀ`, every element in the in-order kernel's bits.
    func product(_ x: UnsafePointer<Float>, m: Int, into y: UnsafeMutablePointer<Float>, parallel wanted: Bool? = nil) {
        _ = MatrixProduct.backend   // QWEN_PARITY_GEMM=fma selects the fused kernel when first read
        let k = columns
        let packedCount = pk_packed_a_count(Int32(m), Int32(k))
        let packedA = [Float](unsafeUninitializedCapacity: packedCount) { buffer, initialized in
            pk_pack_a(x, Int32(m), Int32(k), Int32(k), buffer.baseAddress!)
            initialized = packedCount
        }
        let parallel = wanted ?? (MatrixProduct.threads > 1 && rows > Int(PK_PANEL) && m * rows * k >= 1 << 16)
        if parallel { MatrixProduct.startPool() }
        var form = kernelForm
        packedA.withUnsafeBufferPointer { a in
            pk_gemm_encoded(a.baseAddress!, &form, y, Int32(rows), Int32(m), Int32(rows), parallel ? 1 : 0)
        }
    }
}
