"""Reading a config (flat or nested), checking it, and what the libraries made of it.

Two forms, told apart the way mlx-lm's ModelArgs.from_dict tells them (a text_config key):
  flat     the text config itself, model_type qwen3_5 | qwen3_5_moe at its top level;
  nested   a checkpoint config as published: model_type at the top, the text model under
           text_config, an optional vision_config, and the special token ids at the top.
mlx-lm takes either file as it is. mlx-vlm's ModelConfig takes text_config / vision_config and
the token ids: for a nested file that is the file itself, for a flat one the generator nests
it (vlm_params). Special token ids and vision_config are read from the top level in both forms.

The checks below catch what would otherwise surface as a confusing crash or a golden that
means nothing (heads that do not divide, more experts per token than experts, ids outside the
vocabulary, text where a number belongs), each named by file and key. Anything the libraries
accept past these checks is theirs to run; what they cannot run is a library finding.
"""

from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import GoldenError, UsageError

SUPPORTED_MODEL_TYPES = ("qwen3_5", "qwen3_5_moe")
# text_config.model_type of a nested config, per top-level model_type (published: *_text).
TEXT_MODEL_TYPES = {"qwen3_5": ("qwen3_5_text", "qwen3_5"),
                    "qwen3_5_moe": ("qwen3_5_moe_text", "qwen3_5_moe")}

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

# The ModelConfig fields of the image prompts, in the order vlm_json has them. Without them in
# the config, the defaults sit at the end of the vocabulary: V-5, V-4, V-3, V-2 (995..998 for
# the tiny vocabulary of 1000).
SPECIAL_TOKEN_KEYS = ("vision_start_token_id", "vision_end_token_id", "image_token_id",
                      "video_token_id")
DEFAULT_SPECIAL_OFFSETS = (5, 4, 3, 2)
MIN_VOCAB = 8                 # 4 special ids and room for text ids in the prompts
DEFAULT_VISION_CONFIG = {"spatial_merge_size": 2}   # what the LanguageModel reads of it

# Numbers the checks require, beyond what mlx-vlm's TextConfig requires to be present.
POSITIVE_INTS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "vocab_size", "linear_num_key_heads", "linear_num_value_heads",
                 "linear_key_head_dim", "linear_value_head_dim", "linear_conv_kernel_dim",
                 "max_position_embeddings", "full_attention_interval", "head_dim",
                 "intermediate_size", "moe_intermediate_size", "num_experts_per_tok")
NON_NEGATIVE_INTS = ("num_experts", "shared_expert_intermediate_size", "decoder_sparse_step")
POSITIVE_NUMBERS = ("rms_norm_eps", "rope_theta", "partial_rotary_factor")
BOOLS = ("tie_word_embeddings", "attention_bias", "norm_topk_prob")
ROPE_NUMBERS = ("rope_theta", "partial_rotary_factor", "factor")


class ConfigError(GoldenError):
    """A config the generator refuses, named by file and key."""

    def __init__(self, path: Path, key: str, message: str):
        super().__init__(f"config {path}: key {key}: {message}")
        self.key = key


@dataclass
class ModelSpec:
    """A checked config and what each library is given."""
    path: Path
    raw_json: str             # the file exactly as given (/config raw_json)
    config: dict              # the parsed file
    nested: bool
    text: dict                # the text config: the file itself, or its text_config
    vision: dict | None       # the top-level vision_config, if any
    token_ids: dict           # SPECIAL_TOKEN_KEYS -> id: the config's own, else the defaults
    given_token_ids: tuple    # the keys the config gave

    @property
    def model_type(self) -> str:
        return self.config["model_type"]

    @property
    def vocab_size(self) -> int:
        return self.text["vocab_size"]

    def lm_config(self) -> dict:
        """What mlx-lm's ModelArgs.from_dict gets: the file, either form (a copy: the library
        renames keys of rope_parameters in place)."""
        return copy.deepcopy(self.config)

    def vlm_params(self) -> dict:
        """The dict mlx-vlm's ModelConfig.from_dict is built from (/config vlm_json)."""
        if not self.nested:
            return {"model_type": self.model_type, "text_config": copy.deepcopy(self.config),
                    "vision_config": copy.deepcopy(self.vision or DEFAULT_VISION_CONFIG),
                    **self.token_ids}
        params = copy.deepcopy(self.config)
        if not params.get("vision_config"):
            params["vision_config"] = dict(DEFAULT_VISION_CONFIG)
        params.update({k: v for k, v in self.token_ids.items() if k not in self.given_token_ids})
        return params


