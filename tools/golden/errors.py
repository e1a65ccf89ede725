"""How a generator run ends when it cannot write a golden, and the exit status of each way
(cli.main): 1 GoldenError (the input or the generator's own checks), 2 UsageError (the command
line), 3 LibraryFinding (a pinned library could not run a config it was given)."""

from __future__ import annotations

import importlib.metadata
import sys
from contextlib import contextmanager


class GoldenError(Exception):
    """A problem with the inputs or the outputs; reported without a traceback."""


class UsageError(GoldenError):
    """The command line asks for something the generator cannot do (an option, a path, a
    change without a reason, CI writing into golden/)."""


class LibraryFinding(Exception):
    """A reference library raised while building or running a model: a fact about the library,
    reported as one line, not a crash of the generator."""

    def __init__(self, library: str, doing: str, exc: BaseException):
        self.library, self.doing, self.exc = library, doing, exc
        message = " ".join(str(exc).split())  # one line, whatever the library printed
        super().__init__(f"{library} {importlib.metadata.version(library)}: {doing}: "
                         f"{type(exc).__name__}: {message}")

    def line(self) -> str:
        return f"library finding: {self}"


@contextmanager
def library(name: str, doing: str):
    """Runs library code: what it raises becomes a LibraryFinding of `name` ("mlx-lm" or
    "mlx-vlm") while `doing` it. The generator's own errors pass through."""
    try:
        yield
    except (GoldenError, LibraryFinding):
        raise
    except Exception as exc:
        raise LibraryFinding(name, doing, exc) from exc


def log(msg: str) -> None:
    print(f"make_golden: {msg}", file=sys.stderr, flush=True)
