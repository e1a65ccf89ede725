import ParityTensor

// The sub-steps of a decoder layer that implementations trace and goldens probe, named the same
// way everywhere (docs/golden-format.md, "Probes"). Shapes: B batch, L tokens of the call,
// D hidden, H/Hkv heads, hd head dim, Hk/dk and Hv/dv GatedDeltaNet heads and dims, Cc conv
// channels, Vd = Hv·dv.

/// One named intermediate tensor inside a decoder layer.
public struct SubStep: Sendable, Equatable {
    public let name: String
    /// The axis that indexes tokens, along which several calls join; nil for a state that each
    /// call replaces (joined, it is the last call's).
    public let timeAxis: Int?
    public let shape: String
    public let meaning: String

    /// A value a call starts from (a cache offset) rather than one it leaves behind (a state):
    /// a difference in it dates from the call's first token, not its last.
    public var isCallInput: Bool { timeAxis == nil && name == "kv_offset" }
}

public enum SubSteps {
    /// GatedDeltaNet layer, in computation order: a change in one can only reach the ones after it.
    public static let deltaNet: [SubStep] = [
        SubStep(name: "input_norm", timeAxis: 1, shape: "[B, L, D]", meaning: "input RMSNorm"),
        SubStep(name: "qkv", timeAxis: 1, shape: "[B, L, Cc]", meaning: "in_proj_qkv"),
        SubStep(name: "z", timeAxis: 1, shape: "[B, L, Vd]", meaning: "in_proj_z"),
        SubStep(name: "b", timeAxis: 1, shape: "[B, L, Hv]", meaning: "in_proj_b"),
        SubStep(name: "a", timeAxis: 1, shape: "[B, L, Hv]", meaning: "in_proj_a"),
        SubStep(name: "ssm_mask", timeAxis: 1, shape: "[B, L]", meaning: "1 for a real token, 0 for padding (zeros fed to the conv)"),
        SubStep(name: "conv_state", timeAxis: nil, shape: "[B, K−1, Cc]", meaning: "conv window written back to the cache"),
        SubStep(name: "conv_out", timeAxis: 1, shape: "[B, L, Cc]", meaning: "depthwise conv over [state ‖ qkv], before silu"),
        SubStep(name: "q_normed", timeAxis: 1, shape: "[B, L, Hk, dk]", meaning: "q l2-normalised, dk^-1/2 folded in"),
        SubStep(name: "k_normed", timeAxis: 1, shape: "[B, L, Hk, dk]", meaning: "k l2-normalised"),
        SubStep(name: "v", timeAxis: 1, shape: "[B, L, Hv, dv]", meaning: "v channels of silu(conv)"),
        SubStep(name: "beta", timeAxis: 1, shape: "[B, L, Hv]", meaning: "sigmoid(b)"),
        SubStep(name: "g", timeAxis: 1, shape: "[B, L, Hv]", meaning: "decay exp(-exp(A_log)·softplus(a + dt_bias))"),
        SubStep(name: "core_out", timeAxis: 1, shape: "[B, L, Hv, dv]", meaning: "gated delta rule output"),
        SubStep(name: "final_state", timeAxis: nil, shape: "[B, Hv, dv, dk]", meaning: "recurrent state after the call"),
        SubStep(name: "gated_norm_out", timeAxis: 1, shape: "[B, L, Hv, dv]", meaning: "RMSNormGated(core_out, z)"),
        SubStep(name: "out_proj", timeAxis: 1, shape: "[B, L, D]", meaning: "out_proj: the mixer's output"),
    ]

    /// Gated full-attention layer, in computation order.
    public static let attention: [SubStep] = [
        SubStep(name: "input_norm", timeAxis: 1, shape: "[B, L, D]", meaning: "input RMSNorm"),
        SubStep(name: "q_proj", timeAxis: 1, shape: "[B, L, 2·H·hd]", meaning: "q_proj, per head [query ‖ gate]"),
        SubStep(name: "gate", timeAxis: 1, shape: "[B, L, H·hd]", meaning: "gate half of every q_proj head"),
        SubStep(name: "k_proj", timeAxis: 1, shape: "[B, L, Hkv·hd]", meaning: "k_proj"),
        SubStep(name: "v", timeAxis: 2, shape: "[B, Hkv, L, hd]", meaning: "v_proj, heads first (as cached)"),
        SubStep(name: "q_normed", timeAxis: 1, shape: "[B, L, H, hd]", meaning: "q_norm(query)"),
        SubStep(name: "k_normed", timeAxis: 1, shape: "[B, L, Hkv, hd]", meaning: "k_norm(k_proj)"),
        SubStep(name: "kv_offset", timeAxis: nil, shape: "[B]", meaning: "cache offset the call starts at (the update's position)"),
        SubStep(name: "rope_positions", timeAxis: 1, shape: "[B, L, 3]", meaning: "rotary positions T/H/W (text: offset + t on each)"),
        SubStep(name: "q_rope", timeAxis: 2, shape: "[B, H, L, hd]", meaning: "rotary on q"),
        SubStep(name: "k_rope", timeAxis: 2, shape: "[B, Hkv, L, hd]", meaning: "rotary on k (as cached)"),
        SubStep(name: "attn_mask", timeAxis: 1, shape: "[B, L, 2]", meaning: "keys each query sees: [first, end)"),
        SubStep(name: "sdpa", timeAxis: 2, shape: "[B, H, L, hd]", meaning: "scaled dot-product attention"),
        SubStep(name: "gated", timeAxis: 1, shape: "[B, L, H·hd]", meaning: "sdpa ⊙ sigmoid(gate), o_proj input"),
        SubStep(name: "o_proj", timeAxis: 1, shape: "[B, L, D]", meaning: "o_proj: the mixer's output"),
    ]

