"""What a golden records about how it was made: versions, the generator's hash, root attrs."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from pathlib import Path

import h5py
import numpy as np

GENERATOR = "tools/make_golden.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "tools/golden"
FORMAT_VERSION = 1


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generator_files(root: Path = REPO_ROOT) -> list[str]:
    """tools/make_golden.py and every tools/golden/**/*.py, relative to root, sorted."""
    files = [GENERATOR] + [p.relative_to(root).as_posix()
                           for p in (root / PACKAGE).rglob("*.py") if p.is_file()]
    return sorted(files)


def generator_sha256(root: Path = REPO_ROOT) -> str:
    """sha256 of the manifest "<path>\\0<sha256 of the file>\\n" over generator_files(), so
    an edit to any module of the generator makes every golden stale
    (docs/golden-format.md, "Provenance")."""
    manifest = "".join(f"{rel}\0{file_sha256(root / rel)}\n" for rel in generator_files(root))
    return hashlib.sha256(manifest.encode("utf-8")).hexdigest()


def component(module_file: str) -> tuple[str, str]:
    """(path relative to the repository, sha256) of one module: the /probes and /vision attrs."""
    path = Path(module_file).resolve()
    return path.relative_to(REPO_ROOT).as_posix(), file_sha256(path)


def versions() -> dict:
    v = importlib.metadata.version
    return {"mlx": v("mlx"), "mlx_lm": v("mlx-lm"), "mlx_vlm": v("mlx-vlm"),
            "python": platform.python_version(), "numpy": np.__version__,
            "h5py": h5py.__version__}


def root_attrs(args, variant: str, dtype: str, definitions: list) -> dict:
    return {
        "format_version": FORMAT_VERSION, "backend": "mlx-cpu", "dtype": dtype,
        "variant": variant, "weights_seed": args.seed,
        "versions_json": json.dumps(versions()),
        "generator": GENERATOR,
        "generator_sha256": generator_sha256(),
        "scenarios_json": json.dumps(definitions),
        "history_json": "[]",
    }
