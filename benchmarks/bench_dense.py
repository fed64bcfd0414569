"""Dense: the same architecture with plain linear layers and no masks (benchmarks/dense.py).

The true floor of a training step, measured beside the stochastic model in
the same run and in every precision: the ratios fused / Dense and Floor /
Dense say what per-sample masks, and masks at all, cost.
"""

from . import grid, skips
from .bench_training import _TrainingStepBenchmark
from .machine import configure_process

configure_process()


class Dense(_TrainingStepBenchmark):
    """time_forward, time_backward and track_peak_memory of the plain model's training step."""

    version = "1"
    params = [list(grid.PRECISIONS), list(grid.BATCHES)]
    param_names = ["precision", "batch"]

    @staticmethod
    def cell(precision, batch):
        return skips.Cell("dense", None, grid.DENSE, batch, precision)

    skip_params = skips.skip_params(params, cell)

    def setup_cache(self):
        return self.peaks()
