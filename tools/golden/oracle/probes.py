"""Sub-step probes of the oracle: in the scenarios and layers the MLX paths probe (/probes), the
same quantities from transformers' float64 run, so that `qwen-parity diff --c golden-f64` can
name a sub-step against the true result.

Only what transformers computes as the MLX libraries define it is stored: a submodule's output
(forward hooks), or a function the layer looks up in its module at call time (rebound to a
recording wrapper for the run, and only while a probed layer runs). Layouts are brought to the
MLX probes' by reshapes and transposes only. Not stored, because transformers computes another
quantity there: conv_out (transformers' conv includes silu), q_normed and k_normed of the
GatedDeltaNet (normalised inside the delta rule, without the libraries' scale), g (the log of
the libraries' decay), gated attention internals, and the MoE router's probabilities, top-k
(sorted, always renormalised) and shared gate (before its sigmoid).

Every probe must agree with the MLX path's own probe to the oracle's sanity bound, or no golden
is written: a wrong layout or definition shows as 0.1 and more.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager

import numpy as np

from ..probes import TIME_AXIS
from .errors import OracleError

GDN = ("input_norm", "qkv", "z", "b", "a", "v", "beta", "core_out", "final_state",
       "gated_norm_out", "out_proj")
ATTN = ("input_norm", "q_proj", "k_normed", "v", "q_rope", "k_rope", "sdpa", "o_proj")
MLP = ("post_norm", "mlp_gate", "mlp_up", "mlp_act", "mlp_out")
MOE = ("post_norm", "router_logits", "experts_out_sum", "shared_out", "mlp_out")
# transformers' experts return the weighted sum over the chosen experts: the libraries' routed_out.
RENAMED = {"experts_out_sum": "routed_out"}
MODULES = ("transformers.models.qwen3_5.modeling_qwen3_5",
           "transformers.models.qwen3_5_moe.modeling_qwen3_5_moe")
REBOUND = ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule",
           "apply_rotary_pos_emb", "eager_attention_forward")


def names(kind: str, moe: bool) -> tuple[str, ...]:
    return (GDN if kind == "gdn" else ATTN) + tuple(RENAMED.get(n, n) for n in (MOE if moe else MLP))


class Recording:
    """One scenario's recordings for its probed layers: per layer, per probe, one list entry per
    model call (several invocations inside one call are joined first)."""

    def __init__(self, layers: dict[int, str]):
        self.layers = layers
        self.current: int | None = None          # the probed layer whose forward is running
        self.calls: dict[int, dict[str, list]] = {i: {} for i in layers}
        self.pending: dict[int, dict[str, list]] = {i: {} for i in layers}

    def add(self, layer: int, name: str, value) -> None:
        self.pending[layer].setdefault(name, []).append(value.detach().numpy().copy())

    def add_current(self, name: str, value) -> None:
        if self.current is not None:
            self.add(self.current, name, value)

    def end_call(self, layer: int) -> None:
        """A probed decoder layer finished one model call: join what it recorded in it."""
        for name, parts in self.pending[layer].items():
            if name == "final_state":
                value = parts[-1]                 # the state after the last invocation
            else:
                value = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
            self.calls[layer].setdefault(name, []).append(value)
        self.pending[layer] = {}

    def tensors(self, n_calls: int, moe: bool, what: str) -> dict:
        out = {}
        for i, kind in self.layers.items():
            wanted = names(kind, moe)
            got = {RENAMED.get(k, k): v for k, v in self.calls[i].items()}
            wrong = [n for n in wanted if len(got.get(n, [])) != n_calls]
            if wrong:
                raise OracleError(f"{what}: layer {i} ({kind}): expected one recording per call ({n_calls}) of "
                                  f"{', '.join(wrong)}; got {[len(got.get(n, [])) for n in wrong]}")
            axes = TIME_AXIS.get(kind, {})
            joined = {}
            for n in wanted:
                parts = got[n]
                axis = axes.get(n, 1)
                if len(parts) == 1:
                    joined[n] = parts[0]
                elif axis is None:
                    joined[n] = np.stack(parts)
                else:
                    joined[n] = np.concatenate(parts, axis=axis)
            out[i] = (kind, wanted, joined)
        return out


@contextmanager
def recording(text_model, layers: dict[int, str]):
    """Hooks on the probed decoder layers of transformers' text model (and the module functions
    they look up) for the duration of a run; yields the Recording."""
    rec = Recording(layers)
    handles, rebound = [], []

    def hook(module, layer, name):
        return module.register_forward_hook(lambda _, args, out: rec.add(layer, name, out))

    try:
        for i, kind in layers.items():
            layer = text_model.layers[i]
            mixer = layer.linear_attn if kind == "gdn" else layer.self_attn

            def enter(_, args, i=i):
                rec.current = i

            def leave(_, args, out, i=i):
                rec.current = None

            handles += [mixer.register_forward_pre_hook(enter), mixer.register_forward_hook(leave),
                        layer.register_forward_hook(lambda _, a, o, i=i: rec.end_call(i))]
            handles.append(hook(layer.input_layernorm, i, "input_norm"))
            handles.append(hook(layer.post_attention_layernorm, i, "post_norm"))
            if kind == "gdn":
                for module, name in ((mixer.in_proj_qkv, "qkv"), (mixer.in_proj_z, "z"), (mixer.in_proj_b, "b"),
                                     (mixer.in_proj_a, "a"), (mixer.out_proj, "out_proj")):
                    handles.append(hook(module, i, name))
                # The gated norm runs on [B·L·Hv, dv]: back to [B, L, Hv, dv] (the MLX layout).
                handles.append(mixer.norm.register_forward_hook(
                    lambda m, args, out, i=i, mixer=mixer: rec.add(
                        i, "gated_norm_out", out.reshape(-1, rec_length(rec, i), mixer.num_v_heads, mixer.head_v_dim))))
            else:
                handles.append(hook(mixer.q_proj, i, "q_proj"))
                handles.append(hook(mixer.k_norm, i, "k_normed"))
                # v_proj's output as the cache receives it: [B, Hk, L, hd].
                handles.append(mixer.v_proj.register_forward_hook(
                    lambda m, args, out, i=i, mixer=mixer: rec.add(
                        i, "v", out.reshape(*out.shape[:2], -1, mixer.head_dim).transpose(1, 2))))
                handles.append(hook(mixer.o_proj, i, "o_proj"))
            mlp = layer.mlp
            if hasattr(mlp, "experts"):
                handles.append(mlp.gate.register_forward_hook(
                    lambda m, args, out, i=i: rec.add(i, "router_logits", out[0].reshape(*rec_bl(rec, i), -1))))
                handles.append(mlp.experts.register_forward_hook(
                    lambda m, args, out, i=i: rec.add(i, "experts_out_sum", out.reshape(*rec_bl(rec, i), -1))))
                handles.append(mlp.shared_expert.register_forward_hook(
                    lambda m, args, out, i=i: rec.add(i, "shared_out", out.reshape(*rec_bl(rec, i), -1))))
                handles.append(hook(mlp, i, "mlp_out"))
            else:
                handles.append(hook(mlp.gate_proj, i, "mlp_gate"))
                handles.append(hook(mlp.up_proj, i, "mlp_up"))
                handles.append(mlp.down_proj.register_forward_pre_hook(
                    lambda m, args, i=i: rec.add(i, "mlp_act", args[0])))
                handles.append(hook(mlp, i, "mlp_out"))
        for module_name in MODULES:
            module = importlib.import_module(module_name)
            for name in REBOUND:
                original = getattr(module, name)
                setattr(module, name, wrapped(rec, name, original))
                rebound.append((module, name, original))
        yield rec
    finally:
        for h in handles:
            h.remove()
        for module, name, original in rebound:
            setattr(module, name, original)


def rec_bl(rec: Recording, layer: int) -> tuple[int, int]:
    """[B, L] of the current call of a layer, from its input norm's recording."""
    shape = rec.pending[layer]["input_norm"][-1].shape
    return shape[0], shape[1]


