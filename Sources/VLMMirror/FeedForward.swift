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

    func callAsFunction(_ x: Tensor) -> Tensor {
        let u = x.linear(up)
        var h = x.linear(gate)
        for i in h.data.indices { h.data[i] = Activation.silu(h.data[i]) * u.data[i] }
        return h.linear(down)
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

    func callAsFunction(_ x: Tensor) -> Tensor {
        let (N, D) = (x.rows, x.lastDim)
        let gates = x.linear(router).softmax()          // softmax(precise = True) in float32
        let E = gates.lastDim
        let sharedOut = shared(x)
        let sharedScale = x.linear(sharedGate)          // sigmoid applied per token below
        var out = Tensor(zeros: x.shape)
        for n in 0..<N {
            let p = Array(gates.data[(n * E)..<((n + 1) * E)])
            // argpartition(kth = −k)[−k:]: the k largest; their order only matters beyond k = 2.
            let chosen = p.indices.sorted { p[$0] > p[$1] || (p[$0] == p[$1] && $0 < $1) }.prefix(topK)
            var scores = chosen.map { p[$0] }
            if normalize {
                let total = scores.reduce(0, +)
                scores = scores.map { $0 / total }
            }
            let token = Tensor(shape: [1, D], data: Array(x.data[(n * D)..<((n + 1) * D)]))
            var routed = [Float](repeating: 0, count: D)
            for (score, e) in zip(scores, chosen) {
                let y = experts[e](token)
                for j in 0..<D { routed[j] += y.data[j] * score }
            }
            let scale = Activation.sigmoid(sharedScale.data[n])
            for j in 0..<D { out.data[n * D + j] = routed[j] + scale * sharedOut.data[n * D + j] }
        }
        return out
    }
}

enum FeedForward {
    case dense(MLP)
    case moe(SparseMoE)

    func callAsFunction(_ x: Tensor) -> Tensor {
        switch self {
        case .dense(let mlp): return mlp(x)
        case .moe(let moe): return moe(x)
        }
    }
}
