"""mlx-vlm: the same weights through mlx_vlm's LanguageModel (path mlx_vlm), the vlm-only
scenarios (MRoPE vectors, chunked sweeps, stateful hazards), /rope_index, and the image prompts.

mlx-vlm loads a Qwen 3.5 checkpoint as Model(ModelConfig) = vision tower + LanguageModel. The
text goldens need no vision tower: the LanguageModel is built alone from the same ModelConfig,
and image features are stand-in rows in input_embeddings. Its weights are the mlx-lm runtime
tensors under mlx-vlm's names (language_model.model.X -> model.X, language_model.lm_head ->
lm_head), so they are stored once, under /weights."""

from __future__ import annotations

import importlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_vlm.models import cache as vlm_cache

from . import distances, probes, progress, vision
from .configs import SPECIAL_TOKEN_KEYS, ModelSpec
from .errors import GoldenError, UsageError, library, log
from .inputs import Inputs, TokenIds
from .recording import PathRun, RunResult, cache_arrays, check_finite, recording, snapshot_cache
from .scenarios import (IMAGE_GRID_BLOCKS, LM_PATH, MROPE_DECODE_STEPS, SMALL_BATCH_DECODE_STEPS,
                        SMALL_BATCH_LENGTHS, UPSTREAM_CHUNK_CASES, UPSTREAM_PREFILL_DECODE,
                        VLM_CORRECT_PATH, VLM_PATH, VlmScenario, hazard_scenarios,
                        image_scenario, mrope_scenarios, vlm_call, vlm_logits_positions,
                        vlm_text_schedule)

# The special token ids of the prompts are the config's own (ModelConfig fields; mlx-vlm's
# defaults 248045..248057 lie outside small vocabularies) or, without them, V-5..V-2 (995..998
# for the tiny vocabulary of 1000): configs.special_token_ids. Text ids never collide with
# them: inputs.TokenIds.
# golden/ has a size budget (docs/golden-format.md, "Committed goldens and the size budget").
# The text schedules through mlx-vlm are written for every random-weight variant; these groups
# of vlm-only content are written where the table says:
#   cache    cache_after on full_prefill/mlx_vlm (the chunked scan's final state)
#   vectors  mrope_prefix_decode, mrope_full_decode (the upstream prefill/decode vector)
#   sweeps   mrope_chunked_{boundary,later}_stepN (both upstream chunk cases, every step)
#   hazards  the three stateful hazards of LanguageModel, each with its correct twin
#   vision   image prompts from pixel values through mlx-vlm's whole model (vision.py)
VLM_EXTRA_GROUPS = ("cache", "vectors", "sweeps", "hazards", "vision")
VLM_EXTRAS_BY_VARIANT = {"tiny-dense": "cache,vectors,sweeps,hazards,vision",
                         "tiny-hv2-tied": "none", "tiny-moe": "vision"}
# The image prompts each variant stores (vision.PROMPTS; default all). The tower is the
# same code under both text models, so MoE takes only the two-image prompt (size budget).
VISION_PROMPTS_BY_VARIANT = {"tiny-moe": ("image_two",), "tiny-published-hf": ("image_two",)}


def build_vlm_model(spec: ModelSpec):
    """ModelConfig.from_dict + LanguageModel, as mlx-vlm's Model.__init__ builds its text half.
    Also returns vlm_json: the dict it was built from, as given (the library edits it)."""
    params = spec.vlm_params()
    vlm_json = json.dumps(params)
    with library("mlx-vlm", "building the LanguageModel (ModelConfig.from_dict)"):
        module = importlib.import_module(f"mlx_vlm.models.{spec.model_type}")
        model_config = module.ModelConfig.from_dict(params)
    if isinstance(model_config.text_config, dict):
        raise GoldenError("mlx-vlm left text_config undeserialised (a required field is missing)")
    with library("mlx-vlm", "building the LanguageModel"):
        lm = module.LanguageModel(model_config.text_config, model_config)
        lm.eval()
    return module, model_config, lm, vlm_json


def vlm_weight_name(runtime_name: str) -> str:
    """mlx-lm runtime name -> the name inside mlx-vlm's LanguageModel."""
    if not runtime_name.startswith("language_model."):
        raise GoldenError(f"unexpected runtime weight name {runtime_name}")
    return runtime_name.removeprefix("language_model.")


