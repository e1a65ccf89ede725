"""The scenarios and mlx-vlm call schedules a golden holds: pure definitions, no library calls.
docs/golden-format.md has the tables."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import GoldenError, UsageError

LM_PATH = "mlx_lm"              # mlx-lm's Model (text path); in model directories: as loaded
F32_PATH = "mlx_lm_f32"         # model directories: the same model dequantized, float32
VLM_PATH = "mlx_vlm"            # mlx-vlm's LanguageModel, called as the scenario says
VLM_CORRECT_PATH = "mlx_vlm_correct"  # hazard scenarios: the same calls made the right way

DEFAULT_SCENARIOS = ("no_cache", "full_prefill", "prefix_decode", "token_by_token",
                     "chunked_prefill_16", "chunked_prefill_5", "batch_left_pad")
PREFIX_DECODE_TAIL = 4        # prefix_decode feeds the last 4 prompt tokens one at a time
BATCH_SHORTENING = (0, 9, 17)  # batch row lengths are L, L-9, L-17
BATCH_DECODE_STEPS = 3
MIN_PROMPT_LENGTH = max(BATCH_SHORTENING) + 1

VLM_LOGITS_PER_SCENARIO = 4  # vlm paths store the logits of at most the last 4 calls

# Upstream test vectors (docs: upstream-change.md).
UPSTREAM_PREFILL_DECODE = {"tokens": [0, 1, 2, 3],
                           "positions": [[[0, 1, 0, 1]], [[0, 0, 1, 1]], [[0, 1, 1, 1]]],
                           "rope_delta": -2}
UPSTREAM_CHUNK_CASES = {
    "boundary": {"tokens": [0, 1, 2, 3, 4, 5],
                 "positions": [[[0, 1, 1, 1, 1, 3]], [[0, 1, 1, 2, 2, 3]], [[0, 1, 2, 1, 2, 3]]],
                 "rope_delta": -2,
                 "about": "the chunk boundary falls inside the image span"},
    "later": {"tokens": [0, 1, 2, 3, 4, 5],
              "positions": [[[0, 1, 2, 2, 4, 5]], [[0, 1, 2, 2, 4, 5]], [[0, 1, 2, 3, 4, 5]]],
              "rope_delta": 0,
              "about": "the image span sits in a later chunk"},
}
MROPE_DECODE_STEPS = 3
IMAGE_GRID_BLOCKS = (1, 2, 3)  # one image of 1 x 2 x 3 merge blocks = 6 image tokens
                              # (grid [1, 4, 6] with merge size 2)
HAZARD_PREFILL_STEP = 4
HAZARD_TEXT_PROMPT = 6        # hazard 1: text prompt after the image prompt (+ 2 decodes)
SMALL_BATCH_LENGTHS = (7, 4)  # hazard 3: two left-padded rows, then 2 decode steps
SMALL_BATCH_DECODE_STEPS = 2


# ---------------------------------------------------------------------------------------------
# Text scenarios (mlx-lm, and the same schedules through mlx-vlm)


@dataclass
class Scenario:
    name: str
    kind: str                 # "single" | "batch"
    calls: list[int]          # token count of every model call, in order
    cached: bool
    description: str
    all_logits: bool = False  # store logits at every position, not only at each call's end
    prefill_step_size: int | None = None

    def definition(self) -> dict:
        d = {"name": self.name, "kind": self.kind, "calls": self.calls,
             "cached": int(self.cached),
             "logits": "all_positions" if self.all_logits else "last_position_of_each_call",
             "description": self.description}
        if self.prefill_step_size is not None:
            d["prefill_step_size"] = self.prefill_step_size
        return d


def generate_step_calls(prompt_len: int, step: int) -> list[int]:
    """Prompt chunking of mlx_lm.generate.generate_step: chunks of min(step, remaining - 1)
    while more than one token remains; the last prompt token always goes alone."""
    calls, remaining = [], prompt_len
    while remaining > 1:
        n = min(step, remaining - 1)
        calls.append(n)
        remaining -= n
    return calls + [1]


def make_scenario(name: str, L: int) -> Scenario:
    if name == "no_cache":
        return Scenario(name, "single", [L], False, "model(ids) with no cache", all_logits=True)
    if name == "full_prefill":
        return Scenario(name, "single", [L], True,
                        "fresh make_prompt_cache, whole prompt in one call", all_logits=True)
    if name == "prefix_decode":
        return Scenario(name, "single", [L - PREFIX_DECODE_TAIL] + [1] * PREFIX_DECODE_TAIL, True,
                        f"prefix of L-{PREFIX_DECODE_TAIL} tokens, then the last "
                        f"{PREFIX_DECODE_TAIL} prompt tokens one at a time")
    if name == "token_by_token":
        return Scenario(name, "single", [1] * L, True, "every prompt token alone")
    if m := re.fullmatch(r"chunked_prefill_([1-9][0-9]*)", name):
        step = int(m.group(1))
        return Scenario(name, "single", generate_step_calls(L, step), True,
                        f"generate_step prompt chunking with prefill_step_size={step}: "
                        f"n = min({step}, remaining-1) while more than one token remains, "
                        f"then the last token alone", prefill_step_size=step)
    if name == "batch_left_pad":
        return Scenario(name, "batch", [L] + [1] * BATCH_DECODE_STEPS, True,
                        f"B={len(BATCH_SHORTENING)} left-padded prompts (BatchKVCache + "
                        f"ArraysCache with left_padding), then {BATCH_DECODE_STEPS} decode "
                        f"steps of [B,1]; cache_after is taken right after the prompt call")
    raise UsageError(f"unknown scenario {name!r}; known: {', '.join(DEFAULT_SCENARIOS)} "
                      f"(chunked_prefill_N accepts any N >= 1)")


def scenario_list(args, defaults) -> list[Scenario]:
    text = args.scenarios if args.scenarios is not None else ",".join(defaults)
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names or len(set(names)) != len(names):
        raise UsageError(f"--scenarios must list distinct names, got {text!r}")
    return [make_scenario(n, args.prompt_length) for n in names]


def logits_positions(sc: Scenario) -> np.ndarray:
    if sc.all_logits:
        return np.arange(sum(sc.calls), dtype=np.int32)
    return (np.cumsum(sc.calls) - 1).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# mlx-vlm call schedules


def vlm_call(tokens: str, start: int, length: int, cache: str = "keep", **kw) -> dict:
    """One LanguageModel call: ids tokens[:, start:start+length] (the `inputs` argument);
    optional embeddings and attention_mask sliced the same way; position_ids, rope_deltas and
    image_grid_thw passed whole; cache "none" | "new" | "keep"; reset_state clears the stored
    _position_ids/_rope_deltas first (a fresh LanguageModel)."""
    call = {"tokens": tokens, "start": start, "length": length, "embeddings": None,
            "position_ids": None, "rope_deltas": None, "image_grid_thw": None,
            "attention_mask": None, "cache": cache, "left_padding": None, "reset_state": False}
    for key, value in kw.items():
        if key not in call:
            raise GoldenError(f"unknown vlm call field {key}")
        call[key] = value
    return call


def vlm_text_schedule(sc: Scenario, L: int) -> list[dict]:
    """The mlx-lm text schedules as calls of mlx-vlm's LanguageModel, each from a fresh state."""
    if sc.kind == "batch":
        prompt = vlm_call("/inputs/batch/sequence", 0, L, cache="new", reset_state=True,
                          left_padding="/inputs/batch/left_padding",
                          attention_mask="/inputs/batch/attention_mask")
        return [prompt] + [vlm_call("/inputs/batch/sequence", L + s, 1)
                           for s in range(len(sc.calls) - 1)]
    calls, start = [], 0
    for i, n in enumerate(sc.calls):
        cache = ("new" if sc.cached else "none") if i == 0 else "keep"
        calls.append(vlm_call("/inputs/token_ids", start, n, cache=cache, reset_state=i == 0))
        start += n
    return calls


