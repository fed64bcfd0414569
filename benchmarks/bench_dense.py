"""Dense: the same architecture with plain linear layers and no masks (benchmarks/dense.py).

The true floor of a training step, measured beside the stochastic model in
the same run and in every precision: the ratios fused / Dense and Floor /
Dense say what per-sample masks, and masks at all, cost.
"""

import itertools

from . import grid, skips
from .bench_training import _TrainingStepBenchmark
from .machine import DEVICE, configure_process
from .step import peak_memories

configure_process()


class Dense(_TrainingStepBenchmark):
    """time_forward, time_backward and track_peak_memory of the plain model's training step."""

    version = "1"
    params = [list(grid.PRECISIONS), list(grid.BATCHES)]
    param_names = ["precision", "batch"]
    skip_params = [combo for combo in itertools.product(*params) if grid.dense_skip_reason(*combo, DEVICE)]

    def setup_cache(self):
        combinations = [(None, grid.DENSE, b, p) for p, b in itertools.product(*self.params)]
        return peak_memories(combinations, requires=skips.requires_dense_step)

    def setup(self, peaks, precision, batch):
        self._prepare(peaks, (None, grid.DENSE, batch, precision), skips.requires_dense_step)
