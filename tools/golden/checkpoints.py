"""MLX model directories: writing one from random weights with mlx-lm's own conversion steps
or, as real ones are made, the published layout converted by mlx-vlm (--make-checkpoint), and
goldens of one as mlx-lm loads it (path mlx_lm, and the float32 twin mlx_lm_f32 when it adds an
exact reference) and as mlx-vlm loads it (mlx_vlm, multimodal directories)."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import shutil
import sys
import time
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
# mlx-q4, mlx-q8, mlx-bf16: the published layout (published.py, shard by shard) converted by
# mlx-vlm's own convert, as mlx-community's checkpoints are made: affine quantization at group
# 64 (the vision tower stays unquantized, mlx-vlm's rule) or a cast to bfloat16.
MLX_KINDS = {"mlx-q4": {"quantize": True, "q_bits": 4, "dtype": "float32"},
             "mlx-q8": {"quantize": True, "q_bits": 8, "dtype": "float32"},
             "mlx-bf16": {"quantize": False, "q_bits": 4, "dtype": "bfloat16"}}
# The quantized kinds convert in float32, so scales, biases and every unquantized tensor are
# float32: on mlx's CPU backend quantized_matmul on float32 scales gives the bits of the
# dequantized float32 model (measured: tools/test_mlx_checkpoints.py compares the logits), so
# the native run is itself an exact float32 reference and no float32 twin is needed at scale.
# (bf16 scales, as mlx-community ships them, would make the native run a bf16 run.)
MLX_GROUP_SIZE = 64
CHECKPOINT_KINDS = ("bf16", "q4", "hf", *MLX_KINDS)
# --f32-twin auto writes the float32 twin only when it fits comfortably: 4 bytes per parameter
# at most this share of physical memory (the native model is freed before the twin loads).
TWIN_MEMORY_SHARE = 0.5
DEFAULT_CHECKPOINT_SCENARIOS = ("full_prefill", "prefix_decode")
# q4: affine 4-bit, group 64 (mlx's defaults), with two per-module overrides recorded in the
# config's quantization block the way quantize_model records the MoE router's 8-bit/64.
Q4_DEFAULTS = {"group_size": 64, "bits": 4}
Q4_OVERRIDES = {"language_model.lm_head": {"group_size": 32, "bits": 8},
                "language_model.model.layers.0.mlp.gate_proj": {"group_size": 64, "bits": 8}}


def peak_rss_gb() -> float:
    """This process's peak resident set so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


@contextlib.contextmanager
def step(what: str):
    """Logs a step's wall time and the process's peak RSS after it."""
    started = time.monotonic()
    yield
    log(f"step {what}: {time.monotonic() - started:.1f}s, peak RSS so far {peak_rss_gb():.2f} GB")


def release() -> None:
    """Return a freed model's memory before the next one loads: one model at a time."""
    gc.collect()
    mx.clear_cache()


def make_checkpoint(args, directory: Path) -> None:
    """Random weights saved as an MLX model directory with mlx-lm's own conversion steps, or
    (kind hf) in the published layout by transformers, or (mlx-*) the published layout
    converted by mlx-vlm."""
    if args.make_checkpoint == "hf":
        return make_published(args, directory)
    if args.make_checkpoint in MLX_KINDS:
        return make_mlx_checkpoint(args, directory)
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


def make_mlx_checkpoint(args, directory: Path) -> None:
    """The published layout written shard by shard into a working folder beside directory,
    then mlx-vlm's convert of it into directory; the working folder is removed."""
    from .published import write_published
    work = directory.with_name(directory.name.removesuffix(".tmp") + ".published.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        with step("write the published layout"):
            written = write_published(args.config, args.seed, work)
        log(f"{args.config.name}: published layout, {written['parameters']} parameters, "
            f"{written['bytes']} bytes in {written['shards']} shard(s)")
        with step(f"convert ({args.make_checkpoint}, mlx-vlm)"):
            convert_published(work, directory, args.make_checkpoint)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"{args.config.name}: {args.make_checkpoint} checkpoint saved "
        f"({sum(p.stat().st_size for p in directory.iterdir())} bytes)")


