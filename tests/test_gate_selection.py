"""What the regression gate compares by default (tools/run/gate.py)."""

import itertools
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


def test_cuda_gate_compares_memory_and_replays_at_batch_8_and_above():
    """The CUDA gate's default selection, matched as asv matches it: against "name(param reprs)"."""
    from benchmarks.bench_estimators import Estimate
    from benchmarks.bench_training import Floor, ForwardBackward
    from tools.run.gate import DEFAULT_BENCH

    selected = _selected(_names(ForwardBackward, Floor, Estimate), DEFAULT_BENCH["cuda"])
    assert "bench_training.ForwardBackward.time_backward('ste', 'bmm', 8)" in selected
    assert "bench_training.Floor.time_forward('gumbel', 64)" in selected
    assert "bench_training.ForwardBackward.track_peak_memory('ste', 'current', 1)" in selected
    assert "bench_training.ForwardBackward.time_forward('ste', 'current', 1)" not in selected
    assert "bench_training.ForwardBackward.time_backward('reinmax', 'vmap', 2)" not in selected
    assert not any(".Estimate." in name for name in selected)


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_quality_has_its_own_pass(device):
    """The timing pass never selects a quality benchmark; the quality pass selects every one and nothing else."""
    from benchmarks.bench_quality import GradientFidelity, PolynomialProgramming
    from benchmarks.bench_training import Floor
    from tools.run.gate import DEFAULT_BENCH, QUALITY

    quality = _names(GradientFidelity, PolynomialProgramming)
    assert "bench_quality.GradientFidelity.track_relative_bias('reinmax', 1.0)" in quality
    assert not _selected(quality, DEFAULT_BENCH[device])
    assert _selected(quality | _names(Floor), [QUALITY]) == quality


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_default_gate_leaves_out_data_parallel(device):
    """The data-parallel figures are eager wall times of several processes: compared only when selected."""
    from benchmarks.bench_data_parallel import DataParallel
    from benchmarks.bench_training import Floor
    from tools.run.gate import DEFAULT_BENCH

    data_parallel = _names(DataParallel)
    assert "bench_data_parallel.DataParallel.track_inverse_scaling_efficiency('fp32', 'fused', 64)" in data_parallel
    assert not _selected(data_parallel, DEFAULT_BENCH[device])
    assert _selected(_names(Floor), DEFAULT_BENCH[device])