def read_config(path: Path) -> ModelSpec:
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    raw = path.read_text(encoding="utf-8")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise GoldenError(f"config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise GoldenError(f"config file {path} is not a JSON object")
    if "model_type" not in config:
        raise ConfigError(path, "model_type", "missing required key")
    model_type = config["model_type"]
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(path, "model_type", f"unknown model_type {model_type!r}; supported: "
                                              f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    nested = "text_config" in config
    if nested:
        text, prefix = config["text_config"], "text_config."
        if not isinstance(text, dict):
            raise ConfigError(path, "text_config", "must be an object")
        if "model_type" in text and text["model_type"] not in TEXT_MODEL_TYPES[model_type]:
            raise ConfigError(path, "text_config.model_type",
                              f"{text['model_type']!r} does not belong to model_type {model_type!r} "
                              f"(expected one of {', '.join(TEXT_MODEL_TYPES[model_type])})")
    else:
        text, prefix = config, ""
    check_text_config(path, text, model_type, prefix, nested)
    vision = config.get("vision_config")
    if vision is not None and not isinstance(vision, dict):
        raise ConfigError(path, "vision_config", "must be an object")
    token_ids, given = special_token_ids(path, config, text["vocab_size"], prefix)
    return ModelSpec(path, raw, config, nested, text, vision or None, token_ids, given)


def required_text_keys(model_type: str) -> list[str]:
    """The fields mlx-vlm's TextConfig has no default for (mlx-lm has defaults for all):
    without one, mlx-vlm leaves text_config a dict and cannot build the model."""
    import importlib
    module = importlib.import_module(f"mlx_vlm.models.{model_type}.config")
    return [name for name, p in inspect.signature(module.TextConfig).parameters.items()
            if p.default is inspect.Parameter.empty]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_text_config(path: Path, text: dict, model_type: str, prefix: str, nested: bool) -> None:
    def fail(key, message):
        raise ConfigError(path, prefix + key, message)

    for key in required_text_keys(model_type):
        if key == "model_type" and not nested:
            continue  # the flat file's own model_type, checked above
        if key not in text:
            fail(key, f"missing required key (mlx-vlm's {model_type} TextConfig has no default)")
    for key in POSITIVE_INTS:
        if key in text and not (key == "head_dim" and text[key] is None):
            if not _is_int(text[key]):
                fail(key, f"must be an integer, got {text[key]!r}")
            if text[key] < 1:
                fail(key, f"must be at least 1, got {text[key]}")
    for key in NON_NEGATIVE_INTS:
        if key in text:
            if not _is_int(text[key]):
                fail(key, f"must be an integer, got {text[key]!r}")
            if text[key] < 0:
                fail(key, f"must not be negative, got {text[key]}")
    for key in POSITIVE_NUMBERS:
        if key in text:
            if not _is_number(text[key]):
                fail(key, f"must be a number, got {text[key]!r}")
            if not text[key] > 0:
                fail(key, f"must be positive, got {text[key]}")
    for key in BOOLS:
        if key in text and not isinstance(text[key], bool):
            fail(key, f"must be true or false, got {text[key]!r}")
    rope = text.get("rope_parameters")
    if rope is not None:
        if not isinstance(rope, dict):
            fail("rope_parameters", f"must be an object or null, got {rope!r}")
        for key in ROPE_NUMBERS:
            if key in rope and not (_is_number(rope[key]) and rope[key] > 0):
                fail(f"rope_parameters.{key}", f"must be a positive number, got {rope[key]!r}")
        if "mrope_section" in rope and not (isinstance(rope["mrope_section"], list) and all(
                _is_int(s) and s >= 0 for s in rope["mrope_section"])):
            fail("rope_parameters.mrope_section",
                 f"must be a list of non-negative integers, got {rope['mrope_section']!r}")
        if "mrope_interleaved" in rope and not isinstance(rope["mrope_interleaved"], bool):
            fail("rope_parameters.mrope_interleaved",
                 f"must be true or false, got {rope['mrope_interleaved']!r}")

    # Head counts that do not divide: grouped attention and the GDN's head repetition need it.
    heads, kv = text.get("num_attention_heads"), text.get("num_key_value_heads")
    if heads is not None and kv is not None and heads % kv:
        fail("num_key_value_heads", f"{kv} does not divide num_attention_heads {heads}")
    hk, hv = text.get("linear_num_key_heads"), text.get("linear_num_value_heads")
    if hk is not None and hv is not None and hv % hk:
        fail("linear_num_value_heads", f"{hv} is not a multiple of linear_num_key_heads {hk}")

    experts = text.get("num_experts", 0)
    if model_type == "qwen3_5_moe" and experts < 1:
        fail("num_experts", f"a qwen3_5_moe model needs at least 1 expert, got {experts}")
    if experts > 0:
        k = text.get("num_experts_per_tok", 0)
        if k < 1:
            fail("num_experts_per_tok", f"must be at least 1 with {experts} experts, got {k}")
        if k > experts:
            fail("num_experts_per_tok", f"{k} experts per token, but num_experts is {experts}")
    if text["vocab_size"] < MIN_VOCAB:
        fail("vocab_size", f"{text['vocab_size']} is too small: the prompts need {MIN_VOCAB} ids "
                           f"(4 special ids and text)")


def special_token_ids(path: Path, config: dict, vocab: int, prefix: str) -> tuple[dict, tuple]:
    """The config's own special ids (top level), each missing one at its default V-5..V-2 (or,
    when a given id holds that place, the highest free id below V)."""
    given = {k: config[k] for k in SPECIAL_TOKEN_KEYS if k in config}
    for key, value in given.items():
        if not _is_int(value):
            raise ConfigError(path, key, f"must be an integer token id, got {value!r}")
    outside = [f"{k} {v}" for k, v in given.items() if not 0 <= v < vocab]
    if outside:
        raise ConfigError(path, ", ".join(k for k, v in given.items() if not 0 <= v < vocab),
                          f"{', '.join(outside)} outside the vocabulary [0, {vocab}) "
                          f"({prefix}vocab_size {vocab})")
    if len(set(given.values())) != len(given):
        raise ConfigError(path, ", ".join(given), f"special token ids must differ, got {given}")
    ids = dict(given)
    for key, offset in zip(SPECIAL_TOKEN_KEYS, DEFAULT_SPECIAL_OFFSETS):
        if key in ids:
            continue
        taken = set(ids.values())
        ids[key] = vocab - offset if vocab - offset not in taken else \
            next(i for i in range(vocab - 1, -1, -1) if i not in taken)
    return {k: ids[k] for k in SPECIAL_TOKEN_KEYS}, tuple(k for k in SPECIAL_TOKEN_KEYS if k in given)


def effective_config(model) -> dict:
    """What mlx-lm's model (built from the config) actually runs. rotary_dims is null when no
    layer is full attention (full_attention_interval > num_hidden_layers)."""
    args = model.language_model.args
    layers = list(model.layers)
    eff = {k: getattr(args, k) for k in EFFECTIVE_ARG_KEYS}
    ropes = [layer.self_attn.rope for layer in layers if not layer.is_linear]
    rotary_dims = sorted({int(r.dims) for r in ropes})
    if len(rotary_dims) > 1:
        raise GoldenError(f"attention layers disagree on rotary dims: {rotary_dims}")
    eff["rotary_dims"] = rotary_dims[0] if rotary_dims else None
    eff["rope_parameters"] = args.rope_parameters
    eff["layer_types"] = ["linear_attention" if l.is_linear else "full_attention" for l in layers]
    return eff
