"""mlx-lm: the model built as mlx_lm.utils.load_model builds it, random weights, and every text
scenario run through it (path mlx_lm)."""

from __future__ import annotations

import time

import numpy as np

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models import cache as lm_cache
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import _get_classes

from . import progress
from .errors import GoldenError, library, log
from .inputs import Inputs
from .recording import (PathRun, RunResult, cache_arrays, check_finite, recording,
                        snapshot_cache, to_numpy)
from .scenarios import Scenario, logits_positions

# Norm weights whose runtime value is "1 + w": drawn around 1 so an off-by-one is visible.
NORM_SUFFIXES = (".input_layernorm.weight", ".post_attention_layernorm.weight",
                 "model.norm.weight", ".q_norm.weight", ".k_norm.weight",
                 ".linear_attn.norm.weight")
# Embedding scale: N(0, 1) rows when untied. Tied models reuse the embedding as the output
# projection, where N(0, 1) rows would give |logits| ~ 40, so they get rows of norm ~ 1.
EMBED_SCALE_UNTIED = 1.0
EMBED_SCALE_TIED = 0.1


def build_model(config: dict):
    """Instantiate the model the way mlx_lm.utils.load_model does (no weights yet)."""
    with library("mlx-lm", "building the model from the config"):
        model_class, args_class = _get_classes(config=config)
        model = model_class(args_class.from_dict(config))
        model.eval()  # load_model does this too; it selects the inference path of the GDN
    return model


def init_parameter(name: str, shape: tuple, rng: np.random.Generator, tied: bool) -> np.ndarray:
    """A realistic, non-trivial random value for one runtime parameter."""
    if name.endswith(NORM_SUFFIXES):
        return 1.0 + 0.1 * rng.standard_normal(shape)
    if name.endswith(".A_log"):
        return np.log(rng.uniform(1.0, 16.0, shape))
    if name.endswith(".dt_bias"):
        return rng.uniform(-0.5, 0.5, shape)
    if name.endswith("conv1d.weight"):  # [C, K, 1], depthwise: fan-in is K
        return rng.standard_normal(shape) * shape[1] ** -0.5
    if name.endswith("embed_tokens.weight"):
        return rng.standard_normal(shape) * (EMBED_SCALE_TIED if tied else EMBED_SCALE_UNTIED)
    if name.endswith(".weight") and len(shape) in (2, 3):  # Linear / SwitchLinear [.., out, in]
        return rng.standard_normal(shape) * shape[-1] ** -0.5
    if name.endswith(".bias"):
        return 0.1 * rng.standard_normal(shape)
    raise GoldenError(f"no initialisation rule for parameter {name} {shape}")


def random_weights(model, seed: int) -> dict[str, mx.array]:
    rng = np.random.default_rng(seed)
    tied = bool(model.language_model.args.tie_word_embeddings)
    names = dict(tree_flatten(model.parameters()))
    weights = {}
    for name in sorted(names):  # sorted: the draw order must not depend on module order
        value = init_parameter(name, tuple(names[name].shape), rng, tied)
        weights[name] = mx.array(value.astype(np.float32))
    return weights


def load_random_weights(model, seed: int) -> dict[str, np.ndarray]:
    """Draw weights, check sanitize leaves runtime layout alone, load strictly, and return
    exactly what the model now holds."""
    weights = random_weights(model, seed)
    with library("mlx-lm", "sanitizing the random runtime-layout weights"):
        sanitized = model.sanitize(dict(weights))
    if sorted(sanitized) != sorted(weights):
        raise GoldenError("sanitize changed the parameter names of a runtime-layout checkpoint")
    for name, value in sanitized.items():
        if value.shape != weights[name].shape or not mx.array_equal(value, weights[name]).item():
            raise GoldenError(f"sanitize is not a fixed point for {name}")
    with library("mlx-lm", "loading the random weights (strict)"):
        model.load_weights(list(sanitized.items()), strict=True)
        mx.eval(model.parameters())
    loaded = {k: np.array(v, dtype=np.float32) for k, v in tree_flatten(model.parameters())}
    assert sorted(loaded) == sorted(weights)
    return loaded


