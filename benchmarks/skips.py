"""The suite's skip rules: one table (``RULES``) and ``skip_reason(cell)``, which reads it; asv shows a skip as n/a.

A benchmark meets every commit of the history and every machine: a commit
may not have an estimator, an implementation or the floor yet, and a machine
does not run every cell of the grid (``grid.RUNS_AT`` and the other tables of
benchmarks/grid.py). Every benchmark class names its parameter combination as
a ``Cell`` and asks ``skip_reason``: its ``skip_params`` hold the cells the
machine's rules skip (asv skips them before setup), and its setup raises
NotImplementedError with the first reason of every rule (``skip``), asv's
only other way to skip.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable
from typing import NamedTuple

import torch

import estimators

from . import grid
from .environment import DEVICE, GPUS, TIER

# The kinds of cell, one per benchmark family (the classes that run the same kind of step).
KINDS = (
    "step",  # bench_training: the package's steps (and the Floor's) in fp32
    "reduced",  # bench_precision: the same in bf16 and TF32
    "dense",  # bench_dense: the plain model
    "eager",  # bench_eager: eager steps of ste
    "width",  # bench_width: ste at other widths
    "ratio",  # bench_ratios: ste's fused step over Dense's and the Floor's
    "data_parallel",  # bench_data_parallel: eager steps on one and several GPUs
    "estimator",  # bench_estimators and bench_quality: an estimator alone
)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One parameter combination of one benchmark, named: what every rule reads.

    ``kind``: one of ``KINDS``. ``implementation``: one of the package's, ``grid.FLOOR`` or ``grid.DENSE``
    (None for the kinds that have none). ``timing``: a ratio cell's "replay" or "eager".
    ValueError for a kind not in ``KINDS``.
    """

    kind: str
    estimator: str | None = "ste"
    implementation: str | None = None
    batch: int | None = None
    precision: str = "fp32"
    width: int | None = None
    timing: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"cell kind {self.kind!r}; valid choices: {', '.join(KINDS)}")


@dataclasses.dataclass(frozen=True)
class Machine:
    """What a machine runs: its device ("cpu", "cuda", or "*": what no machine runs), tier and GPU count.

    ValueError for a device or a tier that is not one of the valid choices.
    """

    device: str
    tier: str = grid.DEFAULT_TIER
    gpus: int = 0

    def __post_init__(self):
        if self.device not in ("cpu", "cuda", "*"):
            raise ValueError(f"device {self.device!r}; valid choices: cpu, cuda, *")
        if self.tier not in grid.TIERS:
            raise ValueError(f"tier {self.tier!r}; valid choices: {', '.join(grid.TIERS)}")


THIS_MACHINE = Machine(DEVICE, TIER, GPUS)


class Rule(NamedTuple):
    """One row of ``RULES``: the kinds of cell it applies to, whether it reads the machine or this commit's
    package, and its condition: the reason it skips ``(cell, machine)``, or None."""

    kinds: frozenset
    reads: str  # "machine" or "commit"
    reason: Callable[[Cell, Machine], str | None]


def _runs_at(implementation: str, batch: int, device: str) -> str | None:
    for key in ((implementation, "*"), (implementation, device), ("*", device)):
        batches, reason = grid.RUNS_AT.get(key, (None, None))
        if batches is not None and batch not in batches:
            return reason
    return None


def _estimator_implementations(cell: Cell, machine: Machine) -> str | None:
    implementations = grid.ESTIMATOR_IMPLEMENTATIONS.get(cell.estimator)
    if implementations is not None and cell.implementation not in implementations:
        return f"{cell.estimator} is benchmarked with {', '.join(implementations)} only"
    return None