def vlm_logits_positions(calls: list[int]) -> np.ndarray:
    ends = (np.cumsum(calls) - 1).astype(np.int32)
    return ends[-VLM_LOGITS_PER_SCENARIO:]


@dataclass
class VlmScenario:
    name: str
    description: str
    calls: list[int]
    paths: dict[str, list[dict]]   # path -> schedule
    kind: str = "mrope"
    hazard: str | None = None      # hazard scenarios: what goes wrong
    group: str = "vectors"         # which VLM_EXTRA_GROUPS entry writes it
    # Paths stored without hidden_states/final_norm (size budget): the hazards' correct twins,
    # whose calls are ordinary ones the other scenarios check layer by layer.
    light_paths: tuple = ()
    last_logits_only: bool = False
    vision_inputs: str | None = None  # image scenarios: their /inputs/vision/<prompt> group

    def logits_positions(self) -> np.ndarray:
        if self.last_logits_only:
            return np.array([sum(self.calls) - 1], dtype=np.int32)
        return vlm_logits_positions(self.calls)

    def definition(self) -> dict:
        return {"name": self.name, "kind": self.kind, "calls": self.calls, "cached": 1,
                "logits": "last_position_of_each_call", "paths": sorted(self.paths),
                "description": self.description}


def mrope_scenarios() -> list[VlmScenario]:
    out = []
    g = "/inputs/mrope/prefill_decode"
    kw = dict(embeddings=g + "/input_embeddings", position_ids=g + "/position_ids",
              rope_deltas=g + "/rope_deltas")
    decodes = [vlm_call(g + "/token_ids", 4 + s, 1) for s in range(MROPE_DECODE_STEPS)]
    out.append(VlmScenario(
        "mrope_prefix_decode",
        "upstream prefill/decode vector: tokens [0,1,2,3] as their own embeddings, 3-D positions "
        "T/H/W [0,1,0,1]/[0,0,1,1]/[0,1,1,1], rope delta -2; the prefix [0,1,2] then the last "
        "token, both with the full position_ids and rope_deltas (generate style), then "
        f"{MROPE_DECODE_STEPS} decode tokens by id with no kwargs (stored rope deltas)",
        [3, 1] + [1] * MROPE_DECODE_STEPS,
        {VLM_PATH: [vlm_call(g + "/token_ids", 0, 3, cache="new", reset_state=True, **kw),
                    vlm_call(g + "/token_ids", 3, 1, **kw)] + decodes}))
    out.append(VlmScenario(
        "mrope_full_decode",
        "the same vector with the whole prompt in one call (model(all)[-1] against "
        "mrope_prefix_decode's last prompt token), then the same decode tokens",
        [4] + [1] * MROPE_DECODE_STEPS,
        {VLM_PATH: [vlm_call(g + "/token_ids", 0, 4, cache="new", reset_state=True, **kw)] + decodes}))
    for case, spec in UPSTREAM_CHUNK_CASES.items():
        g = f"/inputs/mrope/chunk_{case}"
        kw = dict(embeddings=g + "/input_embeddings", position_ids=g + "/position_ids",
                  rope_deltas=g + "/rope_deltas")
        n = len(spec["tokens"])
        for step in range(1, n):  # step >= n - 1 gives [n-1, 1], the same as step n - 1
            calls, schedule, start = generate_step_calls(n, step), [], 0
            for i, length in enumerate(calls):
                schedule.append(vlm_call(g + "/token_ids", start, length, cache="new" if i == 0 else "keep",
                                         reset_state=i == 0, **kw))
                start += length
            out.append(VlmScenario(
                f"mrope_chunked_{case}_step{step}",
                f"upstream chunked MRoPE prefill ({spec['about']}): tokens {spec['tokens']} as "
                f"embeddings, positions {spec['positions']}, rope delta {spec['rope_delta']}; "
                f"generate-style chunks with prefill_step_size={step}, the full position_ids "
                f"and rope_deltas passed with every chunk; logits of the last prompt token",
                calls, {VLM_PATH: schedule}, group="sweeps", last_logits_only=True))
    return out


