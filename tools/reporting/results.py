"""Read asv's results files (results/<machine>/<commit>-<env>.json) through asv's own API."""

from __future__ import annotations

import ast
import itertools
import math
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from asv.results import iter_results_for_machine

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"


@dataclass(frozen=True)
class Measurement:
    """One benchmark result: the median and the quartiles of its samples (seconds, or bytes for memory)."""

    median: float
    q25: float | None = None
    q75: float | None = None

    @property
    def half_iqr(self) -> float | None:
        return None if self.q25 is None or self.q75 is None else (self.q75 - self.q25) / 2

    @property
    def spread(self) -> float | None:
        """Interquartile range over median."""
        return None if self.half_iqr is None or not self.median else 2 * self.half_iqr / self.median


class Measurements:
    """The results of one commit on one machine, indexed by benchmark name and parameter values."""

    def __init__(self, results):
        self.results = results
        self.commit = results.commit_hash
        self._table: dict[tuple[str, tuple], Measurement] = {}
        for name in results.get_all_result_keys():
            params = results.get_result_params(name)
            values = results.get_result_value(name, params)
            stats = results.get_result_stats(name, params)
            combos = itertools.product(*[[ast.literal_eval(v) for v in p] for p in params]) if params else [()]
            for combo, value, stat in zip(combos, values, stats, strict=True):
                if value is None or value != value:  # failed or skipped (n/a)
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                    message = f"{self.commit[:8]} {name}{tuple(combo)}: invalid value {value!r}, left out"
                    warnings.warn(message, stacklevel=2)
                    continue
                stat = stat or {}
                self._table[name, tuple(combo)] = Measurement(value, stat.get("q_25"), stat.get("q_75"))

    def items(self):
        """((full benchmark name, parameter values), Measurement) for every measured combination."""
        return self._table.items()

    def get(self, name: str, *params) -> Measurement | None:
        """The measurement of benchmark ``name`` (e.g. "ForwardBackward.time_forward") at ``params``."""
        for (key, combo), measurement in self._table.items():
            if (key == name or key.endswith("." + name)) and combo == params:
                return measurement
        return None


def commits_newest_first() -> list[str]:
    return subprocess.run(
        ["git", "rev-list", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()


def machines() -> list[str]:
    return sorted(p.name for p in RESULTS.iterdir() if (p / "machine.json").exists()) if RESULTS.exists() else []


class NoResults(LookupError):
    """A machine, commit or reference run the tools were asked for has no results: a usage error."""


def latest(machine: str, commit: str | None = None) -> Measurements:
    """The results of ``commit`` (a prefix will do), or of the newest commit of HEAD's history that has results.

    NoResults (the tools report it as a usage error) for a machine or commit without results.
    """
    if machine not in machines():
        raise NoResults(f"no results for machine {machine!r} under {RESULTS}; machines with results: {machines()}")
    by_commit = {r.commit_hash: r for r in iter_results_for_machine(str(RESULTS), machine)}
    if commit is not None:
        matches = [h for h in by_commit if commit and h.startswith(commit)]
        if len(matches) != 1:
            raise NoResults(f"commit {commit!r} matches {len(matches)} result sets of machine {machine!r}")
        return Measurements(by_commit[matches[0]])
    for candidate in commits_newest_first():
        if candidate in by_commit:
            return Measurements(by_commit[candidate])
    raise NoResults(f"none of the results of machine {machine!r} is a commit of HEAD's history")
