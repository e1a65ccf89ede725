"""transformers' Qwen 3.5 given what the libraries ran: its config classes, the golden's runtime
weights mapped back to the checkpoint layout (checked by the libraries' own sanitize), and the
models built in float64."""

from __future__ import annotations

import json

import numpy as np

from .errors import OracleError, OracleUnavailable
from .torch_env import np_dtype, precision

# Norm weights whose runtime value is 1 + w (mlx-lm's sanitize adds the +1; transformers keeps w).
SHIFTED_NORMS = (".input_layernorm.weight", ".post_attention_layernorm.weight", "model.norm.weight",
                 ".q_norm.weight", ".k_norm.weight")


def text_config_kwargs(raw: dict, effective: dict, vlm_effective: dict | None) -> tuple[dict, list]:
    """Keyword arguments for transformers' text config, and the defaults that differ."""
    from transformers import Qwen3_5TextConfig
    from transformers.models.qwen3_5_moe import Qwen3_5MoeTextConfig
    moe = raw["model_type"] == "qwen3_5_moe"
    cls = Qwen3_5MoeTextConfig if moe else Qwen3_5TextConfig
    # A published config's dtype (bfloat16) is the checkpoint's storage, not the oracle's precision.
    fields = set(cls.__dataclass_fields__) - {"rope_parameters", "layer_types", "dtype", "torch_dtype"}
    given = {k: v for k, v in raw.items() if k in fields}
    # What transformers itself makes of the raw config: the rope and the layer pattern.
    own = cls(**{k: v for k, v in raw.items() if k != "model_type"})
    rope = dict(effective["rope_parameters"])
    rope["rope_type"] = rope.pop("type", rope.get("rope_type", "default"))
    mrope = (vlm_effective or {}).get("mrope_section", rope.get("mrope_section"))
    rope_parameters = {"rope_type": rope["rope_type"], "rope_theta": float(effective["rope_theta"]),
                       "partial_rotary_factor": float(effective["partial_rotary_factor"]),
                       "mrope_section": list(mrope), "mrope_interleaved": True}
    kwargs = dict(given, head_dim=effective["head_dim"], layer_types=list(effective["layer_types"]),
                  rope_parameters=rope_parameters, rms_norm_eps=effective["rms_norm_eps"],
                  tie_word_embeddings=bool(effective["tie_word_embeddings"]))
    for key in ("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
                "linear_value_head_dim", "linear_conv_kernel_dim", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "vocab_size", "attention_bias"):
        kwargs[key] = effective[key]
    if moe:
        for key in ("num_experts", "num_experts_per_tok", "moe_intermediate_size",
                    "shared_expert_intermediate_size"):
            kwargs[key] = effective[key]
    else:
        kwargs["intermediate_size"] = effective["intermediate_size"]

    differences = []
    own_rope = dict(own.rope_parameters or {})
    own_rotary = int(own.head_dim * own_rope.get("partial_rotary_factor", 1.0))
    if (own_rope.get("rope_theta"), own_rotary) != (rope_parameters["rope_theta"], effective["rotary_dims"]):
        differences.append({
            "what": "rope resolution",
            "transformers": f"rope_theta {own_rope.get('rope_theta')}, partial_rotary_factor "
                            f"{own_rope.get('partial_rotary_factor')} (rotary dims {own_rotary}) from this config",
            "libraries": f"rope_theta {effective['rope_theta']}, partial_rotary_factor "
                         f"{effective['partial_rotary_factor']} (rotary dims {effective['rotary_dims']}): "
                         f"their default rope_parameters override the top-level fields",
            "oracle": "given the libraries' values as rope_parameters"})
    if own.layer_types != list(effective["layer_types"]):
        differences.append({"what": "layer pattern", "transformers": own.layer_types,
                            "libraries": effective["layer_types"], "oracle": "given the libraries' pattern"})
    if own.head_dim != effective["head_dim"]:
        differences.append({"what": "head_dim", "transformers": own.head_dim,
                            "libraries": effective["head_dim"], "oracle": "given the libraries' value"})
    if moe and not effective.get("norm_topk_prob", True):
        raise OracleUnavailable("norm_topk_prob is false: transformers' Qwen 3.5 MoE router always "
                          "renormalises the top-k probabilities, so it cannot be the oracle here")
    return kwargs, differences


