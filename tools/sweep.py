#!/usr/bin/env python3
"""Random-config sweep: draw N valid Qwen 3.5 configs, make a golden of each with the pinned
reference packages in a temporary folder, run `qwen-parity check` on it, one row per config.

  python tools/sweep.py --n 6 --seed 1 --checker PATH/qwen-parity [--keep] [--out-dir DIR]

The draws cover the whole config family (the constants below): flat text configs and nested
checkpoint configs (text under text_config, optional vision_config, the vision token ids at the
top level), dense and every MoE variant, vocabularies from 64 to 4096, 1-8 layers, any
full-attention interval (1 = every layer, > layers = none), rope_parameters complete, absent or
partial, tied or not, attention_bias, dk != dv, Hv a multiple of Hk, conv kernels 2-5. Config i
depends only on (seed, i): a bigger N repeats the smaller sweep's configs first, and --only I
reruns one. --legacy restricts the draws to what the generator before issue 17 runs.

Outcome of a config:
  PASS     every counted invariant row ok (checker exit 0, or 4: passed with library findings)
  FAIL     a counted row failed, the checker reported an error or a stale golden, or the
           generator failed (any exit other than 0 and 3)
  FINDING  the generator exited 3 with 'library finding: ...': a reference library cannot run
           this config. Counted apart, not a failure.
Counted apart, never as passed or failed: the invariants in NOT_COUNTED (hand-set tolerances)
and NOT RUN rows (an invariant with nothing to compare in this golden). oracle-error-ratio is
neither: the sweep's goldens are made without the float64 oracle, so it is expected not to run.

Failing configs (and findings) are saved under reports/sweep/: NAME.json is the config exactly as
generated, NAME.result.json the outcome with the commands that reproduce it. Goldens never go
into golden/ and are deleted after their check unless --keep. Exit status: 0 no config failed,
1 a config failed, 2 bad usage or a missing tool.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent

# Invariants whose tolerance is a hand-set atol(1e-5), not a measured bound: listed apart and not
# counted until the bounds issue lands. Empty this tuple then.
# The two invariants that once carried a hand-set atol(1e-5) now equal the library's own distance
# pair by pair (issue 13), so every invariant counts.
NOT_COUNTED: tuple = ()

# The sweep's goldens have no float64 oracle (--oracle off: no torch, and the sweep is about the
# mirrors and the libraries), so this invariant has nothing to run on them: expected, not listed.
ORACLE_INVARIANT = "oracle-error-ratio"
GENERATOR_FINDING_EXIT = 3          # make_golden.py: a reference library cannot run the config
LIBRARY_FINDING_PREFIX = "library finding: "
CHECK_PASSED, CHECK_FAILED, CHECK_STALE, CHECK_FINDINGS = 0, 1, 3, 4
TAIL_LINES = 12

# --------------------------------------------------------------------------------------------
# The config family. Every bound here is a constraint of the libraries' config classes or a
# size that keeps one golden at ~5-40 s; validate() below checks them independently of draw().

FORMS = ("flat", "nested")
VOCAB = (64, 4096)                 # drawn log-uniform
HIDDEN = (32, 192)                 # multiples of 8
LAYERS = (1, 8)
HEAD_DIMS = (8, 12, 16, 24, 32, 48, 64)       # attention head_dim, even (rotary pairs halves)
LINEAR_HEAD_DIMS = (8, 12, 16, 24, 32, 48, 64)
CONV_KERNELS = (2, 5)
MAX_HEADS = 8
ROTARY_FACTORS = (0.25, 0.5, 0.75, 1.0)
ROPE_THETAS = (1e4, 1e5, 1e6, 1e7)
ROPE_KEYS = ("type", "mrope_section", "rope_theta", "partial_rotary_factor")
# What mlx-lm's TextModelArgs uses when rope_parameters lacks a key, or is absent altogether.
DEFAULT_ROPE = {"type": "default", "mrope_section": [11, 11, 10], "rope_theta": 100000,
                "partial_rotary_factor": 0.25}
MAX_EXPERTS = 16
SPATIAL_MERGE = 2                  # the generator's image grids are multiples of 2
TOKEN_ID_KEYS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
TEXT_MODEL_TYPE = {"qwen3_5": "qwen3_5_text", "qwen3_5_moe": "qwen3_5_moe_text"}
# --legacy: what tools/make_golden.py ran before issue 17 (its vlm path uses token ids 995-998,
# cannot take a nested config, interval 1 or no attention layer, and fails where a library
# cannot run the config instead of exiting 3). Remove with the flag once the new generator lands.
LEGACY = "flat only, vocab >= 1000, an attention layer but not in every layer, rope_parameters complete or absent, a shared expert"
LEGACY_MIN_VOCAB = 1000


def config_rng(seed: int, index: int) -> random.Random:
    """Config `index` of sweep `seed`: its own stream, so it does not depend on N."""
    return random.Random(f"qwen-parity-sweep:{seed}:{index}")


def _even_rotary(head_dim: int, factor: float) -> bool:
    r = int(head_dim * factor)     # exactly as both libraries compute it
    return r >= 2 and r % 2 == 0


def _mrope_section(rng: random.Random, freqs: int) -> list[int]:
    """Three sections summing to r/2: the balanced split real checkpoints use, or any other."""
    if rng.random() < 0.5:
        a = round(freqs / 3)
        if freqs - 2 * a >= 0:
            return [a, a, freqs - 2 * a]
    s1 = rng.randint(0, freqs)
    s2 = rng.randint(0, freqs - s1)
    return [freqs - s1 - s2, s1, s2]


def _rope(rng: random.Random, form: str, head_dim: int) -> dict | None:
    """rope_parameters of the given form (present, absent, partial); None when absent."""
    if form == "absent":
        return None
    factor = rng.choice([f for f in ROTARY_FACTORS if _even_rotary(head_dim, f)])
    params = {"type": "default", "mrope_section": None, "rope_theta": rng.choice(ROPE_THETAS),
              "partial_rotary_factor": factor}
    if form == "partial":
        # mlx-lm fills a missing key from its defaults; mlx-vlm requires all four.
        # (Dropping the factor means 0.25, which needs an even hd/4.)
        keys = [k for k in ROPE_KEYS if k != "partial_rotary_factor" or _even_rotary(head_dim, 0.25)]
        drop = set(rng.sample(keys, rng.randint(1, min(len(keys), len(ROPE_KEYS) - 1))))
        if "partial_rotary_factor" in drop:
            factor = DEFAULT_ROPE["partial_rotary_factor"]
        params = {k: v for k, v in params.items() if k not in drop}
    if "mrope_section" in params:
        params["mrope_section"] = _mrope_section(rng, int(head_dim * factor) // 2)
    if "type" in params and rng.random() < 0.5:
        params["rope_type"] = params.pop("type")      # HF's spelling; both libraries rename it
    if rng.random() < 0.7:
        params["mrope_interleaved"] = rng.random() < 0.5
    return params


def _head_dim(rng: random.Random, rope_absent: bool) -> int:
    # Without rope_parameters the rotary factor is 0.25, so r = hd/4 must be even.
    choices = [d for d in HEAD_DIMS if not rope_absent or _even_rotary(d, 0.25)]
    return rng.choice(choices)


def draw(seed: int, index: int, forms: tuple[str, ...] = FORMS, legacy: bool = False) -> dict:
    """One random valid config of the given forms. `legacy`: only what the generator before
    issue 17 runs (LEGACY); the whole family otherwise."""
    rng = config_rng(seed, index)
    form = "flat" if legacy else rng.choice(forms)
    moe = rng.random() < 0.5
    model_type = "qwen3_5_moe" if moe else "qwen3_5"
    if legacy:
        layers = rng.randint(2, LAYERS[1])
        interval = rng.randint(2, layers)
    else:
        layers = rng.randint(*LAYERS)
        u = rng.random()
        if u < 0.15:
            interval = 1                               # full attention in every layer
        elif u < 0.30:
            interval = layers + rng.randint(1, 3)      # no attention layer at all
        else:
            interval = rng.randint(2, max(2, layers))
    lo = LEGACY_MIN_VOCAB if legacy else VOCAB[0]
    vocab = int(round(math.exp(rng.uniform(math.log(lo), math.log(max(lo, VOCAB[1]))))))
    hidden = 8 * rng.randint(HIDDEN[0] // 8, HIDDEN[1] // 8)
    heads = rng.randint(1, MAX_HEADS)
    kv_heads = rng.choice([d for d in range(1, heads + 1) if heads % d == 0])
    rope = rng.choices(("present", "absent", "partial"), weights=(6, 3, 0 if legacy else 1))[0]
    head_dim = _head_dim(rng, rope == "absent")
    rope_params = _rope(rng, rope, head_dim)
    k_heads = rng.randint(1, 4)
    v_heads = k_heads * rng.choice([m for m in (1, 2, 3, 4) if k_heads * m <= MAX_HEADS])

    text: dict = {
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": vocab,
        "linear_num_key_heads": k_heads,
        "linear_num_value_heads": v_heads,
        "linear_key_head_dim": rng.choice(LINEAR_HEAD_DIMS),
        "linear_value_head_dim": rng.choice(LINEAR_HEAD_DIMS),
        "linear_conv_kernel_dim": rng.randint(*CONV_KERNELS),
        "rms_norm_eps": rng.choice((1e-5, 1e-6)),
        "max_position_embeddings": rng.choice((1024, 4096, 262144)),
        "full_attention_interval": interval,
        "tie_word_embeddings": rng.random() < 0.5,
        "attention_bias": rng.random() < 0.3,
    }
    if moe:
        experts = rng.randint(1, MAX_EXPERTS)
        text.update({
            "num_experts": experts,
            "num_experts_per_tok": rng.randint(1, experts),
            "moe_intermediate_size": 8 * rng.randint(2, 16),
            # 0 = no shared expert: the libraries still build one, of width 0
            "shared_expert_intermediate_size": 8 * rng.randint(2, 16) if legacy or rng.random() < 0.8 else 0,
            "norm_topk_prob": rng.random() < 0.5,
        })
        if rng.random() < 0.3:     # unused by MoE layers; real MoE checkpoints may carry it
            text["intermediate_size"] = 8 * rng.randint(4, 48)
    else:
        text["intermediate_size"] = 8 * rng.randint(4, 48)
    if rope_params is not None:
        text["rope_parameters"] = rope_params
    elif rng.random() < 0.5:       # ignored by both libraries without rope_parameters
        text["rope_theta"] = rng.choice(ROPE_THETAS)
        text["partial_rotary_factor"] = rng.choice(ROTARY_FACTORS)

    if form == "flat":
        return text
    text["model_type"] = TEXT_MODEL_TYPE[model_type]
    config: dict = {"model_type": model_type, "text_config": text}
    # The four ids at the top level, distinct, in the top quarter of the vocabulary (as in
    # real checkpoints), in any order; 0 stays the padding id.
    ids = rng.sample(range(max(1, vocab - vocab // 4), vocab), len(TOKEN_ID_KEYS))
    config.update(zip(TOKEN_ID_KEYS, ids))
    if rng.random() < 0.5:
        config["tie_word_embeddings"] = text["tie_word_embeddings"]
    if rng.random() < 0.5:
        config["vision_config"] = _vision(rng, model_type, hidden)
    return config


def _vision(rng: random.Random, model_type: str, out_hidden: int) -> dict:
    heads = rng.randint(1, 2)
    head_dim = rng.choice((8, 12, 16))  # a multiple of 4: the 2-D rotary splits it in four
    side = rng.choice((4, 6, 8))
    return {
        "model_type": model_type,
        "depth": rng.randint(1, 2),
        "hidden_size": heads * head_dim,
        "intermediate_size": 8 * rng.randint(2, 8),
        "num_heads": heads,
        "patch_size": rng.choice((2, 4)),
        "temporal_patch_size": 2,
        "spatial_merge_size": SPATIAL_MERGE,
        "in_channels": 3,
        "num_position_embeddings": side * side,
        "out_hidden_size": out_hidden,
        "deepstack_visual_indexes": [],
    }


# --------------------------------------------------------------------------------------------
# Validity, independent of draw(): what the config classes accept, plus the sweep's size bounds.

def text_config(config: dict) -> dict:
    return config["text_config"] if "text_config" in config else config


def effective_rope(text: dict) -> dict:
    """rope_theta, partial_rotary_factor and mrope_section as mlx-lm 0.32.2 resolves them."""
    params = text.get("rope_parameters")
    if "rope_parameters" not in text:
        params = DEFAULT_ROPE
    if not params:    # null or {}: the top-level fields (mlx-vlm cannot run this)
        return {"rope_theta": text.get("rope_theta", 1e5),
                "partial_rotary_factor": text.get("partial_rotary_factor", 0.25), "mrope_section": None}
    return {"rope_theta": params.get("rope_theta", 100000.0),
            "partial_rotary_factor": params.get("partial_rotary_factor", 0.25),
            "mrope_section": params.get("mrope_section")}


def rope_form(text: dict) -> str:
    if "rope_parameters" not in text:
        return "absent"
    params = text["rope_parameters"] or {}
    have = {"type" if k == "rope_type" else k for k in params}
    return "present" if set(ROPE_KEYS) <= have else "partial"


def validate(config: dict) -> list[str]:
    """Every constraint a drawn config must meet; an empty list when it is valid."""
    errors: list[str] = []

    def need(cond: bool, msg: str) -> None:
        if not cond:
            errors.append(msg)

    top = config.get("model_type")
    need(top in TEXT_MODEL_TYPE, f"model_type {top!r}")
    nested = "text_config" in config
    t = text_config(config)
    if nested:
        need(t.get("model_type") == TEXT_MODEL_TYPE.get(top), f"text_config.model_type {t.get('model_type')!r}")
    else:
        need(not any(k in config for k in (*TOKEN_ID_KEYS, "vision_config")), "flat config with nested keys")
    moe = top == "qwen3_5_moe"
    # mlx-vlm's TextConfig requires these (no defaults); mlx-lm has defaults for all of them.
    required = ["hidden_size", "num_hidden_layers", "num_attention_heads", "linear_num_value_heads",
                "linear_num_key_heads", "linear_key_head_dim", "linear_value_head_dim",
                "linear_conv_kernel_dim", "rms_norm_eps", "vocab_size", "num_key_value_heads",
                "max_position_embeddings", "head_dim"]
    required += (["num_experts", "num_experts_per_tok", "shared_expert_intermediate_size",
                  "moe_intermediate_size"] if moe else ["intermediate_size"])
    missing = [k for k in required if k not in t]
    need(not missing, f"missing {missing}")
    if missing:
        return errors
    ints = {k: t[k] for k in required if k != "rms_norm_eps"}
    need(all(isinstance(v, int) and not isinstance(v, bool) for v in ints.values()), "non-integer size")
    need(VOCAB[0] <= t["vocab_size"] <= VOCAB[1], f"vocab_size {t['vocab_size']}")
    need(HIDDEN[0] <= t["hidden_size"] <= HIDDEN[1], f"hidden_size {t['hidden_size']}")
    need(LAYERS[0] <= t["num_hidden_layers"] <= LAYERS[1], f"num_hidden_layers {t['num_hidden_layers']}")
    need(t.get("full_attention_interval", 4) >= 1, "full_attention_interval < 1")
    h, hkv = t["num_attention_heads"], t["num_key_value_heads"]
    need(h >= 1 and hkv >= 1 and h % hkv == 0, f"heads {h}/{hkv}")
    hk, hv = t["linear_num_key_heads"], t["linear_num_value_heads"]
    need(hk >= 1 and hv >= 1 and hv % hk == 0, f"linear heads Hk{hk} Hv{hv}")
    need(t["head_dim"] >= 2 and t["head_dim"] % 2 == 0, f"head_dim {t['head_dim']}")
    need(t["linear_key_head_dim"] >= 1 and t["linear_value_head_dim"] >= 1, "linear head dims")
    need(CONV_KERNELS[0] <= t["linear_conv_kernel_dim"] <= CONV_KERNELS[1], "conv kernel")
    need(t["rms_norm_eps"] > 0, "rms_norm_eps")
    if moe:
        e, k = t["num_experts"], t["num_experts_per_tok"]
        need(1 <= e <= MAX_EXPERTS and 1 <= k <= e, f"experts E{e} k{k}")
        need(t["moe_intermediate_size"] >= 1, "moe_intermediate_size")
        need(t["shared_expert_intermediate_size"] >= 0, "shared_expert_intermediate_size")
    else:
        need(t["intermediate_size"] >= 1, "intermediate_size")
        need(not t.get("num_experts"), "dense config with experts")
    rope = effective_rope(t)
    need(_even_rotary(t["head_dim"], rope["partial_rotary_factor"]),
         f"rotary dims int({t['head_dim']}*{rope['partial_rotary_factor']}) not even >= 2")
    if rope_form(t) == "present":
        section, freqs = rope["mrope_section"], int(t["head_dim"] * rope["partial_rotary_factor"]) // 2
        need(isinstance(section, list) and len(section) == 3 and all(isinstance(s, int) and s >= 0 for s in section)
             and sum(section) == freqs, f"mrope_section {section} does not fill r/2 = {freqs}")
    if nested:
        ids = [config.get(k) for k in TOKEN_ID_KEYS]
        need(all(isinstance(i, int) and 1 <= i < t["vocab_size"] for i in ids) and len(set(ids)) == 4,
             f"token ids {ids} not distinct in [1, {t['vocab_size']})")
        if "tie_word_embeddings" in config:
            need(config["tie_word_embeddings"] == t.get("tie_word_embeddings", False), "tie flags disagree")
        v = config.get("vision_config")
        if v is not None:
            need(v.get("num_heads", 0) >= 1 and v["hidden_size"] % v["num_heads"] == 0
                 and (v["hidden_size"] // v["num_heads"]) % 4 == 0, "vision heads")
            need(v.get("spatial_merge_size") == SPATIAL_MERGE, "vision spatial_merge_size")
            need(v.get("out_hidden_size") == t["hidden_size"], "vision out_hidden_size != hidden_size")
            need(not v.get("deepstack_visual_indexes"), "vision deepstack")
            side = math.isqrt(v.get("num_position_embeddings", 0))
            need(side >= 1 and side * side == v["num_position_embeddings"], "vision position grid")
    return errors


def describe(config: dict) -> str:
    """The config's shape in one line, e.g. 'moe E8k3 nonorm shared | flat | V=311 D=96 ...'."""
    t = text_config(config)
    if config.get("model_type") == "qwen3_5_moe":
        mlp = (f"moe E{t['num_experts']}k{t['num_experts_per_tok']} "
               f"{'norm' if t.get('norm_topk_prob', True) else 'nonorm'} "
               f"{'shared' if t['shared_expert_intermediate_size'] else 'noshared'}")
    else:
        mlp = "dense"
    form = "nested" + ("+vision" if "vision_config" in config else "") if "text_config" in config else "flat"
    layers, interval = t["num_hidden_layers"], t.get("full_attention_interval", 4)
    att = "(all att)" if interval == 1 else "(no att)" if interval > layers else ""
    rope = effective_rope(t)
    r = int(t["head_dim"] * rope["partial_rotary_factor"])
    params = t.get("rope_parameters") or {}
    form_r = rope_form(t)
    if form_r == "partial":
        have = {"type" if k == "rope_type" else k for k in params}
        form_r += "(-" + ",-".join(k.replace("partial_rotary_factor", "prf").replace("mrope_section", "section")
                                   .replace("rope_theta", "theta") for k in ROPE_KEYS if k not in have) + ")"
    mi = {True: " mi", False: " nomi"}.get(params.get("mrope_interleaved"), "")
    return (f"{mlp} | {form} | V={t['vocab_size']} D={t['hidden_size']} L={layers} int={interval}{att} "
            f"H{t['num_attention_heads']}/{t['num_key_value_heads']} hd{t['head_dim']} r{r} "
            f"Hk{t['linear_num_key_heads']}Hv{t['linear_num_value_heads']} "
            f"dk{t['linear_key_head_dim']} dv{t['linear_value_head_dim']} K{t['linear_conv_kernel_dim']} "
            f"{'tied' if t.get('tie_word_embeddings') else 'untied'}{' bias' if t.get('attention_bias') else ''} "
            f"rope:{form_r}{mi}")


