"""The data-parallel benchmark's measurement (benchmarks/data_parallel.py), run on the CPU with gloo.

The figures are only meaningful on GPUs; this checks that ranks start, train,
and report one row per case and world, and that a machine without two GPUs
shows the benchmark as n/a.
"""

import itertools
import math
import subprocess

import pytest

from benchmarks import data_parallel, grid
from benchmarks.skips import Cell, Machine, skip_reason


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
    with pytest.raises(subprocess.CalledProcessError):  # torchrun's exit status, whatever the rank raised
        data_parallel.measure([("no-such-implementation", "fp32", 1)], worlds=(1,), device="cpu", preset="small")


@pytest.mark.parametrize(("device", "gpus"), [("cpu", 0), ("cuda", 1)])
def test_fewer_than_two_gpus_is_na(device, gpus):
    cell = Cell("data_parallel", "ste", "fused", 64, "fp32")
    assert "2 or more GPUs" in skip_reason(cell, Machine(device, gpus=gpus), commit=False)
    assert skip_reason(cell, Machine("cuda", gpus=2), commit=False) is None


def test_report_reads_steps_and_efficiency_from_the_tracks():
    from tools.reporting.results import Measurement
    from tools.reporting.tables.common import EmptyReport
    from tools.reporting.tables.data_parallel import data_parallel_report

    class OneCell:  # Measurements' API: fused fp32 at 64 rows per GPU only
        commit = "0" * 40
        figures = {
            "DataParallel.track_time_per_sample_1_gpu": 0.25,  # 16 ms a step of 64 rows
            "DataParallel.track_time_per_sample_2_gpus": 0.125 * 1.25,  # 20 ms a step of 2 x 64 rows
            "DataParallel.track_inverse_scaling_efficiency": 1.25,
        }

        def get(self, name, *params):
            return Measurement(self.figures[name]) if name in self.figures and params == ("fp32", "fused", 64) else None

    table = data_parallel_report(OneCell(), "two-gpus")
    assert table.splitlines()[-1] == "| fp32 | fused | 64 | 16.00 | 20.00 | 0.156 | 0.800 |"
    with pytest.raises(EmptyReport, match="no data-parallel results"):
        data_parallel_report(type("Empty", (OneCell,), {"figures": {}})(), "cpu")


def test_the_benchmark_is_na_without_figures_and_for_cases_out_of_memory():
    from benchmarks import bench_data_parallel
    from benchmarks.machine import DEVICE, GPUS

    benchmark = bench_data_parallel.DataParallel()
    with pytest.raises(NotImplementedError, match="2 or more GPUs"):
        benchmark.setup(skip_reason(benchmark.cell("fp32", "fused", 64), Machine("cpu")), "fp32", "fused", 64)
    out_of_memory = {("fp32", "bmm", 64): {1: {"step_ms": 1.0}, 2: {"error": "out of memory"}}}
    with pytest.raises(NotImplementedError, match="out of memory"):
        benchmark.setup(out_of_memory, "fp32", "bmm", 64)
    if skip_reason(benchmark.cell("fp32", "fused", 64), Machine(DEVICE, gpus=GPUS)):  # asv skips the whole grid
        assert len(bench_data_parallel.DataParallel.skip_params) == len(list(itertools.product(*benchmark.params)))
