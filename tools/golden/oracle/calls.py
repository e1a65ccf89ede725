"""The golden's scenarios as transformers calls, and running them with hooks on the text model."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from .errors import OracleError
from .torch_env import np_dtype, precision

LM_PATH, VLM_PATH = "mlx_lm", "mlx_vlm"


@dataclass
class Call:
    length: int
    input_ids: np.ndarray | None = None         # [B, L]
    inputs_embeds: np.ndarray | None = None     # [B, L, D]
    position_ids: np.ndarray | None = None      # [3, B, L] or [B, L]; None: transformers' default
    attention_mask: np.ndarray | None = None    # [B, past + L]
    cache: str = "keep"                         # "none" | "new" | "keep"
    vision: dict | None = None                  # image prompt: pixel_values, image_grid_thw, mm_token_type_ids

    def describe(self, model: str) -> dict:
        return {"model": model, "length": self.length,
                "inputs": "input_ids" if self.inputs_embeds is None else "inputs_embeds",
                "position_ids": None if self.position_ids is None else f"explicit {self.position_ids.ndim}-D",
                "attention_mask": self.attention_mask is not None, "cache": self.cache,
                "pixel_values": self.vision is not None}



def cache_snapshot(torch, cache, offset) -> list[dict]:
    """transformers' DynamicCache in the golden's cache_after layout."""
    from transformers.cache_utils import LinearAttentionCacheLayerMixin
    snap = []
    for i, layer in enumerate(cache.layers):
        if isinstance(layer, LinearAttentionCacheLayerMixin):
            conv = layer.conv_states[0]          # [B, Cc, K]: the last K conv inputs
            state = layer.recurrent_states[0]    # [B, Hv, dk, dv]
            snap.append({"conv_state": conv[:, :, 1:].transpose(1, 2).numpy().copy(),
                         "recurrent_state": state.transpose(-1, -2).numpy().copy()})
        else:
            snap.append({"keys": layer.keys.numpy().copy(), "values": layer.values.numpy().copy(),
                         "offset": offset})
    return snap


def run_calls(torch, mode, model, calls: list[Call], snapshot_after: int | None, offset_of,
              around=None) -> tuple:
    """Run calls through `model` (CausalLM or ConditionalGeneration); per call the hidden states
    (layer 0's input, every layer's output), the final norm, the logits and the positions the
    text model was given. around(text_model): a context manager the calls run in (probes)."""
    from transformers import DynamicCache
    text = model.model.language_model if hasattr(model.model, "language_model") else model.model
    rec = {"embed": [], "layers": [[] for _ in text.layers], "norm": [], "positions": []}
    hooks = [text.layers[0].register_forward_pre_hook(lambda m, a, kw: rec["embed"].append(
                 (a[0] if a else kw["hidden_states"]).numpy().copy()), with_kwargs=True),
             text.norm.register_forward_hook(lambda m, a, o: rec["norm"].append(o.numpy().copy())),
             text.register_forward_pre_hook(lambda m, a, kw: rec["positions"].append(kw.get("position_ids")),
                                            with_kwargs=True)]
    for i, layer in enumerate(text.layers):
        hooks.append(layer.register_forward_hook(
            lambda m, a, o, i=i: rec["layers"][i].append((o[0] if isinstance(o, tuple) else o).numpy().copy())))
    logits, cache, snapshot, described = [], None, None, []
    if hasattr(model.model, "rope_deltas"):
        model.model.rope_deltas = None
    try:
        with precision(torch, mode), (around(text) if around else nullcontext()):
            for i, call in enumerate(calls):
                if call.cache == "new":
                    cache = DynamicCache(config=text.config)
                elif call.cache == "none":
                    cache = None
                kw = {"cache": cache, "use_cache": cache is not None}
                if call.inputs_embeds is not None:
                    kw["inputs_embeds"] = torch.from_numpy(call.inputs_embeds.astype(np_dtype(mode)))
                else:
                    kw["input_ids"] = torch.from_numpy(call.input_ids.astype(np.int64))
                if call.position_ids is not None:
                    kw["position_ids"] = torch.from_numpy(call.position_ids.astype(np.int64))
                if call.attention_mask is not None:
                    kw["attention_mask"] = torch.from_numpy(call.attention_mask.astype(np.int64))
                if call.vision is not None:
                    kw["pixel_values"] = torch.from_numpy(call.vision["pixel_values"].astype(np_dtype(mode)))
                    kw["image_grid_thw"] = torch.from_numpy(call.vision["image_grid_thw"].astype(np.int64))
                    kw["mm_token_type_ids"] = torch.from_numpy(call.vision["mm_token_type_ids"].astype(np.int64))
                out = model(**kw)
                logits.append(out.logits.numpy().copy())
                described.append(call.describe(type(model).__name__))
                if snapshot_after is not None and i + 1 == snapshot_after:
                    snapshot = cache_snapshot(torch, cache, offset_of(cache))
    finally:
        for h in hooks:
            h.remove()
    n = len(calls)
    if len(rec["embed"]) != n or len(rec["norm"]) != n or any(len(r) != n for r in rec["layers"]):
        raise OracleError("recorded a different number of layer calls than model calls")
    positions = []
    for call, p in zip(calls, rec["positions"]):
        B, L = logits[len(positions)].shape[:2]
        if p is None:
            raise OracleError("the text model ran without position ids")
        p = p.numpy()
        if p.ndim == 3 and p.shape[0] == 4:   # [text; T; H; W] as ConditionalGeneration may pass
            p = p[1:]
        positions.append(np.broadcast_to(p if p.ndim == 3 else p[None], (3, B, L)))

    def cat(records):
        return np.concatenate(records, axis=1)
    hidden = np.stack([cat(rec["embed"])] + [cat(r) for r in rec["layers"]])
    return hidden, cat(rec["norm"]), np.concatenate(logits, axis=1), \
        np.concatenate(positions, axis=2).astype(np.int32), snapshot, described


# ---------------------------------------------------------------------------------------------
# The scenarios as transformers calls


def text_calls(sc, store: dict) -> tuple[list[Call], int | None, object]:
    """A text scenario (kind single or batch) as CausalLM calls with transformers' caches."""
    if sc.kind == "single":
        tokens = store["/inputs/token_ids"]
        calls, start = [], 0
        for i, n in enumerate(sc.calls):
            cache = ("new" if sc.cached else "none") if i == 0 else "keep"
            calls.append(Call(n, input_ids=tokens[:, start:start + n],
                              position_ids=np.arange(start, start + n)[None], cache=cache))
            start += n
        return calls, (len(calls) if sc.cached else None), lambda cache: int(start)
    # Left-padded rows: the 2-D attention mask transformers takes (zeros on the padding, which
    # its GatedDeltaNet also uses to zero the padded inputs), positions counted from each row's
    # first real token as generate does (cumsum(mask) - 1; padding gets 1).
    prompt = store["/inputs/batch/token_ids"]
    decode = store["/inputs/batch/decode_tokens"].T
    pad = store["/inputs/batch/left_padding"].astype(np.int64)
    tokens = np.concatenate([prompt, decode], axis=1)
    mask = (np.arange(tokens.shape[1])[None, :] >= pad[:, None]).astype(np.int64)
    positions = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 1)
    calls, start = [], 0
    for i, n in enumerate(sc.calls):
        calls.append(Call(n, input_ids=tokens[:, start:start + n], position_ids=positions[:, start:start + n],
                          attention_mask=mask[:, :start + n], cache="new" if i == 0 else "keep"))
        start += n
    lmax = prompt.shape[1]
    return calls, 1, lambda cache: (lmax - pad).astype(np.int64)


