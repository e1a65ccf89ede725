"""MLX model directories: writing one from random weights with mlx-lm's own conversion steps
(--make-checkpoint), and goldens of one as mlx-lm loads it (paths mlx_lm and mlx_lm_f32)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import mlx.core as mx
from mlx.utils import tree_flatten, tree_map_with_path
from mlx_lm.utils import dequantize_model, load_model, quantize_model, save_config, save_model
from mlx_vlm.utils import load_model as vlm_load_model

from . import oracle
from .configs import SUPPORTED_MODEL_TYPES, effective_config, read_config
from .errors import GoldenError, LibraryFinding, UsageError, library, log
from .inputs import check_token_ids, make_inputs
from .lm_paths import build_model, load_random_weights, run_all
from .provenance import file_sha256, root_attrs
from .scenarios import F32_PATH, LM_PATH, VLM_PATH, scenario_list
from .vlm_paths import add_vlm_paths, build_vlm_model
from .writing import write_golden

CHECKPOINT_GOLDEN = "parity.h5"  # the golden inside a --make-checkpoint directory
# mlx-vlm groups a multimodal directory's golden gets beside the text schedules (not the hazards:
# misuses of mlx-vlm that the random-weight goldens already hold; size budget); "vision" runs
# the image prompts through the checkpoint's own tower, as mlx-vlm loads it.
MODEL_DIR_VLM_GROUPS = {"cache", "vectors", "vision"}
# hf: the published layout, as transformers' own save_pretrained writes it (nested config,
# model.language_model.* and model.visual.* names, zero-centred norms, conv [C, 1, K]): the
# layout real checkpoints ship in, which only the loaders' sanitize steps turn into MLX's.
CHECKPOINT_KINDS = ("bf16", "q4", "hf")
DEFAULT_CHECKPOINT_SCENARIOS = ("full_prefill", "prefix_decode")
# q4: affine 4-bit, group 64 (mlx's defaults), with two per-module overrides recorded in the
# config's quantization block the way quantize_model records the MoE router's 8-bit/64.
Q4_DEFAULTS = {"group_size": 64, "bits": 4}
Q4_OVERRIDES = {"language_model.lm_head": {"group_size": 32, "bits": 8},
                "language_model.model.layers.0.mlp.gate_proj": {"group_size": 64, "bits": 8}}


def make_checkpoint(args, directory: Path) -> None:
    """Random weights saved as an MLX model directory with mlx-lm's own conversion steps, or
    (kind hf) in the published layout by transformers."""
    if args.make_checkpoint == "hf":
        return make_published(args, directory)
    spec = read_config(args.config)
    config = spec.lm_config()
    model = build_model(spec.lm_config())
    load_random_weights(model, args.seed)
    if args.make_checkpoint == "bf16":
        # mlx_lm.convert's dtype step: every floating parameter the model's cast_predicate
        # admits (all but A_log) becomes bfloat16.
        cast_predicate = getattr(model, "cast_predicate", lambda _: True)
        with library("mlx-lm", "casting the model to bfloat16"):
            model.update(tree_map_with_path(
                lambda k, v: v.astype(mx.bfloat16)
                if cast_predicate(k) and mx.issubdtype(v.dtype, mx.floating) else v,
                model.parameters()))
    else:
        own = getattr(model, "quant_predicate", None)  # MoE: router and shared gate at 8-bit/64

        def predicate(path, module):
            if path in Q4_OVERRIDES:
                return Q4_OVERRIDES[path]
            return own(path, module) if own is not None else True
        with library("mlx-lm", "quantizing the model (quantize_model)"):
            model, config = quantize_model(model, config, Q4_DEFAULTS["group_size"],
                                           Q4_DEFAULTS["bits"], quant_predicate=predicate)
    with library("mlx-lm", "saving the model directory (save_model, save_config)"):
        mx.eval(model.parameters())
        save_model(directory, model)
        save_config(config, directory / "config.json")
    log(f"{args.config.name}: {args.make_checkpoint} checkpoint saved "
        f"({sum(p.stat().st_size for p in directory.iterdir())} bytes)")


def make_published(args, directory: Path) -> None:
    """transformers' Qwen3_5(Moe)ForConditionalGeneration from a nested config, its parameters
    redrawn from the seed so that none is trivial (transformers initialises norms to zero and
    the projections at 0.02), then save_pretrained: the unconverted published layout."""
    spec = read_config(args.config)
    if not spec.nested or spec.vision is None:
        raise UsageError(f"--make-checkpoint hf needs a nested config with a vision_config: {args.config}")
    torch = oracle.import_torch()
    import transformers
    cls = {"qwen3_5": transformers.Qwen3_5ForConditionalGeneration,
           "qwen3_5_moe": transformers.Qwen3_5MoeForConditionalGeneration}[spec.model_type]
    config_cls = {"qwen3_5": transformers.Qwen3_5Config, "qwen3_5_moe": transformers.Qwen3_5MoeConfig}[spec.model_type]
    config = config_cls(**{k: v for k, v in spec.config.items() if k not in ("architectures", "model_type")})
    torch.manual_seed(args.seed)   # transformers' own init (A_log) draws from the global generator
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        model = cls(config)
        for name, p in model.named_parameters():
            if name.endswith(("A_log", "dt_bias")):
                continue   # transformers' own ranges: the decay must stay a decay
            if p.ndim >= 2:
                scale = p.shape[1] ** -0.5 if p.ndim == 2 else 0.3
            else:
                scale = 0.1 if "norm" in name else 0.02   # zero-centred norms: runtime 1 + w
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale)
        model.save_pretrained(directory, safe_serialization=True)


def model_files(directory: Path) -> dict:
    """The files a golden made from a model directory depends on, with their sha256."""
    names = ["config.json"] + sorted(p.name for p in directory.glob("model*.safetensors"))
    return {n: file_sha256(directory / n) for n in names if (directory / n).is_file()}


def golden_from_model(args, model_dir: Path, out_h5: Path, variant: str, kind: str,
                      model_dir_attr: str = ".") -> None:
    """A model directory as mlx-lm loads it (mlx_lm) and dequantized in float32 (mlx_lm_f32)."""
    scenarios = scenario_list(args, DEFAULT_CHECKPOINT_SCENARIOS)
    if not (model_dir / "config.json").is_file():
        raise UsageError(f"{model_dir} has no config.json")
    try:
        with library("mlx-lm", f"loading the model directory {model_dir} (load_model)"):
            model, config = load_model(model_dir)
    except LibraryFinding as finding:
        if isinstance(finding.exc, FileNotFoundError):  # no weights: not a model directory
            raise GoldenError(f"mlx-lm could not load {model_dir}: {finding.exc}") from finding.exc
        raise
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise GoldenError(f"unknown model_type {config.get('model_type')!r} in {model_dir}")
    raw_json = (model_dir / "config.json").read_text(encoding="utf-8")
    effective = effective_config(model)
    inputs = make_inputs(args.seed, args.prompt_length, effective["vocab_size"])
    dtypes = sorted({str(v.dtype) for _, v in tree_flatten(model.parameters())})
    adt = model.language_model.model.embed_tokens(mx.array([[0]])).dtype
    log(f"{model_dir.name}: parameter dtypes {dtypes}, activations {adt}")

    native = run_all(model, scenarios, inputs, LM_PATH)
    # The float32 runtime tensors before dequantize_model touches the model: mlx-vlm's paths run
    # on exactly these (vlm_paths.load_vlm_weights checks they arrive bit for bit).
    vlm_weights = vlm_weights_for(model_dir, config, dtypes,
                                  lambda: {k: np.array(v) for k, v in tree_flatten(model.parameters())})
    with library("mlx-lm", "dequantizing the model to float32 (dequantize_model, set_dtype)"):
        dequantize_model(model)
        model.set_dtype(mx.float32)
        mx.eval(model.parameters())
    widened = run_all(model, scenarios, inputs, F32_PATH)
    for sc, a, b in zip(scenarios, native, widened):
        d = float(np.abs(a.result.logits - b.result.logits).max())
        log(f"  {sc.name}: max |logits({LM_PATH}) - logits({F32_PATH})| = {d:.3e}")

    root = root_attrs(args, variant, str(adt).removeprefix("mlx.core."),
                      [sc.definition() for sc in scenarios])
    if not kind:
        root["weights_seed"] = -1  # the weights came from the directory; the seed drew the tokens
    root |= {"weights_source": "model_dir", "model_dir": model_dir_attr,
             "model_files_json": json.dumps(model_files(model_dir)),
             "checkpoint_kind": kind,
             "quantization_json": json.dumps(config.get("quantization"))}
    meta = {"root": root, "raw_json": raw_json, "effective_json": json.dumps(effective)}
    results = [(sc, {LM_PATH: a, F32_PATH: b}) for sc, a, b in zip(scenarios, native, widened)]
    store = inputs.datasets()
    if vlm_weights is not None:
        spec = read_config(model_dir / "config.json")
        meta |= add_vlm_paths(spec, vlm_weights, inputs, MODEL_DIR_VLM_GROUPS, args.seed, results, store,
                              root["variant"], tower_weights=own_tower(model_dir))
        meta["probes"] = meta.pop("vlm_probes", [])
    if args.oracle == "on":   # on the dequantized float32 weights the float32 twin ran
        weights = {name: np.array(value) for name, value in tree_flatten(model.parameters())}
        references = oracle.MODEL_DIR_PATHS + ((VLM_PATH,) if vlm_weights is not None else ())
        meta["oracle"] = oracle.capture(read_config(model_dir / "config.json"), meta, weights, store, results,
                                        reference_paths=references)
    check_token_ids(store, meta.get("rope_cases", []), effective["vocab_size"])
    write_golden(out_h5, meta, None, store, results)


def own_tower(model_dir: Path) -> dict:
    """The checkpoint's vision tower as mlx-vlm's own loader makes it (sanitized), runtime names."""
    with library("mlx-vlm", f"loading the model directory {model_dir} (load_model) for its vision tower"):
        model = vlm_load_model(model_dir)
        return {"vision_tower." + k: np.array(v) for k, v in tree_flatten(model.vision_tower.parameters())}


def vlm_weights_for(model_dir: Path, config: dict, dtypes: list, runtime) -> dict | None:
    """The runtime tensors mlx-vlm's paths run on, or None (with the reason logged) when the
    directory gets mlx-lm paths only: no vision_config (a text-only checkpoint), a config
    mlx-vlm refuses, or weights that are not plain float32 (mlx-vlm would run bf16 or packed
    weights, and the Swift side has no bound for those paths yet)."""
    if not isinstance(config.get("vision_config"), dict):
        return None
    if config.get("quantization") or dtypes != ["mlx.core.float32"]:
        log(f"{model_dir.name}: mlx-vlm paths not written: weights {dtypes}"
            f"{', quantized' if config.get('quantization') else ''} (only float32 directories get them)")
        return None
    try:
        build_vlm_model(read_config(model_dir / "config.json"))
    except (GoldenError, LibraryFinding) as exc:   # LibraryFinding: mlx-vlm itself refuses it
        log(f"{model_dir.name}: mlx-vlm paths not written: {exc}")
        return None
    return runtime()
