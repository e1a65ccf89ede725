"""End-to-end image prompts for golden files: mlx-vlm's own Qwen 3.5 model (vision tower +
LanguageModel) takes images through its own image processor, and records what the tower
computes on the way to the merged input embeddings.

Called through two hooks: capture() (from vlm_paths) builds the full mlx-vlm Model around the
golden's language weights and runs each prompt's vision half; write() (from writing) stores the
vision weights, config and intermediates under /vision. vlm_paths runs the language half (the
generate-style schedule) on capture()'s LanguageModel like every other mlx-vlm scenario.
Layout and meaning: docs/golden-format.md, section "Vision".

Nothing here re-implements the model. For one vision forward the tower's own submodules
(patch_embed, each block, each block's attention, the merger) are replaced by recording proxies;
the position embedding and rotary tables are the tower's own methods. The recorded forward must
give bit for bit the features of an unrecorded one, and the merged embeddings must hold those
features at the image tokens and embed_tokens everywhere else, or no golden is written.
"""

from __future__ import annotations

import importlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_vlm.models.qwen3_vl.processing_qwen3_vl import Qwen3VLImageProcessor

from .provenance import component

CONFIG_PATH = Path(__file__).resolve().parents[1] / "configs" / "vision" / "tiny-vision.json"
# The processor's size window: every test image below is already a multiple of
# patch_size * merge_size and inside it, so no resize happens (PIL's bicubic stays out).
MIN_PIXELS, MAX_PIXELS = 64, 4096
DECODE_STEPS = 2

# Two prompts: one image, and two images of different sizes (height x width in pixels).
# Text is split around the images; image token runs come from the grids.
PROMPTS = {
    "image_one": {"images": [(24, 32)], "text": [3, 3],
                  "about": "one 24x32 image (grid 1x6x8, 12 image tokens) between text"},
    "image_two": {"images": [(16, 16), (32, 24)], "text": [2, 2, 2],
                  "about": "two images of different sizes, 16x16 (grid 1x4x4, 4 tokens) and "
                           "32x24 (grid 1x8x6, 12 tokens), between text"},
}


class VisionError(Exception):
    pass


def read_config() -> tuple[str, dict]:
    raw = CONFIG_PATH.read_text()
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise VisionError(f"{CONFIG_PATH}: not JSON: {exc}") from exc
    return raw, config


class Recorder:
    """Stands in for a module and records the output of every call."""

    def __init__(self, module, sink: list):
        self._module = module
        self._sink = sink

    def __getattr__(self, name):
        return getattr(self._module, name)

    def __call__(self, *args, **kwargs):
        out = self._module(*args, **kwargs)
        self._sink.append(out)
        return out


@contextmanager
def recording(tower):
    """Record patch_embed, each block's attention and output, and the merger of one forward."""
    records = {"patch_embed": [], "merger": [],
               "attn": [[] for _ in tower.blocks], "block": [[] for _ in tower.blocks]}
    blocks = tower.blocks
    originals = (tower["patch_embed"], tower["merger"], list(blocks),
                 [b["attn"] for b in blocks])
    try:
        tower["patch_embed"] = Recorder(originals[0], records["patch_embed"])
        tower["merger"] = Recorder(originals[1], records["merger"])
        for i, block in enumerate(originals[2]):
            block["attn"] = Recorder(originals[3][i], records["attn"][i])
            blocks[i] = Recorder(block, records["block"][i])
        yield records
    finally:
        tower["patch_embed"], tower["merger"] = originals[0], originals[1]
        blocks[:] = originals[2]
        for i, block in enumerate(originals[2]):
            block["attn"] = originals[3][i]


def random_vision_weights(tower, seed: int) -> dict[str, np.ndarray]:
    """Seeded weights for the tower: projections N(0, 1/fan_in), LayerNorm weights around 1,
    biases and the learned position table small but non-zero (a dropped bias shows)."""
    rng = np.random.default_rng([seed, 3])
    out = {}
    for name, value in tree_flatten(tower.parameters()):
        shape = tuple(value.shape)
        if "norm" in name and name.endswith(".weight"):
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            w = 0.1 * rng.standard_normal(shape)
        elif name == "pos_embed.weight":
            w = 0.5 * rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            w = rng.standard_normal(shape) / np.sqrt(fan_in)
        out["vision_tower." + name] = w.astype(np.float32)
    return out


