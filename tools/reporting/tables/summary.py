"""The text report, laid out like the reference run (docs/reference-run.txt): per estimator, each
implementation's step per batch, then the speedups against the batch-1 baseline and the Floor."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.grid import BATCHES, ESTIMATORS, FLOOR, IMPLEMENTATIONS

from .common import NAMES, RULE, mib, per_sample_speedup, require_training, step, total_ms


def text_report(measurements, machine: str, preset: str, check: Callable[[str], list[str]] | None = None) -> str:
    """The reference run's layout; EmptyReport (before any ``check``) where there is no training step.

    ``check``, where given, makes an estimator's live equivalence section (``live_check.equivalence``), printed
    above its figures."""
    require_training(measurements, machine)
    out = [
        f"Results: machine {machine}, preset {preset}, commit {measurements.commit[:8]}",
        "Times: asv medians ± half the interquartile range; memory: peak of one training step.",
    ]
    for estimator in ESTIMATORS:
        out += ["", RULE, f"ESTIMATOR: {estimator.upper()}", RULE]
        if check is not None:
            out += check(estimator)
        out += ["", RULE, "BENCHMARK RESULTS", RULE]
        if not any(step(measurements, estimator, i, b) for i in (*IMPLEMENTATIONS, FLOOR) for b in BATCHES):
            out += ["", f"(no training step of {estimator} at this commit)"]
        for batch in BATCHES:
            entries = [(i, step(measurements, estimator, i, batch)) for i in (*IMPLEMENTATIONS, FLOOR)]
            entries = [(i, e) for i, e in entries if e is not None]
            if not entries:
                continue
            out += ["", f"Batch Size: {batch}"]
            for number, (implementation, (forward, backward, memory)) in enumerate(entries, 1):
                memory_text = f"{mib(memory, 2)} MiB" if memory else "n/a"
                out += [
                    f"\n{number}. {NAMES[implementation]} (batch_size={batch})...",
                    f"   Forward: {forward.median * 1e3:.2f} ± {(forward.half_iqr or 0) * 1e3:.2f} ms",
                    f"   Backward: {backward.median * 1e3:.2f} ± {(backward.half_iqr or 0) * 1e3:.2f} ms",
                    f"   Total: {total_ms((forward, backward)):.2f} ms",
                    f"   Memory: {memory_text}",
                ]
        out += summary(measurements, estimator)
    return "\n".join(out)


def summary(measurements, estimator: str) -> list[str]:
    """The summary comparison of ``estimator``: each step against the batch-1 baseline and the Floor."""
    out = ["", RULE, f"SUMMARY COMPARISON: {estimator.upper()}", RULE]
    # The per-sample baseline: current at batch 1, or (for estimators benchmarked on fewer implementations,
    # grid.ESTIMATOR_IMPLEMENTATIONS) the first implementation with a batch-1 result.
    candidates = ["current", *IMPLEMENTATIONS, FLOOR]
    baseline = next((i for i in candidates if step(measurements, estimator, i, 1) is not None), None)
    if baseline is None:
        return out + ["(no batch-1 result of any implementation: nothing to compare against)"]
    base = total_ms(step(measurements, estimator, baseline, 1))
    out.append(f"\nBaseline ({NAMES[baseline]}, batch=1): {base:.2f} ms")
    for batch in BATCHES:
        floor = step(measurements, estimator, FLOOR, batch)
        rows = []
        for implementation in IMPLEMENTATIONS:
            entry = step(measurements, estimator, implementation, batch)
            if entry is None:
                continue
            total = total_ms(entry)
            speedup = f"{'speedup' if batch == 1 else 'per-sample speedup'}: {per_sample_speedup(base, batch, total)}"
            vs_floor = f", {total / total_ms(floor):.2f}x Floor" if floor else ""
            rows.append(f"  {NAMES[implementation]:<20}: {total:6.2f} ms  ({speedup}{vs_floor})")
        if rows:
            floor_note = f" (Floor: {total_ms(floor):.2f} ms)" if floor else ""
            out += [f"\nBatch size {batch} comparisons{floor_note}:", *rows]
    return out
