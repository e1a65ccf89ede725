"""Sub-step probes for golden files: the library's own intermediate tensors inside one
GatedDeltaNet layer and one full-attention layer, mixer and feed-forward (dense MLP or MoE),
for one scenario (full_prefill).

Called through two hooks: capture() (from generate) after the scenarios ran and write() (from
writing) while the file is written. Layout and the meaning of every probe:
docs/golden-format.md, section "Probes".

Nothing here re-implements the model. For the duration of one forward pass the probed layers'
own submodules are replaced by recording proxies (input_layernorm, in_proj_qkv, conv1d, norm,
out_proj, q_proj, q_norm, rope, o_proj, post_attention_layernorm, mlp and its gate_proj, up_proj,
down_proj, or the MoE block's gate, switch_mlp and shared_expert), and the module-level names
the layers look up are rebound to recording wrappers in the namespaces they are looked up from:

  mlx_lm.models.qwen3_5.normalize_qk            -> q_normed, k_normed     (GatedDeltaNet)
  mlx_lm.models.qwen3_5.gated_delta_update      -> v, core_out, final_state
  mlx_lm.models.gated_delta.gated_delta_ops     -> beta, g (what the recurrence is given)
  mlx_lm.models.qwen3_next.scaled_dot_product_attention -> sdpa            (attention)
  update_and_fetch of the probed layer's KVCache -> v (values as they enter the cache)
  mlx_lm.models.qwen3_next.mx (mlx.core as the MoE block sees it): softmax -> router_probs,
      sigmoid -> shared_gate, inside the probed MoE blocks only

In the MoE block, what switch_mlp returns goes back as a stand-in whose only operations are the
block's own `(y * scores[..., None]).sum(axis=-2)`, each done by mlx on the real arrays: the
scores it is multiplied by are topk_weights, the sum is routed_out.

Everything is restored afterwards, and the probed run must reproduce the scenario's logits,
hidden states and caches bit for bit, or no golden is written.
"""

from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager

import numpy as np

import mlx.core as mx
from mlx_lm.models import gated_delta, qwen3_5, qwen3_next
from mlx_lm.models.cache import make_prompt_cache

from .provenance import component

PROBE_SCENARIO = "full_prefill"
PROBE_PATH = "mlx_lm"

# Stored probes, in computation order: a fault in one can only show in the ones after it.
# conv_out is the depthwise convolution *before* silu (what the conv1d module returns).
GDN_PROBES = ("input_norm", "qkv", "z", "b", "a", "conv_out", "q_normed", "k_normed", "v",
              "beta", "g", "core_out", "final_state", "gated_norm_out", "out_proj")
# gate is not stored: it is the second half of every head of q_proj (an mx.split, no
# arithmetic), so readers slice it from q_proj. k_proj, q_normed and gated are recorded but not
# stored, to keep golden/ small: k_normed and k_rope cover the key path and its norm, q_rope
# follows q_normed, and o_proj follows gated (its input).
ATTN_PROBES = ("input_norm", "q_proj", "v", "k_normed", "q_rope", "k_rope", "sdpa", "o_proj")
ATTN_RECORDED = ("q_normed", "gated")
PROBES = {"gdn": GDN_PROBES, "attn": ATTN_PROBES}
# The feed-forward after either mixer. mlp_act is silu(gate) * up as down_proj receives it;
# mlp_out is the feed-forward's output (= down_proj's for the dense MLP).
MLP_PROBES = ("post_norm", "mlp_gate", "mlp_up", "mlp_act", "mlp_out")
MOE_PROBES = ("post_norm", "router_logits", "router_probs", "topk_indices", "topk_weights",
              "experts_out", "routed_out", "shared_out", "shared_gate", "mlp_out")
INT_PROBES = ("topk_indices",)   # stored as int32; everything else float32


class ProbeError(Exception):
    """The probed forward pass did not behave like the plain one."""


