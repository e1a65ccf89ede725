"""Candidate adapter: our own small patched Qwen 3.5 model in the upstream style, with two
known departures from mlx-vlm 0.7.10 on its MRoPE route (a test of the candidate mechanism).

The design is the "Qwen 3.5 Unified" change's (docs/upstream-change.md; numerics spec §3.6):
mlx-lm's model class with patched decoder layers and a text model that stores an MRoPE prompt's
positions. A call without stored positions runs plain mlx-lm. A call with them runs mlx-vlm's
MRoPE attention on mlx-lm's weights and a copy of the GatedDeltaNet that, like the patch, uses

  * q/k normalised with rms_norm eps 1e-6, where mlx-vlm 0.7.10 uses 1e-6/dk, and
  * mlx-lm's gated_delta_update, sequential on the CPU, where mlx-vlm sends every call of more
    than one token to its chunked scan.

So the text route must equal mlx-lm bit for bit, and the MRoPE route must be caught at layer 0
(a GatedDeltaNet layer), sub-steps q_normed and core_out, with logits a few 1e-6 off. Written
here from those facts; no upstream code.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import gated_delta as lm_gated_delta
from mlx_lm.models import qwen3_5 as lm_qwen3_5
from mlx_lm.models import qwen3_next as lm_qwen3_next
from mlx_lm.models.base import create_attention_mask, create_ssm_mask, scaled_dot_product_attention
from mlx_lm.models.gated_delta import gated_delta_update
from mlx_vlm.models.qwen3_5.language import Qwen3_5RotaryEmbedding, apply_multimodal_rotary_pos_emb

NAME = "sequential_mrope"
TEXT_ROUTE = "mlx_lm"
OLDER_QK_EPS = 1e-6   # the rms_norm eps of the older q/k normalisation (mlx-vlm 0.7.10: 1e-6 / dk)


def normalize_qk_older(q, k):
    """l2-normalised q and k through rms_norm with eps 1e-6, dk^-1/2 folded into q."""
    inv_scale = k.shape[-1] ** -0.5
    return (inv_scale ** 2) * mx.fast.rms_norm(q, None, OLDER_QK_EPS), inv_scale * mx.fast.rms_norm(k, None, OLDER_QK_EPS)


class PatchedLayer(lm_qwen3_5.DecoderLayer):
    """mlx-lm's decoder layer; with 3-D positions, the MRoPE route on the same weights."""

    def __init__(self, args, layer_idx):
        super().__init__(args, layer_idx)
        if not self.is_linear:
            rope = args.rope_parameters
            # "_": not a parameter, so the checkpoint's names stay mlx-lm's.
            self._mrope = Qwen3_5RotaryEmbedding(
                int(self.self_attn.head_dim * rope["partial_rotary_factor"]),
                max_position_embeddings=args.max_position_embeddings, base=rope["rope_theta"],
                mrope_section=rope["mrope_section"])

    def __call__(self, x, mask=None, cache=None, positions=None):
        if positions is None:
            return super().__call__(x, mask, cache)
        mixer = self._sequential_deltanet if self.is_linear else self._mrope_attention
        h = x + mixer(self.input_layernorm(x), mask, cache, positions)
        return h + self.mlp(self.post_attention_layernorm(h))

    def _mrope_attention(self, x, mask, cache, positions):
        attn = self.self_attn
        B, L, _ = x.shape
        queries, gate = mx.split(attn.q_proj(x).reshape(B, L, attn.num_attention_heads, -1), 2, axis=-1)
        gate = gate.reshape(B, L, -1)
        keys, values = attn.k_proj(x), attn.v_proj(x)
        queries = attn.q_norm(queries).transpose(0, 2, 1, 3)
        keys = attn.k_norm(keys.reshape(B, L, attn.num_key_value_heads, -1)).transpose(0, 2, 1, 3)
        values = values.reshape(B, L, attn.num_key_value_heads, -1).transpose(0, 2, 1, 3)
        cos, sin = self._mrope(values, positions)
        queries, keys = apply_multimodal_rotary_pos_emb(queries, keys, cos, sin)
        if cache is not None:
            keys, values = cache.update_and_fetch(keys, values)
        out = scaled_dot_product_attention(queries, keys, values, cache=cache, scale=attn.scale, mask=mask)
        return attn.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1) * mx.sigmoid(gate))

    def _sequential_deltanet(self, x, mask, cache, positions):
        gdn = self.linear_attn
        B, S, _ = x.shape
        qkv = gdn.in_proj_qkv(x)
        z = gdn.in_proj_z(x).reshape(B, S, -1, gdn.head_v_dim)
        b, a = gdn.in_proj_b(x), gdn.in_proj_a(x)
        state = cache[0] if cache is not None and cache[0] is not None else None
        if state is None:
            state = mx.zeros((B, gdn.conv_kernel_size - 1, gdn.conv_dim), dtype=x.dtype)
        if mask is not None:
            qkv = mx.where(mask[..., None], qkv, 0)
        conv_input = mx.concatenate([state, qkv], axis=1)
        if cache is not None:
            cache[0] = conv_input[:, -(gdn.conv_kernel_size - 1):]
        conv = nn.silu(gdn.conv1d(conv_input))
        q, k, v = [t.reshape(B, S, h, d) for t, h, d in zip(
            mx.split(conv, [gdn.key_dim, 2 * gdn.key_dim], -1),
            [gdn.num_k_heads, gdn.num_k_heads, gdn.num_v_heads],
            [gdn.head_k_dim, gdn.head_k_dim, gdn.head_v_dim])]
        q, k = normalize_qk_older(q, k)
        out, recurrent = gated_delta_update(q, k, v, a, b, gdn.A_log, gdn.dt_bias,
                                            cache[1] if cache is not None else None, mask,
                                            use_kernel=not self.training)
        if cache is not None:
            cache[1] = recurrent
            cache.advance(S)
        return gdn.out_proj(gdn.norm(out, z).reshape(B, S, -1))


