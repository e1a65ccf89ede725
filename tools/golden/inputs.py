"""The token ids of the prompts: the text scenarios (mlx-lm's, and the same through mlx-vlm), the
ids the vlm prompts draw from, and the range check before anything is written."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import GoldenError
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


# ---------------------------------------------------------------------------------------------
# Ids of the mlx-vlm prompts: the special ids, and text ids that never collide with them

TEXT_ID_MARGIN = 10   # text ids of the vlm prompts stay below V - 10 (990 for V = 1000)


@dataclass
class TokenIds:
    special: dict   # configs.SPECIAL_TOKEN_KEYS -> id
    vocab: int

    def __post_init__(self):
        specials = set(self.special.values())
        limit = max(self.vocab - TEXT_ID_MARGIN, self.vocab // 2)
        pool = [i for i in range(limit) if i not in specials] or \
            [i for i in range(self.vocab) if i not in specials]
        if not pool:
            raise GoldenError(f"vocab_size {self.vocab} leaves no text ids beside the special ids")
        self.pool = np.array(pool, dtype=np.int64)

    def text(self, rng: np.random.Generator, n: int) -> list[int]:
        """n random text ids (for V = 1000: rng.integers(0, 990, n), as before)."""
        return self.pool[rng.integers(0, len(self.pool), size=n)].tolist()

    def fixed(self, n: int) -> int:
        """The text id a hand-written prompt means by n (n itself for a big vocabulary)."""
        return int(self.pool[n % len(self.pool)])

    @property
    def pad(self) -> int:
        return PAD_ID if PAD_ID not in self.special.values() else int(self.pool[0])


TOKEN_DATASETS = ("token_ids", "decode_tokens", "sequence", "input_ids")


def check_token_ids(store: dict[str, np.ndarray], rope_cases: list, vocab: int) -> None:
    """Every stored token id (the /inputs prompts, vision prompts, /rope_index cases) must lie
    in [0, vocab); otherwise nothing is written."""
    named = {path: value for path, value in store.items()
             if path.rpartition("/")[2] in TOKEN_DATASETS}
    named |= {f"/rope_index/{c['name']}/input_ids": np.asarray(c["input_ids"]) for c in rope_cases}
    for path, value in sorted(named.items()):
        bad = np.unique(value[(value < 0) | (value >= vocab)])
        if bad.size:
            raise GoldenError(f"{path} holds token ids outside the vocabulary [0, {vocab}): "
                              f"{bad[:10].tolist()}; nothing was written")
