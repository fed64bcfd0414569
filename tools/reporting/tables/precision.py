"""The precision table: per precision and batch, Dense, Floor, fused and bmm (estimator ste) and their ratios."""

from __future__ import annotations

import itertools

from benchmarks.grid import BATCHES, DENSE, FLOOR, PRECISIONS

from .common import EmptyReport, step, total_ms


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
