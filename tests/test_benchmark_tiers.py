"""The suite's tiers (grid.tier_skip_reason)."""

import itertools
import os
import subprocess
import sys

import pytest

from benchmarks import grid


def test_the_default_tier_keeps_reference_implementations_at_the_batches_that_characterise_them():
    for device, batches in (("cuda", (1, 16, 64)), ("cpu", (1, 16))):
        for implementation in ("loop", "einsum", "vmap"):
            for batch in grid.BATCHES:
                kept = grid.step_skip_reason("ste", implementation, batch, device, "default") is None
                assert kept == (batch in batches and grid.runs(implementation, batch, device)), (device, batch)
    # bmm keeps every batch on CUDA; on the CPU it is linear in the batch like the other materialising ones.
    assert all(grid.tier_skip_reason("bmm", batch, "cuda", "default") is None for batch in grid.BATCHES)
    assert (
        grid.tier_skip_reason("bmm", 8, "cpu", "default") and grid.tier_skip_reason("bmm", 16, "cpu", "default") is None
    )
    # fused, the Floor, current and compiled are never left out by the tier.
    for implementation, batch in itertools.product(("fused", grid.FLOOR, "current", "compiled"), grid.BATCHES):
        assert grid.tier_skip_reason(implementation, batch, "cpu", "default") is None
        assert grid.tier_skip_reason(implementation, batch, "cuda", "default") is None


def test_the_full_tier_runs_what_the_machine_runs_and_no_tier_changes_the_parameters():
    for combo in itertools.product(grid.ESTIMATORS, grid.IMPLEMENTATIONS, grid.BATCHES):
        for device in ("cpu", "cuda"):
            assert grid.step_skip_reason(*combo, device, "full") == grid.step_skip_reason(*combo, device)
        assert grid.step_skip_reason(*combo, "*", "default") == grid.step_skip_reason(*combo, "*", "full")
    default = sum(
        grid.step_skip_reason(*c, "cuda", "default") is None
        for c in itertools.product(grid.ESTIMATORS, grid.IMPLEMENTATIONS, grid.BATCHES)
    )
    assert default == 120 - 3 * 3 * 3  # three estimators x loop, einsum, vmap x batches 2, 8, 32


def test_an_unknown_tier_names_the_valid_choices():
    with pytest.raises(ValueError, match="default, full"):
        grid.tier_skip_reason("loop", 8, "cpu", "everything")


def test_the_tier_comes_from_the_environment_and_is_checked():
    code = "from benchmarks import machine; print(machine.TIER)"
    run = lambda tier: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "ESTIMATORS_BENCH_TIER": tier}
    )
    assert run("full").stdout.strip() == "full"
    bad = run("most")
    assert bad.returncode != 0 and "ESTIMATORS_BENCH_TIER='most'; valid choices: default, full" in bad.stderr


def test_the_default_tier_times_eager_reference_steps_in_fp32_only():
    cells = list(itertools.product(grid.EAGER_PRECISIONS, grid.EAGER_IMPLEMENTATIONS, grid.EAGER_BATCHES))

    def timed(tier):
        return [
            (precision, implementation, batch)
            for precision, implementation, batch in cells
            if not grid.eager_skip_reason(implementation, batch, "cuda")
            and not grid.eager_tier_skip_reason(precision, implementation, tier)
        ]

    full, default = timed("full"), timed("default")
    assert len(full) == 32 and len(default) == 25
    assert set(full) - set(default) == {
        ("bf16", implementation, batch)
        for implementation in ("loop", "einsum", "vmap", "current")
        for batch in grid.EAGER_BATCHES
        if grid.runs(implementation, batch, "cuda")
    }
    assert "fp32 in the default tier" in grid.eager_tier_skip_reason("bf16", "loop", "default")
    with pytest.raises(ValueError, match="valid choices: default, full"):
        grid.eager_tier_skip_reason("fp32", "loop", "most")


def test_setup_cache_measures_no_peak_outside_the_tier():
    """ForwardBackward.setup_cache (peak_memories with skips.requires_step) skips what the tier leaves out."""
    from benchmarks import machine
    from benchmarks.step import peak_memories

    if machine.TIER != "default":
        pytest.skip("ESTIMATORS_BENCH_TIER is not the default here")
    peaks = peak_memories([("ste", "loop", 8), ("no-such-estimator", "loop", 8)])
    assert "default tier" in peaks["ste", "loop", 8]
    assert "does not exist" in peaks["no-such-estimator", "loop", 8]  # what the commit lacks comes first
