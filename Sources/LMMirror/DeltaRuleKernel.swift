import Dispatch
import ParityTensor
internal import ParityKernels

// Runs the gated delta recurrence of GatedDeltaNet.deltaRule through ParityKernels: per (batch
// row, value head), the state is transposed to [dk, dv], stepped through every token, and
// transposed back. Heads are independent, so they split across threads without changing a bit.

enum DeltaRuleKernel {
    struct Shape: Sendable {
        var batch: Int, steps: Int, keyHeads: Int, keyDim: Int, valueHeads: Int, valueDim: Int
    }

    private struct Buffers: @unchecked Sendable {
        let q, k, v, g, beta: UnsafePointer<Float>
        let keep: UnsafePointer<UInt8>?
        let state, y: UnsafeMutablePointer<Float>
    }

    static func run(q: [Float], k: [Float], v: [Float], g: [Float], beta: [Float], keep: [UInt8]?,
                    state: inout [Float], y: inout [Float], shape s: Shape) {
        let heads = s.batch * s.valueHeads
        let work = s.steps * s.keyDim * s.valueDim * heads
        let parts = work >= 1 << 20 ? min(MatrixProduct.threads, heads) : 1
        q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
        g.withUnsafeBufferPointer { gp in beta.withUnsafeBufferPointer { bp in
        state.withUnsafeMutableBufferPointer { sp in y.withUnsafeMutableBufferPointer { yp in
            let (statePointer, yPointer) = (sp.baseAddress!, yp.baseAddress!)
            let run = { (keepPointer: UnsafePointer<UInt8>?) in
                let buffers = Buffers(q: qp.baseAddress!, k: kp.baseAddress!, v: vp.baseAddress!, g: gp.baseAddress!,
                                      beta: bp.baseAddress!, keep: keepPointer, state: statePointer, y: yPointer)
                if parts <= 1 {
                    runHeads(0..<heads, buffers, s)
                } else {
                    DispatchQueue.concurrentPerform(iterations: parts) { part in
                        runHeads((heads * part / parts)..<(heads * (part + 1) / parts), buffers, s)
                    }
                }
            }
            if let keep { keep.withUnsafeBufferPointer { run($0.baseAddress!) } } else { run(nil) }
        } } } } } } }
    }

    /// Heads `range` of the flattened (batch row, value head) index.
    private static func runHeads(_ range: Range<Int>, _ p: Buffers, _ s: Shape) {
        let (dk, dv, Hv, Hk, S) = (s.keyDim, s.valueDim, s.valueHeads, s.keyHeads, s.steps)
        let repeatFactor = Hv / Hk
        var transposed = [Float](repeating: 0, count: dk * dv)
        var scratch = [Float](repeating: 0, count: 3 * dv + (p.keep == nil ? 0 : dk * dv))
        transposed.withUnsafeMutableBufferPointer { tp in scratch.withUnsafeMutableBufferPointer { scratchPointer in
            let t = tp.baseAddress!
            for flat in range {
                let (b, h) = (flat / Hv, flat % Hv)
                let kh = h / repeatFactor
                let state = p.state + flat * dv * dk          // [dv, dk]
                for i in 0..<dv { for j in 0..<dk { t[j * dv + i] = state[i * dk + j] } }
                pk_gated_delta(t, Int32(dk), Int32(dv), Int32(S),
                               p.q + (b * S * Hk + kh) * dk, p.k + (b * S * Hk + kh) * dk, Hk * dk,
                               p.v + (b * S * Hv + h) * dv, p.y + (b * S * Hv + h) * dv, Hv * dv,
                               p.g + b * S * Hv + h, p.beta + b * S * Hv + h, Hv,
                               p.keep.map { $0 + b * S }, scratchPointer.baseAddress!)
                for i in 0..<dv { for j in 0..<dk { state[i * dk + j] = t[j * dv + i] } }
            }
        } }
    }
}
