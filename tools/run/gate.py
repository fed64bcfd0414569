"""Regression gate: ``python -m tools.run.gate BASE HEAD [--factor F] [--bench REGEX] [-a repeat=N]``.

Runs ``asv continuous`` on the two commits (this machine, its preset), prints
asv's comparison table and exits with asv's status: 0 when no benchmark got
slower or hungrier by more than the factor (with statistical significance),
1 on a regression, 2 when a benchmark failed. Results go to a scratch
directory, so a gate run never adds a partial result set to results/; the
environments in .asv/env are shared with ``tools.run.asv_project``.

The default factor is 1.05 on CUDA (CUDA-graph timings spread by well under
3%, docs/BENCHMARKING.md) and 1.5 on CPU (a 2-core machine has 10 ms
scheduling hiccups). Without ``--bench``, the CUDA gate compares the memory
benchmarks and the graph-replayed timings at batch 8 and above: in A/A
comparisons on the H100 the eager ``Estimate`` (up to 1.6x) and replays at
batch 1-2 (up to 1.18x) moved by more than 1.05 from one process to the next.

Estimator quality (``bench_quality``) is compared in a second pass with its own
factor, ``QUALITY_FACTOR``: its figures are deterministic (an A/A comparison is
identical), so any move beyond it is a changed estimator, however small next to
the timing factor. ``--quality`` runs that pass alone; ``--bench`` runs one pass,
at ``--factor``, over what it selects.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import tempfile
from pathlib import Path

from benchmarks.grid import BATCHES
from benchmarks.machine import DEVICE

from ..arguments import factor
from .asv_project import ROOT, asv_command, run_asv, scratch_config

DEFAULT_FACTOR = {"cuda": 1.05, "cpu": 1.5}
QUALITY_FACTOR = 1.02
QUALITY = r"^bench_quality\."
# Not in the timing pass by default: quality (its own pass) and the data-parallel figures, eager wall times of
# several processes (docs/BENCHMARKING.md gives their spread; select them with -b bench_data_parallel --factor F).
TIMING_PASS = r"^(?!bench_quality\.|bench_data_parallel\.)"
GATED_BATCHES = "|".join(str(batch) for batch in BATCHES if batch >= 8)
# asv matches these against "name(param, ...)", so they select parameter combinations.
DEFAULT_BENCH = {
    "cuda": [rf"{TIMING_PASS}.*\.time_\w+\(.*, ({GATED_BATCHES})\)$", rf"{TIMING_PASS}.*\.track_"],
    "cpu": [TIMING_PASS],
}


def known_commit(commit: str) -> bool:
    check = ["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"]
    return subprocess.run(check, cwd=ROOT, capture_output=True).returncode == 0


def benchmark_names() -> list[str]:
    """Every benchmark as asv matches --bench: "module.Class.method" and "module.Class.method(param, ...)".

    From results/benchmarks.json, asv's record of the suite as last discovered.
    """
    names = []
    for name, benchmark in json.loads((ROOT / "results" / "benchmarks.json").read_text()).items():
        if not isinstance(benchmark, dict):
            continue  # the file's version entry
        names.append(name)
        names += [f"{name}({', '.join(combo)})" for combo in itertools.product(*benchmark.get("params", []))]
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the commit to compare against (e.g. origin/main)")
    parser.add_argument("head", help="the commit under test (e.g. HEAD)")
    parser.add_argument("--factor", type=factor, default=DEFAULT_FACTOR[DEVICE], help="allowed ratio head/base (> 1)")
    parser.add_argument(
        "--bench",
        "-b",
        action="append",
        default=[],
        help="benchmark regex, matched against name(params) (repeatable; default on CUDA: see above)",
    )
    parser.add_argument(
        "--attribute",
        "-a",
        action="append",
        default=[],
        help="override a benchmark attribute, as asv's -a (e.g. repeat=20; repeatable)",
    )
    parser.add_argument(
        "--quality", action="store_true", help=f"only the estimator-quality pass (factor {QUALITY_FACTOR})"
    )
    args = parser.parse_args(argv)
    if args.quality and args.bench:
        parser.error("--quality and --bench choose different passes: give one of them")
    for commit in (args.base, args.head):
        if not known_commit(commit):
            parser.error(f"unknown commit {commit!r} (not a commit of this repository)")
    names = benchmark_names() if args.bench else []
    for regex in args.bench:
        try:
            re.compile(regex)
        except re.error as error:
            parser.error(f"--bench {regex!r} is not a regular expression: {error}")
        if not any(re.search(regex, name) for name in names):
            parser.error(f"--bench {regex!r} selects no benchmark (names look like {names[0]!r})")
    if args.bench:
        passes = [(args.bench, args.factor)]
    elif args.quality:
        passes = [([QUALITY], QUALITY_FACTOR)]
    else:
        passes = [(DEFAULT_BENCH[DEVICE], args.factor), ([QUALITY], QUALITY_FACTOR)]
    statuses = [_continuous(args, benches, factor) for benches, factor in passes]
    status = 2 if any(s not in (0, 1) for s in statuses) else max(statuses)
    verdict = {0: "passed", 1: "FAILED: regression"}.get(status, f"FAILED: asv exited {status}")
    factors = " and ".join(str(factor) for _, factor in passes)
    print(f"\ngate {verdict} (factor {factors}, {args.base} -> {args.head})")
    return status


def _continuous(args, benches: list[str], factor: float) -> int:
    """One ``asv continuous`` pass over ``benches`` at ``factor``; asv's exit status."""
    with tempfile.TemporaryDirectory(prefix="estimators-gate-") as scratch:
        config = scratch_config(Path(scratch), results_dir=f"{scratch}/results", html_dir=f"{scratch}/html")
        command = ["continuous", f"--config={config}", f"--factor={factor}", "--split"]
        command += [f"--bench={regex}" for regex in benches] + [f"--attribute={a}" for a in args.attribute]
        command += ["--show-stderr", args.base, args.head]
        return run_asv(asv_command(command))


if __name__ == "__main__":
    raise SystemExit(main())
