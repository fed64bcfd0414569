"""One training step of the stochastic transformer: forward, backward and peak memory.

``ForwardBackward`` covers every estimator x implementation x batch size;
``Floor`` runs the same step with one mask shared by the whole batch, so the
ratio of the two is the cost of per-sample discreteness.
"""

import itertools

from . import grid, skips
from .machine import TimingAttributes, configure_process
from .step import peak_memories, step_arguments, training_step

configure_process()


class _StepBenchmark(TimingAttributes):
    """track_peak_memory of one combination's step, and the setup that finds its step and peak.

    A subclass names each parameter combination as a ``skips.Cell`` (its ``cell``); its ``skip_params`` are the
    cells this machine skips, and its setup_cache returns ``self.peaks()``. Each subclass defines setup_cache
    itself: asv keys setup_cache's result by where the method is defined, so an inherited one would hand one
    class's peaks to every class.
    """

    def track_peak_memory(self, peaks, *params):
        return self.peak

    track_peak_memory.unit = "bytes"

    def peaks(self) -> dict:
        """The peaks of every cell of the class (``peak_memories``)."""
        return peak_memories(self.cell(*combination) for combination in itertools.product(*self.params))

    def setup(self, peaks, *params):
        """Skip what this machine or commit lacks (``skips.skip_reason``), else take the cell's peak and its step."""
        cell = self.cell(*params)
        skips.skip(cell)
        self.peak = peaks[cell]
        if isinstance(self.peak, str):  # why it has no figure: n/a
            raise NotImplementedError(self.peak)
        self.step = training_step(*step_arguments(cell))


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

    @staticmethod
    def cell(estimator, implementation, batch):
        return skips.Cell("step", estimator, implementation, batch)

    # What this machine or tier does not run (grid.RUNS_AT, grid.DEFAULT_TIER_BATCHES) is skipped before setup
    # runs: n/a, without a process's noise; setup_cache measures no peak for it either.
    skip_params = skips.skip_params(params, cell)

    def setup_cache(self):
        return self.peaks()


class Floor(_TrainingStepBenchmark):
    """One mask (the first sample's) for the whole batch: the floor of the per-sample cost."""

    version = "1"
    params = [list(grid.ESTIMATORS), list(grid.BATCHES)]
    param_names = ["estimator", "batch"]

    @staticmethod
    def cell(estimator, batch):
        return skips.Cell("step", estimator, grid.FLOOR, batch)

    skip_params = skips.skip_params(params, cell)

    def setup_cache(self):
        return self.peaks()
