"""Every scenario of a golden through transformers in float64 (the path transformers_f64), the
float32 yardstick beside it, the checks against the MLX paths, and what /oracle stores."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..errors import log
from ..provenance import component
from . import probes
from .calls import LM_PATH, VLM_PATH, image_calls, mrope_calls, run_calls, text_calls
from .errors import OracleError, OracleUnavailable
from .model import (build_models, check_round_trip, checkpoint_weights, library_differences,
                    text_config_kwargs, vision_config_kwargs)
from .torch_env import ENVIRONMENT, THREADS, float64_mode, import_torch, versions

PATH = "transformers_f64"
# The oracle must agree with both MLX paths to this, or the golden is not written: a wrong
# weight mapping or config gives logit errors of 0.1 and more (the smallest real model error
# the numerics spec measured is 0.12, its hazards), while float32 rounding of the tiny configs
# is below 1e-4 (spec §8: the largest library drift measured is 3.9e-4 on a larger config).
SANITY_BOUND = 1e-2
# The scenarios whose oracle path stores cache_after (size budget): every schedule of the same
# prompt has the same exact state, and mlx-vlm's path stores its cache there too.
CACHE_SCENARIOS = ("full_prefill",)
# Logits of at most the last 4 call ends (mlx-vlm's rule), except where the MLX paths store
# every position (no_cache, full_prefill).
LOGITS_PER_SCENARIO = 4
# Sub-step probes of the oracle (size budget: about 1.3 MB per scenario and golden in float64):
# the one-call text prompt and the image prompt the MLX paths probe, stored as float32. Their
# rounding is 1/4 to 1/50 of the MLX paths' sub-step distances from the oracle (tiny-moe), and a
# diff bound read from them is measured on the stored values, as the diff compares them.
PROBED_SCENARIOS = ("full_prefill", "image_prompt")


@dataclass
class OracleRun:
    hidden_states: np.ndarray      # [n_layers+1, B, T, D] float64
    final_norm: np.ndarray         # [B, T, D]
    logits: np.ndarray             # [B, T, V]
    position_ids: np.ndarray       # [3, B, T] int: what the rotary tables were made from
    cache_after: list | None
    logits_positions: np.ndarray
    calls: list                    # Call.describe() of each call
    kind: str = "single"
    float32_error: dict = field(default_factory=dict)


def float32_error(hidden, norm, logits, hidden32, norm32, logits32) -> dict:
    """How far transformers' own float32 run is from the oracle: per layer and position the max
    and the sum of squares over the hidden size, per stored logits position the same over the
    vocabulary. A reader takes the max, or the RMSE over any set of positions, from these."""
    def err(a, b):
        d = np.abs(a.astype(np.float64) - b)
        return d.max(axis=-1), np.square(d).sum(axis=-1)
    out = {}
    for name, a, b in (("hidden", hidden32, hidden), ("final_norm", norm32, norm), ("logits", logits32, logits)):
        out[name + "_max_abs"], out[name + "_sum_sq"] = err(a, b)
    return out



def logits_gap(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None) -> float:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if valid is not None:
        d = np.where(valid[..., None], d, 0)
    return float(d.max())


@dataclass
class Capture:
    runs: dict = field(default_factory=dict)        # scenario name -> OracleRun
    config_json: str = "{}"
    defaults: list = field(default_factory=list)
    promoted: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)     # scenario name -> why the oracle does not run it
    versions: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    summary: list = field(default_factory=list)
    unavailable: str | None = None                  # why this config has no oracle at all
    probes: list = field(default_factory=list)      # {"scenario", "layers"} as the MLX probes


# The float32 reference paths the oracle is checked against and measured from: a random-weight
# golden's mlx_lm and mlx_vlm, or a model directory's dequantized float32 twin (whose bf16 run is
# measured too, but is no float32 path to hold the oracle to).
RANDOM_WEIGHT_PATHS = (LM_PATH, VLM_PATH)
MODEL_DIR_PATHS = ("mlx_lm_f32",)


def capture(spec, meta: dict, weights: dict, store: dict, results: list,
            reference_paths: tuple = RANDOM_WEIGHT_PATHS) -> Capture:
    """Every scenario of results through transformers in float64. spec: the checked config
    (configs.ModelSpec, flat or nested); reference_paths: the float32 paths it must agree with;
    meta: the generator's meta (effective_json, vlm_effective_json, vision); weights: /weights;
    store: the /inputs datasets; results: [(scenario, {path: PathRun})]."""
    torch = import_torch()
    effective = json.loads(meta["effective_json"])
    vlm_effective = json.loads(meta["vlm_effective_json"]) if "vlm_effective_json" in meta else None
    vision_cap = meta.get("vision")
    moe = spec.model_type == "qwen3_5_moe"
    try:
        text_kwargs, defaults = text_config_kwargs(dict(spec.text, model_type=spec.model_type), effective,
                                                   vlm_effective)
    except OracleUnavailable as exc:
        log(f"  {PATH:<16} no oracle for this config: {exc}")
        return Capture(versions=versions(), unavailable=str(exc))
    vision_weights = vision_cap.weights if vision_cap is not None else None
    checkpoint = checkpoint_weights(weights, vision_weights, moe, bool(effective["tie_word_embeddings"]))
    token_ids, vlm_params = None, None
    if vlm_effective is not None:
        token_ids = {k: vlm_effective[k] for k in ("image_token_id", "video_token_id",
                                                   "vision_start_token_id", "vision_end_token_id")}
        vlm_params = json.loads(meta["vlm_json"])
        if vision_cap is not None:
            vlm_params["vision_config"] = vision_config_kwargs(vision_cap, effective["hidden_size"])
    check_round_trip(spec.lm_config(), checkpoint, weights, vision_weights, vlm_params)
    mode = float64_mode(torch)
    lm, vlm = build_models(torch, mode, text_kwargs, moe, checkpoint,
                           vision_config_kwargs(vision_cap, effective["hidden_size"]) if vision_cap else None,
                           token_ids)
    # The float32 yardstick: transformers as it is, in float32, on the same calls.
    lm32, vlm32 = build_models(torch, None, text_kwargs, moe, checkpoint,
                               vision_config_kwargs(vision_cap, effective["hidden_size"]) if vision_cap else None,
                               token_ids)
    defaults += library_differences(lm, effective, vlm_effective)

    mlx_probes = {e["scenario"]: e for e in meta.get("probes", [])
                  if e["path"] in (LM_PATH, VLM_PATH) and e["scenario"].startswith(PROBED_SCENARIOS)}
    runs, skipped, summary, probe_runs = {}, {}, [], []
    for sc, paths in results:
        if getattr(sc, "hazard", None) is not None:
            skipped[sc.name] = "a hazard: the library misused on purpose; the oracle has no such state"
            continue
        if sc.kind in ("single", "batch"):
            calls, snapshot_after, offset_of = text_calls(sc, store)
            model, model32, positions = lm, lm32, paths[LM_PATH].logits_positions
        elif sc.kind == "mrope":
            calls, model, model32 = mrope_calls(sc, store), lm, lm32
            prompt = [c for c in sc.paths[VLM_PATH] if c["position_ids"] is not None]
            snapshot_after, positions = len(prompt), paths[VLM_PATH].logits_positions
            offset_of = lambda cache, n=sum(c["length"] for c in prompt): n
        elif sc.kind == "image":
            if vlm is None:
                raise OracleError(f"{sc.name}: an image scenario without a vision tower")
            calls, model, model32 = image_calls(sc, store, token_ids["image_token_id"]), vlm, vlm32
            prompt = [c for c in sc.paths[VLM_PATH] if c["position_ids"] is not None]
            snapshot_after, positions = len(prompt), paths[VLM_PATH].logits_positions
            offset_of = lambda cache, n=sum(c["length"] for c in prompt): n
        else:
            raise OracleError(f"{sc.name}: unknown scenario kind {sc.kind}")
        if sc.name not in CACHE_SCENARIOS:
            snapshot_after = None
        entry = mlx_probes.get(sc.name)
        recorded = {}

        @contextmanager
        def probed(text, layers={i: kind for i, (kind, _, _) in entry["layers"].items()} if entry else None):
            with probes.recording(text, layers) as rec:
                recorded["rec"] = rec
                yield
        hidden, norm, logits, used, snapshot, described = run_calls(
            torch, mode, model, calls, snapshot_after, offset_of, around=probed if entry else None)
        if entry:
            what = f"{sc.name}/{PATH} probes"
            tensors = recorded["rec"].tensors(len(calls), moe, what)
            probes.check(tensors, entry["layers"], SANITY_BOUND, what)
            probe_runs.append({"scenario": sc.name, "layers": tensors})
        for what, a in (("hidden states", hidden), ("logits", logits)):
            if not np.all(np.isfinite(a)):
                raise OracleError(f"{sc.name}: non-finite {what}")
        if not getattr(sc, "all_logits", False):
            positions = positions[-LOGITS_PER_SCENARIO:]
        hidden32, norm32, logits32, used32, _, _ = run_calls(torch, None, model32, calls, None, offset_of)
        if not np.array_equal(used32, used):
            raise OracleError(f"{sc.name}: the float32 run used other positions")
        run = OracleRun(hidden, norm, logits, used, snapshot, positions, described, sc.kind,
                        float32_error(hidden, norm, logits[:, positions], hidden32, norm32, logits32[:, positions]))
        check_against_paths(sc, run, paths, store, reference_paths)
        runs[sc.name] = run
        summary.append(distances(sc, run, paths, store))
        log(f"  {PATH:<16} {sc.name:<30} " + "  ".join(
            f"|{p}-f64| logits {d['logits']:.2e}" for p, d in summary[-1]["paths"].items()))
    return Capture(runs=runs, config_json=json.dumps({"text_config": lm.config.to_dict(),
                                                      **({"vision_config": vlm.config.vision_config.to_dict()}
                                                         if vlm is not None else {})}, default=str),
                   defaults=defaults, promoted=dict(sorted(mode.promoted.items())), skipped=skipped,
                   versions=versions(), environment={**ENVIRONMENT, "threads": THREADS,
                                                     "cpu_capability": torch.backends.cpu.get_cpu_capability()},
                   summary=summary, probes=probe_runs)


def valid_rows(sc, store: dict, T: int) -> np.ndarray | None:
    """[B, T] True where a batch scenario's position is a real token (the harness compares only those)."""
    if sc.kind != "batch":
        return None
    pad = store["/inputs/batch/left_padding"]
    return np.arange(T)[None, :] >= pad[:, None]


