"""One training step of the stochastic transformer: forward, backward and peak memory.

``ForwardBackward`` covers every estimator x implementation x batch size;
``Floor`` runs the same step with one mask shared by the whole batch, so the
ratio of the two is the cost of per-sample discreteness.
"""

import itertools

from . import grid, skips
from .machine import DEVICE, TIER, TimingAttributes, configure_process
from .step import peak_memories, training_step

configure_process()


class _StepBenchmark(TimingAttributes):
    """track_peak_memory of one combination's step, and the setup that finds its step and peak."""

    def track_peak_memory(self, peaks, *params):
        return self.peak

    track_peak_memory.unit = "bytes"

    def _prepare(self, peaks, combination: tuple, requires=skips.requires_step):
        """Skip what this machine or commit lacks, else take the combination's peak and its step.

        ``combination``: ``TrainingStep``'s arguments, also the key of ``peaks``.
        """
        requires(*combination)
        self.peak = peaks[combination]
        if isinstance(self.peak, str):  # why it has no figure: n/a
            raise NotImplementedError(self.peak)
        self.step = training_step(*combination)


class _TrainingStepBenchmark(_StepBenchmark):
    """time_forward, time_backward and track_peak_memory of one (estimator, implementation, batch)."""

    @skips.skip_if_out_of_memory
    def time_forward(self, peaks, *params):
        self.step.timer.forward()

    @skips.skip_if_out_of_memory
    def time_backward(self, peaks, *params):
        self.step.timer.backward()


class ForwardBackward(_TrainingStepBenchmark):
    """Per-sample masks: every sample of the batch draws its own."""

    version = "1"
    params = [list(grid.ESTIMATORS), list(grid.IMPLEMENTATIONS), list(grid.BATCHES)]
    param_names = ["estimator", "implementation", "batch"]
    # What this machine or tier does not run (grid.RUNS_AT, grid.DEFAULT_TIER_BATCHES) is skipped before setup
    # runs: n/a, without a process's noise; setup_cache measures no peak for it either (skips.requires_step).
    skip_params = [combo for combo in itertools.product(*params) if grid.step_skip_reason(*combo, DEVICE, TIER)]

    def setup_cache(self):
        return peak_memories(itertools.product(*self.params))

    def setup(self, peaks, estimator, implementation, batch):
        self._prepare(peaks, (estimator, implementation, batch))


class Floor(_TrainingStepBenchmark):
    """One mask (the first sample's) for the whole batch: the floor of the per-sample cost."""

    version = "1"
    params = [list(grid.ESTIMATORS), list(grid.BATCHES)]
    param_names = ["estimator", "batch"]
    skip_params = [combo for combo in itertools.product(*params) if grid.skip_reason(grid.FLOOR, combo[1], DEVICE)]

    def setup_cache(self):
        return peak_memories((estimator, grid.FLOOR, batch) for estimator, batch in itertools.product(*self.params))

    def setup(self, peaks, estimator, batch):
        self._prepare(peaks, (estimator, grid.FLOOR, batch))