def convert_published(source: Path, directory: Path, kind: str) -> None:
    """mlx-vlm's own convert (its Python API) of a published-layout directory. Its [INFO]
    lines go to stderr: stdout stays free for the caller."""
    from mlx_vlm.convert import convert
    options = MLX_KINDS[kind]
    with library("mlx-vlm", f"converting {source.name} ({kind}, mlx_vlm.convert)"), \
            contextlib.redirect_stdout(sys.stderr):
        convert(str(source), str(directory), quantize=options["quantize"], q_bits=options["q_bits"],
                q_group_size=MLX_GROUP_SIZE, q_mode="affine", dtype=options["dtype"])


def model_files(directory: Path) -> dict:
    """The files a golden made from a model directory depends on, with their sha256."""
    names = ["config.json"] + sorted(p.name for p in directory.glob("model*.safetensors"))
    return {n: file_sha256(directory / n) for n in names if (directory / n).is_file()}


def load_lm(model_dir: Path):
    """mlx-lm's load_model; a directory without weights is no model directory."""
    try:
        with library("mlx-lm", f"loading the model directory {model_dir} (load_model)"):
            return load_model(model_dir)
    except LibraryFinding as finding:
        if isinstance(finding.exc, FileNotFoundError):  # no weights: not a model directory
            raise GoldenError(f"mlx-lm could not load {model_dir}: {finding.exc}") from finding.exc
        raise


def logical_parameters(model) -> int:
    """Parameters as the float32 twin holds them: a quantized layer counts its dequantized
    weight (scales × group size), not its packed words, scales and biases."""
    count, packed = 0, set()
    for path, module in model.named_modules():
        if hasattr(module, "scales") and hasattr(module, "group_size"):
            count += module.scales.size * module.group_size
            packed |= {f"{path}.{k}" if path else k for k in ("weight", "scales", "biases")}
    return count + sum(v.size for k, v in tree_flatten(model.parameters()) if k not in packed)


def memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def twin_decision(option: str, native_float32: bool, parameters: int) -> tuple[bool, str]:
    """Whether to write the float32 twin mlx_lm_f32, and why (logged and stored)."""
    need = 4 * parameters
    fits = need <= TWIN_MEMORY_SHARE * memory_bytes()
    size = f"{need / 1e9:.1f} GB in float32, {memory_bytes() / 1e9:.0f} GB of memory"
    if option == "on":
        return True, f"asked for (--f32-twin on; {size})"
    if option == "off":
        return False, "not asked for (--f32-twin off)"
    if native_float32:
        return False, "the native run is float32 (float32 weights or float32 scales): mlx_lm is the exact reference"
    if not fits:
        return False, f"does not fit comfortably ({size}; limit {TWIN_MEMORY_SHARE:.0%})"
    return True, f"the native run is not float32 ({size})"


# --oracle auto runs the float64 oracle only when it fits comfortably: the weights in float64
# are held three times (the numpy copy, transformers' CausalLM and its ConditionalGeneration
# model) beside their float32 copy, 28 bytes per parameter. Measured: the 0.8B published shape
# (0.75e9 parameters) passed 20 GB in the oracle before it was stopped.
ORACLE_MEMORY_SHARE = 0.5
ORACLE_BYTES_PER_PARAMETER = 28


def oracle_decision(option: str, parameters: int) -> tuple[str, dict | None]:
    """'on' or 'off', and when off, why (stored as oracle_absent_json: the Swift side reports an
    oracle that cannot be made here as not applicable, one turned off by choice as a gap)."""
    need = ORACLE_BYTES_PER_PARAMETER * parameters
    if option == "on" or (option == "auto" and need <= ORACLE_MEMORY_SHARE * memory_bytes()):
        return "on", None
    if option == "off":
        return "off", {"reason": "turned off (--oracle off)", "applicable": True}
    return "off", {"reason": f"the float64 oracle of this checkpoint needs about {need / 1e9:.1f} GB "
                             f"({ORACLE_BYTES_PER_PARAMETER} bytes per parameter), more than {ORACLE_MEMORY_SHARE:.0%} of this machine's "
                             f"{memory_bytes() / 1e9:.0f} GB (--oracle auto)", "applicable": False}


