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
from .machine import DEVICE


def requires_estimator(name: str) -> None:
    if name not in estimators.ESTIMATORS:
        raise NotImplementedError(f"estimator {name!r} does not exist at this commit")


def requires_implementation(name: str) -> None:
    if name == grid.FLOOR:
        if getattr(estimators, "FLOOR", None) != grid.FLOOR:
            raise NotImplementedError("the shared-mask floor does not exist at this commit")
    elif name not in estimators.IMPLEMENTATIONS:
        raise NotImplementedError(f"implementation {name!r} does not exist at this commit")


def requires_grid_cell(implementation: str, batch: int) -> None:
    reason = grid.skip_reason(implementation, batch, DEVICE)
    if reason is not None:
        raise NotImplementedError(reason)


def requires_step(estimator: str, implementation: str, batch: int) -> None:
    """Everything a training step of (estimator, implementation, batch) needs on this machine and commit."""
    requires_grid_cell(implementation, batch)
    requires_estimator(estimator)
    requires_implementation(implementation)


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
    """``requires_step``, for the pruned reduced-precision grid (``grid.reduced_precision_skip_reason``)."""
    reason = grid.reduced_precision_skip_reason(estimator, implementation, batch, DEVICE)
    if reason is not None:
        raise NotImplementedError(reason)
    requires_step(estimator, implementation, batch)


def requires_dense_step(estimator: str | None, implementation: str, batch: int, precision: str) -> None:
    """What the Dense model needs: only its cell of ``grid.DENSE_RUNS_AT`` (it uses no package code but the preset)."""
    reason = grid.dense_skip_reason(precision, batch, DEVICE)
    if reason is not None:
        raise NotImplementedError(reason)