def rec_length(rec: Recording, layer: int) -> int:
    return rec_bl(rec, layer)[1]


def wrapped(rec: Recording, name: str, original):
    """A module function that records its result while a probed layer's mixer runs."""
    def delta_rule(query, key, value, g=None, beta=None, **kwargs):
        out, state = original(query, key, value, g=g, beta=beta, **kwargs)
        rec.add_current("v", value)
        rec.add_current("beta", beta)
        rec.add_current("core_out", out)
        if state is not None:
            rec.add_current("final_state", state.transpose(-1, -2))   # [.., dk, dv] -> the MLX [.., dv, dk]
        return out, state

    def rope(q, k, cos, sin, *args, **kwargs):
        q_out, k_out = original(q, k, cos, sin, *args, **kwargs)
        rec.add_current("q_rope", q_out)
        rec.add_current("k_rope", k_out)
        return q_out, k_out

    def attention(module, query, key, value, *args, **kwargs):
        out, weights = original(module, query, key, value, *args, **kwargs)
        rec.add_current("sdpa", out.transpose(1, 2))                   # [B, L, H, hd] -> [B, H, L, hd]
        return out, weights

    return {"torch_chunk_gated_delta_rule": delta_rule, "torch_recurrent_gated_delta_rule": delta_rule,
            "apply_rotary_pos_emb": rope, "eager_attention_forward": attention}[name]


def check(tensors: dict, mlx_layers: dict, bound: float, what: str) -> None:
    """Each oracle probe against the MLX path's probe of the same scenario and layer."""
    for i, (kind, wanted, joined) in tensors.items():
        if i not in mlx_layers:
            raise OracleError(f"{what}: layer {i} is not probed on the MLX path")
        theirs = mlx_layers[i][2]
        for n in wanted:
            a, b = joined[n], theirs.get(n)
            if b is None:
                raise OracleError(f"{what}: layer {i}: the MLX path has no probe {n}")
            if a.shape != b.shape:
                raise OracleError(f"{what}: layer {i} probe {n}: shape {a.shape}, the MLX path's {b.shape}")
            gap = float(np.max(np.abs(a - b.astype(np.float64)))) if a.size else 0.0
            if not gap <= bound:
                raise OracleError(f"{what}: layer {i} probe {n} differs from the MLX path's by {gap:.3g} "
                                  f"(more than {bound}): a wrong layout or definition")
