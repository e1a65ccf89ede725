import ParityCore
import ParityTensor

// mirrors mlx_lm/models/qwen3_next.py Qwen3NextMLP and Qwen3NextSparseMoeBlock.
// Shapes: N tokens (B·L flattened), D hidden, I intermediate, E experts, k experts per token.

/// SwiGLU: `down(silu(gate(x)) ⊙ up(x))`.
struct MLP {
    let gateProj: LinearWeight, upProj: LinearWeight, downProj: LinearWeight

    init(weights w: some WeightProvider, prefix: String) {
        gateProj = w.linear(prefix + "gate_proj.weight")
        upProj = w.linear(prefix + "up_proj.weight")
        downProj = w.linear(prefix + "down_proj.weight")
    }

    /// Expert `e` of the stacked `switch_mlp` projections.
    init(weights w: some WeightProvider, stacked prefix: String, expert e: Int) {
        gateProj = w.linear(prefix + "gate_proj.weight", expert: e)
        upProj = w.linear(prefix + "up_proj.weight", expert: e)
        downProj = w.linear(prefix + "down_proj.weight", expert: e)
    }

    /// The dense feed-forward, traced as mlp_gate, mlp_up, mlp_act (its down_proj output is the
    /// layer's mlp_out, tapped by the caller).
    func callAsFunction(_ x: Tensor, trace: SubStepTrace) -> Tensor {
        let gate = trace.tap("mlp_gate", x.linear(gateProj))
        let up = trace.tap("mlp_up", x.linear(upProj))
        let hidden = trace.tap("mlp_act", Tensor(shape: gate.shape, data: Activation.siluTimes(gate.data, up.data)))
        return hidden.linear(downProj)
    }

    /// An expert or the shared expert: the same maths, not traced step by step.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let gate = x.linear(gateProj)
        let up = x.linear(upProj)
        return Tensor(shape: gate.shape, data: Activation.siluTimes(gate.data, up.data)).linear(downProj)
    }
}

/// Router softmax, top-k experts in argpartition's order, optional renormalisation, plus a
/// sigmoid-gated shared expert.
struct SparseMoE {
    let router: LinearWeight           // [E, D]
    let experts: [MLP]
    let sharedExpert: MLP
    let sharedExpertGate: LinearWeight // [1, D]
    let topK: Int
    let normalizeTopK: Bool

    init(weights w: some WeightProvider, layer i: Int, config c: TextConfig) {
        let p = WeightNames.layer(i, "mlp.")
        router = w.linear(p + "gate.weight")
        experts = (0..<c.numExperts).map { MLP(weights: w, stacked: p + "switch_mlp.", expert: $0) }
        sharedExpert = MLP(weights: w, prefix: p + "shared_expert.")
        sharedExpertGate = w.linear(p + "shared_expert_gate.weight")
        topK = c.numExpertsPerTok
        normalizeTopK = c.normTopkProb
    }

    func callAsFunction(_ x: Tensor, trace: SubStepTrace) -> Tensor {
        let D = x.lastDim, N = x.rows, k = topK
        let tokenShape = Array(x.shape.dropLast())
        let logits = trace.tap("router_logits", x.linear(router))                   // [.., E]
        let probabilities = trace.tap("router_probs", logits.softmax())
        let E = probabilities.lastDim
        // argpartition(p, kth: -k)[..., -k:], then take_along_axis and the optional p / Σp.
        var chosen = [Float](repeating: 0, count: N * k)
        var scores = [Float](repeating: 0, count: N * k)
        for n in 0..<N {
            let p = Array(probabilities.data[(n * E)..<((n + 1) * E)])
            let top = ArgPartition.topK(p, k: k)
            var total: Float = 0
            for (j, e) in top.enumerated() {
                chosen[n * k + j] = Float(e)
                scores[n * k + j] = p[e]
                total += p[e]
            }
            if normalizeTopK { for j in 0..<k { scores[n * k + j] /= total } }
        }
        let indices = trace.tap("topk_indices", Tensor(shape: tokenShape + [k], data: chosen))
        let weights = trace.tap("topk_weights", Tensor(shape: tokenShape + [k], data: scores))
        var outputs = [Float](repeating: 0, count: N * k * D)
        for n in 0..<N {
            let token = Tensor(shape: [1, D], data: Array(x.data[(n * D)..<((n + 1) * D)]))
            for j in 0..<k {
                let y = experts[Int(indices.data[n * k + j])](token)
                outputs.replaceSubrange((n * k + j) * D..<(n * k + j + 1) * D, with: y.data)
            }
        }
        let expertOutputs = trace.tap("experts_out", Tensor(shape: tokenShape + [k, D], data: outputs))
        // (y · scores).sum(axis: -2): products first, then summed over k in order from zero.
        var routed = [Float](repeating: 0, count: N * D)
        for n in 0..<N {
            for j in 0..<k {
                let s = weights.data[n * k + j], base = (n * k + j) * D
                for d in 0..<D { routed[n * D + d] += expertOutputs.data[base + d] * s }
            }
        }
        let routedOut = trace.tap("routed_out", Tensor(shape: x.shape, data: routed))
        let shared = trace.tap("shared_out", sharedExpert(x))
        var gate = x.linear(sharedExpertGate)                                        // [.., 1]
        for i in gate.data.indices { gate.data[i] = Activation.sigmoid(gate.data[i]) }
        gate = trace.tap("shared_gate", gate)
        var out = [Float](repeating: 0, count: N * D)
        for n in 0..<N {
            for d in 0..<D { out[n * D + d] = routedOut.data[n * D + d] + gate.data[n] * shared.data[n * D + d] }
        }
        return Tensor(shape: x.shape, data: out)
    }
}

enum FeedForward {
    case dense(MLP)
    case moe(SparseMoE)

    func callAsFunction(_ x: Tensor, trace: SubStepTrace) -> Tensor {
        switch self {
        case .dense(let mlp): return mlp(x, trace: trace)
        case .moe(let moe): return moe(x, trace: trace)
        }
    }
}
