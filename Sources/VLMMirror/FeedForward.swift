import ParityCore
import ParityTensor

// mirrors mlx_vlm/models/qwen3_5/language.py Qwen3_5MLP and qwen3_5_moe/language.py
// Qwen3_5MoeSparseMoeBlock (router softmax, top-k through SwitchGLU, sigmoid-gated shared expert).
// Shapes: N tokens (B·L), D hidden, I intermediate, E experts, k experts per token.

/// `down(swiglu(gate(x), up(x)))` with swiglu(g, u) = silu(g)·u.
struct MLP {
    let gate: LinearWeight, up: LinearWeight, down: LinearWeight

    init(weights w: Weights, prefix p: String) {
        gate = w.linear(p + "gate_proj.weight"); up = w.linear(p + "up_proj.weight"); down = w.linear(p + "down_proj.weight")
    }

    /// Expert `e` of the stacked `switch_mlp` projections.
    init(weights w: Weights, stacked p: String, expert e: Int) {
        gate = w.linear(p + "gate_proj.weight", expert: e)
        up = w.linear(p + "up_proj.weight", expert: e)
        down = w.linear(p + "down_proj.weight", expert: e)
    }

    /// Traced as mlp_gate, mlp_up, mlp_act; the caller taps the down projection as mlp_out.
    func callAsFunction(_ x: Tensor, trace: SubStepTrace) -> Tensor {
        let g = trace.tap("mlp_gate", x.linear(gate))
        let u = trace.tap("mlp_up", x.linear(up))
        let h = Tensor(shape: g.shape, data: Activation.siluTimes(g.data, u.data))
        return trace.tap("mlp_act", h).linear(down)
    }

    /// Experts and the shared expert (SwitchGLU slices): untraced.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let u = x.linear(up)
        let g = x.linear(gate)
        return Tensor(shape: g.shape, data: Activation.siluTimes(g.data, u.data)).linear(down)
    }
}

struct SparseMoE {
    let router: LinearWeight            // gate [E, D]
    let experts: [MLP]                  // switch_mlp, one slice of each stacked weight per expert
    let shared: MLP
    let sharedGate: LinearWeight        // [1, D]
    let topK: Int
    let normalize: Bool

    init(weights w: Weights, layer i: Int, config c: TextConfig) {
        let p = WeightNames.layer(i, "mlp.")
        router = w.linear(p + "gate.weight")
        experts = (0..<c.numExperts).map { MLP(weights: w, stacked: p + "switch_mlp.", expert: $0) }
        shared = MLP(weights: w, prefix: p + "shared_expert.")
        sharedGate = w.linear(p + "shared_expert_gate.weight")
        topK = c.numExpertsPerTok
        normalize = c.normTopkProb
    }

    func callAsFunction(_ x: Tensor, trace: SubStepTrace) -> Tensor {
        let (N, D, k) = (x.rows, x.lastDim, topK)
        let lead = Array(x.shape.dropLast())
        let logits = trace.tap("router_logits", x.linear(router))
        let gates = trace.tap("router_probs", logits.softmax())     // softmax(precise = True) in float32
        let E = gates.lastDim
        var inds = Tensor(zeros: lead + [k]), scores = Tensor(zeros: lead + [k])
        for n in 0..<N {
            let p = Array(gates.data[(n * E)..<((n + 1) * E)])
            // argpartition(kth = −k)[−k:], in the order mlx leaves them: SwitchGLU's outputs are
            // summed in that order, which decides the last bits once k > 2.
            let chosen = ArgPartition.topK(p, k: k)
            for (j, e) in chosen.enumerated() { inds.data[n * k + j] = Float(e); scores.data[n * k + j] = p[e] }
            if normalize {
                var total: Float = 0
                for j in 0..<k { total += scores.data[n * k + j] }
                for j in 0..<k { scores.data[n * k + j] /= total }
            }
        }
        inds = trace.tap("topk_indices", inds)
        scores = trace.tap("topk_weights", scores)
        var expertOut = Tensor(zeros: lead + [k, D])
        for n in 0..<N {
            let token = Tensor(shape: [1, D], data: Array(x.data[(n * D)..<((n + 1) * D)]))
            for j in 0..<k {
                let y = experts[Int(inds.data[n * k + j])](token)
                for d in 0..<D { expertOut.data[(n * k + j) * D + d] = y.data[d] }
            }
        }
        expertOut = trace.tap("experts_out", expertOut)
        var routed = Tensor(zeros: x.shape)
        for n in 0..<N {
            for j in 0..<k {
                let score = scores.data[n * k + j]
                for d in 0..<D { routed.data[n * D + d] += expertOut.data[(n * k + j) * D + d] * score }
            }
        }
        routed = trace.tap("routed_out", routed)
        let sharedOut = trace.tap("shared_out", shared(x))
        var scale = x.linear(sharedGate)
        for i in scale.data.indices { scale.data[i] = Activation.sigmoid(scale.data[i]) }
        scale = trace.tap("shared_gate", scale)
        var out = Tensor(zeros: x.shape)
        for n in 0..<N {
            for j in 0..<D { out.data[n * D + j] = routed.data[n * D + j] + scale.data[n] * sharedOut.data[n * D + j] }
        }
        return out
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
