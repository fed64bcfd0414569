"""The training step in the precisions users train in: bf16 autocast and TF32 (benchmarks/precision.py).

The same benchmarks as ``bench_training`` (forward, backward, peak memory),
with the precision as their first parameter, on a grid pruned to fit the GPU
suite's time budget (``grid.REDUCED_*``; CUDA only). The fp32 series stay in
``bench_training``, so no series changes meaning.
"""

import itertools

from . import grid, skips
from .bench_training import _TrainingStepBenchmark
from .machine import DEVICE, configure_process
from .step import peak_memories

configure_process()


class ForwardBackward(_TrainingStepBenchmark):
    """Per-sample masks, in bf16 autocast or with TF32 on."""

    version = "1"
    params = [
        list(grid.REDUCED_PRECISIONS),
        list(grid.ESTIMATORS),
        list(grid.REDUCED_IMPLEMENTATIONS),
        list(grid.REDUCED_BATCHES),
    ]
    param_names = ["precision", "estimator", "implementation", "batch"]
    skip_params = [
        combo for combo in itertools.product(*params) if grid.reduced_precision_skip_reason(*combo[1:], DEVICE)
    ]

    def setup_cache(self):
        combinations = [(e, i, b, p) for p, e, i, b in itertools.product(*self.params)]
        return peak_memories(combinations, requires=skips.requires_reduced_precision_step)

    def setup(self, peaks, precision, estimator, implementation, batch):
        self._prepare(peaks, (estimator, implementation, batch, precision), skips.requires_reduced_precision_step)


class Floor(_TrainingStepBenchmark):
    """One mask for the whole batch, in bf16 autocast or with TF32 on."""

    version = "1"
    params = [list(grid.REDUCED_PRECISIONS), ["ste"], list(grid.REDUCED_BATCHES)]
    param_names = ["precision", "estimator", "batch"]
    skip_params = [
        combo
        for combo in itertools.product(*params)
        if grid.reduced_precision_skip_reason(combo[1], grid.FLOOR, combo[2], DEVICE)
    ]

    def setup_cache(self):
        combinations = [(e, grid.FLOOR, b, p) for p, e, b in itertools.product(*self.params)]
        return peak_memories(combinations, requires=skips.requires_reduced_precision_step)

    def setup(self, peaks, precision, estimator, batch):
        self._prepare(peaks, (estimator, grid.FLOOR, batch, precision), skips.requires_reduced_precision_step)
