"""One training step of the stochastic transformer: forward, backward and peak memory.

``ForwardBackward`` covers every estimator x implementation x batch size;
``Floor`` runs the same step with one mask shared by the whole batch, so the
ratio of the two is the cost of per-sample discreteness.
"""

from .common import (
    BATCHES, ESTIMATORS, FLOOR, IMPLEMENTATIONS, TimingAttributes, require, skip_if_out_of_memory, training_step,
)  # fmt: skip


class _TrainingStepBenchmark(TimingAttributes):
    @skip_if_out_of_memory
    def time_forward(self, *params):
        self.step.timer.forward()

    @skip_if_out_of_memory
    def time_backward(self, *params):
        self.step.timer.backward()

    @skip_if_out_of_memory
    def track_peak_memory(self, *params):
        return self.step.peak_memory()

    track_peak_memory.unit = "bytes"

    def _prepare(self, estimator, implementation, batch):
        require(estimator, implementation, batch)
        self.step = training_step(estimator, implementation, batch)


class ForwardBackward(_TrainingStepBenchmark):
    """Per-sample masks: every sample of the batch draws its own."""

    version = "1"
    params = [list(ESTIMATORS), list(IMPLEMENTATIONS), list(BATCHES)]
    param_names = ["estimator", "implementation", "batch"]
    # `current` is the single-sample path: no process is set up for its other batch sizes.
    skip_params = [(e, "current", b) for e in ESTIMATORS for b in BATCHES if b != 1]

    def setup(self, estimator, implementation, batch):
        self._prepare(estimator, implementation, batch)


class Floor(_TrainingStepBenchmark):
    """One mask (the first sample's) for the whole batch: the floor of the per-sample cost."""

    version = "1"
    params = [list(ESTIMATORS), list(BATCHES)]
    param_names = ["estimator", "batch"]

    def setup(self, estimator, batch):
        self._prepare(estimator, FLOOR, batch)
