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

    func callAsFunction(_ x: Tensor) -> Tensor {
        let gate = x.linear(gateProj)
        let up = x.linear(upProj)
        let hidden = Tensor(shape: gate.shape, data: Activation.siluTimes(gate.data, up.data))
        return hidden.linear(downProj)
    }
}

/// Router softmax, top-k experts, optional renormalisation, plus a sigmoid-gated shared expert.
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

    func callAsFunction(_ x: Tensor) -> Tensor {
        let D = x.lastDim, N = x.rows
        let probabilities = x.linear(router).softmax()                 // [.., E]
        let E = probabilities.lastDim
        let shared = sharedExpert(x)
        let sharedGate = x.linear(sharedExpertGate)                   // [.., 1]
        var out = [Float](repeating: 0, count: N * D)
        for n in 0..<N {
            let p = Array(probabilities.data[(n * E)..<((n + 1) * E)])
            let chosen = topKIndices(p, k: topK)
            var scores = chosen.map { p[$0] }
            if normalizeTopK {
                var total: Float = 0
                for s in scores { total += s }
                scores = scores.map { $0 / total }
            }
            let token = Tensor(shape: [1, D], data: Array(x.data[(n * D)..<((n + 1) * D)]))
            var mixed = [Float](repeating: 0, count: D)
            for (j, e) in chosen.enumerated() {
                let y = experts[e](token)
                for d in 0..<D { mixed[d] += y.data[d] * scores[j] }
            }
            let gate = Activation.sigmoid(sharedGate.data[n])
            for d in 0..<D { out[n * D + d] = mixed[d] + gate * shared.data[n * D + d] }
        }
        return Tensor(shape: x.shape, data: out)
    }

    /// The `k` largest probabilities; ties go to the lower index.
    private func topKIndices(_ p: [Float], k: Int) -> [Int] {
        Array(p.indices.sorted { p[$0] != p[$1] ? p[$0] > p[$1] : $0 < $1 }.prefix(k))
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