def golden_from_model(args, model_dir: Path, out_h5: Path, variant: str, kind: str,
                      model_dir_attr: str = ".") -> None:
    """A model directory as mlx-lm loads it (mlx_lm), dequantized in float32 (mlx_lm_f32, when
    it is an exact reference the native run is not) and, for a multimodal directory, as
    mlx-vlm runs it (mlx_vlm). One model is held at a time."""
    scenarios = scenario_list(args, DEFAULT_CHECKPOINT_SCENARIOS)
    if not (model_dir / "config.json").is_file():
        raise UsageError(f"{model_dir} has no config.json")
    with step("load the model (mlx-lm, native)"):
        model, config = load_lm(model_dir)
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise GoldenError(f"unknown model_type {config.get('model_type')!r} in {model_dir}")
    raw_json = (model_dir / "config.json").read_text(encoding="utf-8")
    effective = effective_config(model)
    inputs = make_inputs(args.seed, args.prompt_length, effective["vocab_size"])
    dtypes = sorted({str(v.dtype) for _, v in tree_flatten(model.parameters())})
    adt = model.language_model.model.embed_tokens(mx.array([[0]])).dtype
    # Float32 throughout: float32 activations and every floating tensor (scales included) float32.
    native_float32 = set(dtypes) <= {"mlx.core.float32", "mlx.core.uint32"} and adt == mx.float32
    parameters = logical_parameters(model)
    log(f"{model_dir.name}: parameter dtypes {dtypes}, activations {adt}, {parameters} parameters")
    twin, twin_reason = twin_decision(getattr(args, "f32_twin", "on"), native_float32, parameters)
    args.oracle, oracle_absent = oracle_decision(args.oracle, parameters)
    if oracle_absent:
        log(f"{model_dir.name}: float64 oracle not run: {oracle_absent['reason']}")
    log(f"{model_dir.name}: float32 twin {F32_PATH}: {'written' if twin else 'not written'}: {twin_reason}")
    vlm_route = vlm_route_for(model_dir, config, dtypes, parameters)

    with step(f"run {LM_PATH}"):
        native = run_all(model, scenarios, inputs, LM_PATH)
    # The float32 runtime tensors mlx-vlm's paths and the oracle run on: the native model's when
    # it is float32 and unquantized (vlm_paths.load_vlm_weights checks they arrive bit for bit),
    # else the twin's.
    plain_float32 = dtypes == ["mlx.core.float32"]
    want_weights = vlm_route in ("runtime", "widened") or args.oracle == "on"
    f32_weights = numpy_parameters(model) if want_weights and plain_float32 else None
    model = None
    release()

    widened = None
    if twin or (want_weights and f32_weights is None):
        with step(f"load and widen the model (mlx-lm, {F32_PATH})"):
            model, _ = load_lm(model_dir)
            with library("mlx-lm", "dequantizing the model to float32 (dequantize_model, set_dtype)"):
                dequantize_model(model)
                model.set_dtype(mx.float32)
                mx.eval(model.parameters())
        if twin:
            with step(f"run {F32_PATH}"):
                widened = run_all(model, scenarios, inputs, F32_PATH)
            for sc, a, b in zip(scenarios, native, widened):
                d = float(np.abs(a.result.logits - b.result.logits).max())
                log(f"  {sc.name}: max |logits({LM_PATH}) - logits({F32_PATH})| = {d:.3e}")
        if f32_weights is None and want_weights:
            f32_weights = numpy_parameters(model)
        model = None
        release()

    root = root_attrs(args, variant, str(adt).removeprefix("mlx.core."),
                      [sc.definition() for sc in scenarios])
    if not kind:
        root["weights_seed"] = -1  # the weights came from the directory; the seed drew the tokens
    results = [(sc, {LM_PATH: a} | ({F32_PATH: widened[i]} if widened else {}))
               for i, (sc, a) in enumerate(zip(scenarios, native))]
    store = inputs.datasets()
    meta = {"raw_json": raw_json, "effective_json": json.dumps(effective)}
    if vlm_route is not None:
        spec = read_config(model_dir / "config.json")
        with step(f"run {VLM_PATH} ({vlm_route})"):
            if vlm_route == "native":
                loaded = load_vlm(model_dir)
                meta |= add_vlm_paths(spec, None, inputs, MODEL_DIR_VLM_GROUPS, args.seed, results, store,
                                      variant, loaded=loaded)
                loaded = None
            else:
                meta |= add_vlm_paths(spec, runtime_weights(f32_weights), inputs, MODEL_DIR_VLM_GROUPS,
                                      args.seed, results, store, variant, tower_weights=own_tower(model_dir))
            meta["probes"] = meta.pop("vlm_probes", [])
        release()
    if args.oracle == "on":   # on the float32 weights (dequantized when quantized)
        references = ((F32_PATH,) if twin else (LM_PATH,)) + ((VLM_PATH,) if vlm_route else ())
        meta["oracle"] = oracle.capture(read_config(model_dir / "config.json"), meta, f32_weights, store, results,
                                        reference_paths=references)
    paths = sorted({p for _, run in results for p in run})
    root |= {"weights_source": "model_dir", "model_dir": model_dir_attr,
             "model_files_json": json.dumps(model_files(model_dir)),
             "checkpoint_kind": kind,
             "quantization_json": json.dumps(config.get("quantization")),
             # What the Swift side may hold each path to: with no twin and a float32 native run,
             # mlx_lm is the exact reference.
             "native_float32": int(native_float32),
             "f32_twin": "written" if twin else "not written",
             "f32_twin_reason": twin_reason,
             "reference_paths_json": json.dumps(paths)}
    if oracle_absent:
        root["oracle_absent_json"] = json.dumps(oracle_absent)
    meta["root"] = root
    check_token_ids(store, meta.get("rope_cases", []), effective["vocab_size"])
    with step("write the golden"):
        write_golden(out_h5, meta, None, store, results)


