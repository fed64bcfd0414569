"""What the regression gate compares by default (tools/run/gate.py)."""

import itertools
import re


def test_cuda_gate_compares_memory_and_replays_at_batch_8_and_above():
    """The CUDA gate's default selection, matched as asv matches it: against "name(param reprs)"."""
    from benchmarks.bench_estimators import Estimate
    from benchmarks.bench_training import Floor, ForwardBackward
    from tools.run.gate import DEFAULT_BENCH

    selected = {
        f"{cls.__name__}.{method}({', '.join(map(repr, params))})"
        for cls in (ForwardBackward, Floor, Estimate)
        for method in dir(cls)
        if method.startswith(("time_", "track_"))
        for params in itertools.product(*cls.params)
    }
    selected = {name for name in selected if any(re.search(regex, name) for regex in DEFAULT_BENCH["cuda"])}
    assert "ForwardBackward.time_backward('ste', 'bmm', 8)" in selected
    assert "Floor.time_forward('gumbel', 64)" in selected
    assert "ForwardBackward.track_peak_memory('ste', 'current', 1)" in selected
    assert "ForwardBackward.time_forward('ste', 'current', 1)" not in selected
    assert "ForwardBackward.time_backward('reinmax', 'vmap', 2)" not in selected
    assert not any(name.startswith("Estimate.") for name in selected)