def run_calls(model, tokens: np.ndarray, calls: list[int], cache, snapshot_after: int,
              doing: str):
    """Feed tokens[:, t0:t0+n] for every n in calls through mlx-lm's model(ids, cache=cache),
    recording hidden states; snapshot the cache after the first snapshot_after calls. doing:
    what a library finding says the run was."""
    if sum(calls) != tokens.shape[1]:
        raise GoldenError(f"calls {calls} do not cover {tokens.shape[1]} tokens")
    logits, snapshot, t0 = [], None, 0
    n_calls_total = len(calls)
    with recording(model.language_model.model) as rec:
        for i, n in enumerate(calls):
            with library("mlx-lm", f"{doing}, call {i + 1} of {len(calls)} ({n} tokens)"):
                out = model(mx.array(tokens[:, t0:t0 + n]), cache=cache)
                # Evaluate per call like generate_step does, so graphs never span calls.
                mx.eval(out, rec["embed"], rec["layers"], rec["norm"], cache_arrays(cache))
            logits.append(to_numpy(out))
            t0 += n
            progress.call(doing, i + 1, n_calls_total, n * tokens.shape[0])
            if cache is not None and i + 1 == snapshot_after:
                snapshot = snapshot_cache(cache)
    n_calls = len(calls)
    if len(rec["embed"]) != n_calls or len(rec["norm"]) != n_calls or \
            any(len(r) != n_calls for r in rec["layers"]):
        raise GoldenError("recorded a different number of module calls than model calls")

    def cat(records):
        return np.concatenate([to_numpy(a) for a in records], axis=1)

    hidden = np.stack([cat(rec["embed"])] + [cat(r) for r in rec["layers"]])
    return RunResult(hidden, cat(rec["norm"]), np.concatenate(logits, axis=1), snapshot)


def left_padded_cache(model, left_padding: np.ndarray) -> list:
    """The batch cache a left-padded prompt needs: BatchKVCache for attention layers and
    ArraysCache with left_padding for GDN layers. The padding must go to the constructors
    as a Python list: ArraysCache tests it for truthiness (numpy/mx arrays fail), and
    ArraysCache.prepare() has no left_padding (it only sets lengths)."""
    lp = [int(x) for x in left_padding]
    cache = []
    with library("mlx-lm", "making the left-padded batch cache"):
        for c in make_prompt_cache(model):
            if isinstance(c, lm_cache.ArraysCache):
                cache.append(lm_cache.ArraysCache(len(c.cache), left_padding=lp))
            elif isinstance(c, lm_cache.KVCache):
                cache.append(lm_cache.BatchKVCache(lp))
            else:
                raise GoldenError(f"no batched equivalent for cache type {type(c).__name__}")
    return cache


def run_scenario(model, sc: Scenario, inputs: Inputs) -> RunResult:
    doing = f"running scenario {sc.name}"
    if sc.kind == "batch":
        tokens = np.concatenate([inputs.batch_tokens, inputs.decode_tokens.T], axis=1)
        cache = left_padded_cache(model, inputs.left_padding)
        return run_calls(model, tokens, sc.calls, cache, snapshot_after=1, doing=doing)
    with library("mlx-lm", f"{doing}: make_prompt_cache"):
        cache = make_prompt_cache(model) if sc.cached else None
    return run_calls(model, inputs.token_ids, sc.calls, cache, snapshot_after=len(sc.calls),
                     doing=doing)


def check_recording_is_transparent(model, token_ids: np.ndarray) -> None:
    """The wrappers must not change a single bit of the output."""
    doing = "running the whole prompt without a cache (the recording check)"
    with library("mlx-lm", doing):
        plain = model(mx.array(token_ids))
        mx.eval(plain)
    recorded = run_calls(model, token_ids, [token_ids.shape[1]], None, 0, doing).logits
    if not np.array_equal(to_numpy(plain), recorded):
        raise GoldenError("recording the forward pass changed the logits")


def run_all(model, scenarios: list, inputs: Inputs, label: str) -> list[PathRun]:
    """Every text scenario through mlx-lm's model, as the path `label`."""
    # The recording check runs the prompt once more before the scenarios.
    total = inputs.token_ids.shape[1] + sum(scenario_tokens(sc, inputs) for sc in scenarios)
    with progress.path(label, total):
        return run_each(model, scenarios, inputs, label)


def scenario_tokens(sc: Scenario, inputs: Inputs) -> int:
    """Tokens a scenario feeds the model, every row of a batch counted (progress estimates)."""
    rows = inputs.batch_tokens.shape[0] if sc.kind == "batch" else 1
    return sum(sc.calls) * rows


def run_each(model, scenarios: list, inputs: Inputs, label: str) -> list[PathRun]:
    check_recording_is_transparent(model, inputs.token_ids)
    out = []
    for sc in scenarios:
        t = time.monotonic()
        result = run_scenario(model, sc, inputs)
        check_finite(sc, result)
        positions = logits_positions(sc)
        out.append(PathRun(result, positions))
        peak = float(np.abs(result.logits[:, positions, :]).max())
        log(f"  {label:<10} {sc.name:<20} calls={len(sc.calls):<3} max|logits|={peak:.3f} "
            f"({time.monotonic() - t:.2f}s)")
    return out