def build_text_config(torch, kwargs: dict, moe: bool):
    from transformers import Qwen3_5TextConfig
    from transformers.models.qwen3_5_moe import Qwen3_5MoeTextConfig
    config = (Qwen3_5MoeTextConfig if moe else Qwen3_5TextConfig)(**kwargs)
    config._attn_implementation = "eager"
    if moe:
        config._experts_implementation = "eager"
    return config


# ---------------------------------------------------------------------------------------------
# Weights: the runtime layout back to the checkpoint layout


def checkpoint_weights(runtime: dict[str, np.ndarray], vision: dict[str, np.ndarray] | None,
                       moe: bool, tied: bool) -> dict[str, np.ndarray]:
    """The golden's runtime tensors (mlx-lm names after sanitize; mlx-vlm's vision_tower.*) in
    the Hugging Face checkpoint layout Qwen3_5ForConditionalGeneration loads, float32:
    model.language_model.*, lm_head.weight, model.visual.*; norms zero-centred (w - 1), conv1d
    [Cc, 1, K], experts fused as gate_up_proj [E, 2·Im, D], patch embed [Dv, C, Tp, P, P]."""
    out: dict[str, np.ndarray] = {}
    experts: dict[str, dict[str, np.ndarray]] = {}
    for name, value in runtime.items():
        if name == "language_model.lm_head.weight":
            out["lm_head.weight"] = value
            continue
        if not name.startswith("language_model.model."):
            raise OracleError(f"/weights/{name}: not a language-model runtime name")
        rest = name.removeprefix("language_model.model.")
        if name.endswith(SHIFTED_NORMS):
            if not np.all((value >= 0.5) & (value <= 2.0)):
                # w - 1 is exact in float32 only there (Sterbenz), and the round trip check needs it.
                raise OracleError(f"/weights/{name}: a norm weight outside [0.5, 2]")
            value = (value - np.float32(1.0)).astype(np.float32)
        elif rest.endswith("conv1d.weight"):
            value = np.ascontiguousarray(np.swapaxes(value, 1, 2))      # [Cc, K, 1] -> [Cc, 1, K]
        elif ".mlp.switch_mlp." in rest:
            layer, _, proj = rest.partition(".mlp.switch_mlp.")
            experts.setdefault(layer, {})[proj.removesuffix(".weight")] = value
            continue
        out["model.language_model." + rest] = value
    for layer, projs in experts.items():
        if sorted(projs) != ["down_proj", "gate_proj", "up_proj"]:
            raise OracleError(f"{layer}: switch_mlp holds {sorted(projs)}")
        out[f"model.language_model.{layer}.mlp.experts.gate_up_proj"] = np.concatenate(
            [projs["gate_proj"], projs["up_proj"]], axis=1)
        out[f"model.language_model.{layer}.mlp.experts.down_proj"] = projs["down_proj"]
    if moe != bool(experts):
        raise OracleError("the weights and the model type disagree on experts")
    if tied == ("lm_head.weight" in out):
        raise OracleError("tie_word_embeddings and the presence of lm_head.weight disagree")
    for name, value in (vision or {}).items():
        if not name.startswith("vision_tower."):
            raise OracleError(f"/vision/weights/{name}: not a vision tower name")
        if name.endswith("patch_embed.proj.weight"):
            value = np.ascontiguousarray(np.transpose(value, (0, 4, 1, 2, 3)))  # [Dv,Tp,P,P,C] -> [Dv,C,Tp,P,P]
        out["model.visual." + name.removeprefix("vision_tower.")] = value
    return out