def test_image(rng, height: int, width: int) -> np.ndarray:
    """A (3, H, W) uint8 picture: smooth colour gradients plus noise."""
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    base = np.stack([y * np.ones_like(x), x * np.ones_like(y), (x + y) / 2])
    noisy = base * 200 + rng.uniform(0, 55, size=base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@dataclass
class Prompt:
    name: str
    about: str
    token_ids: np.ndarray          # [1, L + DECODE_STEPS] int32: prompt, then decode ids
    prompt_length: int
    pixel_values: np.ndarray
    image_grid_thw: np.ndarray     # [N, 3] int32
    input_embeddings: np.ndarray   # [1, L, D] merged
    position_ids: np.ndarray       # [3, 1, L] int32
    rope_deltas: np.ndarray        # [1, 1] int32
    intermediates: dict = field(default_factory=dict)

    @property
    def inputs_group(self) -> str:
        return f"/inputs/vision/{self.name}"


@dataclass
class Capture:
    config_json: str
    weights: dict
    prompts: list
    language_model: object         # the full Model's LanguageModel, for the schedules


def build_model(text_config: dict, vision_config: dict, token_ids: dict):
    """mlx-vlm's Model(ModelConfig) for the tiny text config with a complete vision config."""
    module = importlib.import_module(f"mlx_vlm.models.{text_config['model_type']}")
    vision = dict(vision_config, out_hidden_size=text_config["hidden_size"])
    params = {"model_type": text_config["model_type"], "text_config": dict(text_config),
              "vision_config": vision, **token_ids}
    try:
        model_config = module.ModelConfig.from_dict(params)
        if isinstance(model_config.vision_config, dict):
            raise VisionError("mlx-vlm left vision_config undeserialised (a required field is missing)")
        model = module.Model(model_config)
    except (TypeError, ValueError, KeyError) as exc:
        raise VisionError(f"mlx-vlm could not build the model: {type(exc).__name__}: {exc}") from exc
    model.eval()
    return module, model_config, model


def load_weights(module, model_config, model, lm_weights: dict, vision_weights: dict) -> None:
    """The language tensors under mlx-vlm's names and the tower's, checked to pass through
    Model.sanitize unchanged and to arrive bit for bit."""
    provided = {**lm_weights, **vision_weights}
    sanitized = module.Model.sanitize(model, {k: mx.array(v) for k, v in provided.items()})
    if sorted(sanitized) != sorted(provided):
        raise VisionError("mlx-vlm sanitize renamed or dropped weights of the runtime layout")
    for name, value in sanitized.items():
        if not np.array_equal(np.array(value), provided[name]):
            raise VisionError(f"mlx-vlm sanitize is not a fixed point for {name}")
    model.load_weights(list(sanitized.items()), strict=True)
    mx.eval(model.parameters())
    for name, value in tree_flatten(model.parameters()):
        if not np.array_equal(np.array(value), provided[name]):
            raise VisionError(f"mlx-vlm holds a different {name} than was loaded")


def run_tower(tower, pixel_values: mx.array, grid: mx.array) -> dict[str, np.ndarray]:
    """One recorded forward of the tower; the intermediates by their /vision dataset name."""
    plain, _ = tower(pixel_values, grid)
    mx.eval(plain)
    with recording(tower) as rec:
        features, _ = tower(pixel_values, grid)
        mx.eval(features, rec["patch_embed"], rec["merger"], rec["attn"], rec["block"])
    if not np.array_equal(np.array(plain), np.array(features)):
        raise VisionError("recording the vision tower changed its output")
    if len(rec["patch_embed"]) != 1 or len(rec["merger"]) != 1:
        raise VisionError("the tower ran patch_embed or the merger more than once")
    pos = tower.fast_pos_embed_interpolate(grid)
    rotary = tower.rot_pos_emb(grid)
    mx.eval(pos, rotary)
    out = {"patch_embed": np.array(rec["patch_embed"][0]),
           "pos_embed": np.array(pos),
           "rotary_angles": np.array(rotary)}
    embedded = rec["patch_embed"][0] + pos  # the tower's own first step
    mx.eval(embedded)
    out["embedded"] = np.array(embedded)
    for i, (attn, block) in enumerate(zip(rec["attn"], rec["block"])):
        if len(attn) != 1 or len(block) != 1:
            raise VisionError(f"block {i} ran more than once")
        out[f"block_{i:02d}_attn"] = np.array(attn[0])
        out[f"block_{i:02d}_out"] = np.array(block[0])
    out["features"] = np.array(rec["merger"][0])
    if not np.array_equal(out["features"], np.array(features)):
        raise VisionError("the merger output is not the tower's output")
    return out


def make_prompt(name: str, spec: dict, model, processor, token_ids: dict, text_limit: int,
                rng) -> Prompt:
    images = [test_image(rng, h, w) for h, w in spec["images"]]
    processed = processor(images)
    pixel_values = processed["pixel_values"].astype(np.float32)
    grid = processed["image_grid_thw"].astype(np.int32)
    for (h, w), (t, gh, gw) in zip(spec["images"], grid):
        if (t, gh * processor.patch_size, gw * processor.patch_size) != (1, h, w):
            raise VisionError(f"{name}: the processor resized a {h}x{w} test image")
    merge = processor.merge_size
    ids: list[int] = []
    texts = [rng.integers(0, text_limit, size=n).tolist() for n in spec["text"]]
    for i, (t, gh, gw) in enumerate(grid):
        ids += texts[i] + [token_ids["vision_start_token_id"]] \
            + [token_ids["image_token_id"]] * int(t * (gh // merge) * (gw // merge)) \
            + [token_ids["vision_end_token_id"]]
    ids += texts[-1]
    L = len(ids)
    decode = rng.integers(0, text_limit, size=DECODE_STEPS).tolist()

    prompt_ids = mx.array([ids], dtype=mx.int32)
    pv, g = mx.array(pixel_values), mx.array(grid)
    intermediates = run_tower(model.vision_tower, pv, g)
    embedded = model.get_input_embeddings(prompt_ids, pv, image_grid_thw=g)
    mx.eval(embedded.inputs_embeds, embedded.position_ids, embedded.rope_deltas)
    merged = np.array(embedded.inputs_embeds)
    # The merge is a scatter: features at the image tokens, embed_tokens everywhere else.
    plain = np.array(model.language_model.model.embed_tokens(prompt_ids))
    image_rows = np.array(ids) == token_ids["image_token_id"]
    if not (np.array_equal(merged[0, image_rows], intermediates["features"])
            and np.array_equal(merged[0, ~image_rows], plain[0, ~image_rows])):
        raise VisionError(f"{name}: the merged embeddings are not a scatter of the features")
    return Prompt(name=name, about=spec["about"],
                  token_ids=np.array([ids + decode], dtype=np.int32), prompt_length=L,
                  pixel_values=pixel_values, image_grid_thw=grid, input_embeddings=merged,
                  position_ids=np.array(embedded.position_ids).astype(np.int32),
                  rope_deltas=np.array(embedded.rope_deltas).astype(np.int32).reshape(1, 1),
                  intermediates=intermediates)


def capture(text_config: dict, lm_weights: dict, token_ids: dict, seed: int,
            text_limit: int, names: tuple) -> Capture:
    """Build mlx-vlm's full model around lm_weights (runtime names, "language_model." prefix)
    and run the vision half of the prompts named (keys of PROMPTS)."""
    unknown = set(names) - set(PROMPTS)
    if unknown:
        raise VisionError(f"unknown image prompt(s) {sorted(unknown)}")
    raw, vision_config = read_config()
    module, model_config, model = build_model(text_config, vision_config, token_ids)
    vision_weights = random_vision_weights(model.vision_tower, seed)
    load_weights(module, model_config, model, lm_weights, vision_weights)
    vc = model_config.vision_config
    processor = Qwen3VLImageProcessor(patch_size=vc.patch_size, temporal_patch_size=vc.temporal_patch_size,
                                      merge_size=vc.spatial_merge_size, min_pixels=MIN_PIXELS,
                                      max_pixels=MAX_PIXELS)
    rng = np.random.default_rng([seed, 4])
    # Every prompt draws from the generator, so a variant storing fewer prompts still gets
    # the same pictures and ids for the ones it stores.
    made = [make_prompt(name, spec, model, processor, token_ids, text_limit, rng)
            for name, spec in PROMPTS.items()]
    prompts = [p for p in made if p.name in names]
    effective = json.dumps({"vision_config": {k: getattr(vc, k) for k in (
        "depth", "hidden_size", "intermediate_size", "num_heads", "patch_size",
        "temporal_patch_size", "spatial_merge_size", "in_channels", "out_hidden_size",
        "num_position_embeddings")}, "raw_json": raw})
    return Capture(config_json=effective, weights=vision_weights, prompts=prompts,
                   language_model=model.language_model)


def input_datasets(cap: Capture) -> dict[str, np.ndarray]:
    """/inputs/vision/<prompt>/...: what the schedules and the Swift vision side read."""
    store = {}
    for p in cap.prompts:
        g = p.inputs_group
        store[g + "/token_ids"] = p.token_ids
        store[g + "/pixel_values"] = p.pixel_values
        store[g + "/image_grid_thw"] = p.image_grid_thw
        store[g + "/input_embeddings"] = p.input_embeddings
        store[g + "/position_ids"] = p.position_ids
        store[g + "/rope_deltas"] = p.rope_deltas
    return store


def write(f, cap: Capture | None, shared: dict, put) -> None:
    """/vision: attrs (config, generator), weights, and each prompt's tower intermediates."""
    if cap is None:
        return
    g = f.create_group("vision")
    g.attrs["config_json"] = cap.config_json
    g.attrs["generator"], g.attrs["generator_sha256"] = component(__file__)
    g.attrs["prompts_json"] = json.dumps({p.name: p.about for p in cap.prompts})
    for name in sorted(cap.weights):
        put(g, f"weights/{name}", cap.weights[name], "<f4", shared)
    for p in cap.prompts:
        f[p.inputs_group].attrs["prompt_length"] = p.prompt_length
        pg = g.create_group(p.name)
        pg.attrs["steps_json"] = json.dumps(list(p.intermediates))  # computation order
        for key, value in p.intermediates.items():
            put(pg, key, value, "<f4", shared)
