"""The data-parallel table (bench_data_parallel): the eager DDP step on 1 and N GPUs and the efficiency."""

from __future__ import annotations

import itertools

from benchmarks.grid import (
    DATA_PARALLEL_BATCHES,
    DATA_PARALLEL_IMPLEMENTATIONS,
    DATA_PARALLEL_PRECISIONS,
    DATA_PARALLEL_WORLD,
)

from .common import EmptyReport


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
