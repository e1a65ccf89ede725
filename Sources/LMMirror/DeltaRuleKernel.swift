import ParityTensor
internal import ParityKernels

// Runs the gated delta recurrence of GatedDeltaNet.deltaRule through ParityKernels
// (`pk_gated_delta_heads`): every (batch row, value head) on the state in the cache's own layout
// `[dv, dk]`, 16 state rows at a time. Heads are independent, so they split across the pool's
// threads without changing a bit.

enum DeltaRuleKernel {
    struct Shape: Sendable {
        var batch: Int, steps: Int, keyHeads: Int, keyDim: Int, valueHeads: Int, valueDim: Int
    }

    static func run(q: [Float], k: [Float], v: [Float], g: [Float], beta: [Float], keep: [UInt8]?,
                    state: inout [Float], y: inout [Float], shape s: Shape) {
        let work = s.batch * s.valueHeads * s.steps * s.keyDim * s.valueDim
        let parallel: Int32 = work >= 1 << 17 && MatrixProduct.threads > 1 ? 1 : 0
        MatrixProduct.startPool()
        q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
        g.withUnsafeBufferPointer { gp in beta.withUnsafeBufferPointer { bp in
        state.withUnsafeMutableBufferPointer { sp in y.withUnsafeMutableBufferPointer { yp in
            let (statePointer, yPointer) = (sp.baseAddress!, yp.baseAddress!)
            let call = { (keepPointer: UnsafePointer<UInt8>?) in
                pk_gated_delta_heads(statePointer, Int32(s.batch), Int32(s.steps), Int32(s.keyHeads), Int32(s.keyDim),
                                     Int32(s.valueHeads), Int32(s.valueDim), qp.baseAddress!, kp.baseAddress!,
                                     vp.baseAddress!, yPointer, gp.baseAddress!, bp.baseAddress!, keepPointer, parallel)
            }
            if let keep { keep.withUnsafeBufferPointer { call($0.baseAddress!) } } else { call(nil) }
        } } } } } } }
    }
}
