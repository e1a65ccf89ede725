// The one lock around libhdf5, and small helpers that run while it is held.
//
// Everything in this file that takes or returns `hid_t` must be called with
// the lock held (inside `withH5Lock`). Helpers never take the lock themselves,
// so a public method takes it exactly once and there is no re-entry.

internal import CHDF5
import Foundation

/// HDF5 builds are not thread-safe in general (macOS/Homebrew, most pip wheels);
/// every libhdf5 call in this module happens inside this lock.
private let h5Lock = NSLock()

func withH5Lock<T>(_ body: () throws -> T) rethrows -> T {
    h5Lock.lock()
    defer { h5Lock.unlock() }
    // In a thread-safe HDF5 build (Debian's "serial" package is one) the error
    // stack, and with it the automatic printing, is per thread: turning printing
    // off once only silences the thread that did it. So turn it off on whichever
    // thread holds the lock now. It is one cheap call.
    _ = H5Eset_auto2(qp_H5E_DEFAULT(), nil, nil)
    return try body()
}

// MARK: - Error stack

/// Messages on this thread's HDF5 error stack, innermost (most specific) first,
/// each flattened to one line. Call right after the failing call.
func h5ErrorMessages() -> [String] {
    final class Collector { var messages: [String] = [] }
    let collector = Collector()
    let walk: H5E_walk2_t = { _, error, clientData in
        guard let error, let clientData, let desc = error.pointee.desc else { return 0 }
        let collector = Unmanaged<Collector>.fromOpaque(clientData).takeUnretainedValue()
        collector.messages.append(String(cString: desc))
        return 0
    }
    withExtendedLifetime(collector) {
        _ = H5Ewalk2(qp_H5E_DEFAULT(), H5E_WALK_UPWARD, walk, Unmanaged.passUnretained(collector).toOpaque())
    }
    return collector.messages.map(oneLine)
}

/// HDF5 messages can span lines (a ctime timestamp ends in "\n"), and the VFD
/// ones bury the useful part in "error message = 'Permission denied'".
private func oneLine(_ message: String) -> String {
    if let start = message.range(of: "error message = '"),
       let end = message[start.upperBound...].firstIndex(of: "'") {
        return String(message[start.upperBound..<end])
    }
    return message.split(whereSeparator: \.isNewline)
        .map { $0.trimmingCharacters(in: .whitespaces) }
        .joined(separator: " ")
}

// MARK: - Types and shapes

/// HDF5 allows at most this many dimensions (H5S_MAX_RANK).
let h5MaxRank = 32

func h5ElementKind(ofType type: hid_t) -> H5ElementKind {
    let bits = Int(H5Tget_size(type)) * 8
    switch H5Tget_class(type) {
    case H5T_FLOAT: return .float(bits: bits)
    case H5T_INTEGER: return .integer(signed: H5Tget_sign(type) != H5T_SGN_NONE, bits: bits)
    case H5T_STRING: return .string
    case H5T_COMPOUND: return .other("compound")
    case H5T_ENUM: return .other("enum")
    case H5T_OPAQUE: return .other("opaque")
    case H5T_BITFIELD: return .other("bitfield")
    case H5T_REFERENCE: return .other("reference")
    case H5T_VLEN: return .other("variable-length sequence")
    case H5T_ARRAY: return .other("array")
    case H5T_TIME: return .other("time")
    default: return .other("unknown HDF5 type")
    }
}

/// Why a dataspace cannot be turned into a shape.
enum DataspaceProblem: Error {
    case null        // H5S_NULL: an h5py `Empty`, no data at all
    case unreadable  // the library failed, or the stored extent is absurd
}

/// The shape of a dataspace: [] for a scalar. Rejects extents whose element
/// count overflows `Int`, so a corrupted header cannot drive an allocation.
func h5Shape(ofSpace space: hid_t) -> Result<[Int], DataspaceProblem> {
    switch H5Sget_simple_extent_type(space) {
    case H5S_SCALAR: return .success([])
    case H5S_NULL: return .failure(.null)
    case H5S_SIMPLE: break
    default: return .failure(.unreadable)
    }
    let rank = Int(H5Sget_simple_extent_ndims(space))
    guard rank >= 0, rank <= h5MaxRank else { return .failure(.unreadable) }
    var dims = [hsize_t](repeating: 0, count: max(rank, 1))
    guard Int(H5Sget_simple_extent_dims(space, &dims, nil)) == rank else { return .failure(.unreadable) }
    var shape: [Int] = []
    for d in dims.prefix(rank) {
        guard let n = Int(exactly: d) else { return .failure(.unreadable) }
        shape.append(n)
    }
    guard elementCount(shape) != nil else { return .failure(.unreadable) }
    return .success(shape)
}

/// Product of `shape`, or nil if a dimension is negative or the product overflows.
func elementCount(_ shape: [Int]) -> Int? {
    var count = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (product, overflow) = count.multipliedReportingOverflow(by: d)
        if overflow { return nil }
        count = product
    }
    return count
}

/// A read may allocate at most the machine's physical memory; a bigger extent
/// means a corrupted file, not a golden we could hold.
func allocationIsSane(count: Int, stride: Int) -> Bool {
    let (bytes, overflow) = count.multipliedReportingOverflow(by: stride)
    return !overflow && UInt64(bytes) <= ProcessInfo.processInfo.physicalMemory
}

/// Dataspace for `shape` ([] → scalar). Returns a negative id on failure.
func h5CreateSpace(_ shape: [Int]) -> hid_t {
    if shape.isEmpty { return H5Screate(H5S_SCALAR) }
    let dims = shape.map { hsize_t($0) }
    return H5Screate_simple(Int32(shape.count), dims, nil)
}

/// Link-creation list used for every new dataset, group: parents are created as
/// needed, and names are UTF-8 as h5py writes them.
func h5MakeLinkCreateList() -> hid_t {
    let lcpl = H5Pcreate(qp_H5P_LINK_CREATE())
    if lcpl >= 0 {
        _ = H5Pset_create_intermediate_group(lcpl, 1)
        _ = H5Pset_char_encoding(lcpl, H5T_CSET_UTF8)
    }
    return lcpl
}

/// Integer conversions that overflow (int64 → int32, say) abort the read
/// instead of silently saturating; `userData` points at a Bool set to true.
let h5AbortOnRangeException: H5T_conv_except_func_t = { kind, _, _, _, _, userData in
    if kind == H5T_CONV_EXCEPT_RANGE_HI || kind == H5T_CONV_EXCEPT_RANGE_LOW {
        userData?.assumingMemoryBound(to: Bool.self).pointee = true
        return H5T_CONV_ABORT
    }
    return H5T_CONV_UNHANDLED
}
