"""The ratio benchmarks (benchmarks/ratios.py, bench_ratios): interleaved rounds, the grid's cells, n/a."""

import itertools

import pytest
import torch

from benchmarks import grid, ratios
from benchmarks.machine import DEVICE
from benchmarks.skips import Cell, Machine, runs, skip_reason


class _Clock:
    """A clock that each fake step advances by its own duration."""

    def __init__(self):
        self.now = 0.0
        self.order = []

    def __call__(self):
        return self.now

    def step(self, name, seconds):
        def run():
            self.order.append(name)
            self.now += seconds

        return run


def test_interleaved_ratios_are_medians_of_per_round_ratios_in_rotating_order():
    clock = _Clock()
    runs = {"fused": clock.step("fused", 3.0), "dense": clock.step("dense", 1.0), "floor": clock.step("floor", 2.0)}
    figures = ratios.interleaved_ratios(runs, "fused", min_rounds=4, max_rounds=10, max_seconds=0.0, clock=clock)
    assert figures == {"dense": 3.0, "floor": 1.5}
    # one untimed round, then four rounds, each starting one further along
    assert clock.order[3:] == [
        "fused", "dense", "floor",
        "dense", "floor", "fused",
        "floor", "fused", "dense",
        "fused", "dense", "floor",
    ]  # fmt: skip


def test_interleaved_ratios_resist_one_slow_round_and_stop_at_their_bounds():
    clock = _Clock()
    durations = iter([1.0, 1.0] + [1.0, 1.0] * 2 + [50.0, 1.0] + [1.0, 1.0] * 2)  # warm-up, then round 3 is slow

    def run(name):
        def timed():
            clock.now += next(durations)

        return timed

    figures = ratios.interleaved_ratios(
        {"a": run("a"), "b": run("b")}, "a", min_rounds=5, max_rounds=5, max_seconds=1e9, clock=clock
    )
    assert figures == {"b": 1.0}
    clock = _Clock()
    runs = {"a": clock.step("a", 0.1), "b": clock.step("b", 0.1)}
    ratios.interleaved_ratios(runs, "a", min_rounds=2, max_rounds=100, max_seconds=1.0, clock=clock)
    assert len(clock.order) == 2 + 2 * 5  # rounds run until a second has passed: 5 rounds of 0.2 s


@pytest.mark.parametrize(
    "numerator, runs, bounds, message",
    [
        ("x", {"a": print, "b": print}, (1, 2, 0.0), "numerator 'x' is not one of the runs: a, b"),
        ("a", {"a": print}, (1, 2, 0.0), "two runs or more"),
        ("a", {"a": print, "b": print}, (3, 2, 0.0), "min_rounds <= max_rounds"),
        ("a", {"a": print, "b": print}, (0, 2, 0.0), "1 <= min_rounds"),
    ],
)
def test_interleaved_ratios_reject_bad_input(numerator, runs, bounds, message):
    with pytest.raises(ValueError, match=message):
        ratios.interleaved_ratios(runs, numerator, *bounds)


def ratio_reason(timing, precision, batch, device):
    cell = Cell("ratio", timing=timing, precision=precision, batch=batch)
    return skip_reason(cell, Machine(device), commit=False)


def test_ratio_cells_per_machine():
    cuda = [c for c in itertools.product(grid.RATIO_TIMINGS, grid.PRECISIONS, grid.RATIO_BATCHES)
            if ratio_reason(*c, "cuda") is None]  # fmt: skip
    assert len(cuda) == 8 and ("replay", "tf32", 64) in cuda and ("eager", "tf32", 16) not in cuda
    cpu = [c for c in itertools.product(grid.RATIO_TIMINGS, grid.PRECISIONS, grid.RATIO_BATCHES)
           if ratio_reason(*c, "cpu") is None]  # fmt: skip
    assert cpu == [("eager", "fp32", 1), ("eager", "fp32", 16)]
    assert "not measured on cpu" in ratio_reason("replay", "fp32", 16, "cpu")
    assert "at batches 16, 64 only" in ratio_reason("replay", "bf16", 1, "cuda")
    # every ratio's denominators run where the ratio does: the Dense model's cell, and the Floor at that batch
    for device in ("cpu", "cuda"):
        for _timing, precision, batch in cpu if device == "cpu" else cuda:
            assert runs(grid.FLOOR, batch, device) and runs("fused", batch, device)
            assert skip_reason(Cell("dense", None, grid.DENSE, batch, precision), Machine(device), False) is None


def test_step_ratios_of_eager_steps_are_positive_and_replay_needs_cuda():
    few = dict(min_rounds=2, max_rounds=2, max_seconds=0.0)
    eager = ("eager", "fp32", grid.RATIO_RUNS_AT[DEVICE]["eager", "fp32"][0])  # a cell this machine measures
    figures = ratios.measure([eager, ("replay", "tf32", 2)], rounds=few)
    assert set(figures[eager]) == {"dense", "floor"}
    assert all(value > 0 for value in figures[eager].values())
    assert figures[("replay", "tf32", 2)] == ratio_reason("replay", "tf32", 2, DEVICE)  # n/a: its reason
    if DEVICE != "cuda":
        with pytest.raises(ValueError, match="replay timing needs CUDA graphs"):
            ratios.step_ratios("replay", "fp32", 16, rounds=few)
    with pytest.raises(ValueError, match="valid choices: replay, eager"):
        ratios.step_ratios("graph", "fp32", 16, rounds=few)


def test_the_ratio_benchmark_reports_its_figures_and_n_a():
    from benchmarks.bench_ratios import Ratios

    figures = {("eager", "fp32", 16): {"dense": 2.0, "floor": 1.25}, ("replay", "fp32", 16): "not here"}
    benchmark = Ratios()
    benchmark.setup(figures, "eager", "fp32", 16)
    assert benchmark.track_fused_over_dense(figures, "eager", "fp32", 16) == 2.0
    assert benchmark.track_fused_over_floor(figures, "eager", "fp32", 16) == 1.25
    with pytest.raises(NotImplementedError, match="not here"):
        benchmark.setup(figures, "replay", "fp32", 16)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_replayed_ratios_on_cuda():
    figures = ratios.measure([("replay", "bf16", 16)], rounds=dict(min_rounds=3, max_rounds=3, max_seconds=0.0))
    assert figures[("replay", "bf16", 16)]["dense"] > 1 and figures[("replay", "bf16", 16)]["floor"] > 0
