"""One generator run: a golden from a config's random weights or from a model directory,
written beside --out, reviewed against the golden it replaces, then published."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import mlx.core as mx

import golden_candidates  # tools/golden_candidates.py: a user's implementation as one more path

from . import oracle, probes, vision
from .checkpoints import CHECKPOINT_GOLDEN, golden_from_model, make_checkpoint
from .configs import effective_config, read_config
from .errors import GoldenError, UsageError, log
from .inputs import check_token_ids, make_inputs
from .lm_paths import build_model, load_random_weights, run_all, run_scenario
from .provenance import REPO_ROOT, root_attrs
from .review import review
from .scenarios import DEFAULT_SCENARIOS, LM_PATH, MIN_PROMPT_LENGTH, scenario_list
from .vlm_paths import add_vlm_paths, vlm_groups
from .writing import discard, publish, refuse_ci_regeneration, temp_sibling, write_golden


def golden_from_config(args, tmp: Path) -> None:
    """Random weights from --config: the mlx_lm path, then (unless --vlm-extras off) mlx_vlm."""
    scenarios = scenario_list(args, DEFAULT_SCENARIOS)
    variant = args.variant or args.config.name.removesuffix(".json")
    groups = vlm_groups(args, variant)
    spec = read_config(args.config)
    if groups and "vision" in groups:
        vision.read_config(spec)   # a vision_config that cannot work is refused before the runs
    model = build_model(spec.lm_config())
    weights = load_random_weights(model, args.seed)
    effective = effective_config(model)
    inputs = make_inputs(args.seed, args.prompt_length, effective["vocab_size"])
    log(f"{args.config.name}: {len(weights)} parameter tensors, "
        f"{sum(w.size for w in weights.values())} values; rope base {effective['rope_theta']}, "
        f"rotary dims {effective['rotary_dims']}")
    results = [(sc, {LM_PATH: run}) for sc, run in
               zip(scenarios, run_all(model, scenarios, inputs, LM_PATH))]
    store = inputs.datasets()
    try:
        probe_data = probes.capture_lm(model, inputs,
                                       [(sc, paths[LM_PATH].result) for sc, paths in results],
                                       run_scenario)
    except probes.ProbeError as exc:
        raise GoldenError(f"probes: {exc}") from exc
    meta = {"raw_json": spec.raw_json, "effective_json": json.dumps(effective)}
    if groups is not None:
        meta |= add_vlm_paths(spec, weights, inputs, groups, args.seed, results, store, variant)
    meta["probes"] = probe_data + meta.pop("vlm_probes", [])
    if args.candidate is not None:
        try:
            meta["candidate"] = golden_candidates.run(
                args, args.candidate_info, spec.lm_config(), json.loads(meta["vlm_json"]) if "vlm_json" in meta else None,
                effective, weights, store, results, log)
        except golden_candidates.CandidateError as exc:
            raise GoldenError(str(exc)) from exc
    if args.oracle == "on":
        meta["oracle"] = oracle.capture(spec, meta, weights, store, results)
    meta["root"] = root_attrs(args, variant, "float32", [sc.definition() for sc, _ in results]) \
        | {"weights_source": "random"}
    check_token_ids(store, meta.get("rope_cases", []), effective["vocab_size"])
    write_golden(tmp, meta, weights, store, results)


def generate(args) -> None:
    started = time.monotonic()
    out = args.out
    refuse_ci_regeneration(out)
    if not out.parent.is_dir():
        raise UsageError(f"output directory does not exist: {out.parent}")
    if args.seed < 0:
        raise UsageError("--seed must be >= 0")
    if args.prompt_length < MIN_PROMPT_LENGTH:
        # /inputs/batch always holds rows of length L, L-9, L-17, each at least one token
        raise UsageError(f"--prompt-length must be >= {MIN_PROMPT_LENGTH}")
    mx.set_default_device(mx.cpu)  # goldens are CPU results; Metal differs at the ulp level
    if args.candidate is not None:  # a broken adapter fails before any reference runs
        try:
            golden_candidates.check_output(args, REPO_ROOT)
        except golden_candidates.CandidateError as exc:
            raise UsageError(str(exc)) from exc
        try:
            args.candidate_info = golden_candidates.preflight(args, log)
        except golden_candidates.CandidateError as exc:
            raise GoldenError(str(exc)) from exc
    for stale in out.parent.glob(f".{out.name}.*.tmp"):  # left by a run that was killed
        discard(stale)

    tmp = temp_sibling(out)
    try:
        if args.make_checkpoint:
            tmp.mkdir()
            make_checkpoint(args, tmp)
            golden_from_model(args, tmp, tmp / CHECKPOINT_GOLDEN, variant=args.variant or out.name,
                              kind=args.make_checkpoint)
            previous = out / CHECKPOINT_GOLDEN if out.is_dir() else None
            changed = review(args, previous, tmp / CHECKPOINT_GOLDEN, out if out.is_dir() else None,
                             tmp, skip=(CHECKPOINT_GOLDEN,))
        else:
            if args.from_model is not None:
                golden_from_model(args, args.from_model, tmp,
                                  variant=args.variant or args.from_model.resolve().name, kind="",
                                  model_dir_attr=os.path.relpath(args.from_model.resolve(),
                                                                 out.resolve().parent))
            else:
                golden_from_config(args, tmp)
            changed = review(args, out if out.exists() else None, tmp, None, None)
        if changed:
            publish(tmp, out)
        else:
            discard(tmp)
    except BaseException:
        discard(tmp)
        raise
    log(f"done: {out} in {time.monotonic() - started:.1f}s")
