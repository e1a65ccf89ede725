"""The reference library's own schedule distances, stored in golden files so that non-exact
invariants are judged against what the library does on the same weights and inputs, never
against a constant (docs/golden-format.md, "Library distances").

mlx-vlm's LanguageModel rounds differently when a GatedDeltaNet call has more than one token
(its chunked WY scan) and when it has one (the sequential step), so chunked prefill, prefix +
decode and whole-prompt runs of one MRoPE prompt differ by an amount that depends on the config.
The unified model's MRoPE route does mlx-vlm's arithmetic, so for every pair below its distance
must equal the library's exactly. The pairs and their labels are those of the Swift invariants
(Sources/ParityEngine/Invariants/UnifiedInvariants.swift); both sides build them the same way.
Hooked into vlm_paths.add_vlm_paths, written by writing.write_golden.

Nothing here re-implements the model: every number is a distance between two runs of the
library, measured on its float32 logits like the Swift side (max |a - b| over finite elements,
count of elements whose bits differ).
"""

from __future__ import annotations

import json

import numpy as np

import mlx.core as mx

from . import progress
from .provenance import component
from .scenarios import generate_step_calls

GROUP = "/library_distances"
# Upstream's tests allow 1e-4 for prefill/decode consistency and chunked MRoPE prefill
# (docs: upstream-change.md); a library distance above it is a finding about the library.
UPSTREAM_BOUND = 1e-4
PREFIX_DECODE_CASES = ("prefill_decode", "image_prompt")
CHUNK_SWEEP_CASES = ("chunk_boundary", "chunk_later", "image_prompt")
PREFIX_TAILS = (1, 4)
PREFIX_DECODES = 3
SWEEP_DECODES = 2


def distance(run: np.ndarray, whole: np.ndarray) -> dict:
    if run.shape != whole.shape:
        raise ValueError(f"library distance: shapes {run.shape} and {whole.shape}")
    differing = (run.view(np.uint32) != whole.view(np.uint32)) | np.isnan(run)
    finite = np.isfinite(run) & np.isfinite(whole)
    gap = np.abs(run.astype(np.float32) - whole.astype(np.float32))[finite]
    return {"max_abs": float(gap.max()) if gap.size else 0.0,
            "differing": int(np.count_nonzero(differing)), "compared": int(run.size)}


class Case:
    """One MRoPE prompt of /inputs/mrope/<name>: its prompt as embeddings with 3-D positions."""

    def __init__(self, name: str, store: dict, text_prompt: np.ndarray):
        g = f"/inputs/mrope/{name}"
        self.name = name
        self.embeddings = store[g + "/input_embeddings"]          # [1, L, D]
        self.positions = store[g + "/position_ids"]               # [3, 1, L]
        self.deltas = store[g + "/rope_deltas"]                   # [1, 1]
        self.tokens = store[g + "/token_ids"]                     # [1, >= L]
        self.L = self.embeddings.shape[1]
        self.text_prompt = text_prompt

    def decode_tokens(self, count: int) -> list[int]:
        """The case's own ids past its prompt, else the first ids of the golden's text prompt."""
        own = [int(t) for t in self.tokens[0, self.L:]]
        return own[:count] if len(own) >= count else [int(t) for t in self.text_prompt[0, :count]]

    def run(self, lm, calls: list[int], decode: list[int], extra: np.ndarray | None = None) -> np.ndarray:
        """A fresh LanguageModel state and cache; prompt chunks as embeddings with the whole
        position_ids and rope_deltas (generate style), then one-token decodes by id."""
        embeddings, positions, ids = self.embeddings, self.positions, self.tokens[:, :self.L]
        if extra is not None:   # the decode tokens folded into the prompt call
            embeddings, positions, ids = extra
        lm._position_ids = None
        lm._rope_deltas = None
        cache = lm.make_cache()
        logits, start = [], 0
        for n in calls:
            out = lm(mx.array(ids[:, start:start + n]), cache=cache,
                     inputs_embeds=mx.array(embeddings[:, start:start + n]),
                     position_ids=mx.array(positions), rope_deltas=mx.array(self.deltas)).logits
            logits.append(np.array(out))
            start += n
            progress.call(f"distances {self.name}", len(logits), len(calls) + len(decode), n)
        for token in decode:
            logits.append(np.array(lm(mx.array([[token]], dtype=mx.int32), cache=cache).logits))
            progress.call(f"distances {self.name}", len(logits), len(calls) + len(decode), 1)
        return np.concatenate(logits, axis=1)

    def stitched(self, lm, decode: list[int]):
        """The prompt and its decode tokens as one input: positions past the stored end continue
        as index + rope delta on all three axes (how a stored position state is extended)."""
        extra = np.array(lm.model.embed_tokens(mx.array([decode], dtype=mx.int32)))
        embeddings = np.concatenate([self.embeddings, extra], axis=1)
        delta = int(self.deltas.reshape(-1)[0])
        tail = np.arange(self.L, self.L + len(decode), dtype=self.positions.dtype) + delta
        positions = np.concatenate([self.positions, np.broadcast_to(tail, (3, 1, len(decode)))], axis=2)
        ids = np.concatenate([self.tokens[:, :self.L], np.array([decode], dtype=self.tokens.dtype)], axis=1)
        return embeddings, positions, ids


