"""How a generator run ends when it cannot write a golden."""

from __future__ import annotations

import sys


class GoldenError(Exception):
    """A problem with the inputs or the outputs; reported without a traceback."""


def log(msg: str) -> None:
    print(f"make_golden: {msg}", file=sys.stderr, flush=True)
