#!/usr/bin/env python3
"""Freshness check: regenerate every committed golden into a temporary folder and compare it
with the committed one, bit for bit (MLX on the CPU is bit-reproducible).

  python tools/golden_check.py [--golden-dir golden] [--checkpoints "tiny-checkpoint:q4 ..."]

Random-weight goldens: tools/configs/NAME.json -> GOLDEN_DIR/NAME.h5. Checkpoint directories:
NAME:KIND -> GOLDEN_DIR/checkpoints/NAME-KIND/ from tools/configs/checkpoints/NAME.json (a folder
of its own, so a checkpoint-only config never becomes a random-weight golden). Every dataset,
provenance attribute (history_json excepted: it is the review log) and model file is compared;
each difference is listed by dataset. Exit status 0 when everything is identical, 1 otherwise,
2 when the generator itself failed. Never writes into the golden folder.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_diff import compare_files, compare_model_dirs  # noqa: E402

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="golden_check.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--golden-dir", type=Path, default=REPO / "golden",
                    help="folder of the committed goldens (default: the repository's golden/)")
    ap.add_argument("--configs", type=Path, default=TOOLS / "configs",
                    help="folder of the variant configs (default: tools/configs)")
    ap.add_argument("--checkpoints", default="",
                    help="space-separated NAME:KIND checkpoint directories (the Makefile's CHECKPOINTS)")
    args = ap.parse_args(argv)

    started = time.monotonic()
    differences, failures = 0, 0
    with tempfile.TemporaryDirectory(prefix="golden-check-") as scratch:
        scratch = Path(scratch)
        jobs = []
        for config in sorted(args.configs.glob("*.json")):
            name = config.stem
            jobs.append((f"{name}.h5", ["--config", str(config), "--out", str(scratch / f"{name}.h5")],
                         args.golden_dir / f"{name}.h5", scratch / f"{name}.h5"))
        for spec in args.checkpoints.split():
            name, _, kind = spec.partition(":")
            target = f"{name}-{kind}"
            jobs.append((f"checkpoints/{target}",
                         ["--config", str(args.configs / "checkpoints" / f"{name}.json"),
                          "--make-checkpoint", kind,
                          "--out", str(scratch / target)],
                         args.golden_dir / "checkpoints" / target, scratch / target))
        for label, gen_args, committed, fresh in jobs:
            run = subprocess.run([sys.executable, str(TOOLS / "make_golden.py"), *gen_args],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                failures += 1
                print(f"FAILED to regenerate {label}:\n{run.stderr.strip()}")
                continue
            if not committed.exists():
                differences += 1
                print(f"{label}: not committed (expected {committed})")
                continue
            changes = (compare_model_dirs(committed, fresh) if fresh.is_dir()
                       else compare_files(committed, fresh))
            if changes:
                differences += len(changes)
                print(f"{label}: {len(changes)} difference(s) from a fresh regeneration:")
                for c in changes:
                    print(f"  {c.line()}")
            else:
                print(f"{label}: identical")
        # Committed goldens that no config would regenerate.
        expected = {committed for _, _, committed, _ in jobs}
        for path in sorted(args.golden_dir.glob("*.h5")) + sorted((args.golden_dir / "checkpoints").glob("*")):
            if path not in expected:
                differences += 1
                print(f"{path.relative_to(args.golden_dir)}: committed but not produced by any config or checkpoint")
    elapsed = time.monotonic() - started
    print(f"golden-check: {len(jobs)} golden(s), {differences} difference(s), {failures} generator "
          f"failure(s) in {elapsed:.1f}s")
    if failures:
        return 2
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
