"""The suite's building blocks (benchmarks/): the grid, the training step, its timers and memory."""

import subprocess
import sys

import pytest
import torch

import estimators
from benchmarks import grid
from benchmarks import step as step_module
from benchmarks.machine import DEVICE


@pytest.fixture
def step():
    return step_module.TrainingStep("ste", "bmm", 2)


def test_the_grid_covers_every_estimator_and_implementation_of_the_package():
    """A new estimator or implementation gets benchmarks: the grid (only appended to) names it."""
    assert set(estimators.ESTIMATORS) <= set(grid.ESTIMATORS)
    assert set(estimators.IMPLEMENTATIONS) <= set(grid.IMPLEMENTATIONS)
    assert grid.FLOOR == estimators.FLOOR


def test_what_runs_where():
    assert grid.skip_reason("current", 2, "*") and grid.runs("current", 1, "cuda")
    assert grid.runs("compiled", 16, "cuda") and not grid.runs("compiled", 16, "cpu")
    assert "batch" in grid.skip_reason("compiled", 2, "cpu")
    assert grid.runs("bmm", 64, "cuda") and not grid.runs("bmm", 64, "cpu")
    assert grid.skip_reason("bmm", 64, "*") is None


def test_importing_the_tools_changes_no_torch_setting():
    """The tools import the suite's grid and machine; only the benchmark modules set torch's thread count."""
    code = (
        "import torch; torch.set_num_threads(2); "
        "import tools.reporting.report, tools.run.gate, tools.probes.floor, benchmarks.step, benchmarks.workload; "
        "print(torch.get_num_threads())"
    )
    threads = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert threads.strip() == "2"


def test_a_step_builds_nothing_until_it_runs(step):
    """A memory benchmark's process reports a cached figure: making its step must not touch the device."""
    assert not {"inputs", "timer"} & set(vars(step))


def test_timer_times_only_the_pass_it_is_asked_for(step):
    step.timer.forward()
    if DEVICE == "cuda":
        assert "forward_graph" in vars(step.timer) and "backward_graph" not in vars(step.timer)
    step.timer.backward()
    if DEVICE == "cuda":
        assert "backward_graph" in vars(step.timer)


def test_a_peak_excludes_the_inputs():
    """A fresh step's peak leaves out the tokens and the model it puts on the device first."""
    step_module.TrainingStep("ste", "bmm", 2).peak_memory()  # first use (cuBLAS workspaces, ...) out of the way
    fresh = step_module.TrainingStep("ste", "bmm", 2).peak_memory()
    prebuilt = step_module.TrainingStep("ste", "bmm", 2)
    prebuilt.inputs  # noqa: B018
    assert fresh > 0
    assert fresh == prebuilt.peak_memory()


@pytest.mark.cuda
@pytest.mark.skipif(DEVICE != "cuda", reason="the suite runs on CUDA only where a GPU exists")
def test_graph_replays_compute_the_eager_step(step):
    torch.backends.cuda.matmul.allow_tf32 = False
    eager_loss = step.loss()
    eager_grads = step.gradients(eager_loss)
    step.timer.backward()  # captures the forward, then the backward of the captured loss, and replays both
    torch.testing.assert_close(step.timer.loss, eager_loss)
    for replayed, eager in zip(step.timer.gradients, eager_grads, strict=True):
        torch.testing.assert_close(replayed, eager)


def test_peak_memories_say_why_a_combination_has_no_figure():
    peaks = step_module.peak_memories([("ste", "compiled", 2), ("no-such-estimator", "bmm", 2)])
    assert "batch" in peaks["ste", "compiled", 2]
    assert "does not exist" in peaks["no-such-estimator", "bmm", 2]