# --------------------------------------------------------------------------------------------
# One config: generate, check, classify.

@dataclass
class Step:
    """What a subprocess left: exit status and output (None when it never ran)."""
    returncode: int
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0


@dataclass
class Outcome:
    status: str                                  # PASS, FAIL or FINDING
    reason: str = ""                             # why FAIL / the library's message for FINDING
    passed: list = field(default_factory=list)   # counted rows that passed
    failed: list = field(default_factory=list)   # counted rows that did not
    apart: list = field(default_factory=list)    # rows of NOT_COUNTED invariants
    not_run: list = field(default_factory=list)  # NOT RUN rows
    without_oracle: list = field(default_factory=list)  # oracle-error-ratio NOT RUN: no oracle asked for
    findings: list = field(default_factory=list)  # rows the checker marks as library findings
    checker_exit: int | None = None
    log: str = ""                                # last lines of the failing tool's output

    def worst(self) -> str:
        """The worst row: the first failing one (largest max abs), else the largest nonzero."""
        if self.status == "FINDING":
            return self.reason
        if self.failed:
            row = max(self.failed, key=lambda r: _abs(r))
            return f"{row['invariant']} {row['verdict']} {_measure(row)}"
        if self.reason:
            return self.reason
        inexact = [r for r in self.passed if _abs(r) > 0 or (r.get("maxULP") or 0) > 0]
        if not inexact:
            return "all counted rows exact"
        row = max(inexact, key=_abs)
        return f"{row['invariant']} {_measure(row)}"


