// Runtime (post-sanitize) weight names of mlx-lm's Qwen 3.5 model, built in this one place.

public enum WeightNames {
    public static let modelPrefix = "language_model.model."
    public static let embedTokens = modelPrefix + "embed_tokens.weight"
    public static let finalNorm = modelPrefix + "norm.weight"
    public static let lmHead = "language_model.lm_head.weight"

    public static func layer(_ i: Int, _ suffix: String) -> String {
        "\(modelPrefix)layers.\(i).\(suffix)"
    }

    /// Every tensor the model expects for `config`, with its shape, in a stable order.
    public static func expected(for c: TextConfig) -> [(name: String, shape: [Int])] {
        let D = c.hiddenSize, hd = c.headDim, H = c.numAttentionHeads, Hkv = c.numKeyValueHeads
        var out: [(String, [Int])] = [(embedTokens, [c.vocabSize, D])]
        for (i, kind) in c.layerKinds.enumerated() {
            out.append((layer(i, "input_layernorm.weight"), [D]))
            out.append((layer(i, "post_attention_layernorm.weight"), [D]))
            switch kind {
            case .linearAttention:
                let p = "linear_attn."
                out.append((layer(i, p + "in_proj_qkv.weight"), [c.convDim, D]))
                out.append((layer(i, p + "in_proj_z.weight"), [c.valueDim, D]))
                out.append((layer(i, p + "in_proj_b.weight"), [c.linearNumValueHeads, D]))
                out.append((layer(i, p + "in_proj_a.weight"), [c.linearNumValueHeads, D]))
                out.append((layer(i, p + "conv1d.weight"), [c.convDim, c.linearConvKernelDim, 1]))
                out.append((layer(i, p + "dt_bias"), [c.linearNumValueHeads]))
                out.append((layer(i, p + "A_log"), [c.linearNumValueHeads]))
                out.append((layer(i, p + "norm.weight"), [c.linearValueHeadDim]))
                out.append((layer(i, p + "out_proj.weight"), [D, c.valueDim]))
            case .fullAttention:
                let p = "self_attn."
                out.append((layer(i, p + "q_proj.weight"), [2 * H * hd, D]))
                out.append((layer(i, p + "k_proj.weight"), [Hkv * hd, D]))
                out.append((layer(i, p + "v_proj.weight"), [Hkv * hd, D]))
                out.append((layer(i, p + "o_proj.weight"), [D, H * hd]))
                if c.attentionBias {
                    out.append((layer(i, p + "q_proj.bias"), [2 * H * hd]))
                    out.append((layer(i, p + "k_proj.bias"), [Hkv * hd]))
                    out.append((layer(i, p + "v_proj.bias"), [Hkv * hd]))
                    out.append((layer(i, p + "o_proj.bias"), [D]))
                }
                out.append((layer(i, p + "q_norm.weight"), [hd]))
                out.append((layer(i, p + "k_norm.weight"), [hd]))
            }
            if c.isMoE {
                let E = c.numExperts, Im = c.moeIntermediateSize, Is = c.sharedExpertIntermediateSize
                out.append((layer(i, "mlp.gate.weight"), [E, D]))
                out.append((layer(i, "mlp.switch_mlp.gate_proj.weight"), [E, Im, D]))
                out.append((layer(i, "mlp.switch_mlp.up_proj.weight"), [E, Im, D]))
                out.append((layer(i, "mlp.switch_mlp.down_proj.weight"), [E, D, Im]))
                out.append((layer(i, "mlp.shared_expert.gate_proj.weight"), [Is, D]))
                out.append((layer(i, "mlp.shared_expert.up_proj.weight"), [Is, D]))
                out.append((layer(i, "mlp.shared_expert.down_proj.weight"), [D, Is]))
                out.append((layer(i, "mlp.shared_expert_gate.weight"), [1, D]))
            } else {
                let I = c.intermediateSize
                out.append((layer(i, "mlp.gate_proj.weight"), [I, D]))
                out.append((layer(i, "mlp.up_proj.weight"), [I, D]))
                out.append((layer(i, "mlp.down_proj.weight"), [D, I]))
            }
        }
        out.append((finalNorm, [D]))
        if !c.tieWordEmbeddings { out.append((lmHead, [c.vocabSize, D])) }
        return out
    }
}
