"""Estimator quality, tracked across commits like cost (benchmarks/quality.py: the problems and the math).

Every figure is deterministic (fixed seeds, the counter-based noise), computed on the CPU on every
machine, and oriented so that a worse estimator reads as a regression: lower is better throughout. The
gate compares these with their own, tight factor (tools/run/gate.py), since an A/A run is identical.
"""

import itertools

from . import grid, quality, skips
from .machine import configure_process

configure_process()


def _figures(compute):
    """{(estimator, tau): compute(estimator, tau), or the reason it has none} for the whole grid."""
    figures = {}
    for estimator, tau in itertools.product(grid.ESTIMATORS, grid.QUALITY_TAUS):
        try:
            skips.skip(skips.Cell("estimator", estimator))
            figures[estimator, tau] = compute(estimator, tau)
        except NotImplementedError as missing:
            figures[estimator, tau] = str(missing)
    return figures


def _figure(figures, estimator, tau, key=None):
    figure = figures[estimator, tau]
    if isinstance(figure, str):
        raise NotImplementedError(figure)
    return figure if key is None else figure[key]


class _QualityBenchmark:
    params = [list(grid.ESTIMATORS), list(grid.QUALITY_TAUS)]
    param_names = ["estimator", "tau"]

    def setup(self, figures, estimator, tau):
        """n/a where the figure has none (an estimator this commit lacks): asv skips only from setup."""
        _figure(figures, estimator, tau)


class GradientFidelity(_QualityBenchmark):
    """Single-sample gradients of a 16-weight stochastic layer against its exact expected gradient."""

    version = "1"

    def setup_cache(self):
        return _figures(quality.gradient_fidelity)

    def track_one_minus_cosine(self, figures, estimator, tau):
        return _figure(figures, estimator, tau, "one_minus_cosine")

    def track_relative_bias(self, figures, estimator, tau):
        return _figure(figures, estimator, tau, "relative_bias")

    def track_relative_spread(self, figures, estimator, tau):
        return _figure(figures, estimator, tau, "relative_spread")

    track_one_minus_cosine.unit = track_relative_bias.unit = track_relative_spread.unit = "ratio"


class PolynomialProgramming(_QualityBenchmark):
    """Expected loss above the optimum after training theta in R^{128 x 2} with the estimator (Adam, 100 steps)."""

    version = "1"

    def setup_cache(self):
        return _figures(quality.polynomial_programming)

    def track_excess_loss(self, figures, estimator, tau):
        return _figure(figures, estimator, tau)

    track_excess_loss.unit = "loss"