def check_round_trip(config: dict, checkpoint: dict, runtime: dict, vision: dict | None,
                     vlm_params: dict | None) -> None:
    """The checkpoint layout must load back to the runtime tensors bit for bit through each
    library's own sanitize steps (mlx-lm: Model.sanitize; mlx-vlm: Model, VisionModel and
    LanguageModel sanitize, as mlx_vlm.utils.load_model chains them): the mapping is their
    inverse, checked by their own code."""
    import importlib as il
    from types import SimpleNamespace
    import mlx.core as mx
    from mlx_lm.utils import _get_classes
    from mlx_vlm.utils import sanitize_weights

    def compare(library: str, got: dict, want: dict) -> None:
        if sorted(got) != sorted(want):
            raise OracleError(f"{library} loads the checkpoint layout under other names: "
                              f"{sorted(set(got) ^ set(want))[:4]}")
        for name, value in got.items():
            if not np.array_equal(np.array(value), want[name]):
                raise OracleError(f"{library} loads the checkpoint layout's {name} differently")

    model_class, args_class = _get_classes(config=config)
    lm = model_class(args_class.from_dict(config))
    text = {k: v for k, v in checkpoint.items() if not k.startswith("model.visual.")}
    compare("mlx-lm", lm.sanitize({k: mx.array(v) for k, v in text.items()}), runtime)
    if vlm_params is None:
        return
    module = il.import_module(f"mlx_vlm.models.{config['model_type']}")
    model_config = module.ModelConfig.from_dict(vlm_params)
    given = checkpoint if vision is not None else text
    # Model.sanitize reads only self.config (the vision tower need not be built).
    got = module.Model.sanitize(SimpleNamespace(config=model_config), {k: mx.array(v) for k, v in given.items()})
    if vision is not None:
        got = sanitize_weights(module.VisionModel, got, model_config.vision_config)
    got = sanitize_weights(module.LanguageModel, got, model_config.text_config)
    compare("mlx-vlm", got, {**runtime, **(vision or {})})


# ---------------------------------------------------------------------------------------------
# Models


def vision_config_kwargs(vision_cap, hidden_size: int) -> dict:
    vc = json.loads(vision_cap.config_json)["vision_config"]
    return dict({k: v for k, v in vc.items() if k not in ("dtype", "torch_dtype")}, out_hidden_size=hidden_size)


def build_models(torch, mode, text_kwargs: dict, moe: bool, checkpoint: dict, vision_kwargs: dict | None,
                 token_ids: dict | None):
    """transformers' CausalLM (text and MRoPE scenarios) and, with a vision tower, its
    ConditionalGeneration model (image prompts), built and loaded in float64 inside the mode
    (so that buffers such as the rotary inverse frequencies are computed in float64 too)."""
    from transformers import Qwen3_5ForCausalLM, Qwen3_5ForConditionalGeneration, Qwen3_5Config
    from transformers.models.qwen3_5_moe import (Qwen3_5MoeForCausalLM, Qwen3_5MoeForConditionalGeneration,
                                                 Qwen3_5MoeConfig)

    def load(model, state: dict, what: str):
        tensors = {k: torch.from_numpy(np.asarray(v, dtype=np_dtype(mode))) for k, v in state.items()}
        own = model.state_dict()
        tied = [k for k in own if k not in tensors]
        if tied != (["lm_head.weight"] if text_kwargs["tie_word_embeddings"] else []):
            raise OracleError(f"{what}: no weights for {tied[:4]}")
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if unexpected or sorted(missing) != sorted(tied):
            raise OracleError(f"{what}: unexpected {unexpected[:4]}, missing {missing[:4]}")
        for name, value in model.state_dict().items():
            if value.dtype != (torch.float64 if mode is not None else torch.float32):
                raise OracleError(f"{what}: {name} is {value.dtype}")
            if name in tensors and not torch.equal(value, tensors[name]):
                raise OracleError(f"{what}: {name} did not load exactly")
        if tied and model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
            raise OracleError(f"{what}: lm_head is not tied to the embeddings")
        model.eval()
        return model

    with precision(torch, mode):
        text_config = build_text_config(torch, text_kwargs, moe)
        lm = (Qwen3_5MoeForCausalLM if moe else Qwen3_5ForCausalLM)(text_config)
        text_state = {k.replace("model.language_model.", "model.", 1): v
                      for k, v in checkpoint.items() if not k.startswith("model.visual.")}
        lm = load(lm, text_state, type(lm).__name__)
        vlm = None
        if vision_kwargs is not None:
            config = (Qwen3_5MoeConfig if moe else Qwen3_5Config)(
                text_config=text_config.to_dict(), vision_config=vision_kwargs,
                tie_word_embeddings=text_kwargs["tie_word_embeddings"], **token_ids)
            config._attn_implementation = "eager"
            config.text_config._attn_implementation = "eager"
            config.vision_config._attn_implementation = "eager"
            if moe:
                config._experts_implementation = "eager"
                config.text_config._experts_implementation = "eager"
            vlm = (Qwen3_5MoeForConditionalGeneration if moe else Qwen3_5ForConditionalGeneration)(config)
            vlm = load(vlm, checkpoint, type(vlm).__name__)
    for model in (lm, vlm):
        if model is None:
            continue
        for sub in model.modules():
            impl = getattr(getattr(sub, "config", None), "_attn_implementation", "eager")
            if impl != "eager":
                raise OracleError(f"{type(sub).__name__} uses attention {impl!r}, not eager")
    return lm, vlm




