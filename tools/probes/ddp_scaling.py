"""Data-parallel scaling outside asv: ``benchmarks.data_parallel.measure`` over any grid, as JSON rows.

The asv benchmark (benchmarks/bench_data_parallel.py) measures the suite's grid at 1 and 2 GPUs; this
probe runs the same measurement for other worlds, batches or presets, and a second run of it beside
the suite's gives the measurement's spread. On a multi-GPU host:

    python -m tools.probes.ddp_scaling --out $OUT/ddp.json
    python -m tools.probes.ddp_scaling --device cpu --preset small --local-batches 2 --steps 2 --out /tmp/ddp.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import estimators
from benchmarks import data_parallel, grid

from ..arguments import positive_int


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--preset", choices=tuple(estimators.PRESETS), default="seed")
    # current runs batch 1 only, not a data-parallel batch.
    implementations = [i for i in (*estimators.IMPLEMENTATIONS, grid.FLOOR, grid.DENSE) if i != "current"]
    parser.add_argument(
        "--implementations", nargs="+", choices=implementations, default=list(grid.DATA_PARALLEL_IMPLEMENTATIONS)
    )
    precisions = list(grid.DATA_PARALLEL_PRECISIONS)
    parser.add_argument("--precisions", nargs="+", choices=precisions, default=precisions)
    parser.add_argument("--local-batches", type=positive_int, nargs="+", default=list(grid.DATA_PARALLEL_BATCHES))
    parser.add_argument("--worlds", type=positive_int, nargs="+", default=[1, grid.DATA_PARALLEL_WORLD])
    parser.add_argument("--warmup", type=positive_int, default=3)
    parser.add_argument("--steps", type=positive_int, default=10)
    parser.add_argument("--repeats", type=positive_int, default=5)
    args = parser.parse_args(argv)
    available = torch.cuda.device_count() if args.device == "cuda" else os.cpu_count()
    if available < 1:
        parser.error("--device cuda needs a CUDA device (torch.cuda.device_count() is 0); try --device cpu")
    worlds = [world for world in args.worlds if world <= available]
    for world in sorted(set(args.worlds) - set(worlds)):
        print(f"world {world}: n/a ({available} {args.device} devices)")
    cases = list(itertools.product(args.implementations, args.precisions, args.local_batches))
    options = dict(warmup=args.warmup, steps=args.steps, repeats=args.repeats)
    try:
        rows = data_parallel.measure(cases, worlds=worlds, device=args.device, preset=args.preset, **options)
    except subprocess.CalledProcessError as failed:
        print(f"a rank failed (exit {failed.returncode}); its error is printed above", file=sys.stderr)
        return 1
    for row in rows:
        print(json.dumps(row))
    args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
