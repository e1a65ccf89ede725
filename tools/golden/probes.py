"""Sub-step probes for golden files: the library's own intermediate tensors inside one
GatedDeltaNet layer and one full-attention layer, mixer and feed-forward (dense MLP or MoE),
for one scenario of every kind (PROBE_TARGETS): one call, a multi-call schedule, the left-padded
batch (mlx-lm), an MRoPE vector, an image prompt and a hazard (mlx-vlm).

Called through capture_lm() (from generate, after the mlx-lm scenarios ran), capture_run()
(from vlm_paths, after each probed mlx-vlm schedule ran) and write() (from writing). Layout and
the meaning of every probe: docs/golden-format.md, section "Probes".

Nothing here re-implements the model. For the duration of one run of the scenario the probed
layers' own submodules are replaced by recording proxies (input_layernorm, in_proj_qkv, conv1d,
norm, out_proj, q_proj, q_norm, k_norm, rope (mlx-lm), o_proj, post_attention_layernorm, mlp and
its gate_proj, up_proj, down_proj, or the MoE block's gate, switch_mlp and shared_expert), the
attention cache's update_and_fetch is wrapped for each call of the probed mixer (v), and the
module-level names the layers look up are rebound to recording wrappers in the namespaces they
are looked up from (LM_HOOKS, VLM_HOOKS below):

  mlx-lm                                      mlx-vlm (models.qwen3_5.language = language)
  qwen3_5.normalize_qk                        Qwen3_5GatedDeltaNet._normalize_qk   -> q_normed, k_normed
  qwen3_5.gated_delta_update                  language.gated_delta_update          -> v, core_out, final_state
  gated_delta.gated_delta_ops (its g, beta)   qwen3_5.gated_delta._compute_g_beta  -> g, beta
  qwen3_next.scaled_dot_product_attention     language.scaled_dot_product_attention -> sdpa
  the layer's rope module                     language.apply_multimodal_rotary_pos_emb and
                                              Qwen3_5RotaryEmbedding.apply_rotary  -> q_rope, k_rope
  qwen3_next.mx                               qwen3_5_moe.language.mx              -> router_probs, shared_gate

In the MoE block, what switch_mlp returns goes back as a stand-in whose only operations are the
block's own `(y * scores[..., None]).sum(axis=-2)`, each done by mlx on the real arrays: the
scores it is multiplied by are topk_weights, the sum is routed_out.

A multi-call scenario is recorded once per call and joined as the Swift side joins its traces:
along the time axis, or stacked [calls, ...] for a state (final_state). Everything is restored
afterwards, and the probed run must reproduce the scenario's logits, hidden states and caches
bit for bit, or no golden is written.
"""

from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager

import numpy as np

import mlx.core as mx
from mlx_lm.models import gated_delta, qwen3_5, qwen3_next
from mlx_vlm.models.qwen3_5 import gated_delta as vlm_gated_delta
from mlx_vlm.models.qwen3_5 import language as vlm_language
from mlx_vlm.models.qwen3_5_moe import language as vlm_moe_language

from .provenance import component
from .scenarios import LM_PATH, VLM_PATH

# The scenarios probed, one of every kind, and on which paths. The image prompt is the first
# one a golden runs (image_prompt_one, or image_prompt_two where it is the only one): IMAGE.
IMAGE = "image_prompt"
PROBE_TARGETS = {
    "full_prefill": (LM_PATH,),                      # one call
    "prefix_decode": (LM_PATH,),                     # a multi-call schedule
    "batch_left_pad": (LM_PATH,),                    # the left-padded batch
    "mrope_prefix_decode": (VLM_PATH,),              # an MRoPE vector
    IMAGE: (VLM_PATH,),                              # an image prompt (its language calls)
    # a hazard: single-row calls, so no row split (hazard_batch_without_mask runs row by row).
    # Not its correct twin: that path is stored light (no hidden states), and qwen-parity diff
    # reads no side of it, so its probes could not be checked.
    "hazard_chunked_image_prefill": (VLM_PATH,),
}

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
# How calls join (Sources/ParityCore/SubSteps.swift, timeAxis): the token axis, 1 unless
# listed; None is a state, stacked [calls, ...].
TIME_AXIS = {"gdn": {"final_state": None},
             "attn": {"v": 2, "q_rope": 2, "k_rope": 2, "sdpa": 2}}


