"""The training step in the precisions users train in: bf16 autocast and TF32 (benchmarks/precision.py).

The same benchmarks as ``bench_training`` (forward, backward, peak memory),
with the precision as their first parameter, on a grid pruned to fit the GPU
suite's time budget (``grid.REDUCED_*``; CUDA only). The fp32 series stay in
``bench_training``, so no series changes meaning.
"""

from . import grid, skips
from .bench_training import _TrainingStepBenchmark
from .machine import configure_process

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

    @staticmethod
    def cell(precision, estimator, implementation, batch):
        return skips.Cell("reduced", estimator, implementation, batch, precision)

    skip_params = skips.skip_params(params, cell)

    def setup_cache(self):
        return self.peaks()


class Floor(_TrainingStepBenchmark):
    """One mask for the whole batch, in bf16 autocast or with TF32 on."""

    version = "1"
    params = [list(grid.REDUCED_PRECISIONS), ["ste"], list(grid.REDUCED_BATCHES)]
    param_names = ["precision", "estimator", "batch"]

    @staticmethod
    def cell(precision, estimator, batch):
        return skips.Cell("reduced", estimator, grid.FLOOR, batch, precision)

    skip_params = skips.skip_params(params, cell)

    def setup_cache(self):
        return self.peaks()
