"""Regression gate: ``python -m tools.run.gate BASE HEAD [--factor F] [-b REGEX] [--rounds N] [--force] [--markdown]``.

Compares HEAD against BASE on this machine (its preset), with results in a
scratch directory, so a gate run never adds a partial result set to results/;
the environments in .asv/env are shared with ``tools.run.asv_project``.

- **Nothing to measure**: when BASE and HEAD have the same measured paths
  (``tools.run.bench.MEASURED_PATHS``: the package, the suite, pyproject.toml,
  asv.conf.json), the gate says so and passes without running anything;
  ``--force`` measures them anyway (an A/A comparison).
- **Interleaved**: the timings in one ``asv run --interleave-rounds -a rounds=N``
  over both commits, N rounds (``--rounds``, default 2) in the order BASE HEAD
  HEAD BASE (the direction alternating for N > 2): each round is a fresh process
  per benchmark and commit with the suite's full sample budget, so a drift of
  the machine's speed lands on both commits, not on whichever ran second. It
  costs N times one pass. Memory and quality, deterministic, are measured once
  per commit, in a run of their own before it; a ``--bench`` selection is one
  interleaved run.
- **Three passes**, each series judged by its kind at that kind's factor, asv's
  rule (``asv compare``): flagged when HEAD is worse than BASE by more than the
  factor and the difference is significant (Mann-Whitney at p < 0.002 when the
  sample counts allow it, else non-overlapping 99% intervals); on the CPU a
  timing also needs its fastest sample worse by more than the factor
  (``fastest_ratio``: load moves medians, not the fastest sample). A series
  measured on one commit only, or n/a on one commit only (out of memory, say),
  fails:

  - **timing** (``time_*`` and the data-parallel ``track_*`` figures): ``--factor``,
    by default 1.05 on CUDA (CUDA-graph replays spread by well under 3%) and 1.5
    on CPU (a 2-core machine has 10 ms scheduling hiccups);
  - **memory** (``track_peak_memory``): ``MEMORY_FACTOR``, deterministic figures;
  - **quality** (``bench_quality``): ``QUALITY_FACTOR``, deterministic figures,
    so any move beyond it is a changed estimator.

- **Default selection** (``DEFAULT_SELECTION``, docs/BENCHMARKING.md gives the
  A/A data behind it): on CUDA the graph-replayed timings at batch 8 and above
  and every memory figure (the eager ``Estimate`` moved up to 1.6x, ``EagerStep``
  up to 1.72x, and replays at batch 1-2 up to 1.18x between processes); on CPU
  the backward timings of fused and the Floor at batch 8 and of bmm at 16 (the
  default tier's batches there) and
  ``Estimate.time_backward`` (the CPU forwards moved by 1.5-2.3x from one run to
  the next, the backwards at batch 8 by at most 1.35x), and the memory figures of
  fused and the Floor at batch 8 and bmm at 16; quality everywhere; never the
  data-parallel figures.
  ``--bench`` replaces the selection (timings at ``--factor``), ``--quality``
  runs the quality pass alone.

Output: each pass's flagged, failed and improved series; ``--markdown`` a
pull-request comment (each flagged series with its ratio of medians and of
fastest samples, the medians with their 99% intervals, the samples, and its page
on the dashboard); and a last line naming the verdict, the passes that failed
and their series.

Exit status: 0 passed (or nothing measured differs), 1 a regression, 2 a usage
error, 3 a benchmark failed to run on either commit (or asv failed before
measuring); 3 wins over 1, since the comparison is then incomplete.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.grid import BATCHES
from benchmarks.machine import DEVICE

from ..arguments import factor, positive_int
from .asv_project import ROOT, asv_command, run_asv, scratch_config
from .bench import MEASURED_PATHS

PASSED, REGRESSION, USAGE, FAILED = 0, 1, 2, 3
DEFAULT_FACTOR = {"cuda": 1.05, "cpu": 1.5}
MEMORY_FACTOR = 1.01
QUALITY_FACTOR = 1.02
DEFAULT_ROUNDS = 2
KINDS = ("timing", "memory", "quality")
QUALITY = r"^bench_quality\."
MEMORY = r"\.track_peak_memory\b"
# Never selected by default: quality (its own pass) and the data-parallel figures, eager wall times of
# several processes (docs/BENCHMARKING.md gives their spread; select them with -b bench_data_parallel --factor F).
NOT_TIMING = r"^(?!bench_quality\.|bench_data_parallel\.|bench_eager\.)"
GATED_BATCHES = "|".join(str(batch) for batch in BATCHES if batch >= 8)
# asv matches these against "name(param, ...)", so they select parameter combinations.
DEFAULT_SELECTION = {
    "cuda": {
        "timing": [rf"{NOT_TIMING}.*\.time_\w+\(.*, ({GATED_BATCHES})\)$"],
        "memory": [rf"{NOT_TIMING}.*{MEMORY}"],
        "quality": [QUALITY],
    },
    "cpu": {
        # fused and the Floor at batch 8, bmm at 16 (but gumbel_rao's, at 1 only): the default tier's batches on the
        # CPU (grid.DEFAULT_TIER_BATCHES; loop, einsum and vmap, at 1 only there, are left to -b).
        "timing": [
            r"^bench_training\.Floor\.time_backward\(.*, 8\)$",
            r"^bench_training\.ForwardBackward\.time_backward\(.*, 'fused', 8\)$",
            r"^bench_training\.ForwardBackward\.time_backward\('(?!gumbel_rao').*, 'bmm', 16\)$",
            r"^bench_estimators\.Estimate\.time_backward\b",
        ],
        # Deterministic: one batch, and the implementations users choose between, keep this run short.
        "memory": [
            r"^bench_training\.Floor\.track_peak_memory\(.*, 8\)$",
            r"^bench_training\.ForwardBackward\.track_peak_memory\(.*, 'fused', 8\)$",
            r"^bench_training\.ForwardBackward\.track_peak_memory\('(?!gumbel_rao').*, 'bmm', 16\)$",
        ],
        "quality": [QUALITY],
    },
}
# The benchmark attributes asv's -a takes (asv.commands.common_args; rounds is --rounds), each with the values
# the gate accepts. asv reads repeat=0 and number=0 as "its default" and a negative warmup_time as "its default
# warmup": not overrides, so refused here (leave the -a out instead).
ATTRIBUTE_VALUES = {
    "timeout": "a number > 0 (seconds)",
    "version": "a non-empty string",
    "warmup_time": "a number >= 0 (seconds)",
    "repeat": "an int >= 1, or min_repeat,max_repeat,max_time (optionally in parentheses) with "
    "1 <= min_repeat <= max_repeat and max_time > 0, e.g. (3,10,1.0)",
    "number": "an int >= 1",
    "sample_time": "a number > 0 (seconds)",
    "cpu_affinity": "CPU numbers as N, N,M,... or A-B, each in [0, this machine's CPU count)",
}
ATTRIBUTES = tuple(ATTRIBUTE_VALUES)


def kind(series: str) -> str:
    """The pass that judges ``series`` ("module.Class.method(params)"): quality, memory or timing."""
    if re.search(QUALITY, series):
        return "quality"
    if re.search(MEMORY, series):
        return "memory"
    return "timing"


def selected(series: str, regexes: list[str]) -> bool:
    """Whether asv's ``--bench`` regexes select ``series``: they match its name, or its name with parameters."""
    name = series.split("(", 1)[0]
    return any(re.search(regex, series) or re.search(regex, name) for regex in regexes)