def numpy_parameters(model) -> dict:
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def runtime_weights(weights: dict) -> dict:
    """The language model's runtime tensors (mlx-vlm's text half runs on these)."""
    return {k: v for k, v in weights.items() if k.startswith("language_model.")}


def load_vlm(model_dir: Path):
    with library("mlx-vlm", f"loading the model directory {model_dir} (load_model)"):
        model = vlm_load_model(model_dir)
        mx.eval(model.parameters())
    return model


def own_tower(model_dir: Path) -> dict:
    """The checkpoint's vision tower as mlx-vlm's own loader makes it (sanitized), runtime names,
    widened to float32 (exact: a bf16 directory's mlx-vlm paths run on widened weights)."""
    with library("mlx-vlm", f"loading the model directory {model_dir} (load_model) for its vision tower"):
        model = vlm_load_model(model_dir, lazy=True)
        return {"vision_tower." + k: np.array(v.astype(mx.float32))
                for k, v in tree_flatten(model.vision_tower.parameters())}


def vlm_route_for(model_dir: Path, config: dict, dtypes: list, parameters: int) -> str | None:
    """How mlx-vlm's paths run, or None (the reason logged) when the directory gets mlx-lm paths
    only: "runtime" (float32, unquantized: on the tensors mlx-lm loaded, checked bit for bit),
    "native" (quantized: mlx-vlm's own load_model, as loaded, no float32 copy), "widened"
    (bf16/f16: on the float32 widening of the weights, when 4 bytes per parameter fits).
    None: no vision_config (text-only), a config mlx-vlm refuses, or a wide model that does
    not fit."""
    if not isinstance(config.get("vision_config"), dict):
        return None
    try:
        build_vlm_model(read_config(model_dir / "config.json"))
    except (GoldenError, LibraryFinding) as exc:   # LibraryFinding: mlx-vlm itself refuses it
        log(f"{model_dir.name}: mlx-vlm paths not written: {exc}")
        return None
    if config.get("quantization"):
        return "native"
    if dtypes == ["mlx.core.float32"]:
        return "runtime"
    if 4 * parameters > TWIN_MEMORY_SHARE * memory_bytes():
        log(f"{model_dir.name}: mlx-vlm paths not written: weights {dtypes}; their float32 widening "
            f"({4 * parameters / 1e9:.1f} GB) does not fit comfortably")
        return None
    return "widened"
