"""Ratios of training steps timed side by side in one process: interleaved rounds, the median of per-round ratios.

A step's time moves with its host (clocks, the driver, the other tenants of
a VM); the ratio of two steps timed in the same rounds of the same process
cancels what moves both, so the series of bench_ratios hold across hosts
where milliseconds do not.
"""

from __future__ import annotations

import statistics
import time

import torch

from . import skips
from .grid import DENSE, FLOOR
from .machine import DEVICE
from .step import TrainingStep

# Rounds a cell runs: at least min_rounds, then more until max_seconds have passed, at most max_rounds.
# CUDA: a replayed step takes 2-20 ms, a round three of them. CPU: a round of the small preset's eager steps
# takes ~0.4 s at batch 1 and ~1.3 s at batch 16; with 5 rounds, fused / Floor at batch 1 read 0.89, 0.89 and
# 0.73 in three runs on a shared 2-core VM.
ROUNDS = {
    "cuda": dict(min_rounds=10, max_rounds=200, max_seconds=1.0),
    "cpu": dict(min_rounds=7, max_rounds=30, max_seconds=3.0),
}


def interleaved_ratios(
    runs: dict, numerator: str, min_rounds: int, max_rounds: int, max_seconds: float, clock=time.perf_counter
) -> dict[str, float]:
    """{name: the median over rounds of t(numerator) / t(name)} for every other name in ``runs``.

    ``runs``: {name: a callable that runs one step and returns once the device is done}, at least two.
    One untimed round first (first use: graph captures, kernels, caches). Then every round times each
    callable once, starting one further along the list each round, so that no step always follows the same
    one; rounds run until ``min_rounds`` have run and ``max_seconds`` have passed since the first, or until
    ``max_rounds`` have run. ValueError for a numerator not in ``runs``, fewer than two runs, or bounds out
    of order.
    """
    if numerator not in runs:
        raise ValueError(f"numerator {numerator!r} is not one of the runs: {', '.join(runs)}")
    if len(runs) < 2:
        raise ValueError(f"a ratio needs two runs or more, got {len(runs)}")
    if not 1 <= min_rounds <= max_rounds or max_seconds < 0:
        raise ValueError(
            f"need 1 <= min_rounds <= max_rounds and max_seconds >= 0, got {min_rounds}, {max_rounds}, {max_seconds}"
        )
    names = list(runs)
    for name in names:
        runs[name]()
    ratios = {name: [] for name in names if name != numerator}
    start = clock()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or clock() - start < max_seconds):
        shift = rounds % len(names)
        seconds = {}
        for name in names[shift:] + names[:shift]:
            before = clock()
            runs[name]()
            seconds[name] = clock() - before
        for name, figures in ratios.items():
            figures.append(seconds[numerator] / seconds[name])
        rounds += 1
    return {name: statistics.median(figures) for name, figures in ratios.items()}


def step_ratios(timing: str, precision: str, batch: int, rounds: dict | None = None) -> dict[str, float]:
    """{"dense": fused / Dense, "floor": fused / Floor}: ste's steps at ``batch`` in ``precision``.

    ``timing``: "replay" (``GraphTimer.forward_backward``: the captured forward and backward, CUDA only) or
    "eager" (``TrainingStep.eager``, what bench_eager times). ``rounds``: ``interleaved_ratios``' bounds,
    this device's ``ROUNDS`` by default.
    """
    if timing not in ("replay", "eager"):
        raise ValueError(f"timing {timing!r}; valid choices: replay, eager")
    if timing == "replay" and DEVICE != "cuda":
        raise ValueError("replay timing needs CUDA graphs: the device is " + DEVICE)
    steps = {
        "fused": TrainingStep("ste", "fused", batch, precision),
        "dense": TrainingStep(None, DENSE, batch, precision),
        "floor": TrainingStep("ste", FLOOR, batch, precision),
    }
    runs = {name: step.timer.forward_backward if timing == "replay" else step.eager for name, step in steps.items()}
    return interleaved_ratios(runs, "fused", **(rounds or ROUNDS[DEVICE]))


def measure(cells, rounds: dict | None = None) -> dict:
    """{(timing, precision, batch): ``step_ratios``, or the reason the cell has none} for every cell, in turn.

    A cell this machine or commit does not run (``skips.skip_reason``) gets its reason; one that runs out
    of CUDA memory gets "out of memory". Each cell's steps and graphs are freed before the next one's.
    """
    figures = {}
    for cell in cells:
        timing, precision, batch = cell
        try:
            skips.skip(skips.Cell("ratio", timing=timing, precision=precision, batch=batch))
            figures[cell] = step_ratios(*cell, rounds=rounds)
        except NotImplementedError as skipped:
            figures[cell] = str(skipped)
        except torch.OutOfMemoryError:
            figures[cell] = "out of memory"
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return figures
