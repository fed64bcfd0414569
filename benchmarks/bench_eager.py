"""The training step as an eager loop runs it: what a user's loop gets, beside what the device does.

``bench_training`` times CUDA-graph replays (device time, free of Python);
a training loop launches every kernel from Python, and where launching costs
more than the device's work, the loop is host-bound. ``EagerStep`` times one
step (forward and backward launched eagerly, then a synchronisation) of every
implementation, the Floor and the Dense model, in fp32 and bf16 autocast, on
CUDA (every CPU timing of the suite is eager already). Its ratio to the
Dense model's eager step, measured in the same run, is what masks cost a loop.
"""

from . import grid, skips
from .machine import TimingAttributes, configure_process
from .step import step_arguments, training_step

configure_process()


class EagerStep(TimingAttributes):
    """time_step: one eager forward and backward of ste (the Dense model has no estimator), synchronised."""

    version = "1"
    params = [list(grid.EAGER_PRECISIONS), list(grid.EAGER_IMPLEMENTATIONS), list(grid.EAGER_BATCHES)]
    param_names = ["precision", "implementation", "batch"]

    @staticmethod
    def cell(precision, implementation, batch):
        return skips.Cell("eager", "ste", implementation, batch, precision)

    skip_params = skips.skip_params(params, cell)

    def setup(self, precision, implementation, batch):
        cell = self.cell(precision, implementation, batch)
        skips.skip(cell)
        self.step = training_step(*step_arguments(cell))

    @skips.skip_if_out_of_memory
    def time_step(self, precision, implementation, batch):
        self.step.eager()