def measure(lm, store: dict, text_prompt: np.ndarray) -> dict[str, list[dict]]:
    """{invariant id: [{label, max_abs, differing, compared}]} for every pair the unified MRoPE
    invariants compare, measured with mlx-vlm's LanguageModel `lm`."""
    def cases(names):
        return [Case(n, store, text_prompt) for n in names if f"/inputs/mrope/{n}/input_embeddings" in store]

    prefix_cases, sweep_cases = cases(PREFIX_DECODE_CASES), cases(CHUNK_SWEEP_CASES)
    # Tokens fed below, for the progress estimate: each whole run, the prefix runs and the
    # stitched run per prefix case; each whole run and one run per step per sweep case.
    total = sum((2 + len(PREFIX_TAILS)) * (c.L + PREFIX_DECODES) for c in prefix_cases) \
        + sum((1 + c.L) * (c.L + SWEEP_DECODES) for c in sweep_cases)
    with progress.path("library distances", total):
        return pairs(lm, prefix_cases, sweep_cases)


def pairs(lm, prefix_cases: list[Case], sweep_cases: list[Case]) -> dict[str, list[dict]]:
    prefix_decode = []
    for c in prefix_cases:
        decode = c.decode_tokens(PREFIX_DECODES)
        whole = c.run(lm, [c.L], decode)
        for tail in PREFIX_TAILS:
            if tail < c.L:
                run = c.run(lm, [c.L - tail] + [1] * tail, decode)
                prefix_decode.append({"label": f"{c.name} prefix {c.L - tail} + {tail} + {len(decode)} decodes",
                                      **distance(run, whole)})
        run = c.run(lm, [c.L + len(decode)], [], extra=c.stitched(lm, decode))
        prefix_decode.append({"label": f"{c.name} one call of {c.L}+{len(decode)} (stitched past the stored end)",
                              **distance(run, whole)})

    sweep = []
    for c in sweep_cases:
        decode = c.decode_tokens(PREFIX_DECODES)[:SWEEP_DECODES]
        whole = c.run(lm, [c.L], decode)
        for step in range(1, c.L + 1):
            calls = generate_step_calls(c.L, step)
            sweep.append({"label": f"{c.name} step {step} {calls}", **distance(c.run(lm, calls, decode), whole)})
    return {"unified-mrope-prefix-decode": prefix_decode, "unified-mrope-chunked-sweep": sweep}


def write(root, distances: dict[str, list[dict]] | None, library: str) -> None:
    """/library_distances/<invariant> with attrs pairs_json, library, upstream_bound."""
    if not distances:
        return
    group = root.create_group(GROUP.strip("/"))
    group.attrs["generator"], group.attrs["generator_sha256"] = component(__file__)
    for invariant, pairs in distances.items():
        g = group.create_group(invariant)
        g.attrs["pairs_json"] = json.dumps(pairs)
        g.attrs["library"] = library
        g.attrs["upstream_bound"] = UPSTREAM_BOUND