def mrope_calls(vs, store: dict) -> list[Call]:
    """An MRoPE scenario from its mlx_vlm schedule: the same tokens or embeddings, the 3-D
    positions given with the prompt calls (sliced at the cache offset as mlx-vlm slices them),
    and offset + rope delta on the calls without them."""
    calls, delta = [], None
    for c in vs.paths[VLM_PATH]:
        start, n = c["start"], c["length"]
        ids = store[c["tokens"]][:, start:start + n]
        call = Call(n, cache=c["cache"])
        if c["embeddings"] is not None:
            call.inputs_embeds = store[c["embeddings"]][:, start:start + n]
        else:
            call.input_ids = ids
        if c["rope_deltas"] is not None:
            delta = store[c["rope_deltas"]].astype(np.int64)          # [B, 1]
        if c["position_ids"] is not None:
            p = store[c["position_ids"]]
            call.position_ids = p[..., start:start + n] if p.shape[-1] > n else p
        else:
            base = np.arange(start, start + n)[None, :] + (0 if delta is None else delta)
            call.position_ids = np.broadcast_to(base[None], (3, *base.shape)).copy()
        if c["attention_mask"] is not None or c["left_padding"] is not None or c["image_grid_thw"] is not None:
            raise OracleError(f"{vs.name}: call {c} needs more than ids, embeddings and positions")
        calls.append(call)
    return calls


def image_calls(vs, store: dict, image_token_id: int) -> list[Call]:
    """An image prompt as ConditionalGeneration takes it: the prompt ids with the pixel values,
    grids and mm_token_type_ids on the first call (transformers runs the tower, merges and
    computes the 3-D positions itself), then the remaining calls by id (rope deltas kept)."""
    g = vs.vision_inputs
    ids = store[g + "/token_ids"]
    schedule = vs.paths[VLM_PATH]
    calls = []
    for i, c in enumerate(schedule):
        start, n = c["start"], c["length"]
        call = Call(n, input_ids=ids[:, start:start + n], cache=c["cache"])
        if i == 0:
            if start != 0 or c["cache"] != "new":
                raise OracleError(f"{vs.name}: the first call does not start the prompt")
            call.vision = {"pixel_values": store[g + "/pixel_values"],
                           "image_grid_thw": store[g + "/image_grid_thw"],
                           "mm_token_type_ids": (ids[:, :n] == image_token_id).astype(np.int64)}
        elif (ids[:, start:start + n] == image_token_id).any():
            raise OracleError(f"{vs.name}: image tokens after the first call")
        calls.append(call)
    return calls


