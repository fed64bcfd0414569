"""What the regression gate compares by default, and how it judges and reports (tools/run/gate.py)."""

import itertools
import math
import re

import pytest


def _names(*classes):
    """Every parameter combination of ``classes``' benchmarks, as asv matches --bench: "module.Class.method(params)"."""
    return {
        f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}.{method}({', '.join(map(repr, params))})"
        for cls in classes
        for method in dir(cls)
        if method.startswith(("time_", "track_"))
        for params in itertools.product(*cls.params)
    }


def _selected(names, regexes):
    return {name for name in names if any(re.search(regex, name) for regex in regexes)}


def _default(device):
    from tools.run.gate import DEFAULT_SELECTION

    return [regex for regexes in DEFAULT_SELECTION[device].values() for regex in regexes]


def test_cuda_gate_compares_memory_and_replays_at_batch_8_and_above():
    """The CUDA gate's default selection, matched as asv matches it: against "name(param reprs)"."""
    from benchmarks.bench_estimators import Estimate
    from benchmarks.bench_training import Floor, ForwardBackward

    selected = _selected(_names(ForwardBackward, Floor, Estimate), _default("cuda"))
    assert "bench_training.ForwardBackward.time_backward('ste', 'bmm', 8)" in selected
    assert "bench_training.Floor.time_forward('gumbel', 64)" in selected
    assert "bench_training.ForwardBackward.track_peak_memory('ste', 'current', 1)" in selected
    assert "bench_training.ForwardBackward.time_forward('ste', 'current', 1)" not in selected
    assert "bench_training.ForwardBackward.time_backward('reinmax', 'vmap', 2)" not in selected
    assert not any(".Estimate." in name for name in selected)


def test_cuda_gate_leaves_eager_wall_times_out():
    """EagerStep's eager steps moved up to 1.72x between runs of one package: never judged at 1.05."""
    from benchmarks.bench_eager import EagerStep

    assert not _selected(_names(EagerStep), _default("cuda"))


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_quality_has_its_own_pass(device):
    """The timing pass never selects a quality benchmark; the quality pass selects every one and nothing else."""
    from benchmarks.bench_quality import GradientFidelity, PolynomialProgramming
    from benchmarks.bench_training import Floor
    from tools.run.gate import DEFAULT_SELECTION, QUALITY

    quality = _names(GradientFidelity, PolynomialProgramming)
    assert "bench_quality.GradientFidelity.track_relative_bias('reinmax', 1.0)" in quality
    assert not _selected(quality, DEFAULT_SELECTION[device]["timing"] + DEFAULT_SELECTION[device]["memory"])
    assert _selected(quality | _names(Floor), [QUALITY]) == quality


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_default_gate_leaves_out_data_parallel(device):
    """The data-parallel figures are eager wall times of several processes: compared only when selected."""
    from benchmarks.bench_data_parallel import DataParallel
    from benchmarks.bench_training import Floor

    data_parallel = _names(DataParallel)
    assert "bench_data_parallel.DataParallel.track_inverse_scaling_efficiency('fp32', 'fused', 64)" in data_parallel
    assert not _selected(data_parallel, _default(device))
    assert _selected(_names(Floor), _default(device))


def test_cpu_gate_compares_backwards_at_batch_8_the_estimate_backward_and_some_memory_at_batch_8():
    """The CPU default leaves out what moved beyond 1.5x between runs of one package: the forwards. Every
    selected training series is one the default tier measures on the CPU (bmm's batch there is 16)."""
    from benchmarks import grid
    from benchmarks.bench_estimators import Estimate
    from benchmarks.bench_training import Floor, ForwardBackward
    from benchmarks.skips import Cell, Machine, skip_reason

    selected = _selected(_names(ForwardBackward, Floor, Estimate), _default("cpu"))
    assert "bench_training.ForwardBackward.time_backward('ste', 'bmm', 16)" in selected
    assert "bench_training.ForwardBackward.time_backward('ste', 'fused', 8)" in selected
    assert "bench_training.Floor.time_backward('gumbel', 8)" in selected
    assert "bench_estimators.Estimate.time_backward('reinmax')" in selected
    assert "bench_training.ForwardBackward.track_peak_memory('ste', 'fused', 8)" in selected
    assert "bench_training.ForwardBackward.track_peak_memory('ste', 'bmm', 16)" in selected
    assert not any(".time_forward(" in name for name in selected)
    assert "bench_training.ForwardBackward.time_backward('ste', 'fused', 16)" not in selected
    assert "bench_training.ForwardBackward.track_peak_memory('ste', 'fused', 16)" not in selected
    assert "bench_training.ForwardBackward.track_peak_memory('ste', 'loop', 8)" not in selected
    assert "bench_training.Floor.track_peak_memory('gst', 8)" in selected
    for name in selected:
        if name.startswith("bench_training.ForwardBackward."):
            estimator, implementation, batch = (v.strip(" '") for v in name.split("(", 1)[1][:-1].split(","))
            cell = Cell("step", estimator, implementation, int(batch))
            reason = skip_reason(cell, Machine("cpu", grid.DEFAULT_TIER), commit=False)
            assert reason is None, f"{name} is selected but the default tier does not measure it: {reason}"


