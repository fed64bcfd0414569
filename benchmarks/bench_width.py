"""How the cost of a step grows with the model's width (d_model 512, 1024, 2048; d_ff = 4 d_model).

The seed preset's architecture at other widths (``workload.preset_config``),
fp32, ste, CUDA-graph replays of the forward then the backward (device
time), for fused, the Floor, the Dense model and bmm at batch 16 and 64, and
all but bmm at batch 256; the peak memory of a step beside it. Kernels tuned at one width can fall behind
at another: fused / Floor per width is the figure to watch. CUDA only.
"""

from . import grid, skips
from .bench_training import _StepBenchmark
from .machine import configure_process

configure_process()


class Width(_StepBenchmark):
    """time_step (forward and backward replays) and track_peak_memory of one (width, implementation, batch)."""

    version = "1"
    params = [list(grid.WIDTHS), list(grid.WIDTH_IMPLEMENTATIONS), list(grid.WIDTH_BATCHES)]
    param_names = ["width", "implementation", "batch"]

    @staticmethod
    def cell(width, implementation, batch):
        return skips.Cell("width", "ste", implementation, batch, "fp32", width)

    skip_params = skips.skip_params(params, cell)

    def setup_cache(self):
        return self.peaks()

    @skips.skip_if_out_of_memory
    def time_step(self, peaks, width, implementation, batch):
        self.step.timer.forward_backward()
