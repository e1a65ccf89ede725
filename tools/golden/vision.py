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

from .configs import ConfigError
from .errors import GoldenError, library
from .provenance import component
from .recording import Recorder

# The tower of configs without a vision_config of their own.
CONFIG_PATH = Path(__file__).resolve().parents[1] / "configs" / "vision" / "tiny-vision.json"
DECODE_STEPS = 2

# Two prompts: one image, and two images of different sizes (height x width in merge blocks of
# patch_size * spatial_merge_size pixels: 8 for the tiny tower, so 24x32, 16x16 and 32x24).
# Text is split around the images; image token runs come from the grids. The processor's size
# window is [1, 64] blocks, so no resize happens (PIL's bicubic stays out).
PROMPTS = {
    "image_one": {"images": [(3, 4)], "text": [3, 3]},
    "image_two": {"images": [(2, 2), (4, 3)], "text": [2, 2, 2]},
}
MIN_BLOCKS, MAX_BLOCKS = 1, 64


def about(name: str, block: int, merge: int) -> str:
    """The description of a prompt: pixel sizes, grids and image tokens."""
    parts = []
    for h, w in PROMPTS[name]["images"]:
        gh, gw = h * merge, w * merge
        parts.append((f"{h * block}x{w * block}", f"1x{gh}x{gw}", h * w))
    if len(parts) == 1:
        size, grid, n = parts[0]
        return f"one {size} image (grid {grid}, {n} image tokens) between text"
    (s1, g1, n1), (s2, g2, n2) = parts
    return (f"two images of different sizes, {s1} (grid {g1}, {n1} tokens) and "
            f"{s2} (grid {g2}, {n2} tokens), between text")


class VisionError(GoldenError):
    pass


def read_config(spec) -> tuple[str, dict]:
    """The tower's config: the model config's own vision_config, else the tiny one with
    out_hidden_size set to the text hidden size. (raw text, config)"""
    hidden = spec.text["hidden_size"]
    if spec.vision is not None:
        vision = dict(spec.vision)
        out = vision.get("out_hidden_size", default_out_hidden_size(spec.model_type))
        if out != hidden:
            raise ConfigError(spec.path, "vision_config.out_hidden_size",
                              f"{out}{'' if 'out_hidden_size' in vision else ' (the library default)'} "
                              f"is not the text hidden_size {hidden}: the merger's features "
                              f"replace token embeddings")
        return json.dumps(spec.vision), vision
    raw = CONFIG_PATH.read_text()
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise VisionError(f"{CONFIG_PATH}: not JSON: {exc}") from exc
    return raw, dict(config, out_hidden_size=hidden)


def default_out_hidden_size(model_type: str) -> int:
    """mlx-vlm's VisionConfig default, which a vision_config without the key gets."""
    module = importlib.import_module(f"mlx_vlm.models.{model_type}.config")
    return module.VisionConfig().out_hidden_size


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


def build_model(spec, vision_config: dict):
    """mlx-vlm's Model(ModelConfig): the LanguageModel's config with the tower's vision config."""
    params = dict(spec.vlm_params(), vision_config=vision_config)
    with library("mlx-vlm", "building the whole Model (vision tower + LanguageModel)"):
        module = importlib.import_module(f"mlx_vlm.models.{spec.model_type}")
        model_config = module.ModelConfig.from_dict(params)
        if isinstance(model_config.vision_config, dict):
            raise VisionError("mlx-vlm left vision_config undeserialised (a required field is missing)")
        model = module.Model(model_config)
        model.eval()
    return module, model_config, model


def load_weights(module, model_config, model, lm_weights: dict, vision_weights: dict) -> None:
    """The language tensors under mlx-vlm's names and the tower's, checked to pass through
    Model.sanitize unchanged and to arrive bit for bit."""
    provided = {**lm_weights, **vision_weights}
    with library("mlx-vlm", "sanitizing the whole Model's weights"):
        sanitized = module.Model.sanitize(model, {k: mx.array(v) for k, v in provided.items()})
    if sorted(sanitized) != sorted(provided):
        raise VisionError("mlx-vlm sanitize renamed or dropped weights of the runtime layout")
    for name, value in sanitized.items():
        if not np.array_equal(np.array(value), provided[name]):
            raise VisionError(f"mlx-vlm sanitize is not a fixed point for {name}")
    with library("mlx-vlm", "loading the whole Model's weights (strict)"):
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