def _abs(row: dict) -> float:
    v = row.get("maxAbs")
    return math.inf if v is None and row.get("verdict") != "ok" else (v or 0.0)


def _measure(row: dict) -> str:
    parts = []
    if row.get("maxAbs") is not None:
        parts.append(f"max abs {row['maxAbs']:.3g}")
    if row.get("maxULP"):
        parts.append(f"{row['maxULP']} ulp")
    if not parts or row.get("verdict") != "ok":
        detail = (row.get("detail") or "").strip()
        if detail:
            parts.append(detail[:160])
    return ", ".join(parts) if parts else "0"


def tail(text: str, n: int = TAIL_LINES) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return "\n".join(lines[-n:])


def library_finding(stderr: str) -> str | None:
    for line in stderr.splitlines():
        if line.startswith(LIBRARY_FINDING_PREFIX):
            return line[len(LIBRARY_FINDING_PREFIX):].strip()
    return None


def classify(gen: Step, check: Step | None, rows: list[dict] | None) -> Outcome:
    """The outcome of one config from the generator's and the checker's results. Pure."""
    if gen.returncode == GENERATOR_FINDING_EXIT:
        message = library_finding(gen.stderr)
        if message is not None:
            return Outcome("FINDING", message)
        return Outcome("FAIL", f"generator exit 3 without a '{LIBRARY_FINDING_PREFIX.strip()}' line: "
                               + (tail(gen.stderr, 1) or "no output"), log=tail(gen.stderr, 5))
    if gen.returncode != 0:
        return Outcome("FAIL", f"generator exit {gen.returncode}: " + (tail(gen.stderr, 1) or "no output"),
                       log=tail(gen.stderr, 5))
    assert check is not None
    out = Outcome("PASS", checker_exit=check.returncode)
    for row in rows or []:
        verdict = str(row.get("verdict", ""))
        if row.get("invariant") in NOT_COUNTED:
            out.apart.append(row)
        elif verdict == "NOT RUN":
            (out.without_oracle if row.get("invariant") == ORACLE_INVARIANT else out.not_run).append(row)
        elif "finding" in verdict.lower():
            out.findings.append(row)
        elif verdict == "ok":
            out.passed.append(row)
        else:                                   # FAIL, ERROR, NONDETERMINISTIC, anything new
            out.failed.append(row)
    if out.failed:
        out.status = "FAIL"
    elif rows is None:
        out.status, out.reason = "FAIL", f"checker exit {check.returncode}, no parity.json: " + (
            tail(check.stdout, 1) or tail(check.stderr, 1) or "no output")
        out.log = tail(check.stdout + check.stderr, 5)
    elif check.returncode == CHECK_STALE:
        out.status, out.reason = "FAIL", "checker: golden STALE right after generation: " + tail(check.stdout, 1)
    elif check.returncode == CHECK_FAILED and not (out.not_run or out.without_oracle
                                                   or any(r.get("verdict") != "ok" for r in out.apart)):
        # exit 1 that no failing row, NOT RUN row or uncounted row explains: never pass it.
        out.status, out.reason = "FAIL", "checker exit 1 without a failing row: " + tail(check.stdout, 1)
    elif check.returncode not in (CHECK_PASSED, CHECK_FAILED, CHECK_FINDINGS):
        out.status, out.reason = "FAIL", f"checker exit {check.returncode}: " + (
            tail(check.stderr, 1) or tail(check.stdout, 1))
    elif not out.passed:
        out.status, out.reason = "FAIL", "no counted invariant ran"
    return out


