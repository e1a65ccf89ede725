"""Recording the library's own forward pass (shared by mlx-lm and mlx-vlm), and what a run
of one reference path gives."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

import mlx.core as mx
from mlx_lm.models import cache as lm_cache
from mlx_vlm.models import cache as vlm_cache

from .errors import GoldenError


class Recorder:
    """Stands in for a module: forwards attribute reads (e.g. is_linear, as_linear) and
    records the output of every call."""

    def __init__(self, module, sink: list):
        self._module = module
        self._sink = sink

    def __getattr__(self, name):
        return getattr(self._module, name)

    def __call__(self, *args, **kwargs):
        out = self._module(*args, **kwargs)
        self._sink.append(out)
        return out


@contextmanager
def recording(inner):
    """Wrap embed_tokens, every decoder layer and the final norm of an inner text model
    (mlx-lm's model.language_model.model, mlx-vlm's LanguageModel.model).
    Yields {"embed": [...], "layers": [[...] per layer], "norm": [...]} (one entry per call)."""
    layers = inner.layers  # the list the forward loop slices (pipeline_layers) at call time
    originals = (inner["embed_tokens"], inner["norm"], list(layers))
    records = {"embed": [], "layers": [[] for _ in layers], "norm": []}
    try:
        # Module attributes live in the Module's dict; replacing the entry is fully reversible.
        inner["embed_tokens"] = Recorder(originals[0], records["embed"])
        inner["norm"] = Recorder(originals[1], records["norm"])
        for i, layer in enumerate(originals[2]):
            layers[i] = Recorder(layer, records["layers"][i])
        yield records
    finally:
        inner["embed_tokens"], inner["norm"] = originals[0], originals[1]
        layers[:] = originals[2]


def to_numpy(a) -> np.ndarray:
    """An mx array as numpy; bf16/f16 (which numpy lacks or which the goldens do not store)
    widened to float32, exactly."""
    if a.dtype in (mx.bfloat16, mx.float16):
        a = a.astype(mx.float32)
    return np.array(a)


# mlx-vlm has its own cache classes with the same interface as mlx-lm's.
ARRAYS_CACHES = (lm_cache.ArraysCache, vlm_cache.ArraysCache)
BATCH_KV_CACHES = (lm_cache.BatchKVCache, vlm_cache.BatchKVCache)
KV_CACHES = (lm_cache.KVCache, vlm_cache.KVCache)


def cache_arrays(cache) -> list:
    arrays = []
    for c in cache or []:
        if isinstance(c, ARRAYS_CACHES):
            arrays += [a for a in c.cache if a is not None]
        elif c.keys is not None:
            arrays += [c.keys, c.values]
    return arrays


def snapshot_cache(cache) -> list[dict]:
    """Cache contents trimmed to the real length, as numpy, one dict per layer."""
    snap = []
    for c in cache:
        if isinstance(c, ARRAYS_CACHES):
            snap.append({"conv_state": to_numpy(c[0]), "recurrent_state": to_numpy(c[1])})
        elif isinstance(c, BATCH_KV_CACHES):  # _idx is the shared write cursor; offset is per row
            n = c._idx
            snap.append({"keys": to_numpy(c.keys[..., :n, :]),
                         "values": to_numpy(c.values[..., :n, :]),
                         "offset": np.array(c.offset).astype(np.int64)})
        elif isinstance(c, KV_CACHES):
            n = c.offset
            snap.append({"keys": to_numpy(c.keys[..., :n, :]),
                         "values": to_numpy(c.values[..., :n, :]), "offset": int(n)})
        else:
            raise GoldenError(f"unexpected cache type {type(c).__module__}.{type(c).__name__}")
    return snap


@dataclass
class RunResult:
    hidden_states: np.ndarray   # [n_layers+1, B, T, D]
    final_norm: np.ndarray      # [B, T, D]
    logits: np.ndarray          # [B, T, V], every position of every call
    cache_after: list | None


@dataclass
class PathRun:
    """What one reference path of one scenario stores."""
    result: RunResult
    logits_positions: np.ndarray       # time indices whose logits are written
    schedule: list | None = None       # mlx-vlm paths: the LanguageModel calls (schedule_json)


def check_finite(sc, result: RunResult) -> None:
    arrays = {"hidden_states": result.hidden_states, "final_norm": result.final_norm,
              "logits": result.logits}
    for i, layer in enumerate(result.cache_after or []):
        arrays.update({f"cache layer {i} {k}": v for k, v in layer.items() if k != "offset"})
    for what, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise GoldenError(f"scenario {sc.name}: non-finite values in {what}")
