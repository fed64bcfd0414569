"""What the report's tables share: reading a training step from the results, formatting its figures, and
``EmptyReport``, the error of a table with nothing to show."""

from __future__ import annotations

import itertools

from benchmarks.grid import BATCHES, ESTIMATORS, FLOOR, IMPLEMENTATIONS

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