class PatchedTextModel(lm_qwen3_5.Qwen3_5TextModel):
    """mlx-lm's text model with stored MRoPE positions: a call inside the stored prompt takes
    their slice (stitched to offset + delta past their end), later calls offset + delta, and
    with nothing stored the call is plain mlx-lm."""

    def __init__(self, args):
        super().__init__(args)
        self.layers = [PatchedLayer(args, i) for i in range(args.num_hidden_layers)]
        self._positions = None   # [3, B, Lp]
        self._deltas = None      # [B, 1]
        self._last_positions = None

    def clear_positions(self):
        self._positions = None
        self._deltas = None

    def store_positions(self, positions, deltas):
        self._positions, self._deltas = positions, deltas

    def resolve_positions(self, B, L, cache):
        if self._deltas is None:
            return None
        offset = cache[self.fa_idx].offset if cache[self.fa_idx] is not None else 0

        def sequential(start, n):
            p = mx.arange(start, start + n).reshape(1, n) + self._deltas.reshape(-1, 1)
            return mx.broadcast_to(p[None], (3, B, n))

        stored = self._positions
        if stored is not None and offset < stored.shape[2]:
            end = min(offset + L, stored.shape[2])
            head = stored[:, :, offset:end]
            if end - offset == L:
                return head
            return mx.concatenate([head, sequential(stored.shape[2], L - (end - offset))], axis=2)
        return sequential(offset, L)

    def __call__(self, inputs, cache=None, input_embeddings=None):
        h = input_embeddings if input_embeddings is not None else self.embed_tokens(inputs)
        if cache is None:
            cache = [None] * len(self.layers)
        positions = self.resolve_positions(h.shape[0], h.shape[1], cache)
        self._last_positions = positions   # what forward() reports
        fa_mask = create_attention_mask(h, cache[self.fa_idx])
        ssm_mask = create_ssm_mask(h, cache[self.ssm_idx])
        for layer, c in zip(self.layers, cache):
            h = layer(h, mask=ssm_mask if layer.is_linear else fa_mask, cache=c, positions=positions)
        return self.norm(h)


# --- the adapter interface (tools/golden_candidates.py) --------------------------------------


def describe():
    import importlib.metadata as m
    return {"what": "tools/candidates/sequential_mrope.py: the unified design with mlx-lm's sequential "
                    "recurrence and q/k eps 1e-6 on the MRoPE route",
            "mlx_lm": m.version("mlx-lm"), "mlx_vlm": m.version("mlx-vlm")}


def build(config, weights):
    import importlib
    # mlx-lm's class for the config's model_type (qwen3_5_moe subclasses qwen3_5's Model).
    family = importlib.import_module(f"mlx_lm.models.{config['text_config']['model_type']}")
    model = family.Model(family.ModelArgs.from_dict(config["text_config"]))
    model.language_model.model = PatchedTextModel(model.language_model.args)
    model.load_weights(list(weights.items()), strict=True)
    model.eval()
    mx.eval(model.parameters())
    return model


def text_model(model):
    return model.language_model.model


def reset(model):
    text_model(model).clear_positions()


def set_position_state(model, position_ids, rope_deltas):
    text_model(model).store_positions(position_ids, rope_deltas)


def make_cache(model, left_padding):
    from mlx_lm.models import cache as lm_cache
    cache = model.make_cache()
    if left_padding is None:
        return cache
    return [lm_cache.ArraysCache(len(c.cache), left_padding=left_padding) if isinstance(c, lm_cache.ArraysCache)
            else lm_cache.BatchKVCache(left_padding) for c in cache]


def forward(model, inputs, *, cache, input_embeddings=None, position_ids=None, attention_mask=None):
    logits = model(inputs, cache=cache, input_embeddings=input_embeddings)
    return {"logits": logits, "positions": text_model(model)._last_positions}


def substeps(model, taps):
    here = globals()   # this file's namespace, however it was loaded
    taps.standard(text_model(model))
    # Both routes' function-level steps, looked up where each route calls them.
    taps.function(lm_qwen3_5, "normalize_qk", lambda a, k, o: {"q_normed": o[0], "k_normed": o[1]})
    taps.function(here, "normalize_qk_older", lambda a, k, o: {"q_normed": o[0], "k_normed": o[1]})
    recurrence = lambda a, k, o: {"v": a[2], "core_out": o[0], "final_state": o[1]}  # noqa: E731
    taps.function(lm_qwen3_5, "gated_delta_update", recurrence)
    taps.function(here, "gated_delta_update", recurrence)
    taps.function(lm_gated_delta, "gated_delta_ops", lambda a, k, o: {"g": a[3], "beta": a[4]})
    taps.function(lm_qwen3_next, "scaled_dot_product_attention", lambda a, k, o: {"sdpa": o})
    taps.function(here, "scaled_dot_product_attention", lambda a, k, o: {"sdpa": o})
    taps.function(here, "apply_multimodal_rotary_pos_emb", lambda a, k, o: {"q_rope": o[0], "k_rope": o[1]})
