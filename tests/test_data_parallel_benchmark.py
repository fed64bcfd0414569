"""The data-parallel benchmark's measurement (benchmarks/data_parallel.py), run on the CPU with gloo.

The figures are only meaningful on GPUs; this checks that ranks start, train,
and report one row per case and world, and that a machine without two GPUs
shows the benchmark as n/a.
"""

import math

import pytest

from benchmarks import data_parallel, grid


def test_measure_runs_every_case_on_every_world():
    cases = [("fused", "fp32", 2), (grid.DENSE, "bf16", 1), (grid.FLOOR, "fp32", 2)]
    rows = data_parallel.measure(cases, worlds=(1, 2), device="cpu", preset="small", warmup=1, steps=1, repeats=1)
    assert sorted((r["implementation"], r["precision"], r["local_batch"], r["world"]) for r in rows) == sorted(
        (*case, world) for case in cases for world in (1, 2)
    )
    for row in rows:
        assert row["step_ms"] > 0
        assert math.isclose(row["per_sample_ms"], row["step_ms"] / (row["local_batch"] * row["world"]))
        base = next(r for r in rows if r["world"] == 1 and r["implementation"] == row["implementation"])
        assert math.isclose(row["scaling_efficiency"], base["step_ms"] / row["step_ms"])


def test_a_failing_rank_fails_the_measurement():
    with pytest.raises(Exception):  # noqa: B017 - torchrun's exit status, whatever the rank raised
        data_parallel.measure([("no-such-implementation", "fp32", 1)], worlds=(1,), device="cpu", preset="small")


@pytest.mark.parametrize(("device", "gpus"), [("cpu", 0), ("cuda", 1)])
def test_fewer_than_two_gpus_is_na(device, gpus):
    assert "2 or more GPUs" in grid.data_parallel_skip_reason(device, gpus)
    assert grid.data_parallel_skip_reason("cuda", 2) is None
