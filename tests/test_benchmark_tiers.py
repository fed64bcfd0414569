"""The suite's tiers (the tier's rules of benchmarks/skips.py)."""

import itertools
import os
import subprocess
import sys

import pytest

from benchmarks import grid
from benchmarks.skips import Cell, Machine, runs, skip_reason


def step_reason(estimator, implementation, batch, device, tier="full"):
    """What the machine's rules say of a bench_training step on ``device`` in ``tier``."""
    return skip_reason(Cell("step", estimator, implementation, batch), Machine(device, tier), commit=False)


def test_the_default_tier_keeps_reference_implementations_at_the_batches_that_characterise_them():
    for device, batches in (("cuda", (1, 16, 64)), ("cpu", (1,))):
        for implementation in ("loop", "einsum", "vmap"):
            for batch in grid.BATCHES:
                kept = step_reason("ste", implementation, batch, device, "default") is None
                assert kept == (batch in batches and runs(implementation, batch, device)), (device, batch)
    # bmm keeps every batch on CUDA; on the CPU it is linear in the batch like the other materialising ones.
    assert all(step_reason("ste", "bmm", batch, "cuda", "default") is None for batch in grid.BATCHES)
    assert "default tier" in step_reason("ste", "bmm", 8, "cpu", "default")
    assert step_reason("ste", "bmm", 16, "cpu", "default") is None
    # gumbel_rao's bmm runs at batch 1 only on the CPU: its own row, before bmm's
    assert "bmm with gumbel_rao runs at batches 1 " in step_reason("gumbel_rao", "bmm", 16, "cpu", "default")
    assert step_reason("gumbel_rao", "bmm", 1, "cpu", "default") is None
    assert step_reason("gumbel_rao", "bmm", 16, "cuda", "default") is None
    # fused, the Floor, current and compiled are never left out by the tier.
    for implementation, batch in itertools.product(("fused", grid.FLOOR, "current", "compiled"), grid.BATCHES):
        for device in ("cpu", "cuda"):
            assert step_reason("ste", implementation, batch, device, "default") == step_reason(
                "ste", implementation, batch, device, "full"
            )


def test_the_full_tier_runs_what_the_machine_runs_and_no_tier_changes_the_parameters():
    for combo in itertools.product(grid.ESTIMATORS, grid.IMPLEMENTATIONS, grid.BATCHES):
        assert step_reason(*combo, "*", "default") == step_reason(*combo, "*", "full")
    default = sum(
        step_reason(*c, "cuda", "default") is None
        for c in itertools.product(grid.ESTIMATORS, grid.IMPLEMENTATIONS, grid.BATCHES)
    )
    assert default == 120 - 3 * 3 * 3  # three estimators x loop, einsum, vmap x batches 2, 8, 32


def test_an_unknown_tier_or_device_names_the_valid_choices():
    with pytest.raises(ValueError, match="default, full"):
        Machine("cpu", "everything")
    with pytest.raises(ValueError, match="cpu, cuda"):
        Machine("tpu")


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
            if not skip_reason(Cell("eager", "ste", implementation, batch, precision), Machine("cuda", tier), False)
        ]

    full, default = timed("full"), timed("default")
    assert len(full) == 32 and len(default) == 25
    assert set(full) - set(default) == {
        ("bf16", implementation, batch)
        for implementation in ("loop", "einsum", "vmap", "current")
        for batch in grid.EAGER_BATCHES
        if runs(implementation, batch, "cuda")
    }
    assert "fp32 in the default tier" in skip_reason(Cell("eager", "ste", "loop", 1, "bf16"), Machine("cuda"))


def test_setup_cache_measures_no_peak_outside_the_tier():
    """ForwardBackward.setup_cache (peak_memories) skips what the tier leaves out."""
    from benchmarks import machine
    from benchmarks.step import peak_memories

    if machine.TIER != "default":
        pytest.skip("ESTIMATORS_BENCH_TIER is not the default here")
    cell, missing = Cell("step", "ste", "loop", 8), Cell("step", "no-such-estimator", "loop", 8)
    peaks = peak_memories([cell, missing])
    assert "default tier" in peaks[cell]
    assert "does not exist" in peaks[missing]  # what the commit lacks comes first