class Tap:
    """Stands in for a module: forwards attribute reads and hands (args, output) of every
    call to `on_call`. With `around`, the call runs inside that context manager; with
    `returns`, the caller gets returns(output) instead of the output."""

    def __init__(self, module, on_call=None, around=None, returns=None):
        self._module = module
        self._on_call = on_call
        self._around = around
        self._returns = returns

    def __getattr__(self, name):
        return getattr(self._module, name)

    def __call__(self, *args, **kwargs):
        with self._around() if self._around else ExitStack():
            out = self._module(*args, **kwargs)
        if self._on_call:
            self._on_call(args, out)
        return self._returns(out) if self._returns else out


class ExpertsOut:
    """What switch_mlp returns, inside a probed MoE block: `y * scores[..., None]` is mlx's
    own product, with the scores recorded (topk_weights)."""

    def __init__(self, y, put):
        self._y, self._put = y, put

    def __mul__(self, scores):
        self._put("topk_weights", scores)
        return WeightedExperts(self._y * scores, self._put)

    def __rmul__(self, scores):
        self._put("topk_weights", scores)
        return WeightedExperts(scores * self._y, self._put)


class WeightedExperts:
    """The weighted expert outputs: `.sum(axis=-2)` is mlx's own sum, recorded (routed_out)."""

    def __init__(self, product, put):
        self._product, self._put = product, put

    def sum(self, *args, **kwargs):
        routed = self._product.sum(*args, **kwargs)
        self._put("routed_out", routed)
        return routed


class RecordingMx:
    """mlx.core as the MoE block looks it up (qwen3_next.mx): every name is mlx's own;
    softmax and sigmoid results are handed to on_result(name, output)."""

    def __init__(self, real, on_result):
        self._real, self._on_result = real, on_result

    def __getattr__(self, name):
        fn = getattr(self._real, name)
        if name not in ("softmax", "sigmoid"):
            return fn

        def recorded(*args, **kwargs):
            out = fn(*args, **kwargs)
            self._on_result(name, out)
            return out
        return recorded


def is_moe(mlp) -> bool:
    return isinstance(mlp, qwen3_next.Qwen3NextSparseMoeBlock)


def probe_layers(model) -> dict[int, str]:
    """The first GatedDeltaNet layer and the first full-attention layer: {index: kind}."""
    chosen = {}
    for kind, linear in (("gdn", True), ("attn", False)):
        index = next((i for i, l in enumerate(model.layers) if l.is_linear == linear), None)
        if index is not None:
            chosen[index] = kind
    return chosen


@contextmanager
def _rebound(namespace, name, make):
    """Rebinds namespace.name to make(original) for the duration of the block."""
    original = getattr(namespace, name)
    setattr(namespace, name, make(original))
    try:
        yield
    finally:
        setattr(namespace, name, original)


