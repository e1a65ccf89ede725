#!/usr/bin/env python3
"""The steps of `make golden-big`, one process each so that each step's time and peak RSS can be
measured on its own (the golden itself is make_golden.py --from-model):

  big_checkpoint.py published --config C --out DIR [--seed N]   the published layout, shard by shard
  big_checkpoint.py convert --kind K --src DIR --out DIR         mlx-vlm's convert of it

The same code as make_golden.py --make-checkpoint mlx-*, which does both steps in one process.
Exit status 0, 1 (a refused input or a generator error), 2 (usage), 3 (library finding)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from golden.checkpoints import MLX_KINDS, convert_published
    from golden.errors import GoldenError, LibraryFinding, UsageError, log
    from golden.published import write_published
except ImportError as exc:  # pragma: no cover - environment problem
    sys.exit(f"big_checkpoint: error: {exc}. Install the pinned packages: make venv-torch")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="big_checkpoint.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("published", help="write the published layout of a nested config")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="a new directory")
    p.add_argument("--seed", type=int, default=1234)
    c = sub.add_parser("convert", help="mlx-vlm's convert of a published-layout directory")
    c.add_argument("--kind", choices=sorted(MLX_KINDS), required=True)
    c.add_argument("--src", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True, help="a new directory")
    args = ap.parse_args(argv)
    try:
        if args.out.exists():
            raise UsageError(f"{args.out} exists; remove it first")
        if args.step == "published":
            if not args.config.is_file():
                raise UsageError(f"no such config: {args.config}")
            args.out.mkdir(parents=True)
            info = write_published(args.config, args.seed, args.out)
            log(f"{args.out}: {info['parameters']} parameters, {info['bytes']} bytes in {info['shards']} shard(s)")
        else:
            if not (args.src / "config.json").is_file():
                raise UsageError(f"{args.src} has no config.json")
            args.out.mkdir(parents=True)
            convert_published(args.src, args.out, args.kind)
            log(f"{args.out}: converted ({args.kind})")
    except LibraryFinding as finding:
        print(finding.line(), file=sys.stderr, flush=True)
        return 3
    except UsageError as exc:
        log(f"error: {exc}")
        return 2
    except GoldenError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
