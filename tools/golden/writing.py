"""The HDF5 layout of docs/golden-format.md, hard links for bitwise repeats, and publishing a
finished golden atomically."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

import golden_candidates  # tools/golden_candidates.py, outside the package: not a reference

from . import distances, oracle, probes, vision
from .errors import UsageError
from .provenance import REPO_ROOT, versions
from .recording import PathRun


# Shuffle + deflate, HDF5's own filters (h5py and h5dump read them): float64 oracle tensors
# shrink by about a fifth, float32 ones barely, so only the oracle asks for it. A chunked
# dataset carries a chunk index of about 3 KB (v108 files), more than deflate saves below 64 KiB.
COMPRESSION = {"compression": "gzip", "compression_opts": 6, "shuffle": True}
COMPRESS_FROM_BYTES = 64 * 1024


def put(group, name: str, array: np.ndarray, dtype: str, shared: dict, compress: bool = False):
    """Write a dataset; a bitwise repeat of an earlier one (same dtype, shape and bytes) becomes
    an HDF5 hard link to it. mlx-lm is schedule-invariant on CPU, so most scenarios repeat the
    same hidden states and caches (and a q4 model's float32 twin repeats it whole); linking keeps
    golden/ small while every path still reads normally."""
    data = np.ascontiguousarray(array, dtype=dtype)
    parent, _, name = name.rpartition("/")
    if parent:
        # h5py's own groups: an intermediate group HDF5 makes for a link records timestamps,
        # and the file would differ from run to run.
        group = group.require_group(parent)
    key = (data.dtype.str, data.shape, hashlib.sha256(data.tobytes()).hexdigest())
    if key in shared:
        group[name] = group.file[shared[key]]
        return group[name]
    # One chunk per dataset: small chunks would spend on the index what deflate saves.
    options = COMPRESSION | {"chunks": data.shape} if compress and data.nbytes >= COMPRESS_FROM_BYTES else {}
    dataset = group.create_dataset(name, data=data, **options)
    shared[key] = dataset.name
    return dataset


def write_path(g, name: str, run: PathRun, shared: dict, light: bool = False) -> None:
    """/scenarios/<scenario>/<path>. light: no hidden_states/final_norm (size budget)."""
    p = g.create_group(name)
    result = run.result
    if not light:
        put(p, "hidden_states", result.hidden_states, "<f4", shared)
        put(p, "final_norm", result.final_norm, "<f4", shared)
    put(p, "logits_positions", run.logits_positions, "<i4", shared)
    put(p, "logits", result.logits[:, run.logits_positions, :], "<f4", shared)
    for i, layer in enumerate(result.cache_after or []):
        lg = p.create_group(f"cache_after/layer_{i:02d}")
        for key, value in layer.items():
            if key == "offset":
                lg.attrs["offset"] = value
            else:
                put(lg, key, value, "<f4", shared)
    if run.schedule is not None:  # mlx-vlm: the calls, the positions they ran with, the state
        p.attrs["schedule_json"] = json.dumps(run.schedule)
        p.attrs["state_after_json"] = json.dumps(result.state_after)
        put(p, "position_ids", result.position_ids, "<i4", shared)
        put(p, "position_ids_rank", result.position_ranks, "<i4", shared)


def write_scenario(root, sc, paths: dict[str, PathRun], shared: dict) -> None:
    """One /scenarios/<name> group (a Scenario or a VlmScenario) with a subgroup per path."""
    g = root.create_group(f"scenarios/{sc.name}")
    g.attrs["description"] = sc.description
    g.attrs["kind"] = sc.kind
    g.attrs["calls_json"] = json.dumps(sc.calls)
    g.attrs["cached"] = int(getattr(sc, "cached", True))
    if getattr(sc, "prefill_step_size", None) is not None:
        g.attrs["prefill_step_size"] = sc.prefill_step_size
    if getattr(sc, "hazard", None) is not None:
        g.attrs["hazard"] = sc.hazard
    if getattr(sc, "vision_inputs", None) is not None:
        g.attrs["vision_inputs"] = sc.vision_inputs
    for name, run in paths.items():
        write_path(g, name, run, shared, light=name in getattr(sc, "light_paths", ()))


def write_golden(path: Path, meta: dict, weights: dict | None, store: dict, results: list) -> None:
    """meta: root attrs, /config attrs and rope_cases; weights None: they live in a model
    directory named by the root attrs (weights_source "model_dir"); store: every /inputs
    dataset by path; results: [(scenario, {path name: PathRun})]."""
    # w-: never clobber a file we did not create. v108 bounds: compact groups (smaller files),
    # still readable by HDF5 1.8 and later.
    with h5py.File(path, "w-", libver=("v108", "v108")) as f:
        for key, value in meta["root"].items():
            f.attrs[key] = value
        cfg = f.create_group("config")
        for key in ("raw_json", "effective_json", "vlm_json", "vlm_effective_json"):
            if key in meta:
                cfg.attrs[key] = meta[key]
        shared: dict = {}
        for name in sorted(weights or {}):
            put(f, f"weights/{name}", weights[name], "<f4", shared)
        for name in sorted(store):
            value = store[name]
            put(f, name.lstrip("/"), value, "<f4" if value.dtype.kind == "f" else "<i4", shared)
        for case in meta.get("rope_cases", []):
            g = f.create_group(f"rope_index/{case['name']}")
            g.attrs["description"] = case["about"]
            for key in ("input_ids", "image_grid_thw", "video_grid_thw", "attention_mask",
                        "position_ids", "rope_deltas"):
                if key in case:
                    put(g, key, np.asarray(case[key]), "<i4", shared)
        for sc, paths in results:
            write_scenario(f, sc, paths, shared)
        probes.write(f, meta.get("probes"), shared, put)
        distances.write(f, meta.get("library_distances"), f"mlx-vlm {versions()['mlx_vlm']}")
        vision.write(f, meta.get("vision"), shared, put)
        golden_candidates.write(f, meta.get("candidate"), shared, put)
        oracle.write(f, meta.get("oracle"), shared, put)


# ---------------------------------------------------------------------------------------------
# Publishing: nothing half-written


def temp_sibling(out: Path) -> Path:
    # Not mkstemp: its 0600 mode would end up on the golden file; h5py honours the umask.
    return out.parent / f".{out.name}.{os.getpid()}.tmp"


def exchange_dirs(a: Path, b: Path) -> None:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"renameat2(RENAME_EXCHANGE) {a} <-> {b}: {os.strerror(err)}")


def publish(tmp: Path, out: Path) -> None:
    """Put a finished temp file or directory in place of out in one atomic step: a reader (or
    a kill at any instant) sees either the complete old golden or the complete new one."""
    if tmp.is_dir():
        if out.exists():
            exchange_dirs(tmp, out)   # tmp now holds the previous directory
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, out)
    else:
        os.replace(tmp, out)


def discard(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def refuse_ci_regeneration(out: Path) -> None:
    if os.environ.get("CI", "").lower() != "true":
        return
    golden_dir = (REPO_ROOT / "golden").resolve()
    if out.resolve().is_relative_to(golden_dir):
        raise UsageError(f"CI=true: refusing to write {out} inside {golden_dir}. Golden files "
                          f"are generated by hand and never regenerated by CI; pass an --out "
                          f"outside golden/ to generate a scratch copy.")