def check_against_paths(sc, run: OracleRun, paths: dict, store: dict, reference_paths: tuple) -> None:
    """A gross disagreement with the libraries means a wrong mapping or config, not precision."""
    valid = valid_rows(sc, store, run.logits.shape[1])
    for name, path in paths.items():
        if name not in reference_paths:
            continue
        pos = path.logits_positions
        ours = run.logits[:, pos, :]
        theirs = path.result.logits[:, pos, :]
        gap = logits_gap(ours, theirs, None if valid is None else valid[:, pos])
        if not gap <= SANITY_BOUND:
            raise OracleError(f"{sc.name}: transformers_f64 and {name} logits differ by {gap:.3g} "
                              f"(more than {SANITY_BOUND}): the weight mapping or config is wrong")
        stored = getattr(path.result, "position_ids", None)
        if name == VLM_PATH and stored is not None and sc.kind in ("mrope", "image"):
            if not np.array_equal(stored, run.position_ids):
                raise OracleError(f"{sc.name}: transformers ran positions {run.position_ids.tolist()}, "
                                  f"mlx-vlm {stored.tolist()}")


def distances(sc, run: OracleRun, paths: dict, store: dict) -> dict:
    """Each MLX path's max |path - oracle|: logits at the path's positions, hidden state per layer."""
    T = run.logits.shape[1]
    valid = valid_rows(sc, store, T)
    out = {"scenario": sc.name, "paths": {}}
    for name, path in paths.items():
        if name.startswith("candidate:") or name == "mlx_vlm_correct" or path.result.hidden_states is None:
            continue
        pos = path.logits_positions
        d = {"logits": logits_gap(run.logits[:, pos, :], path.result.logits[:, pos, :],
                                  None if valid is None else valid[:, pos])}
        h = np.abs(run.hidden_states - path.result.hidden_states.astype(np.float64))
        if valid is not None:
            h = np.where(valid[None, :, :, None], h, 0)
        d["hidden"] = [float(x) for x in h.reshape(h.shape[0], -1).max(axis=1)]
        out["paths"][name] = d
    e = run.float32_error
    hidden, logits = e["hidden_max_abs"], e["logits_max_abs"]
    if valid is not None:
        hidden = np.where(valid[None], hidden, 0)
        logits = np.where(valid[:, run.logits_positions], logits, 0)
    out["paths"]["transformers_f32"] = {"logits": float(logits.max()),
                                        "hidden": [float(x) for x in hidden.reshape(hidden.shape[0], -1).max(axis=1)]}
    return out