def test_series_kinds():
    from tools.run.gate import kind

    assert kind("bench_quality.GradientFidelity.track_relative_bias('reinmax', 1.0)") == "quality"
    assert kind("bench_training.Floor.track_peak_memory('ste', 8)") == "memory"
    assert kind("bench_training.Floor.time_backward('ste', 8)") == "timing"
    assert kind("bench_data_parallel.DataParallel.track_time_per_sample_1_gpu('fp32', 'fused', 16)") == "timing"


def test_regressions_page_thresholds_match_the_gate():
    """asv.conf.json's thresholds for deterministic series are the gate's factors; every one parses as asv's."""
    from asv.util import load_json

    from tools.run.asv_project import ROOT
    from tools.run.gate import MEMORY_FACTOR, QUALITY_FACTOR

    config = load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    thresholds = config["regressions_thresholds"]

    def threshold(series):  # asv 0.6.6 (plugins/regressions.py): the largest of the matches, else 0.05
        return max((float(t) for regex, t in thresholds.items() if re.match(regex, series + "@main")), default=0.05)

    assert threshold("bench_training.Floor.track_peak_memory('ste', 1)") == pytest.approx(MEMORY_FACTOR - 1)
    assert threshold("bench_quality.GradientFidelity.track_relative_bias('ste', 1.0)") == pytest.approx(
        QUALITY_FACTOR - 1
    )
    assert threshold("bench_training.Floor.time_backward('ste', 16)") == 0.05
    assert threshold("bench_training.Floor.time_backward('ste', 2)") == 0.2
    assert threshold("bench_estimators.Estimate.time_backward('ste')") > 0.6
    assert set(config["regressions_first_commits"]) == {".*"}


def _series(verdict_kind, base, head, samples=(1.0, 1.1), factor=1.5):
    from tools.run.gate import Measurement, Series, judge

    stats = {"ci_99_a": base * 0.9, "ci_99_b": base * 1.1, "repeat": len(samples)}
    name = {"timing": "bench_training.Floor.time_backward('ste', 8)", "quality": "bench_quality.X.track_y('ste')"}
    series = Series(
        name[verdict_kind],
        name[verdict_kind].split("(")[0],
        {"estimator": "'ste'", "batch": "8"},
        "seconds",
        Measurement(base, stats, [base * s for s in samples]),
        Measurement(
            head,
            None if head is None else {**stats, "ci_99_a": head * 0.9, "ci_99_b": head * 1.1},
            None if head is None else [head * s for s in samples],
        ),
        factor,
    )
    series.verdict = judge(series)
    return series


def test_verdict_names_the_failed_pass_and_its_series_and_exits_by_outcome():
    from tools.run.gate import FAILED, PASSED, REGRESSION, verdict_line

    passes = [("timing", 1.5, 2), ("quality", 1.02, 1)]
    slow, same, failed = _series("timing", 0.1, 0.3), _series("quality", 1.0, 1.0), _series("timing", 0.1, None)
    assert (slow.verdict, same.verdict, failed.verdict) == ("regression", "", "failed")
    status, line = verdict_line([slow, same], passes, "a" * 40, "b" * 40, 0)
    assert status == REGRESSION
    assert line == f"gate FAILED: timing regression (factor 1.5) in {slow.name} (aaaaaaaa -> bbbbbbbb)"
    status, line = verdict_line([slow, failed], passes, "a" * 40, "b" * 40, 2)
    assert status == FAILED and line.startswith("gate FAILED: timing regression") and "failed to run: " in line
    status, line = verdict_line([same], passes, "a" * 40, "b" * 40, 0)
    assert status == PASSED and line.startswith("gate passed: 1 series within their factors (timing 1.5, quality 1.02")
    assert verdict_line([], passes, "a" * 40, "b" * 40, 1)[0] == FAILED