@contextmanager
def probing(model, layers: dict[int, str], cache):
    """Records the sub-steps of `layers` ({index: "gdn" | "attn"}) during the forward passes
    run inside the block. Yields {index: {probe name: [mx.array, one per call]}}."""
    records = {i: {} for i in layers}
    active = {"layer": None}   # the probed layer whose mixer is running, if any
    ffn = {"layer": None}      # the probed layer whose MoE block is running, if any
    replaced = []              # (module, key, original), restored in reverse order

    def put(layer, name, value):
        records[layer].setdefault(name, []).append(value)

    def replace(module, key, proxy):
        replaced.append((module, key, module[key]))
        module[key] = proxy

    def tap(module, key, layer, name):
        replace(module, key, Tap(module[key], lambda args, out: put(layer, name, out)))

    @contextmanager
    def running(layer, state=active):
        state["layer"] = layer
        try:
            yield
        finally:
            state["layer"] = None

    for i, kind in layers.items():
        layer = model.layers[i]
        tap(layer, "input_layernorm", i, "input_norm")
        if kind == "gdn":
            mixer_key = "linear_attn"
            mixer = layer[mixer_key]
            for key, name in (("in_proj_qkv", "qkv"), ("in_proj_z", "z"), ("in_proj_b", "b"),
                              ("in_proj_a", "a"), ("conv1d", "conv_out"),
                              ("norm", "gated_norm_out"), ("out_proj", "out_proj")):
                tap(mixer, key, i, name)
        else:
            mixer_key = "self_attn"
            mixer = layer[mixer_key]
            tap(mixer, "q_proj", i, "q_proj")
            tap(mixer, "q_norm", i, "q_normed")
            tap(mixer, "k_norm", i, "k_normed")
            rope_calls = [0]

            def on_rope(args, out, i=i, rope_calls=rope_calls):
                # The attention block rotates the queries first, then the keys.
                put(i, "k_rope" if rope_calls[0] % 2 else "q_rope", out)
                rope_calls[0] += 1

            replace(mixer, "rope", Tap(mixer["rope"], on_rope))
            replace(mixer, "o_proj", Tap(mixer["o_proj"], lambda args, out, i=i: (
                put(i, "gated", args[0]), put(i, "o_proj", out))))
            if cache is not None:
                fetch = cache[i].update_and_fetch

                def update_and_fetch(keys, values, i=i, fetch=fetch):
                    put(i, "v", values)
                    return fetch(keys, values)

                cache[i].update_and_fetch = update_and_fetch   # instance attribute, removed below
        replace(layer, mixer_key, Tap(mixer, around=lambda i=i: running(i)))

        tap(layer, "post_attention_layernorm", i, "post_norm")
        mlp = layer["mlp"]
        if is_moe(mlp):
            tap(mlp, "gate", i, "router_logits")
            replace(mlp, "switch_mlp", Tap(
                mlp["switch_mlp"], lambda args, out, i=i: (put(i, "topk_indices", args[1]),
                                                           put(i, "experts_out", out)),
                returns=lambda out, i=i: ExpertsOut(out, lambda name, v: put(i, name, v))))
            tap(mlp, "shared_expert", i, "shared_out")
            around = lambda i=i: running(i, ffn)
        else:
            tap(mlp, "gate_proj", i, "mlp_gate")
            tap(mlp, "up_proj", i, "mlp_up")
            replace(mlp, "down_proj", Tap(mlp["down_proj"],
                                          lambda args, out, i=i: put(i, "mlp_act", args[0])))
            around = None
        replace(layer, "mlp", Tap(mlp, lambda args, out, i=i: put(i, "mlp_out", out), around=around))

    def normalize_qk(original):
        def wrapper(q, k, **kwargs):
            qn, kn = original(q, k, **kwargs)
            if active["layer"] is not None:
                put(active["layer"], "q_normed", qn)
                put(active["layer"], "k_normed", kn)
            return qn, kn
        return wrapper

    def gated_delta_update(original):
        def wrapper(q, k, v, *args, **kwargs):
            y, state = original(q, k, v, *args, **kwargs)
            if active["layer"] is not None:
                put(active["layer"], "v", v)
                put(active["layer"], "core_out", y)
                put(active["layer"], "final_state", state)
            return y, state
        return wrapper

    def gated_delta_ops(original):
        def wrapper(q, k, v, g, beta, *args, **kwargs):
            if active["layer"] is not None:
                put(active["layer"], "g", g)
                put(active["layer"], "beta", beta)
            return original(q, k, v, g, beta, *args, **kwargs)
        return wrapper

    def moe_mx(original):
        def on_result(name, out):
            if ffn["layer"] is not None:
                put(ffn["layer"], {"softmax": "router_probs", "sigmoid": "shared_gate"}[name], out)
        return RecordingMx(original, on_result)

    def sdpa(original):
        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            if active["layer"] is not None:
                put(active["layer"], "sdpa", out)
            return out
        return wrapper

    try:
        with _rebound(qwen3_5, "normalize_qk", normalize_qk), \
                _rebound(qwen3_5, "gated_delta_update", gated_delta_update), \
                _rebound(gated_delta, "gated_delta_ops", gated_delta_ops), \
                _rebound(qwen3_next, "scaled_dot_product_attention", sdpa), \
                _rebound(qwen3_next, "mx", moe_mx):
            yield records
    finally:
        for module, key, original in reversed(replaced):
            module[key] = original
        if cache is not None:
            for i in layers:
                cache[i].__dict__.pop("update_and_fetch", None)


