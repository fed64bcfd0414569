"""How the cost of a step grows with the model's width (d_model 512, 1024, 2048; d_ff = 4 d_model).

The seed preset's architecture at other widths (``workload.preset_config``),
fp32, ste, CUDA-graph replays of the forward then the backward (device
time), for fused, the Floor, the Dense model and bmm at batch 16 and 64, and
all but bmm at batch 256; the peak memory of a step beside it. Kernels tuned at one width can fall behind
at another: fused / Floor per width is the figure to watch. CUDA only.
"""

import itertools

from . import grid, skips
from .bench_training import _StepBenchmark
from .machine import DEVICE, configure_process
from .step import peak_memories

configure_process()


class Width(_StepBenchmark):
    """time_step (forward and backward replays) and track_peak_memory of one (width, implementation, batch)."""

    version = "1"
    params = [list(grid.WIDTHS), list(grid.WIDTH_IMPLEMENTATIONS), list(grid.WIDTH_BATCHES)]
    param_names = ["width", "implementation", "batch"]
    skip_params = [combo for combo in itertools.product(*params) if grid.width_skip_reason(DEVICE, *combo[1:])]

    def setup_cache(self):
        combinations = [("ste", i, b, "fp32", w) for w, i, b in itertools.product(*self.params)]
        return peak_memories(combinations, requires=skips.requires_width_step)

    def setup(self, peaks, width, implementation, batch):
        self._prepare(peaks, ("ste", implementation, batch, "fp32", width), skips.requires_width_step)

    @skips.skip_if_out_of_memory
    def time_step(self, peaks, width, implementation, batch):
        self.step.timer.forward_backward()
