#!/usr/bin/env python3
"""Compare two golden HDF5 files (docs/golden-format.md) dataset by dataset.

Used by make_golden.py to review a regeneration (what moved, per scenario and layer, and by how
much) and by golden_check.py to prove the committed goldens are fresh (bitwise). Only h5py and
numpy are needed; MLX is not imported.

  python tools/golden_diff.py OLD.h5 NEW.h5      exit 0 if bitwise identical, 1 otherwise
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import h5py
import numpy as np

# Root attributes that record how a file was made, not what it holds. history_json is the
# review log itself and always differs after a regeneration; it is never compared.
PROVENANCE_ATTRS = ("format_version", "backend", "dtype", "variant", "weights_seed", "versions_json",
                    "generator", "generator_sha256", "scenarios_json", "weights_source",
                    "model_dir", "model_files_json", "checkpoint_kind", "quantization_json")
IGNORED_ATTRS = ("history_json",)


@dataclass
class Change:
    path: str             # dataset or "attr <object>:<name>"
    kind: str             # "values" | "shape" | "dtype" | "added" | "removed" | "attr"
    detail: str
    max_abs: float | None = None

    def line(self) -> str:
        return f"{self.path}: {self.kind}: {self.detail}"


def _datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}

    # visititems skips a hard link it has seen under another name: walk groups by hand instead.
    def walk(group, prefix):
        for key in group:
            obj = group[key]
            path = f"{prefix}/{key}"
            if isinstance(obj, h5py.Dataset):
                out[path] = obj
            else:
                walk(obj, path)
    walk(f, "")
    return out


def _objects(f: h5py.File) -> list[str]:
    names = ["/"]
    def walk(group, prefix):
        for key in group:
            path = f"{prefix}/{key}"
            names.append(path)
            if isinstance(group[key], h5py.Group):
                walk(group[key], path)
    walk(f, "")
    return names


def _attr_text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist())
    if isinstance(value, np.generic):
        return repr(value.item())
    return repr(value)


def compare_files(old_path, new_path, attrs: bool = True) -> list[Change]:
    """Every difference between two golden files, in a stable order. Values are compared
    bit for bit; for float datasets the largest absolute difference is reported too."""
    changes: list[Change] = []
    with h5py.File(old_path, "r") as old, h5py.File(new_path, "r") as new:
        a, b = _datasets(old), _datasets(new)
        for path in sorted(set(a) | set(b)):
            if path not in b:
                changes.append(Change(path, "removed", f"shape {a[path].shape}"))
                continue
            if path not in a:
                changes.append(Change(path, "added", f"shape {b[path].shape}"))
                continue
            x, y = a[path], b[path]
            if x.shape != y.shape:
                changes.append(Change(path, "shape", f"{x.shape} -> {y.shape}"))
                continue
            if x.dtype != y.dtype:
                changes.append(Change(path, "dtype", f"{x.dtype} -> {y.dtype}"))
                continue
            u, v = x[()], y[()]
            if u.tobytes() == v.tobytes():
                continue
            bits = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[u.dtype.itemsize]
            differing = int(np.count_nonzero(np.ravel(u).view(bits) != np.ravel(v).view(bits)))
            max_abs = None
            if np.issubdtype(u.dtype, np.floating) or np.issubdtype(u.dtype, np.integer):
                max_abs = float(np.max(np.abs(u.astype(np.float64) - v.astype(np.float64))))
            detail = f"{differing} of {u.size} elements differ"
            if max_abs is not None:
                detail += f", max |diff| {max_abs:.3e}"
            changes.append(Change(path, "values", detail, max_abs))
        if attrs:
            oa, ob = set(_objects(old)), set(_objects(new))
            for obj in sorted(oa & ob):
                ka = {k for k in old[obj].attrs if k not in IGNORED_ATTRS}
                kb = {k for k in new[obj].attrs if k not in IGNORED_ATTRS}
                for key in sorted(ka | kb):
                    va = _attr_text(old[obj].attrs[key]) if key in ka else "(absent)"
                    vb = _attr_text(new[obj].attrs[key]) if key in kb else "(absent)"
                    if va != vb:
                        changes.append(Change(f"attr {obj}:{key}", "attr", _short(va, vb)))
    return changes


def _safetensors_index(path) -> tuple[dict, int]:
    """Header entries of a safetensors file and where its data section starts."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def compare_safetensors(old_path, new_path, label: str) -> list[Change]:
    changes: list[Change] = []
    (ha, sa), (hb, sb) = _safetensors_index(old_path), _safetensors_index(new_path)
    with open(old_path, "rb") as fa, open(new_path, "rb") as fb:
        da, db = fa.read(), fb.read()
    for name in sorted(set(ha) | set(hb)):
        if name not in hb:
            changes.append(Change(f"{label}:{name}", "removed", f"{ha[name]['dtype']} {ha[name]['shape']}"))
        elif name not in ha:
            changes.append(Change(f"{label}:{name}", "added", f"{hb[name]['dtype']} {hb[name]['shape']}"))
        elif (ha[name]["dtype"], ha[name]["shape"]) != (hb[name]["dtype"], hb[name]["shape"]):
            changes.append(Change(f"{label}:{name}", "shape",
                                  f"{ha[name]['dtype']} {ha[name]['shape']} -> {hb[name]['dtype']} {hb[name]['shape']}"))
        else:
            (a0, a1), (b0, b1) = ha[name]["data_offsets"], hb[name]["data_offsets"]
            if da[sa + a0:sa + a1] != db[sb + b0:sb + b1]:
                changes.append(Change(f"{label}:{name}", "values", "bytes differ"))
    if not changes and da != db:
        changes.append(Change(label, "values", "same tensors, but the file bytes differ (header or order)"))
    return changes