    /// Dense feed-forward (SwiGLU), after the mixer's residual. I intermediate.
    public static let denseFeedForward: [SubStep] = [
        SubStep(name: "post_norm", timeAxis: 1, shape: "[B, L, D]", meaning: "post_attention_layernorm: the feed-forward input"),
        SubStep(name: "mlp_gate", timeAxis: 1, shape: "[B, L, I]", meaning: "gate_proj"),
        SubStep(name: "mlp_up", timeAxis: 1, shape: "[B, L, I]", meaning: "up_proj"),
        SubStep(name: "mlp_act", timeAxis: 1, shape: "[B, L, I]", meaning: "silu(gate)·up, the down_proj input"),
        SubStep(name: "mlp_out", timeAxis: 1, shape: "[B, L, D]", meaning: "down_proj: the feed-forward output"),
    ]

    /// Sparse MoE feed-forward. E experts, k experts per token, in the order argpartition leaves them.
    public static let moeFeedForward: [SubStep] = [
        SubStep(name: "post_norm", timeAxis: 1, shape: "[B, L, D]", meaning: "post_attention_layernorm: the feed-forward input"),
        SubStep(name: "router_logits", timeAxis: 1, shape: "[B, L, E]", meaning: "router (mlp.gate) output"),
        SubStep(name: "router_probs", timeAxis: 1, shape: "[B, L, E]", meaning: "softmax of the router logits"),
        SubStep(name: "topk_indices", timeAxis: 1, shape: "[B, L, k]", meaning: "chosen experts, argpartition's last k"),
        SubStep(name: "topk_weights", timeAxis: 1, shape: "[B, L, k]", meaning: "their probabilities, renormalised when norm_topk_prob"),
        SubStep(name: "experts_out", timeAxis: 1, shape: "[B, L, k, D]", meaning: "each chosen expert's output (switch_mlp)"),
        SubStep(name: "routed_out", timeAxis: 1, shape: "[B, L, D]", meaning: "Σ over k of weight · expert output"),
        SubStep(name: "shared_out", timeAxis: 1, shape: "[B, L, D]", meaning: "shared expert output, before its gate"),
        SubStep(name: "shared_gate", timeAxis: 1, shape: "[B, L, 1]", meaning: "sigmoid(shared_expert_gate)"),
        SubStep(name: "mlp_out", timeAxis: 1, shape: "[B, L, D]", meaning: "routed + gate · shared: the feed-forward output"),
    ]

    /// Sub-steps holding whole numbers: a fault moves one of their elements by one.
    public static let wholeNumbered: Set<String> = ["ssm_mask", "kv_offset", "rope_positions", "attn_mask", "topk_indices"]

    /// Every sub-step of a layer in computation order: its mixer's, then its feed-forward's.
    public static func catalogue(for kind: LayerKind, isMoE: Bool) -> [SubStep] {
        (kind == .linearAttention ? deltaNet : attention) + (isMoE ? moeFeedForward : denseFeedForward)
    }

    /// "gdn" or "attn", as golden probe groups name layers (`layer_00_gdn`).
    public static func shortName(_ kind: LayerKind) -> String {
        kind == .linearAttention ? "gdn" : "attn"
    }
}

/// A trace sink that may replace the tensor of a sub-step before the layer goes on with it:
/// fault injection for tests and `qwen-parity diff --fault`.
public protocol SubStepRewriter: TraceSink {
    /// The tensor the layer continues with instead of `tensor`, or nil to keep it.
    func rewrite(_ key: TraceKey, _ tensor: Tensor) -> Tensor?
}

extension SubStepTrace {
    /// Records `tensor` as sub-step `name` and returns what the layer computes on with: the
    /// tensor itself, or a rewriting sink's replacement. Free when the layer is not traced.
    public func tap(_ name: String, _ tensor: Tensor) -> Tensor {
        guard isActive, let sink else { return tensor }
        let key = TraceKey.subStep(layer: layer, name: name)
        let value = (sink as? SubStepRewriter)?.rewrite(key, tensor) ?? tensor
        sink.record(key, value)
        return value
    }
}