class ProbeError(Exception):
    """The probed forward pass did not behave like the plain one."""


class Tap:
    """Stands in for a module: forwards attribute reads and hands (args, output) of every
    call to `on_call`. With `around`, the call runs inside around(args, kwargs), a context
    manager; with `returns`, the caller gets returns(output) instead of the output."""

    def __init__(self, module, on_call=None, around=None, returns=None):
        self._module = module
        self._on_call = on_call
        self._around = around
        self._returns = returns

    def __getattr__(self, name):
        return getattr(self._module, name)

    def __call__(self, *args, **kwargs):
        with self._around(args, kwargs) if self._around else ExitStack():
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
    """mlx.core as the MoE block looks it up: every name is mlx's own; softmax and sigmoid
    results are handed to on_result(name, output)."""

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


MOE_BLOCKS = (qwen3_next.Qwen3NextSparseMoeBlock, vlm_moe_language.Qwen3_5MoeSparseMoeBlock)


def is_moe(mlp) -> bool:
    return isinstance(mlp, MOE_BLOCKS)


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
    original, own = getattr(namespace, name), name in vars(namespace)
    setattr(namespace, name, make(original))
    try:
        yield
    finally:
        if own:
            setattr(namespace, name, original)
        else:   # a method the class inherits: drop the override
            delattr(namespace, name)


def _hooks(library: str, active, ffn, put):
    """The (namespace, name, make) rebindings of one library; `active` and `ffn` hold the probed
    layer whose mixer / MoE block is running, if any."""

    def returning(names):
        """A wrapper recording the outputs of the call under `names` (a tuple: one each)."""
        def make(original):
            def wrapper(*args, **kwargs):
                out = original(*args, **kwargs)
                if active["layer"] is not None:
                    for name, value in zip(names, out if len(names) > 1 else (out,)):
                        put(active["layer"], name, value)
                return out
            return wrapper
        return make

    def delta_update(original):
        def wrapper(q, k, v, *args, **kwargs):
            y, state = original(q, k, v, *args, **kwargs)
            if active["layer"] is not None:
                put(active["layer"], "v", v)
                put(active["layer"], "core_out", y)
                put(active["layer"], "final_state", state)
            return y, state
        return wrapper

    def moe_mx(original):
        def on_result(name, out):
            if ffn["layer"] is not None:
                put(ffn["layer"], {"softmax": "router_probs", "sigmoid": "shared_gate"}[name], out)
        return RecordingMx(original, on_result)

    if library == "mlx-lm":
        def delta_ops(original):
            def wrapper(q, k, v, g, beta, *args, **kwargs):
                if active["layer"] is not None:
                    put(active["layer"], "g", g)
                    put(active["layer"], "beta", beta)
                return original(q, k, v, g, beta, *args, **kwargs)
            return wrapper
        return [(qwen3_5, "normalize_qk", returning(("q_normed", "k_normed"))),
                (qwen3_5, "gated_delta_update", delta_update),
                (gated_delta, "gated_delta_ops", delta_ops),
                (qwen3_next, "scaled_dot_product_attention", returning(("sdpa",))),
                (qwen3_next, "mx", moe_mx)]
    # mlx-vlm: the rotary is a function of (q, k) there, not a module; on CPU the layer takes
    # the cos/sin path (apply_multimodal_rotary_pos_emb), apply_rotary when no position_ids.
    return [(vlm_language.Qwen3_5GatedDeltaNet, "_normalize_qk", returning(("q_normed", "k_normed"))),
            (vlm_language, "gated_delta_update", delta_update),
            (vlm_gated_delta, "_compute_g_beta", returning(("g", "beta"))),
            (vlm_language, "scaled_dot_product_attention", returning(("sdpa",))),
            (vlm_language, "apply_multimodal_rotary_pos_emb", returning(("q_rope", "k_rope"))),
            (vlm_language.Qwen3_5RotaryEmbedding, "apply_rotary", returning(("q_rope", "k_rope"))),
            (vlm_moe_language, "mx", moe_mx)]