def load_vlm_weights(module, model_config, lm, weights: dict[str, np.ndarray]) -> None:
    """Check mlx-vlm's Model.sanitize leaves the runtime layout alone, then load the tensors
    into the LanguageModel under its names, strictly, and check they arrived bit for bit."""
    runtime = {name: mx.array(value) for name, value in weights.items()}
    # Model.sanitize reads only self.config; the vision tower is never built.
    with library("mlx-vlm", "sanitizing the mlx-lm runtime weights"):
        sanitized = module.Model.sanitize(SimpleNamespace(config=model_config),
                                          {k: mx.array(v) for k, v in runtime.items()})
    if sorted(sanitized) != sorted(runtime):
        raise GoldenError("mlx-vlm sanitize changed the parameter names of the runtime layout")
    for name, value in sanitized.items():
        if not mx.array_equal(value, runtime[name]).item():
            raise GoldenError(f"mlx-vlm sanitize is not a fixed point for {name}")
    with library("mlx-vlm", "loading the mlx-lm runtime weights into the LanguageModel (strict)"):
        lm.load_weights([(vlm_weight_name(k), v) for k, v in runtime.items()], strict=True)
        mx.eval(lm.parameters())
    for name, value in tree_flatten(lm.parameters()):
        if not np.array_equal(np.array(value), weights["language_model." + name]):
            raise GoldenError(f"mlx-vlm holds a different {name} than mlx-lm")


def vlm_effective_config(lm, model_config) -> dict:
    """What mlx-vlm's LanguageModel runs; the rotary entries are null when no layer is full
    attention."""
    rotary = [l.self_attn.rotary_emb for l in lm.model.layers if not l.is_linear]
    r = rotary[0] if rotary else None
    args = lm.args
    return {
        "model_type": args.model_type,
        "rotary_dims": int(r.dim) if r else None,
        "rope_theta": float(r.base) if r else None,
        "mrope_section": list(r.mrope_section) if r else None,
        "inv_freq": np.array(r.inv_freq).tolist() if r else None,
        "position_selector": np.array(r.position_selector).tolist() if r else None,
        "head_dim": args.head_dim,
        "full_attention_interval": args.full_attention_interval,
        "layer_types": ["linear_attention" if l.is_linear else "full_attention"
                        for l in lm.model.layers],
        "spatial_merge_size": model_config.vision_config.spatial_merge_size,
        **{k: getattr(model_config, k) for k in SPECIAL_TOKEN_KEYS},
    }


# --- inputs of the vlm-only scenarios -------------------------------------------------------