# --------------------------------------------------------------------------------------------
# Running

Runner = Callable[[list, float], Step]


def run_process(cmd: list, timeout: float) -> Step:
    started = time.monotonic()
    try:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        return Step(124, text(exc.stdout), text(exc.stderr) + f"\ntimed out after {timeout:.0f} s",
                    time.monotonic() - started)
    return Step(p.returncode, p.stdout, p.stderr, time.monotonic() - started)


@dataclass
class Settings:
    seed: int
    work: Path
    reports: Path
    checker: Path
    generator: Path
    requirements: Path
    python: str
    keep: bool
    timeout: float
    draw_flags: str = ""        # the options that shape the draws, for the reproduce command


@dataclass
class Result:
    index: int
    name: str
    config: dict
    gen_seed: int
    outcome: Outcome
    seconds: float
    saved: Path | None = None


def config_name(seed: int, index: int) -> str:
    return f"sweep-s{seed}-{index:03d}"


def generator_seed(seed: int, index: int) -> int:
    return random.Random(f"qwen-parity-sweep-weights:{seed}:{index}").randrange(1, 2**31)


def run_config(s: Settings, index: int, config: dict, runner: Runner = run_process) -> Result:
    name, gen_seed = config_name(s.seed, index), generator_seed(s.seed, index)
    folder = s.work / name
    folder.mkdir(parents=True, exist_ok=True)
    cfg_path, golden, report_dir = folder / f"{name}.json", folder / f"{name}.h5", folder / "report"
    cfg_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    started = time.monotonic()
    # No float64 oracle: the sweep is about the mirrors and the libraries (and needs no torch).
    gen = runner([s.python, s.generator, "--config", cfg_path, "--out", golden, "--seed", gen_seed,
                  "--oracle", "off"], s.timeout)
    (folder / "generator.log").write_text(gen.stderr, encoding="utf-8")
    check, rows = None, None
    if gen.returncode == 0:
        check = runner([s.checker, "check", golden, "--report-dir", report_dir, "--generator", s.generator,
                        "--requirements", s.requirements, "--no-layers"], s.timeout)
        (folder / "check.log").write_text(check.stdout + check.stderr, encoding="utf-8")
        try:
            report = json.loads((report_dir / "parity.json").read_text(encoding="utf-8"))
            rows = report["rows"] if isinstance(report, dict) else report   # {rows, libraryFindings}
        except (OSError, json.JSONDecodeError):
            rows = None
    outcome = classify(gen, check, rows)
    if not s.keep:
        golden.unlink(missing_ok=True)
    result = Result(index, name, config, gen_seed, outcome, time.monotonic() - started)
    if outcome.status != "PASS":
        result.saved = save(s, result, gen, check)
    return result


