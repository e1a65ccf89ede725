"""Reading a config and describing what the libraries made of it (effective_json)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import GoldenError

SUPPORTED_MODEL_TYPES = ("qwen3_5", "qwen3_5_moe")

# Keys of /config effective_json, in the order of docs/golden-format.md. rotary_dims and
# layer_types come from the instantiated modules, everything else from the parsed args.
EFFECTIVE_ARG_KEYS = (
    "model_type", "hidden_size", "num_hidden_layers", "intermediate_size",
    "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps",
    "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
    "linear_value_head_dim", "linear_conv_kernel_dim", "full_attention_interval",
    "tie_word_embeddings", "attention_bias", "num_experts", "num_experts_per_tok",
    "moe_intermediate_size", "shared_expert_intermediate_size", "norm_topk_prob",
    "rope_theta", "partial_rotary_factor",
)


def read_config(path: Path) -> tuple[str, dict]:
    if not path.is_file():
        raise GoldenError(f"config file not found: {path}")
    raw = path.read_text(encoding="utf-8")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise GoldenError(f"config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise GoldenError(f"config file {path} has no model_type")
    if config["model_type"] not in SUPPORTED_MODEL_TYPES:
        raise GoldenError(f"unknown model_type {config['model_type']!r} in {path}; "
                          f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    return raw, config


def effective_config(model) -> dict:
    """What mlx-lm's model (built from the config) actually runs."""
    args = model.language_model.args
    layers = list(model.layers)
    eff = {k: getattr(args, k) for k in EFFECTIVE_ARG_KEYS}
    ropes = [layer.self_attn.rope for layer in layers if not layer.is_linear]
    rotary_dims = sorted({int(r.dims) for r in ropes})
    if len(rotary_dims) != 1:
        raise GoldenError(f"attention layers disagree on rotary dims: {rotary_dims}")
    eff["rotary_dims"] = rotary_dims[0]
    eff["rope_parameters"] = args.rope_parameters
    eff["layer_types"] = ["linear_attention" if l.is_linear else "full_attention" for l in layers]
    return eff
