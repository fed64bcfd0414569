"""The markdown report: a table per estimator of each implementation's step per batch, with the per-sample
speedup against current at batch 1 and the ratio to the Floor."""

from __future__ import annotations

from benchmarks.grid import BATCHES, ESTIMATORS, FLOOR, IMPLEMENTATIONS

from .common import mib, per_sample_speedup, require_training, step, total_ms


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