def library_differences(lm, effective: dict, vlm_effective: dict | None) -> list:
    """How transformers computes what the libraries compute differently (not config resolution)."""
    text = lm.model
    rotary = text.rotary_emb.inv_freq.numpy()
    out = [
        {"what": "gated delta rule",
         "transformers": "torch_chunk_gated_delta_rule (chunks of 64, UT transform by solve_triangular, "
                         "no clipping of the decay) for every call without a recurrent state or with more "
                         "than one token; torch_recurrent_gated_delta_rule for a cached single token",
         "libraries": "mlx-lm: the sequential step on every call (CPU); mlx-vlm: the chunked WY scan "
                      "(C = 64, decay clipped to [1e-6, 1]) for calls of more than one token, the "
                      "sequential step for one",
         "oracle": "transformers' own choice, in float64"},
        {"what": "GatedDeltaNet q/k normalisation",
         "transformers": "l2norm: x * rsqrt(sum(x^2) + 1e-6), then q / sqrt(dk)",
         "libraries": "rms_norm(x, eps = 1e-6/dk) * dk^-1/2 (q: dk^-1): the same function",
         "oracle": "transformers'"},
        {"what": "RMSNorm weight",
         "transformers": "(x * rsqrt(mean(x^2) + eps)) * (1 + w), w zero-centred",
         "libraries": "the +1 folded into the stored weight by sanitize", "oracle": "w = runtime - 1 (exact)"},
        {"what": "rotary inverse frequencies",
         "transformers": f"1 / base^(2i/r), here float64: {rotary.tolist()}",
         "libraries": "mlx-lm: exp(-i ln(base)/(r/2)) in float32 (mx.fast.rope); mlx-vlm: 1 / base^(2i/r) "
                      f"in float32{': ' + str(vlm_effective['inv_freq']) if vlm_effective else ''}",
         "oracle": "transformers'"},
        {"what": "float32 islands",
         "transformers": "RMSNorm, gated norm, softmax, router, rotary tables and the delta rule are "
                         "computed in float32 whatever the model dtype",
         "libraries": "float32 throughout (the golden's activation dtype)",
         "oracle": "each float32 request runs in float64 (sites: /oracle promoted_casts_json)"},
        {"what": "attention", "transformers": "eager_attention_forward (softmax in float32, promoted)",
         "libraries": "mx.fast.scaled_dot_product_attention (CPU fallback, precise softmax)",
         "oracle": "eager"},
    ]
    if effective.get("num_experts"):
        out.append({"what": "MoE routing",
                    "transformers": "softmax in float32 (promoted), torch.topk (sorted), top-k renormalised "
                                    "always, experts summed in sorted order",
                    "libraries": "precise softmax, argpartition (unsorted), renormalised when norm_topk_prob, "
                                 "summed in argpartition order",
                    "oracle": "transformers'"})
    return out