def layer_probes(model, index: int, kind: str) -> tuple:
    """The stored probe names of one probed layer, in computation order."""
    return PROBES[kind] + (MOE_PROBES if is_moe(model.layers[index].mlp) else MLP_PROBES)


def as_stored(name: str, value) -> np.ndarray:
    a = np.array(value)
    if name in INT_PROBES:
        return a.astype(np.int32)      # argpartition's uint32 indices, all < num_experts
    if name == "topk_weights":         # recorded as the block multiplies: scores[..., None]
        if a.shape[-1] != 1:
            raise ProbeError(f"topk_weights recorded with shape {a.shape}, expected [..., k, 1]")
        a = a[..., 0]
    return a.astype(np.float32)


def capture(model, token_ids: np.ndarray, results) -> dict | None:
    """Runs PROBE_SCENARIO once more with probes on and returns what the golden should store,
    or None when that scenario was not generated. `results` is the generator's list of
    (Scenario, RunResult); the probed run must reproduce its entry bit for bit."""
    reference = next((r for sc, r in results if sc.name == PROBE_SCENARIO), None)
    if reference is None:
        return None
    layers = probe_layers(model)
    try:
        cache = make_prompt_cache(model)   # full_prefill: fresh cache, whole prompt in one call
        with probing(model, layers, cache) as records:
            logits = model(mx.array(token_ids), cache=cache)
            mx.eval(logits, records)
    except Exception as exc:  # the same run passed without probes: the probes broke it
        raise ProbeError(f"the probed run of {PROBE_SCENARIO} raised "
                         f"{type(exc).__name__}: {exc}") from exc
    if not np.array_equal(np.array(logits), reference.logits):
        raise ProbeError(f"probing {PROBE_SCENARIO} changed the logits")
    tensors = {}
    for i, kind in layers.items():
        got, names = records[i], layer_probes(model, i, kind)
        expected = names + (ATTN_RECORDED if kind == "attn" else ())
        wrong = [n for n in expected if len(got.get(n, [])) != 1]
        if wrong:
            raise ProbeError(f"layer {i} ({kind}): expected one recording of each of "
                             f"{', '.join(wrong)}; got {[len(got.get(n, [])) for n in wrong]}")
        tensors[i] = (kind, names, {n: as_stored(n, got[n][0]) for n in names})
    # The probes that also live elsewhere in the golden must agree with it exactly.
    for i, (kind, _, t) in tensors.items():
        snap = reference.cache_after[i]
        pairs = ([("final_state", "recurrent_state")] if kind == "gdn"
                 else [("k_rope", "keys"), ("v", "values")])
        for probe, key in pairs:
            if not np.array_equal(t[probe], snap[key]):
                raise ProbeError(f"layer {i}: probe {probe} differs from cache_after {key}")
    return {"scenario": PROBE_SCENARIO, "layers": tensors}


def write(f, probes: dict | None, shared: dict, put) -> None:
    """Writes /probes/<scenario>/mlx_lm/layer_XX_<kind>/<probe> with writing.put(): a
    probe that repeats a stored dataset bit for bit (final_state, k_rope, v) becomes a hard
    link to it."""
    if probes is None:
        return
    root = f.require_group("probes")
    root.attrs["generator"], root.attrs["generator_sha256"] = component(__file__)
    path = root.create_group(f"{probes['scenario']}/{PROBE_PATH}")
    path.attrs["layers_json"] = json.dumps({str(i): k for i, (k, _, _) in sorted(probes["layers"].items())})
    for i, (kind, names, tensors) in sorted(probes["layers"].items()):
        group = path.create_group(f"layer_{i:02d}_{kind}")
        group.attrs["probes_json"] = json.dumps(list(names))
        for name in names:
            put(group, name, tensors[name], "<i4" if name in INT_PROBES else "<f4", shared)