def hazard_scenarios() -> list[VlmScenario]:
    g = "/inputs/mrope/image_prompt"
    n = 2 + 1 + 6 + 1 + 2
    image = dict(embeddings=g + "/input_embeddings", image_grid_thw=g + "/image_grid_thw")
    generate_kw = dict(image, position_ids=g + "/position_ids", rope_deltas=g + "/rope_deltas")
    out = []

    # 1. Stale positions: an image prompt whose positions the model computed and stored, then
    #    a text prompt on a new cache without clearing the state.
    def stale(reset: bool) -> list[dict]:
        text = [vlm_call("/inputs/token_ids", 0, HAZARD_TEXT_PROMPT - 1, cache="new", reset_state=reset),
                vlm_call("/inputs/token_ids", HAZARD_TEXT_PROMPT - 1, 1),
                vlm_call("/inputs/token_ids", HAZARD_TEXT_PROMPT, 1),
                vlm_call("/inputs/token_ids", HAZARD_TEXT_PROMPT + 1, 1)]
        return [vlm_call(g + "/token_ids", 0, n - 1, cache="new", reset_state=True, **image),
                vlm_call(g + "/token_ids", n - 1, 1, **image)] + text
    out.append(VlmScenario(
        "hazard_stale_positions",
        "an image prompt called with image_grid_thw and no position_ids (the model computes and "
        "stores 3-D positions and rope deltas), then a text prompt on a new cache without "
        "clearing that state: the text reuses the stored image positions and deltas. "
        f"{VLM_CORRECT_PATH} clears the state before the text prompt",
        [n - 1, 1, HAZARD_TEXT_PROMPT - 1, 1, 1, 1],
        {VLM_PATH: stale(False), VLM_CORRECT_PATH: stale(True)},
        hazard="stale MRoPE positions reused by a later text prompt", group="hazards", light_paths=(VLM_CORRECT_PATH,)))

    # 2. Chunked image prefill relying on stored positions.
    def chunked(kw: dict) -> list[dict]:
        schedule, start = [], 0
        for i, length in enumerate(generate_step_calls(n, HAZARD_PREFILL_STEP)):
            schedule.append(vlm_call(g + "/token_ids", start, length, cache="new" if i == 0 else "keep",
                                     reset_state=i == 0, **kw))
            start += length
        return schedule
    out.append(VlmScenario(
        "hazard_chunked_image_prefill",
        f"the image prompt prefilled in generate-style chunks of {HAZARD_PREFILL_STEP} with "
        "image_grid_thw but no position_ids: chunk 1 computes positions from its own ids, later "
        "chunks get sequential positions from the stored delta. "
        f"{VLM_CORRECT_PATH} passes the full position_ids and rope_deltas with every chunk",
        generate_step_calls(n, HAZARD_PREFILL_STEP),
        {VLM_PATH: chunked(image), VLM_CORRECT_PATH: chunked(generate_kw)},
        hazard="chunked image prefill without position_ids", group="hazards", light_paths=(VLM_CORRECT_PATH,)))

    # 3. Left-padded batch prompt without an attention mask.
    b = "/inputs/mrope/small_batch"
    smax = max(SMALL_BATCH_LENGTHS)

    def batch(masked: bool) -> list[dict]:
        prompt = vlm_call(b + "/sequence", 0, smax, cache="new", reset_state=True,
                          left_padding=b + "/left_padding",
                          attention_mask=b + "/attention_mask" if masked else None)
        return [prompt] + [vlm_call(b + "/sequence", smax + s, 1) for s in range(SMALL_BATCH_DECODE_STEPS)]
    out.append(VlmScenario(
        "hazard_batch_without_mask",
        f"B={len(SMALL_BATCH_LENGTHS)} left-padded text rows (BatchKVCache + ArraysCache with "
        "left_padding) whose prompt call has no attention mask: padded rows get RoPE positions "
        "from the padded column, decode from the real length. "
        f"{VLM_CORRECT_PATH} passes attention_mask with the prompt",
        [smax] + [1] * SMALL_BATCH_DECODE_STEPS,
        {VLM_PATH: batch(False), VLM_CORRECT_PATH: batch(True)},
        hazard="left-padded batch without an attention mask", group="hazards", light_paths=(VLM_CORRECT_PATH,)))
    return out


