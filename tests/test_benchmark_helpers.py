"""The suite's training step (benchmarks/common.py): built lazily, and timing what an eager step computes."""

import pytest
import torch

from benchmarks import common


@pytest.fixture
def step():
    return common.TrainingStep("ste", "bmm", 2)


def test_a_step_builds_nothing_until_it_runs(step):
    """A memory benchmark's process reports a cached figure: making its step must not touch the device."""
    assert not {"inputs", "timer"} & set(vars(step))


def test_timer_times_only_the_pass_it_is_asked_for(step):
    step.timer.forward()
    if common.DEVICE == "cuda":
        assert "forward_graph" in vars(step.timer) and "backward_graph" not in vars(step.timer)
    step.timer.backward()
    if common.DEVICE == "cuda":
        assert "backward_graph" in vars(step.timer)


def test_a_peak_excludes_the_inputs():
    """A fresh step's peak leaves out the tokens and the model it puts on the device first."""
    common.TrainingStep("ste", "bmm", 2).peak_memory()  # first use (cuBLAS workspaces, ...) out of the way
    fresh = common.TrainingStep("ste", "bmm", 2).peak_memory()
    prebuilt = common.TrainingStep("ste", "bmm", 2)
    prebuilt.inputs  # noqa: B018
    assert fresh > 0
    assert fresh == prebuilt.peak_memory()


@pytest.mark.cuda
@pytest.mark.skipif(common.DEVICE != "cuda", reason="the suite runs on CUDA only where a GPU exists")
def test_graph_replays_compute_the_eager_step(step):
    torch.backends.cuda.matmul.allow_tf32 = False
    eager_loss = step.loss()
    eager_grads = step.gradients(eager_loss)
    step.timer.backward()  # captures the forward, then the backward of the captured loss, and replays both
    torch.testing.assert_close(step.timer.loss, eager_loss)
    for replayed, eager in zip(step.timer.gradients, eager_grads, strict=True):
        torch.testing.assert_close(replayed, eager)


def test_peak_memories_say_why_a_combination_has_no_figure():
    peaks = common.peak_memories([("ste", "compiled", 2), ("no-such-estimator", "bmm", 2)])
    assert "batch" in peaks["ste", "compiled", 2]
    assert "does not exist" in peaks["no-such-estimator", "bmm", 2]