def test_markdown_shows_each_flagged_series_with_its_evidence_and_graph():
    from tools.run.gate import markdown

    slow = _series("timing", 0.1, 0.3)
    text = markdown(
        [slow, _series("quality", 1.0, 1.0)],
        [("timing", 1.5, 1)],
        "cpu-2core-avx2",
        "a" * 40,
        "b" * 40,
        "gate FAILED: ...",
    )
    row = next(line for line in text.splitlines() if line.startswith("| timing |"))
    assert "| 3.00 | 3.00 |" in row and "99% CI" in row
    assert (
        "`html/index.html#bench_training.Floor.time_backward?machine=cpu-2core-avx2&p-estimator='ste'&p-batch=8`" in row
    )
    assert "bench_quality" not in text
    assert text.endswith("gate FAILED: ...")


def test_factor_must_exceed_one():
    import argparse

    from tools.arguments import factor

    assert factor("1.05") == 1.05
    for text in ("abc", "1", "0.5", "inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="> 1"):
            factor(text)


def test_deterministic_passes_run_once_and_timings_in_interleaved_rounds():
    import argparse

    from tools.run.gate import DEFAULT_SELECTION, QUALITY, runs

    args = argparse.Namespace(bench=[], rounds=3)
    cpu = DEFAULT_SELECTION["cpu"]
    assert runs(cpu, args) == [(sorted(cpu["memory"] + cpu["quality"]), 1), (cpu["timing"], 3)]
    assert runs({"quality": [QUALITY]}, args) == [([QUALITY], 1)]
    bench = argparse.Namespace(bench=["Estimate"], rounds=2)
    assert runs({"timing": ["Estimate"], "memory": ["Estimate"], "quality": ["Estimate"]}, bench) == [(["Estimate"], 2)]


def test_a_timing_is_flagged_only_if_its_fastest_sample_moved_too(monkeypatch):
    """On the CPU load only adds time: a slow round moves the median, not the fastest sample
    (tools.run.gate.fastest_ratio)."""
    from tools.run import gate
    from tools.run.gate import Measurement, Series, judge

    monkeypatch.setattr(gate, "DEVICE", "cpu")

    base_samples = [0.10, 0.101, 0.099, 0.102, 0.10, 0.098, 0.101, 0.10, 0.099, 0.10] * 2
    # As in an A/A under load on the 2-core CPU: most of HEAD's samples slow, a few as fast as BASE's.
    loaded = [0.19, 0.18, 0.20, 0.21, 0.17, 0.19, 0.18, 0.20] * 2 + [0.101, 0.10, 0.099, 0.102]
    slower = [2 * sample for sample in base_samples]

    def verdict(name, head_samples):
        def measure(samples):
            ordered = sorted(samples)
            stats = {"ci_99_a": ordered[1], "ci_99_b": ordered[-2], "repeat": len(samples)}
            return Measurement(ordered[len(ordered) // 2], stats, samples)

        series = Series(name, name.split("(")[0], {}, "seconds", measure(base_samples), measure(head_samples), 1.5)
        return judge(series)

    timing, memory = "bench_training.Floor.time_backward('ste', 8)", "bench_training.Floor.track_peak_memory('ste', 8)"
    assert verdict(timing, slower) == "regression"
    assert verdict(timing, loaded) == ""
    assert verdict(memory, loaded) == "regression"  # asv's rule flags it; deterministic kinds keep that rule alone
    # CUDA-graph replays keep asv's rule alone: a slowdown of some calls is a regression there.
    monkeypatch.setattr(gate, "DEVICE", "cuda")
    assert verdict(timing, loaded) == "regression"


def test_a_series_missing_or_n_a_on_one_commit_only_fails():
    """Both commits run one suite: a figure on one side only means the other was cut short, ran out of
    memory or raised a skip, and must not pass as unchanged."""
    from tools.run.gate import Measurement, Series, judge

    number, nan = Measurement(1.0, None, None), Measurement(math.nan, None, None)

    def verdict(base, head):
        name = "bench_training.Floor.track_peak_memory('ste', 8)"
        return judge(Series(name, name.split("(")[0], {}, "bytes", base, head, 1.01))

    assert verdict(number, None) == verdict(None, number) == "failed"
    assert verdict(number, nan) == verdict(nan, number) == "failed"
    assert verdict(nan, nan) == verdict(None, None) == ""


def test_asv_exiting_abnormally_fails_the_gate_even_where_every_series_passed():
    from tools.run.gate import FAILED, PASSED, verdict_line

    series = [_series("timing", 1.0, 1.0)]
    passes = [("timing", 1.5, 1)]
    assert verdict_line(series, passes, "a" * 40, "b" * 40, 0)[0] == PASSED
    assert verdict_line(series, passes, "a" * 40, "b" * 40, 2)[0] == PASSED  # asv's own "a benchmark failed"
    status, line = verdict_line(series, passes, "a" * 40, "b" * 40, -9)
    assert status == FAILED and "asv exited -9" in line