def image_scenario(prompt, decode_steps: int) -> VlmScenario:
    """An image prompt as mlx-vlm's generate runs it: the merged embeddings with the positions
    and rope deltas get_input_embeddings returned, the prompt in generate-style calls (all but
    the last token, then the last), then decode tokens by id with no kwargs."""
    g, L = prompt.inputs_group, prompt.prompt_length
    kw = dict(embeddings=g + "/input_embeddings", position_ids=g + "/position_ids",
              rope_deltas=g + "/rope_deltas", image_grid_thw=g + "/image_grid_thw")
    calls = generate_step_calls(L, L) + [1] * decode_steps
    schedule, start = [], 0
    for i, length in enumerate(calls):
        extra = kw if start < L else {}
        schedule.append(vlm_call(g + "/token_ids", start, length, cache="new" if i == 0 else "keep",
                                 reset_state=i == 0, **extra))
        start += length
    return VlmScenario(
        f"image_prompt_{prompt.name.removeprefix('image_')}",
        f"end to end from pixel values ({prompt.about}): mlx-vlm's image processor, vision "
        "tower and merge (get_input_embeddings), then the LanguageModel in generate-style "
        f"calls {calls} with the returned position_ids and rope_deltas on the prompt calls "
        "and none on the decodes",
        calls, {VLM_PATH: schedule}, kind="image", group="vision",
        vision_inputs=g)