@contextmanager
def probing(model, layers: dict[int, str], library: str):
    """Records the sub-steps of `layers` ({index: "gdn" | "attn"}) of `model` (mlx-lm's Model or
    mlx-vlm's LanguageModel: library "mlx-lm" | "mlx-vlm") during the forward passes run inside
    the block. Yields {index: {probe name: [mx.array, one per call]}}."""
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
    def running(layer, state=active, cache=None):
        state["layer"] = layer
        if cache is not None:   # the values as they enter this call's cache (instance attribute)
            fetch = cache.update_and_fetch

            def update_and_fetch(keys, values):
                put(layer, "v", values)
                return fetch(keys, values)
            cache.update_and_fetch = update_and_fetch
        try:
            yield
        finally:
            state["layer"] = None
            if cache is not None:
                cache.__dict__.pop("update_and_fetch", None)

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
            around = lambda args, kwargs, i=i: running(i)
        else:
            mixer_key = "self_attn"
            mixer = layer[mixer_key]
            tap(mixer, "q_proj", i, "q_proj")
            tap(mixer, "q_norm", i, "q_normed")
            tap(mixer, "k_norm", i, "k_normed")
            if "rope" in mixer:   # mlx-lm: a module, queries first, then keys
                rope_calls = [0]

                def on_rope(args, out, i=i, rope_calls=rope_calls):
                    put(i, "k_rope" if rope_calls[0] % 2 else "q_rope", out)
                    rope_calls[0] += 1

                replace(mixer, "rope", Tap(mixer["rope"], on_rope))
            replace(mixer, "o_proj", Tap(mixer["o_proj"], lambda args, out, i=i: (
                put(i, "gated", args[0]), put(i, "o_proj", out))))
            # mlx-lm passes (x, mask, cache), mlx-vlm cache=...
            around = lambda args, kwargs, i=i: running(
                i, cache=kwargs.get("cache", args[2] if len(args) > 2 else None))
        replace(layer, mixer_key, Tap(mixer, around=around))

        tap(layer, "post_attention_layernorm", i, "post_norm")
        mlp = layer["mlp"]
        if is_moe(mlp):
            tap(mlp, "gate", i, "router_logits")
            replace(mlp, "switch_mlp", Tap(
                mlp["switch_mlp"], lambda args, out, i=i: (put(i, "topk_indices", args[1]),
                                                           put(i, "experts_out", out)),
                returns=lambda out, i=i: ExpertsOut(out, lambda name, v: put(i, name, v))))
            tap(mlp, "shared_expert", i, "shared_out")
            around = lambda args, kwargs, i=i: running(i, ffn)
        else:
            tap(mlp, "gate_proj", i, "mlp_gate")
            tap(mlp, "up_proj", i, "mlp_up")
            replace(mlp, "down_proj", Tap(mlp["down_proj"],
                                          lambda args, out, i=i: put(i, "mlp_act", args[0])))
            around = None
        replace(layer, "mlp", Tap(mlp, lambda args, out, i=i: put(i, "mlp_out", out), around=around))

    try:
        with ExitStack() as stack:
            for namespace, name, make in _hooks(library, active, ffn, put):
                stack.enter_context(_rebound(namespace, name, make))
            yield records
    finally:
        for module, key, original in reversed(replaced):
            module[key] = original


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


def joined(kind: str, name: str, parts: list[np.ndarray]) -> np.ndarray:
    """One call as is; several along the token axis, or stacked [calls, ...] for a state."""
    if len(parts) == 1:
        return parts[0]
    axis = TIME_AXIS[kind].get(name, 1)
    return np.stack(parts) if axis is None else np.concatenate(parts, axis=axis)


def _same(a, b) -> bool:
    return a.shape == b.shape and np.array_equal(a, b)


def _check_reproduced(what: str, got, reference) -> None:
    """The probed run must be the plain run: logits, hidden states, final norm and caches."""
    for field in ("logits", "hidden_states", "final_norm"):
        if not _same(getattr(got, field), getattr(reference, field)):
            raise ProbeError(f"probing {what} changed the {field}")
    if (got.cache_after is None) != (reference.cache_after is None):
        raise ProbeError(f"probing {what} changed which cache was snapshot")
    for i, (a, b) in enumerate(zip(got.cache_after or [], reference.cache_after or [])):
        for key in b:
            if not _same(np.asarray(a[key]), np.asarray(b[key])):
                raise ProbeError(f"probing {what} changed cache_after layer {i} {key}")