def compare_model_dirs(old_dir, new_dir, skip=()) -> list[Change]:
    """Files of two model directories: safetensors tensor by tensor, anything else bytewise.
    Golden .h5 files inside are compared with compare_files unless named in skip."""
    from pathlib import Path
    old_dir, new_dir = Path(old_dir), Path(new_dir)
    changes: list[Change] = []
    names = sorted({p.name for p in old_dir.iterdir()} | {p.name for p in new_dir.iterdir()})
    for name in names:
        if name in skip:
            continue
        a, b = old_dir / name, new_dir / name
        label = name
        if not b.exists():
            changes.append(Change(label, "removed", "file"))
        elif not a.exists():
            changes.append(Change(label, "added", "file"))
        elif name.endswith(".safetensors"):
            changes += compare_safetensors(a, b, label)
        elif name.endswith(".h5"):
            changes += [Change(f"{label}:{c.path}", c.kind, c.detail, c.max_abs) for c in compare_files(a, b)]
        elif a.read_bytes() != b.read_bytes():
            changes.append(Change(label, "values", "file bytes differ"))
    return changes


def _short(a: str, b: str, width: int = 160) -> str:
    if len(a) + len(b) <= width:
        return f"{a} -> {b}"
    # Show where long values (JSON) start to differ.
    i = next((k for k, (p, q) in enumerate(zip(a, b)) if p != q), min(len(a), len(b)))
    lo = max(0, i - 30)
    return f"...{a[lo:i + 50]}... -> ...{b[lo:i + 50]}..."


def movement_report(old_path, new_path) -> list[str]:
    """What moved, per scenario, reference path and layer: one line each, with the largest
    absolute difference. hidden_states [n_layers+1, B, T, D] is split into its layers."""
    lines: list[str] = []
    with h5py.File(old_path, "r") as old, h5py.File(new_path, "r") as new:
        scenarios = sorted(set(old.get("scenarios", {})) | set(new.get("scenarios", {})))
        for sc in scenarios:
            if sc not in old.get("scenarios", {}):
                lines.append(f"  {sc}: new scenario")
                continue
            if sc not in new.get("scenarios", {}):
                lines.append(f"  {sc}: removed")
                continue
            go, gn = old["scenarios"][sc], new["scenarios"][sc]
            for path in sorted(set(go) | set(gn)):
                if not (isinstance(go.get(path), h5py.Group) and isinstance(gn.get(path), h5py.Group)):
                    lines.append(f"  {sc}/{path}: {'added' if path not in go else 'removed'}")
                    continue
                po, pn = go[path], gn[path]
                rows = []
                if "hidden_states" in po and "hidden_states" in pn and po["hidden_states"].shape == pn["hidden_states"].shape:
                    ho, hn = po["hidden_states"][()], pn["hidden_states"][()]
                    for i in range(ho.shape[0]):
                        d = float(np.max(np.abs(ho[i].astype(np.float64) - hn[i])))
                        rows.append(("embeddings" if i == 0 else f"layer {i - 1}", d))
                for name in ("final_norm", "logits"):
                    if name in po and name in pn and po[name].shape == pn[name].shape:
                        rows.append((name.replace("_", " "),
                                     float(np.max(np.abs(po[name][()].astype(np.float64) - pn[name][()])))))
                    elif name in po or name in pn:
                        rows.append((name + " (shape changed)", float("nan")))
                moved = [(n, d) for n, d in rows if d != 0]
                if not moved:
                    lines.append(f"  {sc}/{path}: unchanged")
                    continue
                lines.append(f"  {sc}/{path}: " + ", ".join(f"{n} {d:.2e}" for n, d in moved))
    return lines


def main(argv=None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2 or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args and args[0] in ("-h", "--help") else 2
    changes = compare_files(args[0], args[1])
    for c in changes:
        print(c.line())
    if changes:
        print("\n".join(movement_report(args[0], args[1])))
    print(f"{len(changes)} difference(s)")
    return 1 if changes else 0


if __name__ == "__main__":
    sys.exit(main())
