#!/usr/bin/env python3
"""Candidate paths: a user's Python implementation of Qwen 3.5 run through the scenarios of a
golden and stored beside the references as one more path, `candidate:<name>`
(docs/golden-format.md, "Candidate paths"). `qwen-parity check` then holds it to the unified
model's invariants and `qwen-parity diff --b candidate:<name>` localizes where it parts.

A candidate path is the user's implementation's output, never a reference: the goldens' reference
paths still come only from the pinned mlx-lm / mlx-vlm. The adapter file's sha256, its name and
what it reports about itself (describe()) are stored under /candidates/<name>.

How it runs
-----------
`make_golden.py --config C --out F --candidate FILE [--candidate-python PY]` computes every
reference path first, then starts `PY tools/golden_candidates.py --serve JOBDIR` (default PY:
the generator's own interpreter). The child process imports the adapter, builds one model from
the golden's config and weights and runs it through every scenario it can run, in the golden's
order, on that one model object:

  * text scenarios (no_cache, full_prefill, prefix_decode, token_by_token, chunked_prefill_N,
    batch_left_pad): mlx-lm's schedule; a cached scenario keeps the cache after its prompt;
  * MRoPE and image scenarios whose mlx-vlm schedule is generate-style (the first call carries
    the whole prompt's 3-D position_ids and rope_deltas, every prompt call the same ones, then
    decode calls by id without them): the same calls, the prompt's positions given to the model
    as stored position state (or per call, see set_position_state);
  * then the text scenarios again, and the MRoPE scenarios again (logits only, stored as
    `logits_repeat`): the same model object after the other kind of prompt, for the no-state-leak
    invariant.

Hazard scenarios whose library path misuses the model on purpose, and whose correct twin is not
generate-style, are skipped; /candidates/<name> skipped_json says which and why. The child
process is separate so that nothing the adapter imports or patches can reach the references,
and so that the candidate can live in a virtualenv of its own.

The adapter interface
---------------------
An adapter is one Python file. Required functions:

  build(config, weights) -> model
      config: {"text_config": the golden's config file as mlx-lm's ModelArgs.from_dict gets it
                              (flat, or nested with its own text_config),
               "vlm_config": the dict mlx-vlm's ModelConfig.from_dict was given (text config
                             nested, vision token ids), or None,
               "layer_types": ["linear_attention" | "full_attention", ...]}
      weights: {runtime name: mx.array float32} in mlx-lm's runtime layout after sanitize
               ("language_model.model.layers.0.linear_attn.conv1d.weight", norms with +1 folded).
  forward(model, inputs, *, cache, input_embeddings=None, position_ids=None, attention_mask=None)
      One model call. inputs: [B, L] int32 token ids (also when embeddings are given);
      input_embeddings: [B, L, D] float32 (MRoPE and image prompts: merged embeddings);
      position_ids: [3, B, L] int32, this call's positions, only for adapters without
      set_position_state; attention_mask: [B, L] (1 on real tokens), on the prompt call of a
      left-padded batch only (mlx-vlm needs it; mlx-lm reads the padding from its cache).
      Returns the logits [B, L, V] float32, or {"logits": ..., "positions": P} where P is the
      3-D positions [3, B, L] (or [B, L]) the call actually used, None on the text route.
  text_model(model) -> module
      The module holding embed_tokens, layers (a list) and norm (mlx-lm:
      model.language_model.model; mlx-vlm: LanguageModel.model). The runner wraps them, as
      make_golden.py wraps the references, to read every layer's output without editing the
      candidate's code.

Optional:

  NAME = "my_engine"             default: the file name without .py; [A-Za-z0-9_.-]+
  TEXT_ROUTE = "mlx_lm"          the reference its text route must equal: "mlx_lm" (the unified
                                 design, default) or "mlx_vlm"
  describe() -> dict             provenance stored with the path: version, commit, ...
  reset(model)                   called first in every prediction (upstream's
                                 clear_prediction_state); without it nothing is cleared
  set_position_state(model, position_ids, rope_deltas)
                                 after reset() in an MRoPE prediction: the prompt's positions
                                 [3, B, Lp] int32 and rope deltas [B, 1] int32; the model then
                                 resolves every call's positions itself (slice while inside the
                                 prompt, offset + delta after). Without it, every MRoPE call gets
                                 position_ids instead.
  make_cache(model, left_padding) -> cache
                                 left_padding: None, or a list (the batch scenario). Default:
                                 model.make_cache(), or model.language_model.make_cache().
  cache_state(cache) -> [ {name: array} per layer ]
                                 conv_state/recurrent_state or keys/values (+ offset) after the
                                 prompt. Default: mlx-lm / mlx-vlm cache objects read directly.
  substeps(model, taps)          declare sub-step taps (class Taps below) by our sub-step names
                                 (Sources/ParityCore/SubSteps.swift); the runner installs them
                                 around every call and removes them after. Names not provided
                                 are reported as not provided by `diff`.

Errors name the adapter file and, mid-schedule, the scenario and the call; nothing is written
(the generator publishes the golden atomically). Exit status of --serve: 0, or 3 with
error.json {"message": ...}. With QWEN_PARITY_CANDIDATE_JOB_DIR=DIR the generator keeps the job
(job.json, arrays.npz) in DIR, so an adapter can be rerun alone: golden_candidates.py --serve DIR.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import traceback
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

SOURCE = "tools/golden_candidates.py"
PATH_PREFIX = "candidate:"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
TEXT_ROUTES = ("mlx_lm", "mlx_vlm")
REQUIRED = ("build", "forward", "text_model")
OPTIONAL = ("describe", "reset", "set_position_state", "make_cache", "cache_state", "substeps")
VLM_PATHS = ("mlx_vlm", "mlx_vlm_correct")
ERROR_EXIT = 3

# Sub-step layouts (Sources/ParityCore/SubSteps.swift): the axis along which calls join, or None
# for a state that each call replaces (several calls: stacked [calls, ...], as Swift does).
GDN_SUBSTEPS = {"input_norm": 1, "qkv": 1, "z": 1, "b": 1, "a": 1, "conv_out": 1, "q_normed": 1,
                "k_normed": 1, "v": 1, "beta": 1, "g": 1, "core_out": 1, "final_state": None,
                "gated_norm_out": 1, "out_proj": 1}
ATTN_SUBSTEPS = {"input_norm": 1, "q_proj": 1, "gate": 1, "k_proj": 1, "v": 2, "q_normed": 1,
                 "k_normed": 1, "q_rope": 2, "k_rope": 2, "sdpa": 2, "gated": 1, "o_proj": 1}
FFN_SUBSTEPS = {"post_norm": 1, "mlp_gate": 1, "mlp_up": 1, "mlp_act": 1, "mlp_out": 1,
                "router_logits": 1, "router_probs": 1, "topk_indices": 1, "topk_weights": 1,
                "experts_out": 1, "routed_out": 1, "shared_out": 1, "shared_gate": 1}


class CandidateError(Exception):
    """A bad adapter or a bad result: one line naming the file and where."""


# =============================================================================================
# Child side: runs inside the candidate's interpreter (numpy and mlx, no h5py needed)


class Taps:
    """Sub-step taps an adapter declares in substeps(model, taps). Records go to the layer that is
    running when they fire (the runner knows which: it wraps every layer), or to the layer a module
    tap was declared for.

      taps.standard(text_module)   module taps by the names mlx-lm, mlx-vlm and mlx-engine share
      taps.module(layer, owner, key, record)
      taps.function(namespace, name, record)
          record(args, kwargs, out) -> {sub-step name: array} (or None); namespace is a module
          object or a dict such as globals(): the name is rebound there for each call.
    """

    def __init__(self):
        self._modules = []      # (layer, owner, key, record)
        self._functions = []    # (namespace, name, record)
        self.current = None     # index of the layer running now
        self.records = None     # {layer: {name: [arrays]}} of the call being run

    def module(self, layer: int, owner, key: str, record) -> None:
        self._modules.append((layer, owner, key, record))

    def function(self, namespace, name: str, record) -> None:
        self._functions.append((namespace, name, record))

    def put(self, layer, values) -> None:
        if layer is None or self.records is None or not values:
            return
        for name, value in values.items():
            if value is not None:
                self.records.setdefault(layer, {}).setdefault(name, []).append(value)

    def standard(self, text_module) -> None:
        """Taps on the submodules every Qwen 3.5 implementation in the mlx family names alike:
        norms, projections, the GatedDeltaNet conv and gated norm, the attention projections and
        q/k norms, the feed-forward. Function-level sub-steps (normalised q/k, the recurrence,
        rotary, sdpa) depend on the implementation: declare those with function()."""
        for i, layer in enumerate(list(text_module.layers)):
            layer = getattr(layer, "_module", layer)  # the runner's recorder, if installed
            self.module(i, layer, "input_layernorm", lambda a, k, o: {"input_norm": o})
            self.module(i, layer, "post_attention_layernorm", lambda a, k, o: {"post_norm": o})
            mlp = layer["mlp"]
            if all(key in mlp for key in ("gate_proj", "up_proj", "down_proj")):
                self.module(i, mlp, "gate_proj", lambda a, k, o: {"mlp_gate": o})
                self.module(i, mlp, "up_proj", lambda a, k, o: {"mlp_up": o})
                self.module(i, mlp, "down_proj", lambda a, k, o: {"mlp_act": a[0], "mlp_out": o})
            else:
                self.module(i, layer, "mlp", lambda a, k, o: {"mlp_out": o})
            if "linear_attn" in layer:
                mixer = layer["linear_attn"]
                for key, name in (("in_proj_qkv", "qkv"), ("in_proj_z", "z"), ("in_proj_b", "b"),
                                  ("in_proj_a", "a"), ("conv1d", "conv_out"),
                                  ("norm", "gated_norm_out"), ("out_proj", "out_proj")):
                    if key in mixer:
                        self.module(i, mixer, key, lambda a, k, o, name=name: {name: o})
            elif "self_attn" in layer:
                mixer = layer["self_attn"]
                heads, kv_heads = mixer.num_attention_heads, mixer.num_key_value_heads

                def q_proj(a, k, o, heads=heads):
                    B, L, width = o.shape
                    hd = width // (2 * heads)
                    return {"q_proj": o, "gate": o.reshape(B, L, heads, 2 * hd)[..., hd:].reshape(B, L, heads * hd)}

                def v_proj(a, k, o, kv_heads=kv_heads):
                    B, L, width = o.shape
                    return {"v": o.reshape(B, L, kv_heads, width // kv_heads).transpose(0, 2, 1, 3)}

                self.module(i, mixer, "q_proj", q_proj)
                self.module(i, mixer, "k_proj", lambda a, k, o: {"k_proj": o})
                self.module(i, mixer, "v_proj", v_proj)
                self.module(i, mixer, "q_norm", lambda a, k, o: {"q_normed": o})
                self.module(i, mixer, "k_norm", lambda a, k, o: {"k_normed": o})
                self.module(i, mixer, "o_proj", lambda a, k, o: {"gated": a[0], "o_proj": o})
                if "rope" in mixer:  # mlx-lm: one rope module, called on the queries, then the keys
                    self.module(i, mixer, "rope", lambda a, k, o, i=i: self.rope_pair(i, o))

    def rope_pair(self, layer_index, out):
        """For a rotary module called on the queries, then on the keys (mlx-lm's order)."""
        layer = self.records.get(layer_index, {}) if self.records is not None else {}
        name = "k_rope" if len(layer.get("q_rope", [])) > len(layer.get("k_rope", [])) else "q_rope"
        return {name: out}

    @contextmanager
    def installed(self):
        replaced, rebound = [], []
        try:
            for layer, owner, key, record in self._modules:
                original = owner[key]
                owner[key] = _ModuleTap(original, self, layer, record)
                replaced.append((owner, key, original))
            for namespace, name, record in self._functions:
                original = _get(namespace, name)
                _set(namespace, name, _function_tap(original, self, record))
                rebound.append((namespace, name, original))
            yield
        finally:
            for namespace, name, original in reversed(rebound):
                _set(namespace, name, original)
            for owner, key, original in reversed(replaced):
                owner[key] = original


def _get(namespace, name):
    return namespace[name] if isinstance(namespace, dict) else getattr(namespace, name)


def _set(namespace, name, value):
    if isinstance(namespace, dict):
        namespace[name] = value
    else:
        setattr(namespace, name, value)


class _ModuleTap:
    """Stands in for a module: forwards attribute reads, records (args, kwargs, output)."""

    def __init__(self, module, taps, layer, record):
        self._module, self._taps, self._layer, self._record = module, taps, layer, record

    def __getattr__(self, name):
        return getattr(self._module, name)

    def __call__(self, *args, **kwargs):
        out = self._module(*args, **kwargs)
        self._taps.put(self._layer, self._record(args, kwargs, out))
        return out


def _function_tap(original, taps, record):
    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        taps.put(taps.current, record(args, kwargs, out))
        return out
    return wrapper


class _Recorder:
    """Stands in for embed_tokens, a layer or the norm: forwards attribute reads, records every
    output, and for a layer marks it as the one running (function taps record into it)."""

    def __init__(self, module, sink: list, taps: Taps | None = None, index: int | None = None):
        self._module, self._sink, self._taps, self._index = module, sink, taps, index

    def __getattr__(self, name):
        return getattr(self._module, name)

    def __call__(self, *args, **kwargs):
        previous = None
        if self._taps is not None:
            previous, self._taps.current = self._taps.current, self._index
        try:
            out = self._module(*args, **kwargs)
        finally:
            if self._taps is not None:
                self._taps.current = previous
        self._sink.append(out)
        return out


@contextmanager
def _recording(inner, taps):
    layers = inner.layers
    originals = (inner["embed_tokens"], inner["norm"], list(layers))
    records = {"embed": [], "layers": [[] for _ in layers], "norm": []}
    try:
        inner["embed_tokens"] = _Recorder(originals[0], records["embed"])
        inner["norm"] = _Recorder(originals[1], records["norm"])
        for i, layer in enumerate(originals[2]):
            layers[i] = _Recorder(layer, records["layers"][i], taps, i)
        yield records
    finally:
        inner["embed_tokens"], inner["norm"] = originals[0], originals[1]
        layers[:] = originals[2]


def _load_adapter(path: Path):
    if not path.is_file():
        raise CandidateError(f"adapter {path}: no such file")
    name = "_qwen_parity_candidate_" + re.sub(r"\W", "_", path.stem)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - any failure to import is the adapter's
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise CandidateError(f"adapter {path} does not import: {_exception_line(exc, path)}") from exc
    missing = [f for f in REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise CandidateError(f"adapter {path} has no function {', '.join(missing)} (required: "
                             f"{', '.join(REQUIRED)}; see tools/golden_candidates.py)")
    for f in OPTIONAL:
        if hasattr(module, f) and not callable(getattr(module, f)):
            raise CandidateError(f"adapter {path}: {f} is not a function")
    name = getattr(module, "NAME", path.stem)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise CandidateError(f"adapter {path}: NAME {name!r} must match [A-Za-z0-9_.-]+")
    route = getattr(module, "TEXT_ROUTE", "mlx_lm")
    if route not in TEXT_ROUTES:
        raise CandidateError(f"adapter {path}: TEXT_ROUTE {route!r} must be one of {', '.join(TEXT_ROUTES)}")
    return module, name, route


def _exception_line(exc: BaseException, adapter: Path | None = None) -> str:
    """ExcType: message (file:line), the innermost frame in the adapter file, else the last."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = None
    if adapter is not None:
        inside = [f for f in frames if Path(f.filename).resolve() == adapter.resolve()]
        where = inside[-1] if inside else None
    where = where or (frames[-1] if frames else None)
    text = f"{type(exc).__name__}: {exc}"
    return text + (f" (at {where.filename}:{where.lineno})" if where else "")


def _describe(module, path: Path) -> dict:
    info = {}
    if hasattr(module, "describe"):
        try:
            info = module.describe()
        except Exception as exc:  # noqa: BLE001
            raise CandidateError(f"adapter {path}: describe() failed: {_exception_line(exc, path)}") from exc
        if not isinstance(info, dict):
            raise CandidateError(f"adapter {path}: describe() must return a dict, got {type(info).__name__}")
        try:
            json.dumps(info)
        except TypeError as exc:
            raise CandidateError(f"adapter {path}: describe() must return JSON values: {exc}") from exc
    return info


def _environment() -> dict:
    from importlib import metadata
    out = {"python": platform.python_version(), "executable": sys.executable, "numpy": np.__version__}
    for package in ("mlx", "mlx-lm", "mlx-vlm"):
        try:
            out[package.replace("-", "_")] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package.replace("-", "_")] = None
    return out


def _as_numpy(a):
    import mlx.core as mx
    if isinstance(a, mx.array):
        return np.array(a)
    return np.asarray(a)


class _Run:
    """One adapter, one model object, every plan of the job."""

    def __init__(self, job: dict, arrays: dict, adapter_path: Path):
        import mlx.core as mx
        self.mx = mx
        mx.set_default_device(mx.cpu)  # the goldens are CPU results
        self.job, self.arrays, self.path = job, arrays, adapter_path
        self.module, self.name, self.route = _load_adapter(adapter_path)
        self.kinds = job["layer_kinds"]
        self.vocab, self.hidden = job["vocab_size"], job["hidden_size"]
        self.state_mode = hasattr(self.module, "set_position_state")
        weights = {name: mx.array(arrays[key]) for name, key in job["weights"].items()}
        self.model = self._adapter_call("build", None, None, job["config"], weights)
        self.provided = {"substeps": set(), "positions": False}

    def _adapter_call(self, function, plan, call, *args, **kwargs):
        try:
            return getattr(self.module, function)(*args, **kwargs)
        except CandidateError:
            raise
        except Exception as exc:  # noqa: BLE001 - the adapter's exception, named
            raise CandidateError(f"{self._where(plan, call)}{function}() raised "
                                 f"{_exception_line(exc, self.path)}") from exc

    def _where(self, plan, call):
        if plan is None:
            return f"adapter {self.path}: "
        text = f"adapter {self.path}: scenario {plan['scenario']} (as {plan['reference']} runs it)"
        if call is not None:
            i, c = call
            text += (f", call {i + 1} of {len(plan['calls'])} (tokens {c['start']}..{c['start'] + c['length'] - 1}"
                     f", cache {c['cache']})")
        return text + ": "

    def _fail(self, plan, call, message):
        raise CandidateError(self._where(plan, call) + message)

    def _check_tensor(self, plan, call, what, value, shape, dtype="float32"):
        """A result tensor as numpy: an mx array of the expected shape and dtype, finite."""
        mx = self.mx
        if not isinstance(value, mx.array):
            self._fail(plan, call, f"{what} is a {type(value).__name__}, expected an mx.array {list(shape)} {dtype}")
        if tuple(value.shape) != tuple(shape):
            self._fail(plan, call, f"{what} has shape {list(value.shape)}, expected {list(shape)}")
        if dtype == "float32" and value.dtype != mx.float32:
            self._fail(plan, call, f"{what} has dtype {value.dtype}, expected float32")
        out = np.array(value)
        if dtype == "float32" and not np.all(np.isfinite(out)):
            bad = np.unravel_index(int(np.argmin(np.isfinite(out))), out.shape)
            self._fail(plan, call, f"{what} holds NaN or Inf (first at {list(map(int, bad))})")
        return out

    # --- caches -------------------------------------------------------------------------------

    def _new_cache(self, plan, call, left_padding):
        m = self.module
        if hasattr(m, "make_cache"):
            return self._adapter_call("make_cache", plan, call, self.model, left_padding)
        if left_padding is not None:
            self._fail(plan, call, "a left-padded batch needs make_cache(model, left_padding) in the adapter")
        for owner in (self.model, getattr(self.model, "language_model", None)):
            if owner is not None and callable(getattr(owner, "make_cache", None)):
                return owner.make_cache()
        self._fail(plan, call, "the model has no make_cache(); define make_cache(model, left_padding) in the adapter")

    def _cache_state(self, plan, call, cache, B, T):
        if hasattr(self.module, "cache_state"):
            layers = self._adapter_call("cache_state", plan, call, cache)
        else:
            layers = _default_cache_state(cache)
        if layers is None:
            return None
        if not isinstance(layers, list) or len(layers) != len(self.kinds):
            self._fail(plan, call, f"the cache after the prompt has {len(layers) if isinstance(layers, list) else type(layers).__name__} "
                                   f"layer entries, expected {len(self.kinds)}")
        out = []
        c = self.job["cache_shapes"]
        for i, (kind, layer) in enumerate(zip(self.kinds, layers)):
            names = ("conv_state", "recurrent_state") if kind == "linear_attention" else ("keys", "values")
            entry = {}
            for n in names:
                if n not in layer:
                    self._fail(plan, call, f"cache layer {i} has no {n}")
                shape = [B] + c[n] if n != "keys" and n != "values" else [B, c["kv_heads"], T, c["head_dim"]]
                entry[n] = self._check_tensor(plan, call, f"cache layer {i} {n}", layer[n], shape)
            if "offset" in layer:
                entry["offset"] = _as_numpy(layer["offset"]).astype(np.int64)
            out.append(entry)
        return out

    # --- one plan -----------------------------------------------------------------------------

    def run(self, plan, record: bool):
        """Every call of the plan on the one model. record: hidden states, sub-steps, caches."""
        mx = self.mx
        calls = plan["calls"]
        inner = self._adapter_call("text_model", plan, None, self.model) if record else None
        taps = None
        if record and hasattr(self.module, "substeps"):
            taps = Taps()
            self._adapter_call("substeps", plan, None, self.model, taps)
        logits, hidden, norms, positions, ranks, substeps = [], [], [], [], [], []
        reported = False   # whether forward() said which positions any call used
        snapshot, cache, t0 = None, None, 0
        with ExitStack() as stack:
            rec = stack.enter_context(_recording(inner, taps)) if record else None
            for i, c in enumerate(calls):
                where = (i, c)
                if c["reset"] and hasattr(self.module, "reset"):
                    self._adapter_call("reset", plan, where, self.model)
                if c["reset"] and c.get("state") and self.state_mode:
                    s = c["state"]
                    self._adapter_call("set_position_state", plan, where, self.model,
                                       mx.array(self.arrays[s["position_ids"]]), mx.array(self.arrays[s["rope_deltas"]]))
                if c["cache"] == "none":
                    cache = None
                elif c["cache"] == "new":
                    lp = c.get("left_padding")
                    cache = self._new_cache(plan, where, None if lp is None else [int(x) for x in self.arrays[lp]])
                ids = self.arrays[c["tokens"]][:, c["start"]:c["start"] + c["length"]]
                B, L = ids.shape
                kwargs = {"cache": cache}
                if c.get("embeddings"):
                    kwargs["input_embeddings"] = mx.array(self.arrays[c["embeddings"]][:, c["start"]:c["start"] + L])
                if c.get("positions") and not self.state_mode:
                    kwargs["position_ids"] = mx.array(self.arrays[c["positions"]])
                if c.get("attention_mask"):
                    kwargs["attention_mask"] = mx.array(self.arrays[c["attention_mask"]][:, c["start"]:c["start"] + L])
                before = (len(rec["embed"]), [len(r) for r in rec["layers"]], len(rec["norm"])) if record else None
                if taps is not None:
                    taps.records = {}
                with taps.installed() if taps is not None else ExitStack():
                    out = self._adapter_call("forward", plan, where, self.model, mx.array(ids), **kwargs)
                used = None
                if isinstance(out, dict):
                    if "logits" not in out:
                        self._fail(plan, where, "forward() returned a dict without 'logits'")
                    reported = reported or "positions" in out
                    used, out = out.get("positions"), out["logits"]
                mx.eval(out)
                logits.append(self._check_tensor(plan, where, "logits", out, (B, L, self.vocab)))
                positions.append(self._positions(plan, where, used, B, L))
                ranks.append(0 if used is None else len(used.shape))
                if record:
                    hidden.append(self._hidden(plan, where, rec, before, kwargs.get("input_embeddings"), B, L))
                    norms.append(self._joined(plan, where, "final norm", rec["norm"], before[2], B, L))
                if taps is not None:
                    substeps.append(self._call_substeps(plan, where, taps.records))
                t0 += L
                if record and plan.get("snapshot_after") == i + 1 and cache is not None:
                    snapshot = self._cache_state(plan, where, cache, B, t0)
        result = {"logits": np.concatenate(logits, axis=1)}
        if not record:
            return result
        layers = len(hidden[0])
        result["hidden_states"] = np.stack([np.concatenate([h[j] for h in hidden], axis=1) for j in range(layers)])
        result["final_norm"] = np.concatenate(norms, axis=1)
        result["cache_after"] = snapshot
        if reported:
            self.provided["positions"] = True
            result["position_ids"] = np.concatenate(positions, axis=2).astype(np.int32)
            result["position_ids_rank"] = np.array(ranks, dtype=np.int32)
        if substeps:
            result["substeps"] = self._join_substeps(substeps)
        return result

    def _positions(self, plan, where, used, B, L):
        if used is None:
            return np.zeros((3, B, L), np.int32)
        p = _as_numpy(used)
        if p.shape == (B, L):
            p = np.broadcast_to(p[None], (3, B, L))
        if p.shape != (3, B, L) or not np.issubdtype(p.dtype, np.integer) and not np.all(p == np.round(p)):
            self._fail(plan, where, f"forward() reported positions of shape {list(p.shape)}, expected [3, {B}, {L}] or [{B}, {L}] integers")
        return p.astype(np.int32)

    def _hidden(self, plan, where, rec, before, embeddings, B, L):
        embedded = len(rec["embed"]) - before[0]
        if embeddings is not None and embedded == 0:
            first = np.array(embeddings)
        else:
            first = self._joined(plan, where, "embeddings", rec["embed"], before[0], B, L)
        out = [first]
        for j, r in enumerate(rec["layers"]):
            out.append(self._joined(plan, where, f"layer {j} output", r, before[1][j], B, L))
        return out

    def _joined(self, plan, where, what, records, start, B, L):
        """This call's [B, L, D] from its records: one for the batch, or one per row when the
        implementation runs each row of a left-padded batch on its unpadded suffix (mlx-vlm)."""
        new = records[start:]
        if not new:
            self._fail(plan, where, f"{what} was not recorded: text_model(model) must return the module whose "
                                    f"embed_tokens, layers and norm the forward pass calls")
        if len(new) == 1:
            return self._check_tensor(plan, where, what, new[0], (B, L, self.hidden))
        if len(new) != B:
            self._fail(plan, where, f"{what} was recorded {len(new)} times in one call of {B} row(s)")
        rows = []
        for b, a in enumerate(new):
            if a.ndim != 3 or a.shape[0] != 1 or a.shape[1] > L or a.shape[2] != self.hidden:
                self._fail(plan, where, f"{what} of row {b} has shape {list(a.shape)}, expected [1, <= {L}, {self.hidden}]")
            a = self._check_tensor(plan, where, f"{what} of row {b}", a, a.shape)
            rows.append(np.pad(a, ((0, 0), (L - a.shape[1], 0), (0, 0))))
        return np.concatenate(rows)

    def _call_substeps(self, plan, where, records):
        for layer, names in records.items():
            for name, values in names.items():
                for v in values:
                    if not isinstance(v, self.mx.array):
                        self._fail(plan, where, f"sub-step {name} of layer {layer} is a {type(v).__name__}, expected an mx.array")
        self.mx.eval([v for layer in records.values() for vs in layer.values() for v in vs])
        out = {}
        for layer, names in records.items():
            for name, values in names.items():
                # Recorded more than once in one call (a per-row split): not a layout we can join.
                if len(values) != 1:
                    continue
                v = values[0]
                a = np.array(v.astype(self.mx.float32) if v.dtype != self.mx.float32 and
                             self.mx.issubdtype(v.dtype, self.mx.floating) else v).astype(np.float32)
                if not np.all(np.isfinite(a)):
                    self._fail(plan, where, f"sub-step {name} of layer {layer} holds NaN or Inf")
                out[(layer, name)] = a
        return out

    def _join_substeps(self, per_call):
        """{layer: {name: array}} for the names every call recorded, joined as Swift joins them."""
        keys = set(per_call[0])
        for call in per_call[1:]:
            keys &= set(call)
        out = {}
        for layer, name in sorted(keys):
            kind = self.kinds[layer]
            table = dict(GDN_SUBSTEPS if kind == "linear_attention" else ATTN_SUBSTEPS, **FFN_SUBSTEPS)
            if name not in table:
                continue
            parts = [call[(layer, name)] for call in per_call]
            axis = table[name]
            if len(parts) == 1:
                joined = parts[0]
            elif axis is None:
                joined = np.stack(parts)
            else:
                if any(p.ndim <= axis or p.shape[:axis] != parts[0].shape[:axis] for p in parts):
                    continue
                joined = np.concatenate(parts, axis=axis)
            out.setdefault(layer, {})[name] = joined
            self.provided["substeps"].add(name)
        return out


def _default_cache_state(cache):
    """mlx-lm / mlx-vlm caches: ArraysCache [conv, recurrent]; KVCache and BatchKVCache trimmed to
    what they hold (make_golden.py's snapshot_cache)."""
    if cache is None:
        return None
    out = []
    for c in cache:
        if isinstance(getattr(c, "cache", None), list):
            out.append({"conv_state": c[0], "recurrent_state": c[1]})
        elif hasattr(c, "_idx") and hasattr(c, "left_padding"):
            n = c._idx
            out.append({"keys": c.keys[..., :n, :], "values": c.values[..., :n, :], "offset": c.offset})
        elif hasattr(c, "keys") and hasattr(c, "offset"):
            n = c.offset
            out.append({"keys": c.keys[..., :n, :], "values": c.values[..., :n, :], "offset": n})
        else:
            return None
    return out


def serve(job_dir: Path) -> int:
    """The child: read job.json + arrays.npz, run every plan, write result.json + result.npz, or
    error.json and exit 3."""
    try:
        job = json.loads((job_dir / "job.json").read_text())
        with np.load(job_dir / "arrays.npz") as z:
            arrays = {k: z[k] for k in z.files}
        adapter = Path(job["adapter"])
        if job.get("describe_only"):
            module, name, route = _load_adapter(adapter)
            out = {"name": name, "text_route": route, "describe": _describe(module, adapter),
                   "environment": _environment(), "state_mode": hasattr(module, "set_position_state")}
            (job_dir / "result.json").write_text(json.dumps(out))
            return 0
        run = _Run(job, arrays, adapter)
        tensors, meta = {}, {"paths": {}, "repeats": []}

        def keep(prefix, result):
            entry = {}
            for key, value in result.items():
                if key == "cache_after":
                    if value is None:
                        continue
                    entry["cache_after"] = []
                    for i, layer in enumerate(value):
                        names = {}
                        for n, v in layer.items():
                            k = f"{prefix}/cache/{i}/{n}"
                            tensors[k] = np.asarray(v)
                            names[n] = k
                        entry["cache_after"].append(names)
                elif key == "substeps":
                    entry["substeps"] = {}
                    for layer, names in value.items():
                        for n, v in names.items():
                            k = f"{prefix}/substeps/{layer}/{n}"
                            tensors[k] = v
                            entry["substeps"].setdefault(str(layer), {})[n] = k
                else:
                    tensors[f"{prefix}/{key}"] = value
                    entry[key] = f"{prefix}/{key}"
            return entry

        plans = job["plans"]
        # Recording must not change a bit: the first plan once bare, then recorded.
        if plans:
            bare = run.run(plans[0], record=False)["logits"]
        for plan in plans:
            meta["paths"][plan["scenario"]] = keep(f"p/{plan['scenario']}", run.run(plan, record=True))
        if plans and not np.array_equal(bare, tensors[meta["paths"][plans[0]["scenario"]]["logits"]]):
            raise CandidateError(f"adapter {adapter}: recording the forward pass (wrapping embed_tokens, the layers "
                                 f"and the norm, and the sub-step taps) changed the logits of {plans[0]['scenario']}")
        # The same object again, after the other kind of prompt: text after MRoPE, MRoPE after text.
        order = [p for p in plans if p["kind"] == "text"] + [p for p in plans if p["kind"] != "text"]
        for plan in order:
            logits = run.run(plan, record=False)["logits"]
            key = f"p/{plan['scenario']}/logits_repeat"
            tensors[key] = logits
            meta["paths"][plan["scenario"]]["logits_repeat"] = key
        meta["provided"] = {"positions": run.provided["positions"], "substeps": sorted(run.provided["substeps"])}
        names = {k: f"t{i}" for i, k in enumerate(tensors)}
        np.savez(job_dir / "result.npz", **{names[k]: v for k, v in tensors.items()})
        meta["tensors"] = names
        (job_dir / "result.json").write_text(json.dumps(meta))
        return 0
    except CandidateError as exc:
        (job_dir / "error.json").write_text(json.dumps({"message": str(exc)}))
        return ERROR_EXIT
    except Exception as exc:  # noqa: BLE001 - the runner itself, e.g. no mlx in this interpreter
        traceback.print_exc()
        (job_dir / "error.json").write_text(json.dumps(
            {"message": f"the candidate runner failed in {sys.executable}: {type(exc).__name__}: {exc}"}))
        return ERROR_EXIT


# =============================================================================================
# Parent side: inside make_golden.py (after every reference path ran)


def candidate_file(args) -> Path | None:
    return None if getattr(args, "candidate", None) is None else Path(args.candidate).resolve()


def check_output(args, repo_root: Path) -> None:
    """Candidate goldens hold a user's results: never written into the repository's golden/."""
    if getattr(args, "candidate", None) is None:
        return
    golden = (repo_root / "golden").resolve()
    if Path(args.out).resolve().is_relative_to(golden):
        raise CandidateError(f"--candidate: refusing to write {args.out} inside {golden}: a candidate path is "
                             f"an implementation's output, not a reference; write it elsewhere "
                             f"(make golden ... CANDIDATE=... writes reports/candidates/)")


def _child(python: str, job_dir: Path, log) -> dict:
    # The generator's sys.path entries must not shadow the candidate's own packages; the child
    # needs numpy and mlx from its interpreter only.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        run = subprocess.run([python, str(Path(__file__).resolve()), "--serve", str(job_dir)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    except OSError as exc:
        raise CandidateError(f"--candidate-python {python}: cannot run it: {exc}") from exc
    for line in run.stderr.splitlines()[-40:]:
        log(f"  candidate | {line}")
    error = job_dir / "error.json"
    if error.exists():
        raise CandidateError(json.loads(error.read_text())["message"])
    if run.returncode != 0 or not (job_dir / "result.json").exists():
        tail = run.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise CandidateError(f"the candidate process ({python}) ended with status {run.returncode}: {tail[0]}")
    return json.loads((job_dir / "result.json").read_text())


@contextmanager
def _kept_dir(path: Path):
    path.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "result.npz", "error.json"):
        (path / stale).unlink(missing_ok=True)
    yield str(path)


def preflight(args, log) -> dict:
    """Import the adapter in its interpreter and read NAME, TEXT_ROUTE, describe(): a broken
    adapter fails before any reference runs."""
    path = candidate_file(args)
    python = args.candidate_python or sys.executable
    with tempfile.TemporaryDirectory(prefix="qwen-parity-candidate-") as tmp:
        job_dir = Path(tmp)
        (job_dir / "job.json").write_text(json.dumps({"adapter": str(path), "describe_only": True}))
        np.savez(job_dir / "arrays.npz")
        info = _child(python, job_dir, log)
    info["adapter"] = path
    info["python"] = python
    log(f"candidate {info['name']}: {path} (text route {info['text_route']}, "
        f"positions {'as stored state' if info['state_mode'] else 'per call'}) in {info['environment']['executable']}")
    return info


def _generate_style(schedule: list) -> bool:
    """The calls mlx-vlm's generate makes: the whole prompt's 3-D position_ids and rope_deltas with
    every prompt call (embeddings from one dataset or none), then decodes by id alone."""
    first = schedule[0]
    if first["cache"] != "new" or not first["reset_state"] or first["position_ids"] is None \
            or first["rope_deltas"] is None or first["left_padding"] is not None:
        return False
    prompt = [c for c in schedule if c["position_ids"] is not None]
    if schedule[:len(prompt)] != prompt:
        return False
    for c in prompt:
        if (c["position_ids"], c["rope_deltas"], c["embeddings"], c["tokens"]) != \
                (first["position_ids"], first["rope_deltas"], first["embeddings"], first["tokens"]) \
                or c["attention_mask"] is not None:
            return False
    for c in schedule[1:]:
        if c["cache"] != "keep" or c["reset_state"]:
            return False
    for c in schedule[len(prompt):]:
        if any(c[k] is not None for k in ("rope_deltas", "embeddings", "image_grid_thw", "attention_mask")):
            return False
    return True


def make_plans(results: list, store: dict, left_padding) -> tuple[list, dict, list]:
    """(plans, arrays they read by key, skipped [(scenario, reason)]) from make_golden's
    [(scenario, {path: PathRun})]."""
    plans, arrays, skipped = [], {}, []

    def ref(key, value=None):
        if key not in arrays:
            arrays[key] = np.asarray(store[key] if value is None else value)
        return key

    for sc, paths in results:
        if sc.kind in ("single", "batch") and "mlx_lm" in paths:
            lm = paths["mlx_lm"]
            if sc.kind == "batch":
                tokens = ref("/inputs/batch/sequence", np.concatenate(
                    [store["/inputs/batch/token_ids"], store["/inputs/batch/decode_tokens"].T], axis=1).astype(np.int32))
                lmax = store["/inputs/batch/token_ids"].shape[1]
                mask = ref("/inputs/batch/attention_mask",
                           (np.arange(lmax)[None, :] >= left_padding[:, None]).astype(np.int32))
            else:
                tokens = ref("/inputs/token_ids")
            calls, start = [], 0
            for i, n in enumerate(sc.calls):
                c = {"tokens": tokens, "start": start, "length": n, "reset": i == 0,
                     "cache": ("new" if sc.cached else "none") if i == 0 else "keep"}
                if sc.kind == "batch" and i == 0:
                    c["left_padding"] = ref("/inputs/batch/left_padding")
                    c["attention_mask"] = mask
                calls.append(c)
                start += n
            snapshot = 1 if sc.kind == "batch" else (len(sc.calls) if sc.cached else None)
            plans.append({"scenario": sc.name, "kind": "text", "reference": "mlx_lm", "calls": calls,
                          "snapshot_after": snapshot, "logits_positions": lm.logits_positions.tolist()})
            continue
        chosen = next((p for p in VLM_PATHS if p in paths and paths[p].schedule
                       and _generate_style(paths[p].schedule)), None)
        if chosen is None:
            reason = ("a text scenario without an mlx_lm path" if sc.kind in ("single", "batch") else
                      "no generate-style mlx-vlm schedule (the whole prompt's 3-D position_ids and rope_deltas "
                      "with every prompt call, then decodes by id): " + (sc.hazard or "explicit library calls"))
            skipped.append((sc.name, reason))
            continue
        run = paths[chosen]
        schedule, positions = run.schedule, run.result.position_ids
        first = schedule[0]
        calls, t0 = [], 0
        for i, s in enumerate(schedule):
            c = {"tokens": ref(s["tokens"]), "start": s["start"], "length": s["length"], "reset": i == 0,
                 "cache": s["cache"],
                 "positions": ref(f"candidate/{sc.name}/positions/{i}", positions[:, :, t0:t0 + s["length"]])}
            if s["embeddings"] is not None:
                c["embeddings"] = ref(s["embeddings"])
            if i == 0:
                c["state"] = {"position_ids": ref(first["position_ids"]), "rope_deltas": ref(first["rope_deltas"])}
            calls.append(c)
            t0 += s["length"]
        plans.append({"scenario": sc.name, "kind": sc.kind, "reference": chosen, "calls": calls,
                      "snapshot_after": None, "logits_positions": run.logits_positions.tolist()})
    return plans, arrays, skipped


def run(args, info: dict, config: dict, vlm_config: dict | None, effective: dict, weights: dict,
        store: dict, results: list, log) -> dict:
    """The candidate through every plan, in its own process; what write() stores."""
    plans, arrays, skipped = make_plans(results, store, store.get("/inputs/batch/left_padding"))
    job_arrays, weight_keys = {}, {}
    for i, (name, value) in enumerate(sorted(weights.items())):
        weight_keys[name] = f"w{i}"
        job_arrays[f"w{i}"] = value
    keys = {k: f"a{i}" for i, k in enumerate(sorted(arrays))}
    for k, v in arrays.items():
        job_arrays[keys[k]] = v

    def rename(plan):
        out = dict(plan, calls=[])
        for c in plan["calls"]:
            c = dict(c)
            for field in ("tokens", "embeddings", "positions", "left_padding", "attention_mask"):
                if c.get(field):
                    c[field] = keys[c[field]]
            if c.get("state"):
                c["state"] = {k: keys[v] for k, v in c["state"].items()}
            out["calls"].append(c)
        return out

    kinds = effective["layer_types"]
    job = {"adapter": str(info["adapter"]), "config": {"text_config": config, "vlm_config": vlm_config,
                                                        "layer_types": kinds},
           "weights": weight_keys, "layer_kinds": kinds, "vocab_size": effective["vocab_size"],
           "hidden_size": effective["hidden_size"], "plans": [rename(p) for p in plans],
           "cache_shapes": {"conv_state": [effective["linear_conv_kernel_dim"] - 1,
                                           2 * effective["linear_num_key_heads"] * effective["linear_key_head_dim"]
                                           + effective["linear_num_value_heads"] * effective["linear_value_head_dim"]],
                            "recurrent_state": [effective["linear_num_value_heads"], effective["linear_value_head_dim"],
                                                effective["linear_key_head_dim"]],
                            "kv_heads": effective["num_key_value_heads"], "head_dim": effective["head_dim"]}}
    # QWEN_PARITY_CANDIDATE_JOB_DIR keeps the job (and its result) in that folder, so a failing
    # adapter can be rerun alone: python tools/golden_candidates.py --serve DIR
    kept = os.environ.get("QWEN_PARITY_CANDIDATE_JOB_DIR")
    with (_kept_dir(Path(kept)) if kept else tempfile.TemporaryDirectory(prefix="qwen-parity-candidate-")) as tmp:
        job_dir = Path(tmp)
        (job_dir / "job.json").write_text(json.dumps(job))
        np.savez(job_dir / "arrays.npz", **job_arrays)
        out = _child(info["python"], job_dir, log)
        with np.load(job_dir / "result.npz") as z:
            tensors = {k: z[v] for k, v in out["tensors"].items()}
    paths = {}
    for plan in plans:
        entry = out["paths"].get(plan["scenario"])
        if entry is None:
            raise CandidateError(f"adapter {info['adapter']}: no results for scenario {plan['scenario']}")
        got = {}
        for key, value in entry.items():
            if key == "cache_after":
                got[key] = [{n: tensors[k] for n, k in layer.items()} for layer in value]
            elif key == "substeps":
                got[key] = {int(layer): {n: tensors[k] for n, k in names.items()} for layer, names in value.items()}
            else:
                got[key] = tensors[value]
        positions = np.array(plan["logits_positions"], dtype=np.int32)
        for key in ("logits", "logits_repeat"):
            if not np.all(np.isfinite(got[key])):  # checked per call in the child; the file is ours to guard
                raise CandidateError(f"adapter {info['adapter']}: scenario {plan['scenario']}: {key} hold NaN or Inf")
            got[key] = got[key][:, positions, :]
        got["logits_positions"] = positions
        paths[plan["scenario"]] = (plan, got)
        log(f"  {PATH_PREFIX + info['name']:<22} {plan['scenario']:<30} calls={len(plan['calls']):<3} "
            f"(as {plan['reference']})")
    for name, reason in skipped:
        log(f"  {PATH_PREFIX + info['name']:<22} {name:<30} skipped: {reason}")
    adapter = info["adapter"]
    return {"name": info["name"], "paths": paths, "attrs": {
        "adapter": os.path.relpath(adapter, REPO_ROOT) if adapter.is_relative_to(REPO_ROOT) else str(adapter),
        "adapter_sha256": hashlib.sha256(adapter.read_bytes()).hexdigest(),
        "text_reference": info["text_route"],
        "positions": "state" if info["state_mode"] else "per_call",
        "describe_json": json.dumps(info["describe"]),
        "environment_json": json.dumps(info["environment"]),
        "provided_json": json.dumps(out["provided"]),
        "skipped_json": json.dumps([{"scenario": s, "reason": r} for s, r in skipped]),
        "scenarios_json": json.dumps({p["scenario"]: p["reference"] for p in plans}),
    }}


REPO_ROOT = Path(__file__).resolve().parents[1]


def write(f, candidate: dict | None, shared: dict, put) -> None:
    """/candidates/<name> (provenance), /scenarios/<s>/candidate:<name> (results) and
    /probes/<s>/candidate:<name>/layer_XX_<kind> (sub-steps), with make_golden's put()."""
    if candidate is None:
        return
    root = f.require_group("candidates")
    root.attrs["generator"] = SOURCE
    root.attrs["generator_sha256"] = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    group = root.create_group(candidate["name"])
    for key, value in candidate["attrs"].items():
        group.attrs[key] = value
    path = PATH_PREFIX + candidate["name"]
    kinds = json.loads(f["config"].attrs["effective_json"])["layer_types"]
    for scenario, (plan, got) in candidate["paths"].items():
        p = f[f"scenarios/{scenario}"].create_group(path)
        p.attrs["reference"] = plan["reference"]
        # The calls as the candidate got them (positions: only for adapters without position state).
        p.attrs["calls_json"] = json.dumps([{k: v for k, v in c.items() if k != "positions"} for c in plan["calls"]])
        for key in ("hidden_states", "final_norm", "logits", "logits_repeat"):
            if key in got:
                put(p, key, got[key], "<f4", shared)
        put(p, "logits_positions", got["logits_positions"], "<i4", shared)
        if "position_ids" in got:
            put(p, "position_ids", got["position_ids"], "<i4", shared)
            put(p, "position_ids_rank", got["position_ids_rank"], "<i4", shared)
        for i, layer in enumerate(got.get("cache_after") or []):
            lg = p.create_group(f"cache_after/layer_{i:02d}")
            for key, value in layer.items():
                if key == "offset":
                    lg.attrs["offset"] = value
                else:
                    put(lg, key, value, "<f4", shared)
        steps = got.get("substeps") or {}
        if steps:
            pg = f.require_group("probes").require_group(scenario).create_group(path)
            pg.attrs["layers_json"] = json.dumps({str(i): "gdn" if kinds[i] == "linear_attention" else "attn"
                                                  for i in sorted(steps)})
            for i in sorted(steps):
                short = "gdn" if kinds[i] == "linear_attention" else "attn"
                lg = pg.create_group(f"layer_{i:02d}_{short}")
                lg.attrs["probes_json"] = json.dumps(sorted(steps[i]))
                for name, value in sorted(steps[i].items()):
                    put(lg, name, value, "<f4", shared)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        sys.exit(serve(Path(sys.argv[2])))
    sys.exit("usage: golden_candidates.py --serve JOBDIR  (started by tools/make_golden.py --candidate)")