def vlm_inputs(lm, inputs: Inputs, seed: int, vocab: int, token_ids: TokenIds,
               merge: int) -> dict[str, np.ndarray]:
    """Every input dataset the vlm schedules reference, keyed by its path in the file. Input
    embeddings and reference positions come from the library (embed_tokens, get_rope_index)."""
    rng = np.random.default_rng([seed, 2])
    store: dict[str, np.ndarray] = {}

    def embed(ids) -> np.ndarray:
        with library("mlx-vlm", "embedding the vlm prompts (embed_tokens)"):
            out = lm.model.embed_tokens(mx.array(ids))
            mx.eval(out)
        return np.array(out)

    # Text batch as mlx-vlm takes it: the prompt with its attention mask, then the decodes.
    lmax = inputs.batch_tokens.shape[1]
    mask = (np.arange(lmax)[None, :] >= inputs.left_padding[:, None]).astype(np.int32)
    store["/inputs/batch/attention_mask"] = mask
    store["/inputs/batch/sequence"] = np.concatenate(
        [inputs.batch_tokens, inputs.decode_tokens.T], axis=1).astype(np.int32)

    # Upstream prefill/decode vector: prompt [0,1,2,3], then decode ids.
    up = UPSTREAM_PREFILL_DECODE
    decode = token_ids.text(rng, MROPE_DECODE_STEPS)
    g = "/inputs/mrope/prefill_decode"
    store[g + "/token_ids"] = np.array([up["tokens"] + decode], dtype=np.int32)
    store[g + "/input_embeddings"] = embed([up["tokens"]])
    store[g + "/position_ids"] = np.array(up["positions"], dtype=np.int32)
    store[g + "/rope_deltas"] = np.array([[up["rope_delta"]]], dtype=np.int32)

    for case, spec in UPSTREAM_CHUNK_CASES.items():
        g = f"/inputs/mrope/chunk_{case}"
        store[g + "/token_ids"] = np.array([spec["tokens"]], dtype=np.int32)
        store[g + "/input_embeddings"] = embed([spec["tokens"]])
        store[g + "/position_ids"] = np.array(spec["positions"], dtype=np.int32)
        store[g + "/rope_deltas"] = np.array([[spec["rope_delta"]]], dtype=np.int32)

    # An image prompt: text, vision_start, 6 image tokens, vision_end, text. The image rows of
    # input_embeddings are random stand-ins for vision features at the embedding's scale.
    vt = token_ids.special
    frames, hb, wb = IMAGE_GRID_BLOCKS
    n_image = frames * hb * wb
    text = token_ids.text(rng, 4)
    ids = text[:2] + [vt["vision_start_token_id"]] + [vt["image_token_id"]] * n_image \
        + [vt["vision_end_token_id"]] + text[2:]
    emb = embed([ids])
    scale = embedding_std(lm.model.embed_tokens)
    for t, token in enumerate(ids):
        if token == vt["image_token_id"]:
            emb[0, t] = (rng.standard_normal(emb.shape[-1]) * scale).astype(np.float32)
    grid = np.array([[frames, hb * merge, wb * merge]], dtype=np.int32)
    with library("mlx-vlm", "get_rope_index on the image prompt"):
        positions, deltas = lm.get_rope_index(mx.array([ids], dtype=mx.int32), mx.array(grid))
        mx.eval(positions, deltas)
    g = "/inputs/mrope/image_prompt"
    store[g + "/token_ids"] = np.array([ids], dtype=np.int32)
    store[g + "/input_embeddings"] = emb
    store[g + "/image_grid_thw"] = grid
    store[g + "/position_ids"] = np.array(positions).astype(np.int32)
    store[g + "/rope_deltas"] = np.array(deltas).astype(np.int32).reshape(1, 1)

    # A small left-padded text batch for the missing-mask hazard.
    smax = max(SMALL_BATCH_LENGTHS)
    rows = np.zeros((len(SMALL_BATCH_LENGTHS), smax + SMALL_BATCH_DECODE_STEPS), dtype=np.int32)
    pads = np.array([smax - n for n in SMALL_BATCH_LENGTHS], dtype=np.int32)
    for b, n in enumerate(SMALL_BATCH_LENGTHS):
        rows[b, smax - n:] = rng.integers(0, vocab, size=n + SMALL_BATCH_DECODE_STEPS)
    g = "/inputs/mrope/small_batch"
    store[g + "/sequence"] = rows
    store[g + "/left_padding"] = pads
    store[g + "/attention_mask"] = (np.arange(smax)[None, :] >= pads[:, None]).astype(np.int32)
    return store


def embedding_std(embed) -> float:
    """The std of the embedding table; a quantized one (mlx-vlm's QuantizedEmbedding) is
    dequantized for it by mlx, as the model itself reads it."""
    if not hasattr(embed, "scales"):
        return float(np.array(embed.weight).std())
    with library("mlx-vlm", "dequantizing the embedding table for its scale"):
        table = mx.dequantize(embed.weight, embed.scales, embed.get("biases"), embed.group_size,
                              embed.bits, mode=getattr(embed, "mode", "affine")).astype(mx.float32)
        return float(np.array(mx.std(table)))