def reproduce_commands(reports: Path, name: str, gen_seed: int) -> list[str]:
    """From the repository root; the golden goes next to the saved config, never into golden/."""
    cfg, out = f"{rel(reports)}/{name}.json", f"{rel(reports)}/{name}.h5"
    return [f"make golden CONFIG={cfg} OUT={out} SEED={gen_seed} ORACLE=off", f"make parity GOLDEN={out}"]


def rerun_command(s: Settings, index: int) -> str:
    return f'make sweep SEED={s.seed} SWEEP_ARGS="--only {index}{s.draw_flags}"'


def save(s: Settings, r: Result, gen: Step, check: Step | None) -> Path:
    s.reports.mkdir(parents=True, exist_ok=True)
    (s.reports / f"{r.name}.json").write_text(json.dumps(r.config, indent=2) + "\n", encoding="utf-8")
    o = r.outcome
    record = {
        "name": r.name, "sweep_seed": s.seed, "index": r.index, "generator_seed": r.gen_seed,
        "shape": describe(r.config), "outcome": o.status, "reason": o.reason, "worst": o.worst(),
        "failed_rows": o.failed, "finding_rows": o.findings,
        "counted": {"passed": len(o.passed), "failed": len(o.failed)},
        "apart": [{k: row.get(k) for k in ("invariant", "verdict", "maxAbs")} for row in o.apart],
        "not_run": [row.get("invariant") for row in o.not_run],
        "generator_exit": gen.returncode, "generator_stderr_tail": tail(gen.stderr),
        "checker_exit": check.returncode if check else None,
        "checker_output_tail": tail(check.stdout + check.stderr, 30) if check else None,
        "config_file": f"{rel(s.reports)}/{r.name}.json",
        "reproduce": reproduce_commands(s.reports, r.name, r.gen_seed),
        "rerun_in_sweep": rerun_command(s, r.index),
    }
    # The rows name the temporary golden; point them at the one the reproduce commands make.
    text = json.dumps(record, indent=2).replace(str(s.work / r.name / f"{r.name}.h5"),
                                                f"{rel(s.reports)}/{r.name}.h5")
    path = s.reports / f"{r.name}.result.json"
    path.write_text(text + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Report

def clock(seconds: float) -> str:
    m, sec = divmod(int(round(seconds)), 60)
    return f"{m}:{sec:02d}"


def row_line(r: Result, done: int, total: int, elapsed: float) -> str:
    o = r.outcome
    left = elapsed / done * (total - done)
    counted = len(o.passed) + len(o.failed)
    counts = f"{len(o.passed)}/{counted} ok" if counted else "-"
    extra = []
    if o.apart:
        bad = sum(row.get("verdict") != "ok" for row in o.apart)
        extra.append(f"{len(o.apart)} apart" + (f" ({bad} not ok)" if bad else ""))
    if o.not_run:
        extra.append(f"{len(o.not_run)} not run")
    if o.findings:
        extra.append(f"{len(o.findings)} finding")
    status = "PASS+" if o.status == "PASS" and (o.findings or o.checker_exit == CHECK_FINDINGS) else o.status
    return (f"[{done:>{len(str(total))}}/{total} {clock(elapsed)} ~{clock(left)} left] "
            f"#{r.index:<3} {status:<7} {counts:<9} {', '.join(extra):<18} {r.seconds:5.1f}s  "
            f"{describe(r.config)}\n{'':10}worst: {o.worst()}")


def summary(s: Settings, results: list[Result], seconds: float) -> list[str]:
    passed = [r for r in results if r.outcome.status == "PASS"]
    failed = [r for r in results if r.outcome.status == "FAIL"]
    found = [r for r in results if r.outcome.status == "FINDING"]
    with_findings = [r for r in passed if r.outcome.findings or r.outcome.checker_exit == CHECK_FINDINGS]
    lines = [f"{len(results)} configs in {clock(seconds)}: {len(passed)} passed"
             + (f" ({len(with_findings)} with library findings)" if with_findings else "")
             + f", {len(failed)} failed, {len(found)} library findings (the generator's exit 3)"]
    for r in failed:
        lines.append(f"  FAIL    #{r.index} {r.name}: {r.outcome.worst()}")
        lines.append(f"          {describe(r.config)}")
        if r.outcome.log:
            lines.extend(f"          | {l}" for l in r.outcome.log.splitlines())
        if r.saved:
            lines.append(f"          saved: {rel(r.saved)}; reproduce: "
                         + " && ".join(reproduce_commands(s.reports, r.name, r.gen_seed)))
    for r in found:
        lines.append(f"  FINDING #{r.index} {r.name}: {r.outcome.reason}")
    for r in with_findings:
        names = ", ".join(row["invariant"] for row in r.outcome.findings) or "checker exit 4"
        lines.append(f"  PASS+   #{r.index} {r.name}: library findings: {names}")
    checked = [r for r in results if r.outcome.checker_exit is not None]
    if NOT_COUNTED:
        lines.append(f"listed apart, not counted (hand-set atol, NOT_COUNTED in tools/sweep.py):")
        for inv in NOT_COUNTED:
            rows = [(r, row) for r in checked for row in r.outcome.apart if row.get("invariant") == inv]
            verdicts = sorted({row["verdict"] for _, row in rows})
            counts = ", ".join(f"{sum(row['verdict'] == v for _, row in rows)} {v}" for v in verdicts)
            worst = max((row.get("maxAbs") or 0 for _, row in rows), default=0)
            lines.append(f"  {inv}: {len(rows)} rows ({counts or 'none'}), max abs {worst:.3g}")
    not_run = [(r, row) for r in checked for row in r.outcome.not_run]
    lines.append(f"NOT RUN (nothing to compare in that golden): {len(not_run)} rows"
                 + "".join(f"\n  #{r.index} {row.get('invariant')}: {row.get('detail', '')}" for r, row in not_run))
    inexact: dict[str, list] = {}
    for r in checked:
        for row in r.outcome.passed + r.outcome.failed + r.outcome.apart + r.outcome.findings:
            if (row.get("maxAbs") or 0) > 0 or (row.get("maxULP") or 0) > 0:
                inexact.setdefault(row["invariant"], []).append((r, row))
    lines.append("rows that were not exact:" + ("" if inexact else " none"))
    for inv, rows in sorted(inexact.items()):
        worst_r, worst_row = max(rows, key=lambda x: x[1].get("maxAbs") or 0)
        ulp = max(row.get("maxULP") or 0 for _, row in rows)
        lines.append(f"  {inv} ({worst_row['tolerance']}): {len(rows)} of {len(checked)} configs, "
                     f"max abs {worst_row.get('maxAbs') or 0:.3g} (#{worst_r.index}), max {ulp} ulp")
    return lines


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="sweep.py", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--n", type=int, default=6, help="number of configs (default: 6)")
    ap.add_argument("--seed", type=int, default=1, help="sweep seed; config i depends only on (seed, i) (default: 1)")
    ap.add_argument("--only", default=None, metavar="I[,J...]",
                    help="run only these config indices (1-based) of the seed's sequence")
    ap.add_argument("--checker", type=Path, default=None,
                    help="the qwen-parity binary (default: qwen-parity on PATH)")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="folder for the per-config work (config, logs, report); default: a new temp "
                         "folder, removed at the end unless --keep")
    ap.add_argument("--keep", action="store_true", help="keep the goldens and the work folder")
    ap.add_argument("--reports", type=Path, default=REPO / "reports" / "sweep",
                    help="where failing configs and findings are saved (default: reports/sweep)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="configs in flight at once (default: 1; a generator uses both cores of a 2-core machine)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per generator or checker run (default: 900)")
    ap.add_argument("--forms", default=",".join(FORMS),
                    help="config forms to draw: flat, nested or both (default: flat,nested)")
    ap.add_argument("--legacy", action="store_true",
                    help=f"draw only what the generator before issue 17 runs: {LEGACY}")
    ap.add_argument("--list", action="store_true", help="print the drawn configs' shapes and exit")
    args = ap.parse_args(argv)
    forms = tuple(f.strip() for f in args.forms.split(",") if f.strip())
    if not forms or set(forms) - set(FORMS):
        ap.error(f"--forms: choose from {', '.join(FORMS)}")
    args.forms = forms
    if args.n < 1 or args.jobs < 1:
        ap.error("--n and --jobs must be >= 1")
    if args.legacy and args.forms != FORMS and args.forms != ("flat",):
        ap.error("--legacy draws flat configs only")
    try:
        args.indices = ([int(i) for i in args.only.split(",")] if args.only else list(range(1, args.n + 1)))
    except ValueError:
        ap.error("--only: comma-separated indices")
    if any(i < 1 for i in args.indices):
        ap.error("--only: indices start at 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    configs = {i: draw(args.seed, i, args.forms, args.legacy) for i in args.indices}
    for i, c in configs.items():
        problems = validate(c)
        if problems:  # a bug in draw(), never a reason to run an invalid config
            print(f"sweep: internal error: config #{i} is invalid: {problems}", file=sys.stderr)
            return 2
    if args.list:
        for i, c in configs.items():
            print(f"#{i:<3} {config_name(args.seed, i)}  {describe(c)}")
        return 0

    checker = args.checker or shutil.which("qwen-parity")
    if checker is None or not Path(checker).is_file():
        print(f"sweep: error: checker not found: {checker or 'qwen-parity on PATH'} (pass --checker, "
              f"or use 'make sweep', which builds it)", file=sys.stderr)
        return 2
    generator, requirements = TOOLS / "make_golden.py", TOOLS / "requirements.txt"
    golden_dir = (REPO / "golden").resolve()
    made_temp = args.out_dir is None
    work = Path(tempfile.mkdtemp(prefix="qwen-parity-sweep-")) if made_temp else args.out_dir.resolve()
    if work == golden_dir or golden_dir in work.parents:
        print(f"sweep: error: --out-dir {work} is inside golden/; sweep goldens are never committed",
              file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    draw_flags = (" --legacy" if args.legacy else "") + (f" --forms {','.join(args.forms)}" if args.forms != FORMS else "")
    s = Settings(args.seed, work, args.reports.resolve(), Path(checker).resolve(), generator, requirements,
                 sys.executable, args.keep, args.timeout, draw_flags)

    restricted = [f"--legacy: {LEGACY}"] if args.legacy else []
    restricted += [f"forms {','.join(args.forms)}"] if args.forms != FORMS and not args.legacy else []
    print(f"sweep: seed {args.seed}, {len(configs)} configs"
          + (f" (restricted: {'; '.join(restricted)})" if restricted else " (the whole family)")
          + f"; work in {work}; not counted: {', '.join(NOT_COUNTED) or 'none'}", flush=True)
    started = time.monotonic()
    results: list[Result] = []
    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_config, s, i, c) for i, c in configs.items()]
            for future in as_completed(futures):
                r = future.result()
                results.append(r)
                print(row_line(r, len(results), len(configs), time.monotonic() - started), flush=True)
    finally:
        if made_temp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results.sort(key=lambda r: r.index)
    print()
    print("\n".join(summary(s, results, time.monotonic() - started)))
    if args.keep:
        print(f"kept: {work}")
    return 1 if any(r.outcome.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
