"""Ratios that hold across hosts: the fused step over the Dense model's and over the Floor's, in one process.

``Ratios`` times the three steps of ste (fused, the Dense model, the Floor)
side by side, in interleaved rounds, and reports the median of the
per-round ratios (benchmarks/ratios.py): the host's speed cancels, so a
series stays comparable when the history moves to another machine of the
same kind. CUDA: CUDA-graph replays (device time) in fp32, bf16 autocast and
TF32 at batch 16 and 64, and eager steps (what a training loop gets) in fp32
and bf16 at batch 16; CPU: eager fp32 steps at batch 1 and 16
(``grid.RATIO_RUNS_AT``). Every cell is measured in one process, asv's
setup_cache, so a cell costs its rounds and not a CUDA start-up.
"""

import itertools

from . import grid, ratios, skips
from .machine import configure_process

configure_process()


class Ratios:
    """track_fused_over_dense and track_fused_over_floor of one (timing, precision, batch); lower is better."""

    version = "1"
    timeout = 600
    params = [list(grid.RATIO_TIMINGS), list(grid.PRECISIONS), list(grid.RATIO_BATCHES)]
    param_names = ["timing", "precision", "batch"]

    @staticmethod
    def cell(timing, precision, batch):
        return skips.Cell("ratio", timing=timing, precision=precision, batch=batch)

    skip_params = skips.skip_params(params, cell)

    def setup_cache(self):
        return ratios.measure(itertools.product(*self.params))

    def setup(self, figures, timing, precision, batch):
        """n/a for a cell with no figure (asv skips only from setup)."""
        figure = figures[timing, precision, batch]
        if isinstance(figure, str):
            raise NotImplementedError(figure)

    def track_fused_over_dense(self, figures, timing, precision, batch):
        """The fused step's time over the Dense model's: what per-sample masks cost against no masks."""
        return figures[timing, precision, batch]["dense"]

    def track_fused_over_floor(self, figures, timing, precision, batch):
        """The fused step's time over the Floor's (one mask for the batch): the cost of per-sample masks."""
        return figures[timing, precision, batch]["floor"]

    track_fused_over_dense.unit = track_fused_over_floor.unit = "ratio"
