"""Skips: each raises NotImplementedError, which asv shows as n/a, for what a machine or a commit lacks.

A benchmark meets every commit of the history: a commit may not have an
estimator, an implementation or the floor yet, and a machine does not run
every cell of the grid (``grid.RUNS_AT``). Benchmarks call these in setup.
"""

from __future__ import annotations

import functools

import torch

import estimators

from . import grid
from .machine import DEVICE, TIER


def requires_estimator(name: str) -> None:
    if name not in estimators.ESTIMATORS:
        raise NotImplementedError(f"estimator {name!r} does not exist at this commit")


def requires_implementation(name: str) -> None:
    if name == grid.FLOOR:
        if getattr(estimators, "FLOOR", None) != grid.FLOOR:
            raise NotImplementedError("the shared-mask floor does not exist at this commit")
    elif name not in estimators.IMPLEMENTATIONS:
        raise NotImplementedError(f"implementation {name!r} does not exist at this commit")


def skip_if(reason: str | None) -> None:
    """Raise NotImplementedError(reason) (asv: n/a) unless ``reason`` is None."""
    if reason is not None:
        raise NotImplementedError(reason)


def requires_package_step(estimator: str, implementation: str) -> None:
    """What this commit's package needs for a step: the estimator, and the implementation unless it is Dense."""
    if implementation != grid.DENSE:
        requires_estimator(estimator)
        requires_implementation(implementation)


def requires_step(estimator: str, implementation: str, batch: int) -> None:
    """Everything a training step of (estimator, implementation, batch) needs on this machine, tier and commit.

    The tier's reason comes last: a cell this commit cannot run says so in any tier.
    """
    skip_if(grid.step_skip_reason(estimator, implementation, batch, DEVICE))
    requires_package_step(estimator, implementation)
    skip_if(grid.tier_skip_reason(implementation, batch, DEVICE, TIER))


def skip_if_out_of_memory(method):
    """A benchmark method whose CUDA out-of-memory error shows as n/a (asv's SkipNotImplemented)."""
    from asv_runner.benchmarks.mark import SkipNotImplemented

    @functools.wraps(method)
    def guarded(self, *params):
        try:
            return method(self, *params)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise SkipNotImplemented("out of memory") from None

    return guarded


def requires_reduced_precision_step(estimator: str, implementation: str, batch: int, precision: str) -> None:
    """``requires_step``, for the pruned reduced-precision grid (``grid.reduced_precision_skip_reason``,
    which includes ``grid.skip_reason``)."""
    skip_if(grid.reduced_precision_skip_reason(estimator, implementation, batch, DEVICE))
    requires_package_step(estimator, implementation)


def requires_dense_step(estimator: str | None, implementation: str, batch: int, precision: str) -> None:
    """What the Dense model needs: only its cell of ``grid.DENSE_RUNS_AT`` (it uses no package code but the preset)."""
    skip_if(grid.dense_skip_reason(precision, batch, DEVICE))


def requires_eager_step(estimator: str, implementation: str, batch: int, precision: str) -> None:
    """An eager step's cell of the grid (``grid.eager_skip_reason``), this commit's package, and the tier
    (``grid.eager_tier_skip_reason``)."""
    skip_if(grid.eager_skip_reason(implementation, batch, DEVICE))
    requires_package_step(estimator, implementation)
    skip_if(grid.eager_tier_skip_reason(precision, implementation, TIER))


def requires_width_step(estimator: str, implementation: str, batch: int, precision: str, width: int) -> None:
    """A width benchmark's step: CUDA, and this commit's package."""
    skip_if(grid.width_skip_reason(DEVICE, implementation, batch))
    requires_package_step(estimator, implementation)


def requires_ratio(timing: str, precision: str, batch: int) -> None:
    """A ratio cell of this machine (``grid.ratio_skip_reason``) and what its three steps need of this commit:
    fused and the Floor (the Dense model needs no package code)."""
    skip_if(grid.ratio_skip_reason(timing, precision, batch, DEVICE))
    requires_package_step("ste", "fused")
    requires_package_step("ste", grid.FLOOR)