def known_commit(commit: str) -> bool:
    check = ["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"]
    return subprocess.run(check, cwd=ROOT, capture_output=True).returncode == 0


def full_hash(commit: str) -> str:
    rev_parse = ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"]
    return subprocess.run(rev_parse, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def measured_paths_differ(base: str, head: str) -> bool:
    """Whether any of ``MEASURED_PATHS`` differs between the two commits."""
    diff = ["git", "diff", "--quiet", base, head, "--", *MEASURED_PATHS]
    status = subprocess.run(diff, cwd=ROOT, capture_output=True).returncode
    if status not in (0, 1):
        raise RuntimeError(f"git diff {base} {head} exited {status}")
    return status == 1


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


@dataclass
class Measurement:
    """One series on one commit: asv's value (None: the benchmark failed), its stats and samples."""

    value: float | None
    stats: dict | None
    samples: list[float] | None


@dataclass
class Series:
    name: str
    benchmark: str
    params: dict[str, str]
    unit: str
    base: Measurement | None
    head: Measurement | None
    factor: float
    verdict: str = field(default="")  # "regression", "failed", "improved" or "" (unchanged, or skipped)

    @property
    def ratio(self) -> float:
        return self.head.value / self.base.value if self.base.value else math.inf


def judge(series: Series) -> str:
    """asv compare's rule: a failure on either commit, else worse (better) beyond the factor and significant."""
    from asv.commands.compare import _is_result_better

    base, head = series.base, series.head
    if base is None and head is None:
        return ""
    if base is None or head is None:
        return "failed"  # both commits run the same suite: one without a result was cut short
    if base.value is None or head.value is None:
        return "failed"
    if _isnan(base.value) and _isnan(head.value):
        return ""  # skipped on this machine (asv's n/a)
    if _isnan(base.value) or _isnan(head.value):
        return "failed"  # n/a on one commit only: it ran out of memory, say, or raised a skip
    base_ss, head_ss = (base.stats, base.samples), (head.stats, head.samples)
    # The fastest-sample rule answers the CPU's load; CUDA-graph replays do not need it, and it would pass
    # a slowdown that hits only some calls.
    timing = kind(series.name) == "timing" and DEVICE == "cpu"
    if _is_result_better(base.value, head.value, base_ss, head_ss, series.factor):
        if not timing or fastest_ratio(base, head) > series.factor:
            return "regression"
    if _is_result_better(head.value, base.value, head_ss, base_ss, series.factor):
        if not timing or fastest_ratio(head, base) > series.factor:
            return "improved"
    return ""


def fastest_ratio(base: Measurement, head: Measurement) -> float:
    """HEAD's fastest sample over BASE's (inf where either has none recorded).

    Load only adds time: a round that shared the machine makes a commit's samples
    bimodal and moves their median, not the fastest sample. In an A/A on the 2-core
    CPU under other processes' load the medians moved by 1.51-1.69x and the
    fastest samples by 1.03-1.15x; a real slowdown moves both.
    """
    if not base.samples or not head.samples:
        return math.inf
    return min(head.samples) / min(base.samples)


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def load_series(results_dir: Path, machine: str, base: str, head: str, selection: dict[str, list[str]], factors):
    """Every series ``selection`` names, with both commits' measurements, judged at its kind's factor."""
    from asv.commands.compare import unroll_result
    from asv.results import iter_results_for_machine_and_hash

    benchmarks = json.loads((results_dir / "benchmarks.json").read_text())
    measured: dict[str, dict[str, Measurement]] = {}
    for commit in (base, head):
        for result in iter_results_for_machine_and_hash(str(results_dir), machine, commit):
            for key in result.get_all_result_keys():
                params = result.get_result_params(key)
                values = (
                    result.get_result_value(key, params),
                    result.get_result_stats(key, params),
                    result.get_result_samples(key, params),
                )
                for name, value, stats, samples in unroll_result(key, params, *values):
                    measured.setdefault(name, {})[commit] = Measurement(value, stats, samples)
    # "name(value, ...)" -> {param name: value}, as asv names the series of a parameterized benchmark.
    parameters = {
        f"{name}({', '.join(combo)})": dict(zip(info["param_names"], combo, strict=True))
        for name, info in benchmarks.items()
        if isinstance(info, dict) and info.get("params")
        for combo in itertools.product(*info["params"])
    }
    series = []
    for name in sorted(measured):
        if not selected(name, selection.get(kind(name), [])):
            continue
        benchmark = name.split("(", 1)[0]
        one = Series(
            name,
            benchmark,
            parameters.get(name, {}),
            benchmarks.get(benchmark, {}).get("unit", ""),
            measured[name].get(base),
            measured[name].get(head),
            factors[kind(name)],
        )
        one.verdict = judge(one)
        series.append(one)
    return series


def dashboard_page(series: Series, machine: str) -> str:
    """The series' graph on the dashboard (asv publish's html/), as its regressions page links it."""
    query = {"machine": machine, **{f"p-{name}": value for name, value in series.params.items()}}
    return f"html/index.html#{series.benchmark}?{urllib.parse.urlencode(query, safe=chr(39))}"


def _value(measurement: Measurement, unit: str) -> str:
    from asv.util import human_value

    if measurement is None or measurement.value is None:
        return "failed"
    text = human_value(measurement.value, unit)
    stats = measurement.stats or {}
    if stats.get("ci_99_a") is not None and stats.get("ci_99_b") is not None:
        low, high = human_value(stats["ci_99_a"], unit), human_value(stats["ci_99_b"], unit)
        text += f" (99% CI {low} to {high})"
    return text


def _samples(measurement: Measurement, unit: str) -> str:
    from asv.util import human_value

    samples = (measurement.samples or []) if measurement else []
    return ", ".join(human_value(sample, unit) for sample in samples) or "none recorded"


def markdown(series: list[Series], passes, machine: str, base: str, head: str, verdict: str) -> str:
    """A pull-request comment: the passes, then each flagged or failed series with its evidence and graph."""
    lines = [f"### Regression gate: `{base[:8]}` -> `{head[:8]}` on `{machine}`", ""]
    lines += [f"- {pass_}: factor {factors}, {count} series" for pass_, factors, count in passes]
    flagged = [s for s in series if s.verdict in ("regression", "failed")]
    if flagged:
        lines += [
            "",
            "| pass | series | base | head | ratio | fastest | dashboard |",
            "|---|---|---|---|---:|---:|---|",
        ]
        for s in flagged:
            ratio, fastest = "failed", ""
            if s.verdict == "regression":
                ratio = f"{s.ratio:.2f}"
                fastest = f"{fastest_ratio(s.base, s.head):.2f}" if s.base.samples and s.head.samples else ""
            lines.append(
                f"| {kind(s.name)} | `{s.name}` | {_value(s.base, s.unit)} | {_value(s.head, s.unit)} | {ratio} | "
                f"{fastest} | `{dashboard_page(s, machine)}` |"
            )
        lines += ["", "<details><summary>samples</summary>", ""]
        for s in flagged:
            lines.append(f"- `{s.name}`: base [{_samples(s.base, s.unit)}]; head [{_samples(s.head, s.unit)}]")
        lines += ["", "</details>"]
    lines += ["", verdict]
    return "\n".join(lines)


def verdict_line(series: list[Series], passes, base: str, head: str, asv_status: int) -> tuple[int, str]:
    """The exit status and the last line: which passes failed, and on which series."""
    failed = [s.name for s in series if s.verdict == "failed"]
    factors = {pass_: factor for pass_, factor, _ in passes}
    commits = f"{base[:8]} -> {head[:8]}"
    if not series:
        return FAILED, f"gate FAILED: no series was measured ({commits}; asv exited {asv_status})"
    parts = []
    if asv_status not in (0, 2):  # asv's 2: a benchmark failed, judged per series below
        parts.append(f"asv exited {asv_status}, so some series may be missing")
    for pass_ in KINDS:
        names = [s.name for s in series if s.verdict == "regression" and kind(s.name) == pass_]
        if names:
            parts.append(f"{pass_} regression (factor {factors[pass_]}) in {', '.join(names)}")
    if failed:
        parts.append(f"failed to run: {', '.join(failed)}")
    if parts:
        incomplete = failed or asv_status not in (0, 2)
        return (FAILED if incomplete else REGRESSION), f"gate FAILED: {'; '.join(parts)} ({commits})"
    within = ", ".join(f"{pass_} {factor}" for pass_, factor in factors.items())
    return PASSED, f"gate passed: {len(series)} series within their factors ({within}; {commits})"


def print_pass(pass_: str, factor: float, series: list[Series]) -> None:
    from asv.util import human_value

    mine = [s for s in series if kind(s.name) == pass_]
    counts = {verdict: sum(s.verdict == verdict for s in mine) for verdict in ("regression", "failed", "improved")}
    print(
        f"\n{pass_} pass (factor {factor}): {len(mine)} series, {counts['regression']} regressed, "
        f"{counts['failed']} failed, {counts['improved']} improved"
    )
    for s in mine:
        if s.verdict:
            if s.verdict == "failed":
                print(f"  failed     {s.name}: base {_value(s.base, s.unit)}, head {_value(s.head, s.unit)}")
            else:
                before, after = human_value(s.base.value, s.unit), human_value(s.head.value, s.unit)
                fastest = f", fastest sample x{fastest_ratio(s.base, s.head):.2f}" if s.base.samples else ""
                print(f"  {s.verdict:<10} {s.name}: {before} -> {after} (x{s.ratio:.2f}{fastest})")


def runs(selection: dict[str, list[str]], args) -> list[tuple[list[str], int]]:
    """The asv runs of a gate: (regexes, rounds). Memory and quality are deterministic, so the default selection
    and --quality measure them in one round, the timings in ``--rounds``; a --bench selection is one run."""
    if args.bench:
        return [(args.bench, args.rounds)]
    once = sorted({regex for pass_ in ("memory", "quality") for regex in selection.get(pass_, [])})
    timing = selection.get("timing", [])
    return [(regexes, rounds) for regexes, rounds in ((once, 1), (timing, args.rounds)) if regexes]


def _check_attribute(text: str) -> str:
    key, equals, value = text.partition("=")
    if not equals or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. repeat=20), got {text!r}")
    if key == "rounds":
        raise argparse.ArgumentTypeError("the number of rounds is --rounds N")
    if key not in ATTRIBUTES:
        raise argparse.ArgumentTypeError(f"unknown attribute {key!r}; valid choices: {', '.join(ATTRIBUTES)}")
    if not _valid_attribute_value(key, value):
        raise argparse.ArgumentTypeError(f"{key} takes {ATTRIBUTE_VALUES[key]}, got {value!r}")
    return text


