"""One training step of the stochastic transformer: forward, backward and peak memory.

``ForwardBackward`` covers every estimator x implementation x batch size;
``Floor`` runs the same step with one mask shared by the whole batch, so the
ratio of the two is the cost of per-sample discreteness.
"""

import itertools

from .common import (
    BATCHES, ESTIMATORS, FLOOR, IMPLEMENTATIONS, TimingAttributes, peak_memories, require, skip_if_out_of_memory,
    training_step,
)  # fmt: skip


class _TrainingStepBenchmark(TimingAttributes):
    """time_forward, time_backward and track_peak_memory of one (estimator, implementation, batch)."""

    @skip_if_out_of_memory
    def time_forward(self, peaks, *params):
        self.step.timer.forward()

    @skip_if_out_of_memory
    def time_backward(self, peaks, *params):
        self.step.timer.backward()

    def track_peak_memory(self, peaks, *params):
        return self.peak

    track_peak_memory.unit = "bytes"

    def _prepare(self, peaks, estimator, implementation, batch):
        require(estimator, implementation, batch)
        self.peak = peaks[estimator, implementation, batch]
        if isinstance(self.peak, str):  # why it has no figure: n/a
            raise NotImplementedError(self.peak)
        self.step = training_step(estimator, implementation, batch)


class ForwardBackward(_TrainingStepBenchmark):
    """Per-sample masks: every sample of the batch draws its own."""

    version = "1"
    params = [list(ESTIMATORS), list(IMPLEMENTATIONS), list(BATCHES)]
    param_names = ["estimator", "implementation", "batch"]
    # `current` is the single-sample path: its other batch sizes are skipped before setup runs.
    skip_params = [(e, "current", b) for e in ESTIMATORS for b in BATCHES if b != 1]

    def setup_cache(self):
        return peak_memories(itertools.product(*self.params))

    def setup(self, peaks, estimator, implementation, batch):
        self._prepare(peaks, estimator, implementation, batch)


class Floor(_TrainingStepBenchmark):
    """One mask (the first sample's) for the whole batch: the floor of the per-sample cost."""

    version = "1"
    params = [list(ESTIMATORS), list(BATCHES)]
    param_names = ["estimator", "batch"]

    def setup_cache(self):
        return peak_memories((estimator, FLOOR, batch) for estimator, batch in itertools.product(*self.params))

    def setup(self, peaks, estimator, batch):
        self._prepare(peaks, estimator, FLOOR, batch)
