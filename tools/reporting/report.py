"""The summary report of the latest asv results, laid out like the reference run (docs/reference-run.txt).

    python -m tools.reporting.report [--machine NAME] [--commit HASH] [--no-verify] [--markdown]
    python -m tools.reporting.report --machine h100-80gb --reference docs/reference-run.txt

Per estimator: the equivalence verification, computed live on this machine
(max |logits - current| of every implementation at batch 1 and 2, PASS at
1e-4); then forward, backward, total and peak memory per implementation and
batch, read from asv's results (medians +- half the interquartile range;
nothing is timed here); then the speedup against ``current`` at batch 1, the
per-sample speedup at larger batches and the ratio to the Floor benchmark.
``--reference`` instead compares the results with the reference run's figures;
``--quality`` prints the speed x quality table: per estimator, its fused step's
cost against the Floor at batch 16 beside its quality figures (bench_quality);
``--data-parallel`` the data-parallel table (bench_data_parallel, multi-GPU machines).
These modes (``--markdown``, ``--reference``, ``--precision``, ``--quality``,
``--data-parallel``) exclude each other.

Which results: those of ``--commit``, else of the newest commit of HEAD's
history with a readable result set; results files that are not result sets are
named on stderr and skipped, and the header says which newer ones were skipped
and why. Without ``--machine``, this machine's results, or where it has none
(e.g. a new CPU generation), the closest machine's that has: the same device
kind first (cpu-* for a CPU, the same GPU model), then the most result files;
the header and stderr name it.

Exit status: 0 the report; 1 nothing to report (no readable results, or none
of what the table shows at that commit; stderr says which commits have them);
2 a usage error (argparse's: an unknown machine, a commit without a readable
result set, a missing or malformed reference file, modes combined).
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys

import torch

import estimators
from benchmarks.grid import (
    BATCHES,
    DATA_PARALLEL_BATCHES,
    DATA_PARALLEL_IMPLEMENTATIONS,
    DATA_PARALLEL_PRECISIONS,
    DATA_PARALLEL_WORLD,
    DENSE,
    ESTIMATORS,
    FLOOR,
    IMPLEMENTATIONS,
    PRECISIONS,
    QUALITY_TAUS,
    SEED,
    runs,
)
from benchmarks.machine import DEVICE
from benchmarks.workload import random_tokens
from estimators.reference import per_sample_logits

from . import results as asv_results
from .reference_run import parse_reference_run

TOLERANCE = 1e-4
RULE = "=" * 80
NAMES = {
    "current": "Current",
    "loop": "Loop",
    "einsum": "Einsum",
    "bmm": "BMM",
    "vmap": "VMAP",
    "fused": "Fused",
    "compiled": "Compiled",
    FLOOR: "Floor",
}


class EmptyReport(LookupError):
    """The results hold none of what a table shows; ``benchmarks`` are the name prefixes of what would fill it."""

    def __init__(self, message: str, benchmarks: tuple[str, ...]):
        super().__init__(message)
        self.benchmarks = benchmarks


def machine_preset(machine: str) -> str:
    """The preset a machine's results were measured with (recorded by tools/run/asv_project.py in its description).

    NoData where its machine.json is unreadable."""
    description = asv_results.machine_info(machine).get("os", "")
    found = re.search(r"preset (\w+)", str(description))
    return found.group(1) if found else "small"


def precision_step(measurements, precision: str, estimator: str, implementation: str, batch: int):
    """(forward, backward, memory) of a step in ``precision``, from whichever benchmark holds it, or None.

    fp32: ``bench_training`` (per-sample and Floor); bf16, tf32: ``bench_precision``; Dense: ``bench_dense``.
    """
    if implementation == DENSE:
        name, args = "bench_dense.Dense", (precision, batch)
    elif precision == "fp32":
        return step(measurements, estimator, implementation, batch)
    elif implementation == FLOOR:
        name, args = "bench_precision.Floor", (precision, estimator, batch)
    else:
        name, args = "bench_precision.ForwardBackward", (precision, estimator, implementation, batch)
    forward = measurements.get(f"{name}.time_forward", *args)
    backward = measurements.get(f"{name}.time_backward", *args)
    memory = measurements.get(f"{name}.track_peak_memory", *args)
    return None if forward is None or backward is None else (forward, backward, memory)


def _ratio(totals: dict, numerator: str, denominator: str) -> str:
    a, b = totals[numerator], totals[denominator]
    return f"{a / b:.2f}" if a and b else "n/a"


def precision_report(measurements, machine: str) -> str:
    """Per precision and batch: Dense, Floor, fused and bmm fwd+bwd (ms) and their ratios, one run.

    EmptyReport where no precision has a row; a note names the precisions without one."""
    out = [
        f"Machine `{machine}`, commit `{measurements.commit[:8]}`: fwd+bwd in ms (asv medians), estimator ste, "
        "each precision's figures from one run.",
        "",
        "| precision | batch | Dense | Floor | fused | bmm | Floor / Dense | fused / Dense | fused / Floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    shown = set()
    for precision, batch in itertools.product(PRECISIONS, BATCHES):
        totals = {}
        for implementation in (DENSE, FLOOR, "fused", "bmm"):
            entry = precision_step(measurements, precision, "ste", implementation, batch)
            totals[implementation] = total_ms(entry) if entry else None
        if totals[DENSE] is None and totals["fused"] is None:
            continue
        cells = [f"{totals[i]:.2f}" if totals[i] else "n/a" for i in (DENSE, FLOOR, "fused", "bmm")]
        ratios = [_ratio(totals, FLOOR, DENSE), _ratio(totals, "fused", DENSE), _ratio(totals, "fused", FLOOR)]
        out.append(f"| {precision} | {batch} | " + " | ".join(cells + ratios) + " |")
        shown.add(precision)
    if not shown:
        raise EmptyReport(
            f"machine {machine}, commit {measurements.commit[:8]}: no Dense or fused ste step in any precision "
            "(bench_dense, bench_precision, bench_training)",
            ("bench_dense.", "bench_precision."),
        )
    missing = [precision for precision in PRECISIONS if precision not in shown]
    if missing:
        out += ["", f"No rows for {', '.join(missing)}: no Dense or fused ste step in that precision at this commit."]
    return "\n".join(out)


QUALITY_FIGURES = (
    ("GradientFidelity.track_one_minus_cosine", "1 - cos"),
    ("GradientFidelity.track_relative_bias", "bias"),
    ("GradientFidelity.track_relative_spread", "spread"),
    ("PolynomialProgramming.track_excess_loss", "excess loss"),
)


def quality_report(measurements, machine: str, batch: int = 16) -> str:
    """Per estimator and temperature: the fused step's cost (ms, and / Floor) beside the quality figures.

    EmptyReport where there is no quality figure; a note where there is no cost."""
    out = [
        f"Machine `{machine}`, commit `{measurements.commit[:8]}`. Cost: fused fwd+bwd at batch {batch} (tau 1) "
        "in ms and over the Floor's; quality (bench_quality, lower is better): 1 - mean cosine to the exact "
        "gradient, relative bias, relative spread, and polynomial programming's excess loss.",
        "",
        "| estimator | tau | fused ms | fused / Floor | " + " | ".join(label for _, label in QUALITY_FIGURES) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(QUALITY_FIGURES),
    ]
    any_quality = any_cost = False
    for estimator in ESTIMATORS:
        fused, floor = step(measurements, estimator, "fused", batch), step(measurements, estimator, FLOOR, batch)
        any_cost |= fused is not None
        cost = [f"{total_ms(fused):.2f}" if fused else "n/a"]
        cost.append(f"{total_ms(fused) / total_ms(floor):.2f}" if fused and floor else "n/a")
        for tau in QUALITY_TAUS:
            figures = [measurements.get(name, estimator, tau) for name, _ in QUALITY_FIGURES]
            any_quality |= any(figures)
            cells = [f"{figure.median:.4f}" if figure else "n/a" for figure in figures]
            out.append(f"| {estimator} | {tau} | " + " | ".join(cost + cells) + " |")
    if not any_quality:
        raise EmptyReport(
            f"machine {machine}, commit {measurements.commit[:8]}: no quality results (bench_quality)",
            ("bench_quality.",),
        )
    if not any_cost:
        out += ["", f"Cost n/a: no fused step at batch {batch} (bench_training) at this commit."]
    return "\n".join(out)


def step(measurements, estimator: str, implementation: str, batch: int):
    """(forward, backward, memory) measurements of one training step, or None where any is missing."""
    if implementation == FLOOR:
        args, name = (estimator, batch), "bench_training.Floor"
    else:
        args, name = (estimator, implementation, batch), "bench_training.ForwardBackward"
    forward = measurements.get(f"{name}.time_forward", *args)
    backward = measurements.get(f"{name}.time_backward", *args)
    memory = measurements.get(f"{name}.track_peak_memory", *args)
    return None if forward is None or backward is None else (forward, backward, memory)


def require_training(measurements, machine: str) -> None:
    """EmptyReport where the results hold no training step (bench_training) of any estimator."""
    cases = itertools.product(ESTIMATORS, (*IMPLEMENTATIONS, FLOOR), BATCHES)
    if not any(step(measurements, *case) for case in cases):
        raise EmptyReport(
            f"machine {machine}, commit {measurements.commit[:8]}: no training step results (bench_training)",
            ("bench_training.",),
        )


def total_ms(entry) -> float:
    return (entry[0].median + entry[1].median) * 1e3


def per_sample_speedup(baseline_ms: float, batch: int, total: float) -> str:
    """How much faster a sample goes than in a batch-1 step taking ``baseline_ms``: baseline x batch / total."""
    return f"{baseline_ms * batch / total:.2f}x"


def mib(memory, digits: int = 1) -> str:
    """A memory measurement (bytes) in MiB, or n/a."""
    return f"{memory.median / 2**20:.{digits}f}" if memory else "n/a"


def verify(model, estimator: str, preset: str) -> list[str]:
    """Live equivalence check on this machine: every implementation against ``current`` (row by row)."""
    config = estimators.PRESETS[preset]
    lines, failed = [], False
    # What the suite runs on this device, against the single-sample reference.
    checked = [i for i in estimators.IMPLEMENTATIONS if i != "current" and any(runs(i, b, DEVICE) for b in BATCHES)]
    for batch in (1, 2):
        tokens = random_tokens(config, batch, seed=batch, device=DEVICE)
        with torch.no_grad():
            kwargs = dict(estimator=estimator, seed=SEED)
            want = per_sample_logits(model, tokens, **kwargs)
            lines.append(f"\nTesting with batch_size={batch}\n  Sample logits (first 5 values):")
            lines.append(f"    Current: {want[0, 0, :5].cpu()}")
            rows = []
            for implementation in checked:
                got = model(tokens, implementation=implementation, **kwargs)
                diff = (got - want).abs().max().item()
                failed |= not diff <= TOLERANCE
                verdict = "PASS" if diff <= TOLERANCE else "FAIL"
                rows.append(f"  Current vs {NAMES[implementation] + ':':<10} max_diff = {diff:.2e}  {verdict}")
            lines += ["\nForward pass output comparison:", *rows, f"\n  Tolerance: {TOLERANCE:.2e}"]
    if DEVICE == "cpu":
        lines.append("  (compiled is checked by the test suite on CPU: compiling here would take minutes)")
    lines += [
        "",
        RULE,
        "✗ SOME IMPLEMENTATIONS DIFFER" if failed else "✓ ALL IMPLEMENTATIONS PRODUCE EQUIVALENT RESULTS",
        RULE,
    ]
    return lines


def text_report(measurements, machine: str, preset: str, check: bool) -> str:
    """The reference run's layout; EmptyReport (before any live check) where there is no training step."""
    require_training(measurements, machine)
    out = [
        f"Results: machine {machine}, preset {preset}, commit {measurements.commit[:8]}",
        "Times: asv medians ± half the interquartile range; memory: peak of one training step.",
    ]
    if check:
        model = estimators.build_model(preset, device=DEVICE, seed=0)
    for estimator in ESTIMATORS:
        out += ["", RULE, f"ESTIMATOR: {estimator.upper()}", RULE]
        if check:
            out += [
                "",
                RULE,
                f"EQUIVALENCE VERIFICATION (estimator={estimator}, live on {DEVICE})",
                RULE,
                *verify(model, estimator, preset),
            ]
        out += ["", RULE, "BENCHMARK RESULTS", RULE]
        if not any(step(measurements, estimator, i, b) for i in (*IMPLEMENTATIONS, FLOOR) for b in BATCHES):
            out += ["", f"(no training step of {estimator} at this commit)"]
        for batch in BATCHES:
            entries = [(i, step(measurements, estimator, i, batch)) for i in (*IMPLEMENTATIONS, FLOOR)]
            entries = [(i, e) for i, e in entries if e is not None]
            if not entries:
                continue
            out += ["", f"Batch Size: {batch}"]
            for number, (implementation, (forward, backward, memory)) in enumerate(entries, 1):
                memory_text = f"{mib(memory, 2)} MiB" if memory else "n/a"
                out += [
                    f"\n{number}. {NAMES[implementation]} (batch_size={batch})...",
                    f"   Forward: {forward.median * 1e3:.2f} ± {(forward.half_iqr or 0) * 1e3:.2f} ms",
                    f"   Backward: {backward.median * 1e3:.2f} ± {(backward.half_iqr or 0) * 1e3:.2f} ms",
                    f"   Total: {total_ms((forward, backward)):.2f} ms",
                    f"   Memory: {memory_text}",
                ]
        out += summary(measurements, estimator)
    return "\n".join(out)