def rope_index_cases(lm, token_ids: TokenIds, merge: int) -> list[dict]:
    """get_rope_index run by the library on a few prompts (one and two images, a video, a
    masked batch, text with and without a mask). Grids are written for a merge size of 2 and
    scaled to the model's; text ids are token_ids.fixed(n) (n for a big vocabulary)."""
    vt = token_ids.special
    VS, VE = vt["vision_start_token_id"], vt["vision_end_token_id"]
    IM, VI = vt["image_token_id"], vt["video_token_id"]
    T, P = token_ids.fixed, token_ids.pad

    def grids(*thw):
        return [[t, h // 2 * merge, w // 2 * merge] for t, h, w in thw]
    cases = [
        {"name": "spec_two_images", "about": "numerics spec 3.3 worked example",
         "input_ids": [[T(5), T(6), VS] + [IM] * 6 + [VE, T(7), T(8), VS] + [IM] * 6
                       + [VE, T(9), T(10), T(11)]],
         "image_grid_thw": grids((1, 4, 6), (1, 6, 4))},
        {"name": "one_image", "about": "one image between text",
         "input_ids": [[T(1), T(2), T(3), VS] + [IM] * 12 + [VE, T(4), T(5)]],
         "image_grid_thw": grids((1, 6, 8))},
        {"name": "image_first", "about": "an image at position 0, no text before it",
         "input_ids": [[VS] + [IM] * 4 + [VE, T(7)]], "image_grid_thw": grids((1, 4, 4))},
        {"name": "video_two_frames", "about": "a (2,4,4) video grid expands into two (1,4,4) blocks",
         "input_ids": [[T(1), VS] + [VI] * 4 + [VE, VS] + [VI] * 4 + [VE, T(2)]],
         "video_grid_thw": grids((2, 4, 4))},
        {"name": "image_then_video", "about": "an image block, then a video block",
         "input_ids": [[T(1), VS] + [IM] * 2 + [VE, T(2), VS] + [VI] * 4 + [VE, T(3)]],
         "image_grid_thw": grids((1, 2, 4)), "video_grid_thw": grids((1, 4, 4))},
        {"name": "masked_batch_images", "about": "left-padded rows with one image each",
         "input_ids": [[P, P, T(1), VS] + [IM] * 4 + [VE, T(2)], [T(1), T(2), VS] + [IM] * 6 + [VE]],
         "attention_mask": [[0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 10],
         "image_grid_thw": grids((1, 4, 4), (1, 4, 6))},
        {"name": "text_masked", "about": "text only with a left-padding mask",
         "input_ids": [[P, P, P, T(4), T(5), T(6)], [T(n) for n in range(1, 7)]],
         "attention_mask": [[0, 0, 0, 1, 1, 1], [1] * 6]},
        {"name": "text_plain", "about": "text only, no mask: arange and zero deltas",
         "input_ids": [[T(n) for n in range(4, 9)]]},
    ]
    for case in cases:
        arg = lambda k: (mx.array(case[k], dtype=mx.int32) if k in case else None)
        with library("mlx-vlm", f"get_rope_index on the case {case['name']}"):
            positions, deltas = lm.get_rope_index(arg("input_ids"), arg("image_grid_thw"),
                                                  arg("video_grid_thw"), arg("attention_mask"))
            mx.eval(positions, deltas)
        case["position_ids"] = np.array(positions).astype(np.int32)
        case["rope_deltas"] = np.array(deltas).astype(np.int32)
    return cases


# --- running a vlm schedule -------------------------------------------------------------------


class CallSpy:
    """Stands in for LanguageModel.model: records the position_ids the LanguageModel resolved
    for each call. The row split inside Qwen3_5Model recurses on the real module, unseen."""

    def __init__(self, module, sink: list):
        self._module = module
        self._sink = sink

    def __getattr__(self, name):
        return getattr(self._module, name)

    def __call__(self, *args, **kwargs):
        self._sink.append(kwargs.get("position_ids"))
        return self._module(*args, **kwargs)


@contextmanager
def spying(lm):
    sink: list = []
    real = lm["model"]
    try:
        lm["model"] = CallSpy(real, sink)
        yield sink
    finally:
        lm["model"] = real


def as_list(a):
    """Stored position state as JSON: None, or nested lists of ints."""
    if a is None:
        return None
    return np.array(a).astype(np.int64).tolist()


@dataclass
class VlmRunResult(RunResult):
    position_ids: np.ndarray = None      # [3, B, T] int32, what each call resolved (2-D broadcast)
    position_ranks: np.ndarray = None    # [calls] int32: 2, 3, or 0 for None
    state_after: list = None             # per call {"position_ids", "rope_deltas"} stored after it


def run_vlm_schedule(lm, schedule: list[dict], store: dict, snapshot_after: int | None,
                     doing: str) -> VlmRunResult:
    """Run the calls of a schedule (docs/golden-format.md, "mlx-vlm paths"), recording hidden
    states, the positions each call resolved and the state kept. doing: what a library finding
    says the run was."""
    def sliced(path, call):
        return None if path is None else store[path][:, call["start"]:call["start"] + call["length"]]

    inner = lm.model
    logits, hidden, norms, positions, ranks, states = [], [], [], [], [], []
    snapshot, cache = None, None
    with recording(inner) as rec, spying(lm) as spy:
        for i, call in enumerate(schedule):
            if call["reset_state"]:
                lm._position_ids = None
                lm._rope_deltas = None
            if call["cache"] == "none":
                cache = None
            elif call["cache"] == "new":
                with library("mlx-vlm", f"{doing}: making the cache"):
                    if call["left_padding"] is None:
                        cache = lm.make_cache()
                    else:
                        lp = [int(x) for x in store[call["left_padding"]]]
                        cache = [vlm_cache.ArraysCache(2, left_padding=lp) if l.is_linear
                                 else vlm_cache.BatchKVCache(lp) for l in inner.layers]
            ids = mx.array(sliced(call["tokens"], call))
            B, L = ids.shape
            kwargs = {}
            if call["embeddings"] is not None:
                kwargs["inputs_embeds"] = mx.array(sliced(call["embeddings"], call))
            for key in ("position_ids", "rope_deltas", "image_grid_thw"):
                if call[key] is not None:
                    kwargs[key] = mx.array(store[call[key]])
            if call["attention_mask"] is not None:
                kwargs["attention_mask"] = mx.array(sliced(call["attention_mask"], call))
            before = (len(rec["embed"]), [len(r) for r in rec["layers"]], len(rec["norm"]))
            with library("mlx-vlm", f"{doing}, call {i + 1} of {len(schedule)} ({L} tokens)"):
                out = lm(ids, cache=cache, **kwargs).logits
                mx.eval(out, rec["embed"], rec["layers"], rec["norm"], cache_arrays(cache))
            logits.append(np.array(out))
            progress.call(doing, i + 1, len(schedule), B * L)

            def joined(records, start):
                """One [B, L, D] tensor from this call's records: the whole batch, or one
                record per row (the row split runs each row on its unpadded suffix)."""
                new = [np.array(a) for a in records[start:]]
                if len(new) == 1 and new[0].shape[:2] == (B, L):
                    return new[0]
                if len(new) != B or any(a.shape[0] != 1 for a in new):
                    raise GoldenError(f"call {i}: cannot assemble {[a.shape for a in new]} into [{B}, {L}]")
                return np.concatenate([np.pad(a, ((0, 0), (L - a.shape[1], 0), (0, 0))) for a in new])
            embedded = len(rec["embed"]) - before[0]
            if embedded != (0 if "inputs_embeds" in kwargs else 1):
                raise GoldenError(f"call {i}: embed_tokens ran {embedded} times")
            first = np.array(kwargs["inputs_embeds"]) if embedded == 0 else joined(rec["embed"], before[0])
            hidden.append([first] +
                          [joined(r, before[1][j]) for j, r in enumerate(rec["layers"])])
            norms.append(joined(rec["norm"], before[2]))
            used = spy[-1]
            if used is None:
                positions.append(np.zeros((3, B, L), np.int32)); ranks.append(0)
            else:
                p = np.array(used).astype(np.int32)
                ranks.append(p.ndim)
                positions.append(np.broadcast_to(p if p.ndim == 3 else p[None], (3, B, L)))
            states.append({"position_ids": as_list(lm._position_ids),
                           "rope_deltas": as_list(lm._rope_deltas)})
            if snapshot_after is not None and i + 1 == snapshot_after and cache is not None:
                snapshot = snapshot_cache(cache)
    if len(spy) != len(schedule):
        raise GoldenError("the LanguageModel called its inner model a different number of times")
    layers = len(hidden[0])
    return VlmRunResult(
        hidden_states=np.stack([np.concatenate([h[j] for h in hidden], axis=1) for j in range(layers)]),
        final_norm=np.concatenate(norms, axis=1), logits=np.concatenate(logits, axis=1),
        cache_after=snapshot, position_ids=np.concatenate(positions, axis=2).astype(np.int32),
        position_ranks=np.array(ranks, dtype=np.int32), state_after=states)


def check_vlm_recording_is_transparent(lm, token_ids: np.ndarray) -> None:
    lm._position_ids = lm._rope_deltas = None
    doing = "running the whole prompt without a cache (the recording check)"
    with library("mlx-vlm", doing):
        plain = lm(mx.array(token_ids)).logits
        mx.eval(plain)
    schedule = [vlm_call("/inputs/token_ids", 0, token_ids.shape[1], cache="none", reset_state=True)]
    recorded = run_vlm_schedule(lm, schedule, {"/inputs/token_ids": token_ids}, None, doing).logits
    if not np.array_equal(np.array(plain), recorded):
        raise GoldenError("recording the mlx-vlm forward pass changed the logits")


def vlm_groups(args, variant: str) -> set[str] | None:
    """The --vlm-extras groups to write; None: no mlx-vlm paths at all."""
    text = args.vlm_extras or "auto"
    if text == "auto":
        text = VLM_EXTRAS_BY_VARIANT.get(variant, ",".join(VLM_EXTRA_GROUPS))
    if text == "off":
        return None
    groups = set() if text == "none" else set(text.split(","))
    if groups - set(VLM_EXTRA_GROUPS):
        raise UsageError(f"--vlm-extras: unknown group(s) {sorted(groups - set(VLM_EXTRA_GROUPS))}")
    return groups


def add_vlm_paths(spec: ModelSpec, weights: dict | None, inputs: Inputs, groups: set[str],
                  seed: int, results: list, store: dict, variant: str, tower_weights: dict | None = None,
                  loaded=None) -> dict:
    """Run the same weights through mlx-vlm's LanguageModel: an mlx_vlm path on every text
    scenario of results, then the vlm-only scenarios of `groups` appended to results. Adds the
    inputs the schedules read to store; returns the /config attrs and the /rope_index cases.
    loaded: instead of weights, a whole Model mlx-vlm's own load_model made from a directory
    (quantized ones run as loaded: no float32 copy)."""
    # The text schedules, the recording check and the vlm-only groups' schedules (the library
    # distances and the image prompts come on top: the estimate is a floor).
    total = inputs.token_ids.shape[1] + sum(
        sum(sc.calls) * (inputs.batch_tokens.shape[0] if sc.kind == "batch" else 1) for sc, _ in results)
    total += sum(sum(vs.calls) * len(vs.paths) for vs in mrope_scenarios() + hazard_scenarios()
                 if vs.group in groups)
    with progress.path(VLM_PATH, total):
        return vlm_paths_of(spec, weights, inputs, groups, seed, results, store, variant, tower_weights, loaded)


def vlm_paths_of(spec, weights, inputs, groups, seed, results, store, variant, tower_weights, loaded) -> dict:
    if loaded is None:
        module, model_config, lm, vlm_json = build_vlm_model(spec)
        load_vlm_weights(module, model_config, lm, weights)
    else:
        model_config, lm, vlm_json = loaded.config, loaded.language_model, json.dumps(spec.vlm_params())
    token_ids = TokenIds(spec.token_ids, spec.vocab_size)
    merge = model_config.vision_config.spatial_merge_size
    store.update(vlm_inputs(lm, inputs, seed, spec.vocab_size, token_ids, merge))
    check_vlm_recording_is_transparent(lm, inputs.token_ids)
    # The mlx-lm text schedules, through mlx-vlm's LanguageModel.
    for sc, paths in results:
        t = time.monotonic()
        length = inputs.batch_tokens.shape[1] if sc.kind == "batch" else inputs.token_ids.shape[1]
        schedule = vlm_text_schedule(sc, length)
        snapshot = len(sc.calls) if sc.name == "full_prefill" and "cache" in groups else None
        result = run_vlm_schedule(lm, schedule, store, snapshot, f"running scenario {sc.name}")
        check_finite(sc, result)
        paths[VLM_PATH] = PathRun(result, vlm_logits_positions(sc.calls), schedule)
        lm_logits = paths[LM_PATH].result.logits
        valid = np.ones(lm_logits.shape[:2], bool)
        if sc.kind == "batch":
            valid[:, :] = np.arange(lm_logits.shape[1])[None, :] >= inputs.left_padding[:, None]
        gap = float(np.abs(np.where(valid[..., None], lm_logits - result.logits, 0)).max())
        log(f"  {VLM_PATH:<10} {sc.name:<20} |lm-vlm logits|={gap:.2e} ({time.monotonic() - t:.2f}s)")
    probed: list[dict] = []
    for vs in mrope_scenarios() + hazard_scenarios():
        if vs.group not in groups:
            continue
        t = time.monotonic()
        paths = {}
        for path, schedule in vs.paths.items():
            if [c["length"] for c in schedule] != vs.calls:
                raise GoldenError(f"{vs.name}/{path}: schedule does not match calls {vs.calls}")
            doing = f"running scenario {vs.name}/{path}"
            result = run_vlm_schedule(lm, schedule, store, None, doing)
            check_finite(vs, result)
            paths[path] = PathRun(result, vs.logits_positions(), schedule)
            if probes.wanted(vs.name, path):
                probed.append(probe(lm, vs, path, lambda: run_vlm_schedule(lm, schedule, store, None, doing),
                                    result))
        note = ""
        if VLM_CORRECT_PATH in paths:
            gap = np.abs(paths[VLM_PATH].result.logits - paths[VLM_CORRECT_PATH].result.logits).max()
            note = f" hazard |library - correct| = {gap:.3f}"
        results.append((vs, paths))
        log(f"  {VLM_PATH:<10} {vs.name:<30} calls={len(vs.calls):<3}{note} ({time.monotonic() - t:.2f}s)")
    t = time.monotonic()
    with library("mlx-vlm", "measuring its own MRoPE schedule distances"):
        measured = distances.measure(lm, store, inputs.token_ids)
    worst = {k: max((p["max_abs"] for p in v), default=0.0) for k, v in measured.items()}
    log(f"  {VLM_PATH:<10} library distances: " + ", ".join(f"{k} <= {w:.2e} ({len(measured[k])} pairs)" for k, w in worst.items())
        + f" ({time.monotonic() - t:.2f}s)")
    meta = {"vlm_json": vlm_json,
            "vlm_effective_json": json.dumps(vlm_effective_config(lm, model_config)),
            "rope_cases": rope_index_cases(lm, token_ids, merge),
            "library_distances": measured, "vlm_probes": probed}
    if "vision" in groups:
        prompts = VISION_PROMPTS_BY_VARIANT.get(variant, tuple(vision.PROMPTS))
        meta["vision"] = add_image_scenarios(spec, weights, token_ids, seed, results, store, prompts,
                                             probed, tower_weights, loaded)
    return meta


def probe(lm, vs: VlmScenario, path: str, run, reference) -> dict:
    """The scenario's path run once more with sub-step probes on (probes.py)."""
    try:
        layers = probes.capture_run(lm, "mlx-vlm", f"{vs.name}/{path}", vs.calls, run, reference)
    except probes.ProbeError as exc:
        raise GoldenError(f"probes: {exc}") from exc
    return {"scenario": vs.name, "path": path, "layers": layers}


def add_image_scenarios(spec: ModelSpec, weights: dict, token_ids: TokenIds, seed: int,
                        results: list, store: dict, prompts: tuple, probed: list, tower_weights: dict | None = None,
                        loaded=None):
    """The vision group: mlx-vlm's whole model on the image prompts of vision.py; the first
    one's language calls probed (appended to probed)."""
    try:
        cap = vision.capture(spec, weights, token_ids, seed, prompts, tower_weights, loaded)
    except vision.VisionError as exc:
        raise GoldenError(f"vision: {exc}") from exc
    store.update(vision.input_datasets(cap))
    for prompt in cap.prompts:
        t = time.monotonic()
        vs = image_scenario(prompt, vision.DECODE_STEPS)
        run = lambda: run_vlm_schedule(cap.language_model, vs.paths[VLM_PATH], store, None,
                                       f"running scenario {vs.name}")
        result = run()
        check_finite(vs, result)
        if prompt is cap.prompts[0] and probes.wanted(vs.name, VLM_PATH):
            probed.append(probe(cap.language_model, vs, VLM_PATH, run, result))
        results.append((vs, {VLM_PATH: PathRun(result, vs.logits_positions(), vs.paths[VLM_PATH])}))
        log(f"  {VLM_PATH:<10} {vs.name:<30} calls={len(vs.calls):<3} image grids "
            f"{prompt.image_grid_thw.tolist()} ({time.monotonic() - t:.2f}s)")
    return cap