# ---------------------------------------------------------------------------------------------
# Writing


def write(f, cap: Capture | None, shared: dict, put) -> None:
    """/scenarios/<scenario>/transformers_f64 (float64) and /oracle; torch and transformers
    versions added to the root versions_json."""
    if cap is None:
        return
    g = f.create_group("oracle")
    g.attrs["generator"], g.attrs["generator_sha256"] = component(__file__)
    g.attrs["path"] = PATH
    versions_json = json.loads(f.attrs["versions_json"])
    f.attrs["versions_json"] = json.dumps({**versions_json, **cap.versions})
    if cap.unavailable is not None:
        g.attrs["unavailable"] = cap.unavailable
        return
    g.attrs["dtype"] = "float64"
    g.attrs["config_json"] = cap.config_json
    g.attrs["defaults_json"] = json.dumps(cap.defaults)
    g.attrs["promoted_casts_json"] = json.dumps(cap.promoted)
    g.attrs["skipped_json"] = json.dumps(cap.skipped)
    g.attrs["environment_json"] = json.dumps(cap.environment)

    def put64(group, name, value):
        return put(group, name, value, "<f8", shared, compress=True)

    for name, run in cap.runs.items():
        p = f[f"scenarios/{name}"].create_group(PATH)
        p.attrs["calls_json"] = json.dumps(run.calls)
        put64(p, "hidden_states", run.hidden_states)
        put64(p, "final_norm", run.final_norm)
        put(p, "logits_positions", run.logits_positions, "<i4", shared)
        put64(p, "logits", run.logits[:, run.logits_positions, :])
        if run.kind in ("mrope", "image"):
            put(p, "position_ids", run.position_ids, "<i4", shared)
        for key, value in run.float32_error.items():
            put64(p, f"float32_error/{key}", value)
        for i, layer in enumerate(run.cache_after or []):
            lg = p.create_group(f"cache_after/layer_{i:02d}")
            for key, value in layer.items():
                if key == "offset":
                    lg.attrs["offset"] = value
                else:
                    put64(lg, key, value)
    for entry in cap.probes:   # beside the MLX paths' probes, in their layout
        p = f.require_group("probes").require_group(entry["scenario"]).create_group(PATH)
        p.attrs["layers_json"] = json.dumps({str(i): k for i, (k, _, _) in sorted(entry["layers"].items())})
        for i, (kind, names, tensors) in sorted(entry["layers"].items()):
            group = p.create_group(f"layer_{i:02d}_{kind}")
            group.attrs["probes_json"] = json.dumps(list(names))
            for name in names:
                put(group, name, tensors[name], "<f4", shared)