def summary(measurements, estimator: str) -> list[str]:
    out = ["", RULE, f"SUMMARY COMPARISON: {estimator.upper()}", RULE]
    # The per-sample baseline: current at batch 1, or (for estimators benchmarked on fewer implementations,
    # grid.ESTIMATOR_IMPLEMENTATIONS) the first implementation with a batch-1 result.
    candidates = ["current", *IMPLEMENTATIONS, FLOOR]
    baseline = next((i for i in candidates if step(measurements, estimator, i, 1) is not None), None)
    if baseline is None:
        return out + ["(no batch-1 result of any implementation: nothing to compare against)"]
    base = total_ms(step(measurements, estimator, baseline, 1))
    out.append(f"\nBaseline ({NAMES[baseline]}, batch=1): {base:.2f} ms")
    for batch in BATCHES:
        floor = step(measurements, estimator, FLOOR, batch)
        rows = []
        for implementation in IMPLEMENTATIONS:
            entry = step(measurements, estimator, implementation, batch)
            if entry is None:
                continue
            total = total_ms(entry)
            speedup = f"{'speedup' if batch == 1 else 'per-sample speedup'}: {per_sample_speedup(base, batch, total)}"
            vs_floor = f", {total / total_ms(floor):.2f}x Floor" if floor else ""
            rows.append(f"  {NAMES[implementation]:<20}: {total:6.2f} ms  ({speedup}{vs_floor})")
        if rows:
            floor_note = f" (Floor: {total_ms(floor):.2f} ms)" if floor else ""
            out += [f"\nBatch size {batch} comparisons{floor_note}:", *rows]
    return out


