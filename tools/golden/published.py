"""The published layout (what transformers' save_pretrained writes) drawn tensor by tensor and
written shard by shard, for configs too large to hold in memory (the published 9B and 35B).

Names, shapes, dtypes and the shard split come from transformers itself: its model class built
on the meta device (no storage), its state_dict with tied weights removed and conversions
reverted, and huggingface_hub's split of that state_dict into shards (two GatedDeltaNet tensors
stored float32 as the published checkpoints store them). Only the values are ours,
drawn from the seed with make_published's rules, so that on a float32 config every tensor but
A_log equals make_published's (the same generator, the same order). Memory: the shard being
filled, plus at most one tensor larger than a shard."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .configs import read_config
from .errors import GoldenError, UsageError, log

# Stored float32 whatever the model's dtype: the published Qwen 3.5 checkpoints do (Qwen3.5-0.8B
# holds 36 float32 tensors, these two suffixes in its 18 GatedDeltaNet layers; ms-swift PR 9972,
# vllm PR 51836), while transformers' class has no keep-in-float32 rule for them.
PUBLISHED_FLOAT32 = ("linear_attn.A_log", "linear_attn.norm.weight")
# "A few GB": one shard at a time is the memory bound (transformers' own default is 50GB).
SHARD_SIZE = "2GB"
# A_log: transformers' own range, log U(0.01, 16), from a stream of its own ([seed, 5]) so that
# the other tensors keep make_published's draws; dt_bias: transformers' own value, ones.
A_LOG_RANGE = (0.01, 16.0)


def model_classes(model_type: str):
    import transformers
    try:
        return {"qwen3_5": (transformers.Qwen3_5ForConditionalGeneration, transformers.Qwen3_5Config),
                "qwen3_5_moe": (transformers.Qwen3_5MoeForConditionalGeneration,
                                transformers.Qwen3_5MoeConfig)}[model_type]
    except KeyError:
        raise GoldenError(f"no transformers class for model_type {model_type!r}") from None


def declared_dtype(spec) -> str | None:
    """The dtype a published config declares (text_config.dtype, else the top level's dtype or
    torch_dtype); None when it declares none (the tiny configs: float32, as make_published)."""
    for source in (spec.text, spec.config):
        for key in ("dtype", "torch_dtype"):
            if isinstance(source.get(key), str):
                return source[key]
    return None


def meta_model(config_path: Path):
    """transformers' model for a nested config, on the meta device, in the declared dtype."""
    spec = read_config(config_path)
    if not spec.nested or spec.vision is None:
        raise UsageError(f"the published layout needs a nested config with a vision_config: {config_path}")
    from .oracle import import_torch
    torch = import_torch()
    cls, config_cls = model_classes(spec.model_type)
    config = config_cls(**{k: v for k, v in spec.config.items() if k not in ("architectures", "model_type")})
    dtype = declared_dtype(spec)
    if dtype is not None and not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise GoldenError(f"{config_path}: key dtype: {dtype!r} is not a torch dtype")
    with torch.device("meta"):
        # Without a declared dtype, the class as make_published builds it (its config.json
        # then gains no dtype keys in the sub-configs).
        model = cls(config) if dtype is None else cls._from_config(config, dtype=getattr(torch, dtype))
    return torch, model


def draw(torch, name: str, shape, dtype, generator, a_log_rng) -> "torch.Tensor":
    """make_published's rules; drawn in float32 (its dtype) and then cast to the stored dtype."""
    if name.endswith("A_log"):
        value = torch.from_numpy(np.log(a_log_rng.uniform(*A_LOG_RANGE, shape)).astype(np.float32))
    elif name.endswith("dt_bias"):
        value = torch.ones(shape)
    else:
        if len(shape) >= 2:
            scale = shape[1] ** -0.5 if len(shape) == 2 else 0.3
        else:
            scale = 0.1 if "norm" in name else 0.02
        value = torch.randn(shape, generator=generator, dtype=torch.float32) * scale
    return value.to(dtype)


def write_published(config_path: Path, seed: int, directory: Path, shard_size: str = SHARD_SIZE) -> dict:
    """Write config.json, generation_config.json, the shards and (when sharded)
    model.safetensors.index.json into directory. Returns {parameters, bytes, shards}."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    torch, model = meta_model(config_path)
    # What save_pretrained does before it writes (transformers 5.25, modeling_utils.save_pretrained).
    state = remove_tied_weights_from_state_dict(model.state_dict(), model)
    state = revert_weight_conversion(model, state)
    params = dict(model.named_parameters())
    for name in state:
        if name.endswith(PUBLISHED_FLOAT32) and state[name].dtype != torch.float32:
            state[name] = torch.empty(state[name].shape, dtype=torch.float32, device="meta")
    if set(state) - set(params):
        raise GoldenError(f"the published state_dict holds tensors that are not parameters: "
                          f"{sorted(set(state) - set(params))[:5]}")
    split = split_torch_state_dict_into_shards(state, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=shard_size)
    model.config.dtype = str(model.dtype).split(".")[1]
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(directory)
    if model.can_generate():
        model.generation_config.save_pretrained(directory)

    generator = torch.Generator().manual_seed(seed)
    a_log_rng = np.random.default_rng([seed, 5])
    pending = {f: set(names) for f, names in split.filename_to_tensors.items()}
    filled: dict[str, dict] = {f: {} for f in pending}
    written, total, started = 0, len(pending), time.monotonic()
    # Drawn in named_parameters order (make_published's), each shard written once it is full.
    for name, p in params.items():
        if name not in state:
            continue   # tied: the state_dict keeps the other name
        shard = split.tensor_to_filename[name]
        filled[shard][name] = draw(torch, name, tuple(p.shape), state[name].dtype, generator, a_log_rng)
        pending[shard].discard(name)
        if not pending[shard]:
            tensors = filled.pop(shard)
            save_file({k: tensors[k] for k in split.filename_to_tensors[shard]}, directory / shard,
                      metadata={"format": "pt"})
            written += 1
            del tensors
            if total > 1:
                log(f"published layout: {shard} written ({written}/{total}, "
                    f"{time.monotonic() - started:.0f}s)")
    if filled:
        raise GoldenError(f"published layout: shards never filled: {sorted(filled)}")
    if split.is_sharded:
        index = {"metadata": {"total_parameters": model.num_parameters(), **split.metadata},
                 "weight_map": split.tensor_to_filename}
        (directory / "model.safetensors.index.json").write_text(
            json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"parameters": model.num_parameters(), "bytes": split.metadata["total_size"], "shards": total}
