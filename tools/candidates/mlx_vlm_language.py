"""Candidate adapter: mlx-vlm's own LanguageModel, driven per call the way mlx-vlm's generate
drives it (the whole prompt's position_ids and rope_deltas with every prompt call, decodes by id
alone). It is the library the mlx-vlm paths come from, so it must agree with them bit for bit on
every scenario it runs; a check of the candidate mechanism itself.

Its text calls take mlx-vlm's own text route (positions from get_rope_index), which is mlx-vlm's
arithmetic and not mlx-lm's, so it declares TEXT_ROUTE = "mlx_vlm": its text schedules are held
to the golden's mlx_vlm paths.
"""

from __future__ import annotations

import importlib

import mlx.core as mx

NAME = "mlx_vlm_language"
TEXT_ROUTE = "mlx_vlm"


class Candidate:
    def __init__(self, module, lm):
        self.module = module
        self.lm = lm
        self.state = None   # (position_ids [3, B, Lp], rope_deltas [B, 1]) of an MRoPE prompt


class _Spy:
    """Stands in for LanguageModel.model for one call: keeps the position_ids it was given."""

    def __init__(self, inner, sink):
        self._inner, self._sink = inner, sink

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __call__(self, *args, **kwargs):
        self._sink.append(kwargs.get("position_ids"))
        return self._inner(*args, **kwargs)


def describe():
    import importlib.metadata as m
    return {"what": "mlx-vlm's LanguageModel driven like mlx-vlm's generate", "mlx_vlm": m.version("mlx-vlm")}


def build(config, weights):
    vlm = config["vlm_config"]
    if vlm is None:
        raise ValueError("this golden has no mlx-vlm config (written with --vlm-extras off)")
    module = importlib.import_module(f"mlx_vlm.models.{vlm['model_type']}")
    model_config = module.ModelConfig.from_dict(vlm)
    lm = module.LanguageModel(model_config.text_config, model_config)
    lm.eval()
    lm.load_weights([(name.removeprefix("language_model."), value) for name, value in weights.items()], strict=True)
    mx.eval(lm.parameters())
    return Candidate(module, lm)


def text_model(c):
    return c.lm.model


def reset(c):
    c.lm._position_ids = None
    c.lm._rope_deltas = None
    c.state = None


def set_position_state(c, position_ids, rope_deltas):
    c.state = (position_ids, rope_deltas)


def make_cache(c, left_padding):
    if left_padding is None:
        return c.lm.make_cache()
    from mlx_vlm.models import cache as vlm_cache
    return [vlm_cache.ArraysCache(2, left_padding=left_padding) if layer.is_linear
            else vlm_cache.BatchKVCache(left_padding) for layer in c.lm.model.layers]


def forward(c, inputs, *, cache, input_embeddings=None, position_ids=None, attention_mask=None):
    kwargs = {}
    if input_embeddings is not None:
        kwargs["inputs_embeds"] = input_embeddings
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if c.state is not None:
        full, deltas = c.state
        offset = 0 if cache is None else int(cache[c.lm.model.fa_idx].offset)
        if offset < full.shape[-1]:   # a prompt call: generate passes the whole prompt's positions
            kwargs["position_ids"], kwargs["rope_deltas"] = full, deltas
    used = []
    inner = c.lm["model"]
    c.lm["model"] = _Spy(inner, used)
    try:
        out = c.lm(inputs, cache=cache, **kwargs)
    finally:
        c.lm["model"] = inner
    return {"logits": out.logits, "positions": used[0] if used else None}


def substeps(c, taps):
    language = importlib.import_module(f"{c.module.__name__}.language")
    gated_delta = importlib.import_module(f"{c.module.__name__}.gated_delta")
    taps.standard(c.lm.model)

    def recurrence(a, k, o):
        cache = k.get("cache")
        return {"q_normed": a[0], "k_normed": a[1], "v": a[2], "core_out": o[0],
                "final_state": cache[1] if cache is not None else o[1]}

    taps.function(language, "gated_delta_update", recurrence)
    taps.function(gated_delta, "_compute_g_beta", lambda a, k, o: {"g": o[0], "beta": o[1]})
    taps.function(language, "scaled_dot_product_attention", lambda a, k, o: {"sdpa": o})
    taps.function(language, "apply_multimodal_rotary_pos_emb", lambda a, k, o: {"q_rope": o[0], "k_rope": o[1]})