def make_prompt(name: str, spec: dict, model, processor, token_ids, rng) -> Prompt:
    """token_ids: inputs.TokenIds (the special ids, and the text ids to draw from)."""
    merge = processor.merge_size
    block = processor.patch_size * merge
    sizes = [(h * block, w * block) for h, w in spec["images"]]
    images = [test_image(rng, h, w) for h, w in sizes]
    with library("mlx-vlm", f"image prompt {name}: the image processor"):
        processed = processor(images)
    pixel_values = processed["pixel_values"].astype(np.float32)
    grid = processed["image_grid_thw"].astype(np.int32)
    for (h, w), (t, gh, gw) in zip(sizes, grid):
        if (t, gh * processor.patch_size, gw * processor.patch_size) != (1, h, w):
            raise VisionError(f"{name}: the processor resized a {h}x{w} test image")
    special = token_ids.special
    ids: list[int] = []
    texts = [token_ids.text(rng, n) for n in spec["text"]]
    for i, (t, gh, gw) in enumerate(grid):
        ids += texts[i] + [special["vision_start_token_id"]] \
            + [special["image_token_id"]] * int(t * (gh // merge) * (gw // merge)) \
            + [special["vision_end_token_id"]]
    ids += texts[-1]
    L = len(ids)
    decode = token_ids.text(rng, DECODE_STEPS)

    prompt_ids = mx.array([ids], dtype=mx.int32)
    pv, g = mx.array(pixel_values), mx.array(grid)
    with library("mlx-vlm", f"image prompt {name}: the vision tower"):
        intermediates = run_tower(model.vision_tower, pv, g)
    with library("mlx-vlm", f"image prompt {name}: get_input_embeddings"):
        embedded = model.get_input_embeddings(prompt_ids, pv, image_grid_thw=g)
        mx.eval(embedded.inputs_embeds, embedded.position_ids, embedded.rope_deltas)
        merged = np.array(embedded.inputs_embeds)
        # The merge is a scatter: features at the image tokens, embed_tokens everywhere else.
        plain = np.array(model.language_model.model.embed_tokens(prompt_ids))
    image_rows = np.array(ids) == special["image_token_id"]
    if not (np.array_equal(merged[0, image_rows], intermediates["features"])
            and np.array_equal(merged[0, ~image_rows], plain[0, ~image_rows])):
        raise VisionError(f"{name}: the merged embeddings are not a scatter of the features")
    return Prompt(name=name, about=about(name, block, merge),
                  token_ids=np.array([ids + decode], dtype=np.int32), prompt_length=L,
                  pixel_values=pixel_values, image_grid_thw=grid, input_embeddings=merged,
                  position_ids=np.array(embedded.position_ids).astype(np.int32),
                  rope_deltas=np.array(embedded.rope_deltas).astype(np.int32).reshape(1, 1),
                  intermediates=intermediates)


def capture(spec, lm_weights: dict | None, token_ids, seed: int, names: tuple,
            tower_weights: dict | None = None, loaded=None) -> Capture:
    """Build mlx-vlm's full model for spec (configs.ModelSpec) around lm_weights (runtime names,
    "language_model." prefix) and run the vision half of the prompts named (keys of PROMPTS).
    tower_weights: a checkpoint's own tower ("vision_tower." names); else drawn from the seed.
    loaded: a whole Model mlx-vlm's load_model made from a directory, run as it is (its tower
    is stored as /vision/weights, widened to float32)."""
    unknown = set(names) - set(PROMPTS)
    if unknown:
        raise VisionError(f"unknown image prompt(s) {sorted(unknown)}")
    raw, vision_config = read_config(spec)
    if loaded is None:
        module, model_config, model = build_model(spec, vision_config)
        vision_weights = tower_weights if tower_weights is not None else random_vision_weights(model.vision_tower, seed)
        load_weights(module, model_config, model, lm_weights, vision_weights)
    else:
        model, model_config = loaded, loaded.config
        vision_weights = {"vision_tower." + k: np.array(v.astype(mx.float32))
                          for k, v in tree_flatten(model.vision_tower.parameters())}
    vc = model_config.vision_config
    block = vc.patch_size * vc.spatial_merge_size
    with library("mlx-vlm", "making the image processor"):
        processor = Qwen3VLImageProcessor(
            patch_size=vc.patch_size, temporal_patch_size=vc.temporal_patch_size,
            merge_size=vc.spatial_merge_size, min_pixels=MIN_BLOCKS * block ** 2,
            max_pixels=MAX_BLOCKS * block ** 2)
    rng = np.random.default_rng([seed, 4])
    # Every prompt draws from the generator, so a variant storing fewer prompts still gets
    # the same pictures and ids for the ones it stores.
    made = [make_prompt(name, prompt, model, processor, token_ids, rng)
            for name, prompt in PROMPTS.items()]
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