def _tier_batches(cell: Cell, machine: Machine) -> str | None:
    if machine.tier == "full" or machine.device == "*":
        return None
    table = grid.DEFAULT_TIER_BATCHES[machine.device]
    batches = table.get((cell.estimator, cell.implementation), table.get(cell.implementation))
    if batches is not None and cell.batch not in batches:
        subject = (
            cell.implementation
            if (cell.estimator, cell.implementation) not in table
            else (f"{cell.implementation} with {cell.estimator}")
        )
        return (
            f"{subject} runs at batches {', '.join(map(str, batches))} on {machine.device} in the "
            f"{machine.tier} tier (ESTIMATORS_BENCH_TIER=full runs every batch)"
        )
    return None


def _reduced_ste_only(cell: Cell, machine: Machine) -> str | None:
    if cell.implementation != "fused" and cell.estimator != "ste":
        return f"{cell.implementation} is benchmarked in reduced precision for ste only"
    return None


def _dense_batches(cell: Cell, machine: Machine) -> str | None:
    if machine.device == "*":
        return None
    batches = grid.DENSE_RUNS_AT[machine.device].get(cell.precision, ())
    if cell.batch not in batches:
        return f"Dense runs {cell.precision} on {machine.device} at batches {batches} only"
    return None


def _eager_tier_precisions(cell: Cell, machine: Machine) -> str | None:
    precisions = grid.EAGER_DEFAULT_TIER_PRECISIONS.get(cell.implementation)
    if machine.tier == "default" and precisions is not None and cell.precision not in precisions:
        return (
            f"the eager step of {cell.implementation} is timed in {', '.join(precisions)} in the default tier "
            "(ESTIMATORS_BENCH_TIER=full times every precision)"
        )
    return None


def _width_large_batch(cell: Cell, machine: Machine) -> str | None:
    if cell.batch == 256 and cell.implementation not in grid.WIDTH_LARGE_BATCH_IMPLEMENTATIONS:
        return f"batch 256 of the width benchmark runs {', '.join(grid.WIDTH_LARGE_BATCH_IMPLEMENTATIONS)} only"
    return None


def _ratio_batches(cell: Cell, machine: Machine) -> str | None:
    if machine.device == "*":
        return None
    timing, precision, device = cell.timing, cell.precision, machine.device
    batches = grid.RATIO_RUNS_AT[device].get((timing, precision), ())
    if cell.batch in batches:
        return None
    if not batches:
        return f"ratios of {timing} steps in {precision} are not measured on {device}"
    return f"ratios of {timing} steps in {precision} run on {device} at batches {', '.join(map(str, batches))} only"


def _data_parallel_gpus(cell: Cell, machine: Machine) -> str | None:
    if machine.device != "cuda" or machine.gpus < grid.DATA_PARALLEL_WORLD:
        return f"data-parallel steps are benchmarked on hosts with {grid.DATA_PARALLEL_WORLD} or more GPUs"
    return None


def _missing_implementation(implementation: str) -> str | None:
    if implementation == grid.FLOOR:
        if getattr(estimators, "FLOOR", None) != grid.FLOOR:
            return "the shared-mask floor does not exist at this commit"
    elif implementation not in estimators.IMPLEMENTATIONS:
        return f"implementation {implementation!r} does not exist at this commit"
    return None


def _missing_estimator(cell: Cell, machine: Machine) -> str | None:
    if cell.implementation != grid.DENSE and cell.estimator not in estimators.ESTIMATORS:
        return f"estimator {cell.estimator!r} does not exist at this commit"
    return None


def _missing_data_parallel_offset(cell: Cell, machine: Machine) -> str | None:
    if cell.implementation != grid.DENSE and not hasattr(estimators, "data_parallel_offset"):
        return "data_parallel_offset does not exist at this commit"
    return None


def _missing_step_implementation(cell: Cell, machine: Machine) -> str | None:
    return None if cell.implementation == grid.DENSE else _missing_implementation(cell.implementation)


def _missing_ratio_implementations(cell: Cell, machine: Machine) -> str | None:
    """A ratio's steps: ste fused, the Dense model (no package code) and the Floor."""
    return _missing_implementation("fused") or _missing_implementation(grid.FLOOR)


