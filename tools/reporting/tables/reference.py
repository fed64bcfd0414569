"""The reference comparison: this project's figures next to the reference run's (docs/reference-run.txt)."""

from __future__ import annotations

from benchmarks.grid import ESTIMATORS, FLOOR, IMPLEMENTATIONS

from ..reference_run import parse_reference_run
from .common import NAMES, mib, per_sample_speedup, require_training, step, total_ms


def reference_comparison(measurements, machine: str, reference_path: str) -> str:
    """This project's figures next to the reference run's, at the batches it ran.

    Implementations the reference did not have (fused, compiled, the Floor) get
    rows of their own, with "-" for the reference's figures. NoResults for a
    missing or malformed reference file; EmptyReport where the results hold no
    training step.
    """
    reference = parse_reference_run(reference_path)
    require_training(measurements, machine)
    out = [
        f"Reference run ({reference_path}) against machine `{machine}`, commit `{measurements.commit[:8]}`. "
        "Times in ms (reference: mean of its runs; ours: asv median), memory in MiB (reference: MB as printed). "
        'Per-sample speedup is against current at batch 1 of the same run; "-": not in that run.',
        "",
        "| estimator | implementation | batch | forward ref / ours | backward ref / ours | total ref / ours "
        "| memory ref / ours | per-sample speedup ref / ours |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    batches = sorted({batch for _, _, batch in reference})
    for estimator in ESTIMATORS:
        ours_base = step(measurements, estimator, "current", 1)
        ref_base = reference.get((estimator, "current", 1))
        for batch in batches:
            for implementation in (*IMPLEMENTATIONS, FLOOR):
                ref = reference.get((estimator, implementation, batch))
                ours = step(measurements, estimator, implementation, batch)
                if ref is None and ours is None:
                    continue
                theirs = (
                    ("-",) * 5
                    if ref is None
                    else (
                        f"{ref['forward']:.2f}",
                        f"{ref['backward']:.2f}",
                        f"{ref['total']:.2f}",
                        f"{ref['memory']:.1f}",
                        per_sample_speedup(ref_base["total"], batch, ref["total"]) if ref_base else "n/a",
                    )
                )
                mine = (
                    ("n/a",) * 5
                    if ours is None
                    else (
                        f"{ours[0].median * 1e3:.2f}",
                        f"{ours[1].median * 1e3:.2f}",
                        f"{total_ms(ours):.2f}",
                        mib(ours[2]),
                        per_sample_speedup(total_ms(ours_base), batch, total_ms(ours)) if ours_base else "n/a",
                    )
                )
                cells = " | ".join(f"{a} / {b}" for a, b in zip(theirs, mine, strict=True))
                out.append(
                    f"| {estimator} | {NAMES[implementation].lower() if implementation == FLOOR else implementation} "
                    f"| {batch} | {cells} |"
                )
    return "\n".join(out)
