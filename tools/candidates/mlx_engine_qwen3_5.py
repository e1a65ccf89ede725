"""Candidate adapter: mlx-engine's patched Qwen 3.5 model (lmstudio-ai/mlx-engine, the "Qwen 3.5
Unified" change, PR #298, and its later HEAD), imported from a local checkout. No line of
mlx-engine is in this repository: point MLX_ENGINE_DIR at a checkout and run it in a virtualenv
of its own that holds what the patch imports (mlx, mlx-lm, mlx-vlm at this repository's pins):

    MLX_ENGINE_DIR=<engine checkout> make golden CONFIG=tools/configs/tiny-dense.json \\
        CANDIDATE=tools/candidates/mlx_engine_qwen3_5.py CANDIDATE_PYTHON=<engine venv>/bin/python

The patch file (mlx_engine/model_kit/patches/qwen3_5.py) is loaded by its path, not through the
mlx_engine package, whose __init__ imports the whole engine. Its apply_patches() runs in the
candidate's own process (the references are computed elsewhere); mlx-lm's Model built after it
holds the patched text model and decoder layers. The model is driven as the engine drives it:
reset_mrope_state() before every prediction (the vision add-on's clear_prediction_state), the
prompt's position_ids [3, 1, L] and a scalar rope delta set on the text model for an image
prompt, then model(inputs, cache=..., input_embeddings=...).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
from pathlib import Path

import mlx.core as mx

NAME = "mlx_engine"
TEXT_ROUTE = "mlx_lm"
PATCH = "mlx_engine/model_kit/patches/qwen3_5.py"
_patch = None


def _checkout() -> Path:
    value = os.environ.get("MLX_ENGINE_DIR")
    if not value:
        raise RuntimeError("set MLX_ENGINE_DIR to a checkout of lmstudio-ai/mlx-engine")
    path = Path(value).resolve()
    if not (path / PATCH).is_file():
        raise RuntimeError(f"MLX_ENGINE_DIR={value} has no {PATCH}")
    return path


def _patch_module():
    global _patch
    if _patch is None:
        spec = importlib.util.spec_from_file_location("mlx_engine_qwen3_5_patch", _checkout() / PATCH)
        _patch = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_patch)
    return _patch


def describe():
    import importlib.metadata as m
    root = _checkout()
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"what": "lmstudio-ai/mlx-engine's patched Qwen 3.5 text model (PatchedQwen3_5TextModel)",
            "checkout": str(root), "commit": commit, "patch_file": PATCH,
            "patch_sha256": hashlib.sha256((root / PATCH).read_bytes()).hexdigest(),
            "mlx_lm": m.version("mlx-lm"), "mlx_vlm": m.version("mlx-vlm")}


def build(config, weights):
    patch = _patch_module()
    patch.apply_patches()
    import importlib
    # mlx-lm's class for the config's model_type, built after the patch as load_model would.
    family = importlib.import_module(f"mlx_lm.models.{config['text_config']['model_type']}")
    model = family.Model(family.ModelArgs.from_dict(config["text_config"]))
    if not isinstance(model.language_model.model, patch.PatchedQwen3_5TextModel):
        raise RuntimeError("apply_patches() did not replace mlx-lm's Qwen3_5TextModel")
    model.load_weights(list(weights.items()), strict=True)
    model.eval()
    mx.eval(model.parameters())
    return model


def text_model(model):
    return model.language_model.model


def reset(model):
    text_model(model).reset_mrope_state()


def set_position_state(model, position_ids, rope_deltas):
    tm = text_model(model)
    tm.position_ids = position_ids
    # The engine's vision add-on stores one prompt's delta as a scalar.
    tm.rope_deltas = rope_deltas.reshape(()) if rope_deltas.size == 1 else rope_deltas


def make_cache(model, left_padding):
    from mlx_lm.models import cache as lm_cache
    cache = model.make_cache()
    if left_padding is None:
        return cache
    return [lm_cache.ArraysCache(len(c.cache), left_padding=left_padding) if isinstance(c, lm_cache.ArraysCache)
            else lm_cache.BatchKVCache(left_padding) for c in cache]


def forward(model, inputs, *, cache, input_embeddings=None, position_ids=None, attention_mask=None):
    tm = text_model(model)
    used = []
    resolve = tm._compute_position_ids

    def spy(*args, **kwargs):   # what the engine resolved for this call (None: the mlx-lm route)
        out = resolve(*args, **kwargs)
        used.append(out)
        return out

    tm._compute_position_ids = spy
    try:
        logits = model(inputs, cache=cache, input_embeddings=input_embeddings)
    finally:
        del tm._compute_position_ids
    return {"logits": logits, "positions": used[0] if used else None}


def substeps(model, taps):
    from mlx_lm.models import gated_delta, qwen3_5, qwen3_next
    patch = _patch_module()
    taps.standard(text_model(model))
    recurrence = lambda a, k, o: {"v": a[2], "core_out": o[0], "final_state": o[1]}  # noqa: E731
    # The text route: mlx-lm's own modules and functions.
    taps.function(qwen3_5, "normalize_qk", lambda a, k, o: {"q_normed": o[0], "k_normed": o[1]})
    taps.function(qwen3_5, "gated_delta_update", recurrence)
    taps.function(qwen3_next, "scaled_dot_product_attention", lambda a, k, o: {"sdpa": o})
    # The MRoPE route: the names the patch calls; its q/k normalisation is inline, so the
    # normalised q and k are read where they enter the recurrence.
    taps.function(patch, "gated_delta_update", lambda a, k, o: {"q_normed": a[0], "k_normed": a[1], **recurrence(a, k, o)})
    taps.function(patch, "scaled_dot_product_attention", lambda a, k, o: {"sdpa": o})
    taps.function(patch, "apply_multimodal_rotary_pos_emb", lambda a, k, o: {"q_rope": o[0], "k_rope": o[1]})
    taps.function(gated_delta, "gated_delta_ops", lambda a, k, o: {"g": a[3], "beta": a[4]})
