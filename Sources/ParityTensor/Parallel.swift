internal import ParityKernels

// Independent tasks on the kernels' thread pool, for loops whose iterations never interact.

extension MatrixProduct {
    /// Runs `body(0) … body(tasks − 1)` on the kernels' thread pool (inline when the pool is busy,
    /// as inside a task). Tasks must write disjoint memory; products they run stay single-threaded.
    public static func parallel(_ tasks: Int, _ body: (Int) -> Void) {
        guard tasks > 1, threads > 1 else { for i in 0..<tasks { body(i) }; return }
        startPool()
        withoutActuallyEscaping(body) { body in
            var task = body
            withUnsafeMutablePointer(to: &task) { pointer in
                pk_parallel(Int32(tasks), { context, index in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(index))
                }, UnsafeMutableRawPointer(pointer))
            }
        }
    }
}