def _valid_attribute_value(key: str, value: str) -> bool:
    """Whether asv parses ``value`` for ``key`` (asv.commands.common_args' converters) to a value in
    ``ATTRIBUTE_VALUES``' range."""
    try:
        if key == "version":
            return bool(value.strip())
        if key in ("timeout", "warmup_time", "sample_time"):
            seconds = float(value)
            return math.isfinite(seconds) and (seconds >= 0 if key == "warmup_time" else seconds > 0)
        if key == "number":
            return int(value) >= 1
        if key == "repeat":
            parts = value.strip().removeprefix("(").removesuffix(")").split(",")
            if len(parts) == 1:
                return int(parts[0]) >= 1
            low, high, seconds = int(parts[0]), int(parts[1]), float(parts[2])
            return len(parts) == 3 and 1 <= low <= high and math.isfinite(seconds) and seconds > 0
        cpus = os.cpu_count() or 1
        for part in value.split(","):
            first, dash, last = part.partition("-")
            numbers = (int(first), int(last)) if dash else (int(first),)
            if not all(0 <= n < cpus for n in numbers) or numbers[0] > numbers[-1]:
                return False
        return True
    except (ValueError, IndexError):
        return False


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the commit to compare against (e.g. origin/main)")
    parser.add_argument("head", help="the commit under test (e.g. HEAD)")
    parser.add_argument(
        "--factor", type=factor, default=DEFAULT_FACTOR[DEVICE], help="allowed ratio head/base of a timing (> 1)"
    )
    parser.add_argument(
        "--bench",
        "-b",
        action="append",
        default=[],
        help="benchmark regex, matched against name(params) (repeatable; replaces the default selection)",
    )
    parser.add_argument(
        "--attribute",
        "-a",
        action="append",
        default=[],
        type=_check_attribute,
        help="override a benchmark attribute, as asv's -a (e.g. repeat=20; repeatable); a bad key or value is a "
        "usage error naming what it takes",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=DEFAULT_ROUNDS,
        help=f"interleaved rounds per commit (>= 1, default {DEFAULT_ROUNDS}; each costs a full pass)",
    )
    parser.add_argument(
        "--quality", action="store_true", help=f"only the estimator-quality pass (factor {QUALITY_FACTOR})"
    )
    parser.add_argument(
        "--force", action="store_true", help="measure even when no measured path differs (an A/A comparison)"
    )
    parser.add_argument("--markdown", action="store_true", help="also print a pull-request comment in Markdown")
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
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    base, head = full_hash(args.base), full_hash(args.head)
    if not args.force and not measured_paths_differ(base, head):
        print(
            f"gate passed: {args.base} and {args.head} do not differ in {', '.join(MEASURED_PATHS)}, "
            "so nothing measured changed; not measured (--force measures them anyway)"
        )
        return PASSED
    factors = {"timing": args.factor, "memory": MEMORY_FACTOR, "quality": QUALITY_FACTOR}
    if args.bench:
        selection = {pass_: args.bench for pass_ in KINDS}
    elif args.quality:
        selection = {"quality": [QUALITY]}
    else:
        selection = DEFAULT_SELECTION[DEVICE]
    with tempfile.TemporaryDirectory(prefix="estimators-gate-") as scratch:
        results_dir = Path(scratch) / "results"
        config = scratch_config(Path(scratch), results_dir=str(results_dir), html_dir=f"{scratch}/html")
        hashfile = Path(scratch) / "commits.txt"
        hashfile.write_text(f"{head}\n{base}\n")  # asv's continuous order: with 2 rounds, base head head base
        command = asv_command(["run", f"--config={config}", "--interleave-rounds", "--record-samples"])
        machine = next(a.split("=", 1)[1] for a in command if a.startswith("--machine="))
        command += [f"--attribute={a}" for a in args.attribute] + ["--show-stderr", f"HASHFILE:{hashfile}"]
        asv_status = 0
        for regexes, rounds in runs(selection, args):
            benches = [f"--bench={regex}" for regex in regexes]
            asv_status = max(asv_status, run_asv([*command, *benches, f"--attribute=rounds={rounds}"]))
        if not (results_dir / "benchmarks.json").exists():
            print(f"\ngate FAILED: asv exited {asv_status} before measuring anything ({base[:8]} -> {head[:8]})")
            return FAILED
        series = load_series(results_dir, machine, base, head, selection, factors)
    counts = {pass_: sum(kind(s.name) == pass_ for s in series) for pass_ in selection}
    passes = [(pass_, factors[pass_], count) for pass_, count in counts.items() if count or not args.bench]
    for pass_, factor_, _ in passes:
        print_pass(pass_, factor_, series)
    status, line = verdict_line(series, passes, base, head, asv_status)
    if args.markdown:
        print("\n" + markdown(series, passes, machine, base, head, line).rsplit("\n", 1)[0])
    print(f"\n{line}")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
