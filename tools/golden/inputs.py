"""The token ids of the text prompts (mlx-lm's scenarios, and the same through mlx-vlm)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenarios import BATCH_DECODE_STEPS, BATCH_SHORTENING

PAD_ID = 0


@dataclass
class Inputs:
    token_ids: np.ndarray       # [1, L]
    batch_tokens: np.ndarray    # [B, Lmax], left-padded with PAD_ID
    left_padding: np.ndarray    # [B]
    decode_tokens: np.ndarray   # [steps, B]

    def datasets(self) -> dict[str, np.ndarray]:
        """The /inputs datasets, keyed by their path in the file."""
        return {"/inputs/token_ids": self.token_ids, "/inputs/batch/token_ids": self.batch_tokens,
                "/inputs/batch/left_padding": self.left_padding,
                "/inputs/batch/decode_tokens": self.decode_tokens}


def make_inputs(seed: int, L: int, vocab: int) -> Inputs:
    # A stream separate from the weights, so changing one never changes the other.
    rng = np.random.default_rng([seed, 1])
    token_ids = rng.integers(0, vocab, size=(1, L), dtype=np.int64).astype(np.int32)
    lengths = [L - s for s in BATCH_SHORTENING]
    lmax = max(lengths)
    batch = np.full((len(lengths), lmax), PAD_ID, dtype=np.int32)
    for b, n in enumerate(lengths):
        batch[b, lmax - n:] = rng.integers(0, vocab, size=n, dtype=np.int64)
    left_padding = np.array([lmax - n for n in lengths], dtype=np.int32)
    decode = rng.integers(0, vocab, size=(BATCH_DECODE_STEPS, len(lengths)),
                          dtype=np.int64).astype(np.int32)
    return Inputs(token_ids, batch, left_padding, decode)
