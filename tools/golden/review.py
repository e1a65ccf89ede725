"""Regenerating over an existing golden: what moved, and why (history_json)."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import h5py

from golden_diff import compare_files, compare_model_dirs, movement_report

from .errors import UsageError, log
from .provenance import generator_sha256, versions


def review(args, previous: Path | None, new_h5: Path, previous_dir: Path | None,
           new_dir: Path | None, skip: tuple = ()) -> bool:
    """Compare with the golden being replaced; record why in history_json. False: nothing
    changed, keep the old file untouched. skip: files of the model directories not compared
    as files (the golden inside, compared above)."""
    entry = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "generator_sha256": generator_sha256(), "versions": versions()}
    history: list = []
    if previous is not None and previous.exists():
        changes = compare_files(previous, new_h5)
        if previous_dir is not None and new_dir is not None:
            changes += compare_model_dirs(previous_dir, new_dir, skip=skip)
        if not changes:
            log(f"unchanged (bitwise, provenance included): keeping {previous}")
            return False
        log(f"{previous} changes ({len(changes)} difference(s)):")
        for c in changes[:40]:
            log("  " + c.line())
        if len(changes) > 40:
            log(f"  ... and {len(changes) - 40} more")
        for line in movement_report(previous, new_h5):
            log(line)
        reason = args.reason
        if not reason and sys.stdin.isatty():
            reason = input("make_golden: why does this golden change? (empty aborts) ").strip()
        if not reason:
            raise UsageError(f"{previous} would change: give the reason with --reason TEXT "
                              f"(make golden REASON=...); nothing was written")
        with h5py.File(previous, "r") as f:
            history = json.loads(f.attrs.get("history_json", "[]"))
        entry["reason"] = reason
        entry["changes"] = [c.path for c in changes[:40]]
    else:
        entry["reason"] = args.reason or "created"
    with h5py.File(new_h5, "r+") as f:
        f.attrs["history_json"] = json.dumps(history + [entry])
    return True