def _runs_where(cell: Cell, machine: Machine) -> str | None:
    """``grid.RUNS_AT``; the Dense model uses no implementation of the package's and runs at every batch."""
    return None if cell.implementation == grid.DENSE else _runs_at(cell.implementation, cell.batch, machine.device)


def _cuda_only(reason: str) -> Callable[[Cell, Machine], str | None]:
    return lambda cell, machine: reason if machine.device == "cpu" else None


def _rule(kinds: str, reads: str, reason: Callable[[Cell, Machine], str | None]) -> Rule:
    """A row of ``RULES``; ValueError for a kind not in ``KINDS`` or ``reads`` other than machine or commit."""
    unknown = set(kinds.split()) - set(KINDS)
    if unknown or reads not in ("machine", "commit"):
        raise ValueError(
            f"rule of {kinds!r} reading {reads!r}; valid kinds: {', '.join(KINDS)}; reads: machine, commit"
        )
    return Rule(frozenset(kinds.split()), reads, reason)


STEPS = "step reduced eager width data_parallel"  # the kinds that run a step of the package's (or the Dense) model

# The rules, in the order they are asked: a cell's reason is its first rule's. Within a kind, what the machine
# does not run comes before what the commit lacks, and the tier's rules come last: a cell this commit cannot
# run says so in any tier.
RULES = (
    _rule("reduced", "machine", _cuda_only("reduced precisions are benchmarked on CUDA only")),
    _rule("reduced", "machine", _reduced_ste_only),
    _rule("eager", "machine", _cuda_only("eager steps are timed on CUDA only (every CPU timing is eager already)")),
    _rule("width", "machine", _cuda_only("the width benchmark runs on CUDA only")),
    _rule("width", "machine", _width_large_batch),
    _rule("dense", "machine", _dense_batches),
    _rule("ratio", "machine", _ratio_batches),
    _rule("data_parallel", "machine", _data_parallel_gpus),
    _rule("step reduced", "machine", _estimator_implementations),
    _rule("step reduced eager", "machine", _runs_where),
    _rule("data_parallel", "commit", _missing_data_parallel_offset),
    _rule(STEPS + " ratio estimator", "commit", _missing_estimator),
    _rule(STEPS, "commit", _missing_step_implementation),
    _rule("ratio", "commit", _missing_ratio_implementations),
    _rule("step", "machine", _tier_batches),
    _rule("eager", "machine", _eager_tier_precisions),
)


def skip_reason(cell: Cell, machine: Machine = THIS_MACHINE, commit: bool = True) -> str | None:
    """Why the suite does not run ``cell`` on ``machine`` (this one by default), or None if it does: the reason of
    the first rule of ``RULES`` for the cell's kind that gives one. ``commit=False`` asks only the machine's
    rules (asv's ``skip_params``, and what any commit would skip)."""
    for rule in RULES:
        if cell.kind in rule.kinds and (commit or rule.reads == "machine"):
            reason = rule.reason(cell, machine)
            if reason is not None:
                return reason
    return None


def skip(cell: Cell) -> None:
    """Raise NotImplementedError (asv: n/a) with ``skip_reason(cell)`` on this machine at this commit, if any."""
    skip_if(skip_reason(cell))


def skip_if(reason: str | None) -> None:
    """Raise NotImplementedError(reason) (asv: n/a) unless ``reason`` is None."""
    if reason is not None:
        raise NotImplementedError(reason)


def skip_params(params: list, cell: Callable[..., Cell]) -> list:
    """asv's ``skip_params``: the combinations of ``params`` whose ``cell(*combination)`` this machine skips."""
    return [combination for combination in itertools.product(*params) if skip_reason(cell(*combination), commit=False)]


def runs(implementation: str, batch: int, device: str) -> bool:
    """Whether ``grid.RUNS_AT`` runs ``implementation`` at ``batch`` on ``device`` ("*": on every machine)."""
    return _runs_at(implementation, batch, device) is None


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
