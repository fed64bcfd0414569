"""The report's live equivalence check: on this machine, every implementation the suite runs here against the
single-sample reference (``current``), max |logits - current| at batch 1 and 2, PASS at ``TOLERANCE``."""

from __future__ import annotations

from collections.abc import Callable

import torch

import estimators
from benchmarks.grid import BATCHES, SEED
from benchmarks.machine import DEVICE
from benchmarks.skips import runs
from benchmarks.workload import random_tokens
from estimators.reference import per_sample_logits

from .tables.common import NAMES, RULE

TOLERANCE = 1e-4


def verify(model, estimator: str, preset: str) -> list[str]:
    """Live equivalence check on this machine: every implementation against ``current`` (row by row)."""
    config = estimators.PRESETS[preset]
    lines, failed = [], False
    # What the suite runs on this device, against the single-sample reference.
    checked = [i for i in estimators.IMPLEMENTATIONS if i != "current" and any(runs(i, b, DEVICE) for b in BATCHES)]
    for batch in (1, 2):
        tokens = random_tokens(config, batch, seed=batch, device=DEVICE)
        with torch.no_grad():
            kwargs = dict(estimator=estimator, seed=SEED)
            want = per_sample_logits(model, tokens, **kwargs)
            lines.append(f"\nTesting with batch_size={batch}\n  Sample logits (first 5 values):")
            lines.append(f"    Current: {want[0, 0, :5].cpu()}")
            rows = []
            for implementation in checked:
                got = model(tokens, implementation=implementation, **kwargs)
                diff = (got - want).abs().max().item()
                failed |= not diff <= TOLERANCE
                verdict = "PASS" if diff <= TOLERANCE else "FAIL"
                rows.append(f"  Current vs {NAMES[implementation] + ':':<10} max_diff = {diff:.2e}  {verdict}")
            lines += ["\nForward pass output comparison:", *rows, f"\n  Tolerance: {TOLERANCE:.2e}"]
    if DEVICE == "cpu":
        lines.append("  (compiled is checked by the test suite on CPU: compiling here would take minutes)")
    lines += [
        "",
        RULE,
        "✗ SOME IMPLEMENTATIONS DIFFER" if failed else "✓ ALL IMPLEMENTATIONS PRODUCE EQUIVALENT RESULTS",
        RULE,
    ]
    return lines


def equivalence(preset: str) -> Callable[[str], list[str]]:
    """The report's equivalence section of an estimator (a heading, then ``verify``'s lines), for ``preset``.

    The model (``preset``, seed 0, on this machine's device) is built at the first call, not before, so that a
    report with nothing to show builds none."""
    model = None

    def section(estimator: str) -> list[str]:
        nonlocal model
        if model is None:
            model = estimators.build_model(preset, device=DEVICE, seed=0)
        heading = f"EQUIVALENCE VERIFICATION (estimator={estimator}, live on {DEVICE})"
        return ["", RULE, heading, RULE, *verify(model, estimator, preset)]

    return section
