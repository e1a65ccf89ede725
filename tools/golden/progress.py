"""Progress of long runs on stderr: per call, the path, scenario, call i/n, elapsed time and a
rate-based estimate of the time left. Quiet on the tiny configs: nothing is printed until a path
has run for QUIET_SECONDS, so a golden made in seconds logs what it logged before."""

from __future__ import annotations

import time
from contextlib import contextmanager

from .errors import log

QUIET_SECONDS = 5.0


class PathProgress:
    """One reference path over its scenarios; units are tokens fed to the model."""

    def __init__(self, label: str, total_tokens: int):
        self.label, self.total, self.done = label, max(total_tokens, 1), 0
        self.started = time.monotonic()

    def call(self, scenario: str, i: int, n: int, tokens: int) -> None:
        """After call i (1-based) of n of scenario, which fed `tokens` tokens (batch included)."""
        self.done += tokens
        elapsed = time.monotonic() - self.started
        if elapsed < QUIET_SECONDS:
            return
        left = elapsed / self.done * max(self.total - self.done, 0)
        log(f"  progress {self.label}: {scenario} call {i}/{n}, {elapsed:.0f}s elapsed, "
            f"about {left:.0f}s left for this path")


_current: PathProgress | None = None


@contextmanager
def path(label: str, total_tokens: int):
    """Calls made inside report to this path's progress."""
    global _current
    previous, _current = _current, PathProgress(label, total_tokens)
    try:
        yield _current
    finally:
        _current = previous


def call(scenario: str, i: int, n: int, tokens: int) -> None:
    if _current is not None:
        _current.call(scenario, i, n, tokens)
