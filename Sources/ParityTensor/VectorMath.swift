internal import ParityKernels

// Vectorised forms of the elementwise maths (ParityKernels/Elementwise.c): the same operations
// as MLXMath and Activation in the same order, so the same bits, many elements at a time.

extension Activation {
    /// `silu(a[i]) · b[i]` for every i.
    public static func siluTimes(_ a: [Float], _ b: [Float]) -> [Float] {
        precondition(a.count == b.count, "[siluTimes] \(a.count) vs \(b.count) elements")
        return [Float](unsafeUninitializedCapacity: a.count) { out, initialized in
            a.withUnsafeBufferPointer { ap in
                b.withUnsafeBufferPointer { bp in
                    if !a.isEmpty { pk_silu_mul(ap.baseAddress!, bp.baseAddress!, out.baseAddress!, a.count) }
                }
            }
            initialized = a.count
        }
    }
}