def capture_run(model, library: str, what: str, calls: list[int], run, reference) -> dict:
    """Runs run() (the scenario once more, as the generator ran it) with probes on in `model`
    and returns {layer: (kind, names, {name: tensor joined over calls})}. `reference` is the
    scenario's RunResult from the plain run; the probed one must equal it bit for bit."""
    layers = probe_layers(model)
    try:
        with probing(model, layers, library) as records:
            result = run()
            mx.eval(records)
    except Exception as exc:  # the same run passed without probes: the probes broke it
        raise ProbeError(f"the probed run of {what} raised {type(exc).__name__}: {exc}") from exc
    _check_reproduced(what, result, reference)
    tensors = {}
    for i, kind in layers.items():
        got, names = records[i], layer_probes(model, i, kind)
        expected = names + (ATTN_RECORDED if kind == "attn" else ())
        wrong = [n for n in expected if len(got.get(n, [])) != len(calls)]
        if wrong:
            raise ProbeError(f"{what}, layer {i} ({kind}): expected one recording per call "
                             f"({len(calls)}) of each of {', '.join(wrong)}; got "
                             f"{[len(got.get(n, [])) for n in wrong]}")
        tensors[i] = (kind, names, {n: joined(kind, n, [as_stored(n, v) for v in got[n]])
                                    for n in names})
    # The probes that also live elsewhere in the golden must agree with it exactly: the cache
    # snapshot, taken after the call that ends at the attention cache's length (or the last).
    if reference.cache_after:
        ends = [int(e) for e in np.cumsum(calls)]
        held = [s["keys"].shape[2] for s in reference.cache_after if "keys" in s]
        call = ends.index(held[0]) if held else len(calls) - 1
        for i, (kind, _, t) in tensors.items():
            snap = reference.cache_after[i]
            if kind == "gdn":
                state = t["final_state"] if len(calls) == 1 else t["final_state"][call]
                pairs = [(state, snap["recurrent_state"], "final_state", "recurrent_state")]
            else:
                n = ends[call]
                pairs = [(t["k_rope"][:, :, :n], snap["keys"], "k_rope", "keys"),
                         (t["v"][:, :, :n], snap["values"], "v", "values")]
            for probe, cached, a, b in pairs:
                if not _same(probe, cached):
                    raise ProbeError(f"{what}, layer {i}: probe {a} differs from cache_after {b}")
    return tensors


def capture_lm(model, inputs, results, run_scenario) -> list[dict]:
    """The mlx-lm targets among the generator's scenarios, each run once more with probes on
    through run_scenario(model, sc, inputs). `results`: (Scenario, RunResult) of path mlx_lm."""
    out = []
    for sc, reference in results:
        if wanted(sc.name, LM_PATH):
            layers = capture_run(model, "mlx-lm", f"{sc.name}/{LM_PATH}", sc.calls,
                                 lambda sc=sc: run_scenario(model, sc, inputs), reference)
            out.append({"scenario": sc.name, "path": LM_PATH, "layers": layers})
    return out


def wanted(scenario: str, path: str) -> bool:
    """Is (scenario, path) probed? vlm_paths probes only the first image prompt it runs."""
    return path in PROBE_TARGETS.get(IMAGE if scenario.startswith(IMAGE) else scenario, ())


def write(f, probes: list[dict] | None, shared: dict, put) -> None:
    """Writes /probes/<scenario>/<path>/layer_XX_<kind>/<probe> with writing.put(): a probe
    that repeats a stored dataset bit for bit (a cache, or the same probe of another scenario)
    becomes a hard link to it."""
    if not probes:
        return
    root = f.require_group("probes")
    root.attrs["generator"], root.attrs["generator_sha256"] = component(__file__)
    for entry in probes:
        path = root.create_group(f"{entry['scenario']}/{entry['path']}")
        path.attrs["layers_json"] = json.dumps({str(i): k for i, (k, _, _) in sorted(entry["layers"].items())})
        for i, (kind, names, tensors) in sorted(entry["layers"].items()):
            group = path.create_group(f"layer_{i:02d}_{kind}")
            group.attrs["probes_json"] = json.dumps(list(names))
            for name in names:
                put(group, name, tensors[name], "<i4" if name in INT_PROBES else "<f4", shared)
