"""The speed x quality table: per estimator and temperature, the fused step's cost beside its quality figures."""

from __future__ import annotations

from benchmarks.grid import ESTIMATORS, FLOOR, QUALITY_TAUS

from .common import EmptyReport, step, total_ms

QUALITY_FIGURES = (
    ("GradientFidelity.track_one_minus_cosine", "1 - cos"),
    ("GradientFidelity.track_relative_bias", "bias"),
    ("GradientFidelity.track_relative_spread", "spread"),
    ("PolynomialProgramming.track_excess_loss", "excess loss"),
)


def quality_report(measurements, machine: str, batch: int = 16) -> str:
    """Per estimator and temperature: the fused step's cost (ms, and / Floor) beside the quality figures.

    EmptyReport where there is no quality figure; a note where there is no cost."""
    out = [
        f"Machine `{machine}`, commit `{measurements.commit[:8]}`. Cost: fused fwd+bwd at batch {batch} (tau 1) "
        "in ms and over the Floor's; quality (bench_quality, lower is better): 1 - mean cosine to the exact "
        "gradient, relative bias, relative spread, and polynomial programming's excess loss.",
        "",
        "| estimator | tau | fused ms | fused / Floor | " + " | ".join(label for _, label in QUALITY_FIGURES) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(QUALITY_FIGURES),
    ]
    any_quality = any_cost = False
    for estimator in ESTIMATORS:
        fused, floor = step(measurements, estimator, "fused", batch), step(measurements, estimator, FLOOR, batch)
        any_cost |= fused is not None
        cost = [f"{total_ms(fused):.2f}" if fused else "n/a"]
        cost.append(f"{total_ms(fused) / total_ms(floor):.2f}" if fused and floor else "n/a")
        for tau in QUALITY_TAUS:
            figures = [measurements.get(name, estimator, tau) for name, _ in QUALITY_FIGURES]
            any_quality |= any(figures)
            cells = [f"{figure.median:.4f}" if figure else "n/a" for figure in figures]
            out.append(f"| {estimator} | {tau} | " + " | ".join(cost + cells) + " |")
    if not any_quality:
        raise EmptyReport(
            f"machine {machine}, commit {measurements.commit[:8]}: no quality results (bench_quality)",
            ("bench_quality.",),
        )
    if not any_cost:
        out += ["", f"Cost n/a: no fused step at batch {batch} (bench_training) at this commit."]
    return "\n".join(out)