def markdown_report(measurements, machine: str, preset: str) -> str:
    """A table per estimator; EmptyReport where there is no training step."""
    require_training(measurements, machine)
    out = [
        f"Machine `{machine}`, preset `{preset}`, commit `{measurements.commit[:8]}`; "
        "times are asv medians (ms), memory the peak of one training step (MiB)."
    ]
    for estimator in ESTIMATORS:
        baseline = step(measurements, estimator, "current", 1)
        out += [
            "",
            f"### {estimator}",
            "",
            "| batch | implementation | forward | backward | total | memory "
            "| speedup vs current (per sample) | x Floor |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        if not any(step(measurements, estimator, i, b) for i in (*IMPLEMENTATIONS, FLOOR) for b in BATCHES):
            out.append(f"| | (no training step of {estimator} at this commit) | | | | | | |")
        for batch in BATCHES:
            floor = step(measurements, estimator, FLOOR, batch)
            for implementation in (*IMPLEMENTATIONS, FLOOR):
                entry = step(measurements, estimator, implementation, batch)
                if entry is None:
                    continue
                total = total_ms(entry)
                speedup = per_sample_speedup(total_ms(baseline), batch, total) if baseline else "n/a"
                ratio = f"{total / total_ms(floor):.2f}" if floor else "n/a"
                out.append(
                    f"| {batch} | {implementation} | {entry[0].median * 1e3:.2f} | {entry[1].median * 1e3:.2f} | "
                    f"{total:.2f} | {mib(entry[2])} | {speedup} | {ratio} |"
                )
    return "\n".join(out)


def reference_comparison(measurements, machine: str, reference_path: str) -> str:
    """This project's figures next to the reference run's, at the batches it ran.

    Implementations the reference did not have (fused, compiled, the Floor) get
    rows of their own, with "-" for the reference's figures. NoResults for a
    missing or malformed reference file; EmptyReport where the results hold no
    training step.
    """
    reference = parse_reference_run(reference_path)
    require_training(measurements, machine)
    out = [
        f"Reference run ({reference_path}) against machine `{machine}`, commit `{measurements.commit[:8]}`. "
        "Times in ms (reference: mean of its runs; ours: asv median), memory in MiB (reference: MB as printed). "
        'Per-sample speedup is against current at batch 1 of the same run; "-": not in that run.',
        "",
        "| estimator | implementation | batch | forward ref / ours | backward ref / ours | total ref / ours "
        "| memory ref / ours | per-sample speedup ref / ours |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    batches = sorted({batch for _, _, batch in reference})
    for estimator in ESTIMATORS:
        ours_base = step(measurements, estimator, "current", 1)
        ref_base = reference.get((estimator, "current", 1))
        for batch in batches:
            for implementation in (*IMPLEMENTATIONS, FLOOR):
                ref = reference.get((estimator, implementation, batch))
                ours = step(measurements, estimator, implementation, batch)
                if ref is None and ours is None:
                    continue
                theirs = (
                    ("-",) * 5
                    if ref is None
                    else (
                        f"{ref['forward']:.2f}",
                        f"{ref['backward']:.2f}",
                        f"{ref['total']:.2f}",
                        f"{ref['memory']:.1f}",
                        per_sample_speedup(ref_base["total"], batch, ref["total"]) if ref_base else "n/a",
                    )
                )
                mine = (
                    ("n/a",) * 5
                    if ours is None
                    else (
                        f"{ours[0].median * 1e3:.2f}",
                        f"{ours[1].median * 1e3:.2f}",
                        f"{total_ms(ours):.2f}",
                        mib(ours[2]),
                        per_sample_speedup(total_ms(ours_base), batch, total_ms(ours)) if ours_base else "n/a",
                    )
                )
                cells = " | ".join(f"{a} / {b}" for a, b in zip(theirs, mine, strict=True))
                out.append(
                    f"| {estimator} | {NAMES[implementation].lower() if implementation == FLOOR else implementation} "
                    f"| {batch} | {cells} |"
                )
    return "\n".join(out)


def data_parallel_report(measurements, machine: str) -> str:
    """Per precision, implementation and rows per GPU: the eager DDP step on 1 and N GPUs and the efficiency.

    EmptyReport where there is no data-parallel figure."""
    header = [
        f"Machine `{machine}`, commit `{measurements.commit[:8]}`: eager training steps of ste (bench_data_parallel), "
        f"ms; efficiency = t(1 GPU) / t({DATA_PARALLEL_WORLD} GPUs) at the same rows per GPU.",
        "",
        f"| precision | implementation | rows per GPU | step, 1 GPU | step, {DATA_PARALLEL_WORLD} GPUs "
        f"| per sample, {DATA_PARALLEL_WORLD} GPUs | efficiency |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    rows_of_table = []
    for precision, implementation, rows in itertools.product(
        DATA_PARALLEL_PRECISIONS, DATA_PARALLEL_IMPLEMENTATIONS, DATA_PARALLEL_BATCHES
    ):
        figures = [
            measurements.get(f"DataParallel.{name}", precision, implementation, rows)
            for name in (
                "track_time_per_sample_1_gpu",
                "track_time_per_sample_2_gpus",
                "track_inverse_scaling_efficiency",
            )
        ]
        if not any(figures):
            continue
        one, several, inverse = figures
        cells = [
            f"{one.median * rows:.2f}" if one else "n/a",
            f"{several.median * rows * DATA_PARALLEL_WORLD:.2f}" if several else "n/a",
            f"{several.median:.3f}" if several else "n/a",
            f"{1 / inverse.median:.3f}" if inverse else "n/a",
        ]
        rows_of_table.append(f"| {precision} | {implementation} | {rows} | " + " | ".join(cells) + " |")
    if not rows_of_table:
        raise EmptyReport(
            f"machine {machine}, commit {measurements.commit[:8]}: no data-parallel results "
            f"(bench_data_parallel: machines with {DATA_PARALLEL_WORLD} or more GPUs have them)",
            ("bench_data_parallel.",),
        )
    return "\n".join(header + rows_of_table)


def this_machine() -> tuple[str, list[str]]:
    """This machine's name (tools/run/asv_project.py's), or where it has no results the closest machine's that
    has (results.closest_machine), with a note saying so (also on stderr)."""
    from ..run.asv_project import machine_name

    name = machine_name()
    if name in asv_results.machines() and asv_results.result_files(name):
        return name, []
    chosen, why = asv_results.closest_machine(name)
    asv_results.warn(f"this machine, {name}, has no results: reporting {chosen}'s ({why})")
    return chosen, [f"Note: this machine, {name}, has no results; these are {chosen}'s, the closest machine: {why}."]


def render(args, measurements, preset: str) -> str:
    """The report ``args`` asks for."""
    if args.reference:
        return reference_comparison(measurements, args.machine, args.reference)
    if args.precision:
        return precision_report(measurements, args.machine)
    if args.quality:
        return quality_report(measurements, args.machine)
    if args.data_parallel:
        return data_parallel_report(measurements, args.machine)
    if args.markdown:
        return markdown_report(measurements, args.machine, preset)
    return text_report(measurements, args.machine, preset, check=not args.no_verify)


def main(argv=None) -> int:
    """The report of ``argv`` (sys.argv's by default) on stdout; the exit status of the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--machine",
        help="asv machine name (default: this machine's, as tools/run/asv_project.py names it, or where it has no "
        "results the closest machine's that has)",
    )
    parser.add_argument("--commit", help="commit (prefix) to report (default: the newest with results)")
    parser.add_argument("--no-verify", action="store_true", help="skip the live equivalence verification")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--markdown", action="store_true", help="markdown tables instead of the text report")
    modes.add_argument("--precision", action="store_true", help="Dense, Floor, fused, bmm in every precision")
    modes.add_argument("--reference", help="compare with the reference run's output (e.g. docs/reference-run.txt)")
    modes.add_argument("--quality", action="store_true", help="the speed x quality table of every estimator")
    modes.add_argument("--data-parallel", action="store_true", help="the data-parallel table (multi-GPU machines)")
    args = parser.parse_args(argv)
    notes = []
    try:
        if args.machine is None:
            args.machine, notes = this_machine()
        measurements = asv_results.latest(args.machine, args.commit)
        preset = machine_preset(args.machine)
        text = render(args, measurements, preset)
    except asv_results.NoResults as missing:
        parser.error(str(missing))
    except asv_results.NoData as nothing:
        print(f"{parser.prog}: error: {nothing}", file=sys.stderr)
        return 1
    except EmptyReport as empty:
        commits = asv_results.commits_with(args.machine, *empty.benchmarks)
        where = f"commits with them (--commit): {', '.join(commits[:8])}" if commits else "no commit has them"
        print(f"{parser.prog}: error: {empty}; {where}", file=sys.stderr)
        return 1
    print("\n".join([*notes, *measurements.notes, text]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
