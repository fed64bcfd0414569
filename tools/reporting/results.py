"""Read asv's results files (results/<machine>/<commit>-<env>.json) through asv's own API.

The results directory is ``results/`` under the repository root, or ``$ESTIMATORS_RESULTS_DIR`` where that is set.

A file there that is not a result set (unreadable, empty, not JSON, JSON that is not an object, missing keys,
entries of the wrong type, another machine's or another commit's results under its name) is
``DamagedResults``: the newest-results lookup names it on stderr, skips it and records it in the
``notes`` of what it returns instead, so that a report never shows an older commit's figures silently.

The tools turn the two lookup errors into their exit codes: ``NoResults`` is a usage error (what the
arguments named does not exist or cannot be read: exit 2, argparse's), ``NoData`` means there is nothing
to report (exit 1).
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from asv import util
from asv.results import Results

from ..run.asv_patches import PARTIAL

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
RESULTS_ENV = "ESTIMATORS_RESULTS_DIR"
# asv names a result set <first 8 hex digits of its commit>-<environment>.json.
_FILE_NAME = re.compile(r"^(?P<prefix>[0-9a-f]{8})-.+\.json$")
_NOT_RESULTS = {"machine.json", "benchmarks.json"}
_KEYS = ("commit_hash", "env_name", "date", "params", "python", "requirements", "result_columns", "results")


def results_dir() -> Path:
    """Where the results are: ``$ESTIMATORS_RESULTS_DIR`` if set, else ``results/`` under the repository root."""
    return Path(os.environ[RESULTS_ENV]) if os.environ.get(RESULTS_ENV) else RESULTS


class NoResults(LookupError):
    """A machine, commit or reference run the tools were asked for has no (readable) results: a usage error."""


class NoData(LookupError):
    """Nothing to report: the machine's results are all unreadable, or none is of HEAD's history (exit 1)."""


class DamagedResults(ValueError):
    """A results file that is not a result set; ``path`` names it and ``reason`` says what is wrong."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


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
    """The results of one commit on one machine, indexed by benchmark name and parameter values.

    ``path`` is the file they were read from (None where built from asv's object alone); ``notes`` are the
    lines a report prints above its figures: what it shows instead of what it was asked for, and why.
    """

    def __init__(self, results, path: Path | None = None):
        self.results = results
        self.commit = results.commit_hash
        self.path = path
        self.notes: list[str] = []
        self._table: dict[tuple[str, tuple], Measurement] = {}
        where = str(path) if path else self.commit[:8]
        for name in results.get_all_result_keys():
            params = results.get_result_params(name)
            values = results.get_result_value(name, params)
            stats = results.get_result_stats(name, params)
            combos = itertools.product(*[[ast.literal_eval(v) for v in p] for p in params]) if params else [()]
            for combo, value, stat in zip(combos, values, stats, strict=True):
                if value is None or value != value:  # failed or skipped (n/a)
                    continue
                if not _is_number(value) or not 0 <= value < math.inf:
                    warnings.warn(f"{where}: {name}{tuple(combo)}: invalid value {value!r}, left out", stacklevel=2)
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

    def has(self, prefix: str) -> bool:
        """Whether any benchmark whose full name starts with ``prefix`` (e.g. "bench_quality.") was measured."""
        return any(key.startswith(prefix) for key, _ in self._table)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), "a number")


def _entry_damage(name: str, entry, columns: list[str]) -> str | None:
    """What is wrong with one benchmark's entry of a result set, or None."""
    if not isinstance(entry, list):
        return f"the entry of {name!r} is {_json_kind(entry)}, not a list of {len(columns)} columns"
    if len(entry) > len(columns):
        return f"the entry of {name!r} has {len(entry)} values for {len(columns)} columns"
    values = dict(zip(columns, entry, strict=False))  # asv leaves trailing empty columns out
    params = values.get("params")
    strings = isinstance(params, list) and all(
        isinstance(p, list) and all(isinstance(v, str) for v in p) for p in params
    )
    if not strings:
        return f"the parameters of {name!r} are not lists of strings: {params!r}"
    for value in itertools.chain.from_iterable(params):
        try:
            ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return f"a parameter value of {name!r} is not a Python literal: {value!r}"
    combinations = math.prod(len(p) for p in params)
    for column in ("result", *(c for c in columns if c.startswith("stats_"))):
        value = values.get(column)
        if value is None:
            continue
        if not isinstance(value, list) or len(value) != combinations:
            return f"the {column} of {name!r} is not a list of {combinations} values (one per parameter combination)"
        if column in ("stats_q_25", "stats_q_75") and not all(v is None or _is_number(v) for v in value):
            return f"the {column} of {name!r} holds values that are not numbers"
    return None


def _damage(path: Path, machine: str) -> str | None:
    """What makes ``path`` not a result set of ``machine`` (asv's format, version 2), or None."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if not text.strip():
        return "empty"
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        return f"not valid JSON, truncated or damaged ({error})"
    if not isinstance(data, dict):
        return f"holds {_json_kind(data)}, not a result set (a JSON object)"
    if not data:
        return "holds an empty JSON object, not a result set"
    if data.get("version") != Results.api_version:
        return f"format version {data.get('version')!r}, not asv's results format {Results.api_version}"
    missing = [key for key in _KEYS if key not in data]
    if missing:
        return f"not a result set: missing {', '.join(missing)}"
    commit = data["commit_hash"]
    if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return f"its commit_hash {commit!r} is not a commit hash"
    found = _FILE_NAME.match(path.name)
    if found and not commit.startswith(found["prefix"]):
        return f"holds the results of commit {commit[:8]}, not of the commit its name gives"
    if not isinstance(data["params"], dict) or data["params"].get("machine") != machine:
        recorded = data["params"].get("machine") if isinstance(data["params"], dict) else None
        return f"recorded on machine {recorded!r}, not {machine!r}"
    columns = data["result_columns"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) or "params" not in columns:
        return f"its result_columns are not asv's column names: {columns!r}"
    if not isinstance(data["results"], dict):
        return f"its results are {_json_kind(data['results'])}, not an object"
    for name, entry in data["results"].items():
        reason = _entry_damage(name, entry, columns)
        if reason:
            return reason
    return None


def load(path: str | Path, machine: str) -> Measurements:
    """The result set in ``path``, measured on ``machine``; DamagedResults where it is not one."""
    path = Path(path)
    reason = _damage(path, machine)
    if reason is not None:
        raise DamagedResults(path, reason)
    try:
        results = Results.load(str(path), machine_name=machine)
        measurements = Measurements(results, path)
    except (util.UserError, KeyError, TypeError, ValueError, SyntaxError) as error:  # what _damage did not foresee
        raise DamagedResults(path, f"not a result set ({type(error).__name__}: {error})") from None
    if json.loads(path.read_text(encoding="utf-8")).get(PARTIAL):
        measurements.notes.append(
            f"Note: {path.name} holds a run cut short before its end (saved per benchmark, marked "
            f"{PARTIAL!r}): what it did not reach reads n/a."
        )
    return measurements


def warn(message: str) -> None:
    """A warning of the tools, on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def commits_newest_first() -> list[str]:
    return subprocess.run(
        ["git", "rev-list", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()


def machines() -> list[str]:
    """The machines under the results directory (those with a machine.json), by name."""
    directory = results_dir()
    return sorted(p.name for p in directory.iterdir() if (p / "machine.json").exists()) if directory.is_dir() else []


def result_files(machine: str) -> list[Path]:
    """The result set files of ``machine``, by name (read or not)."""
    directory = results_dir() / machine
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.json") if p.name not in _NOT_RESULTS)


def machine_info(machine: str) -> dict:
    """The machine.json of ``machine``; NoData where it is missing or is not a JSON object naming the machine."""
    path = results_dir() / machine / "machine.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise NoData(f"{path}: cannot be read as JSON ({error})") from None
    if not isinstance(data, dict) or data.get("machine") != machine:
        raise NoData(f"{path}: not the description of machine {machine!r} (a JSON object with machine: {machine!r})")
    return data


def device_kind(machine: str) -> str:
    """``cpu`` for a CPU machine (cpu-2core-avx2), else the GPU model its name starts with (h100-80gb: h100)."""
    return "cpu" if machine.startswith("cpu-") else machine.split("-")[0]


def closest_machine(machine: str) -> tuple[str, str]:
    """The machine with results to show where ``machine`` has none, and why that one: the same device kind
    (device_kind) first, then the most result files, then the first by name. NoData where no machine has any."""
    candidates = [m for m in machines() if m != machine and result_files(m)]
    if not candidates:
        raise NoData(f"no machine under {results_dir()} has results")
    kind = device_kind(machine)
    chosen = sorted(candidates, key=lambda m: (device_kind(m) != kind, -len(result_files(m))))[0]
    if device_kind(chosen) == kind:
        why = f"the same device kind, {kind}, with the most result files"
    else:
        why = f"no {kind} machine has results; the machine with the most result files"
    return chosen, why


def _prefix(path: Path) -> str | None:
    found = _FILE_NAME.match(path.name)
    return found["prefix"] if found else None


def latest(machine: str, commit: str | None = None) -> Measurements:
    """The results of ``commit`` (a prefix will do), or of the newest commit of HEAD's history that has results.

    With ``commit``: NoResults where no file of ``machine`` is of that commit, several commits match, or its
    file is damaged. Without: the newest readable result set; the damaged files of newer commits are named on
    stderr and in the ``notes`` of what it returns; NoData where none is readable. NoResults for a machine
    without results; NoData for a machine whose result files lack their machine.json.
    """
    if machine not in machines():
        files = result_files(machine) if machine not in ("", ".", "..") and Path(machine).name == machine else []
        if files:
            raise NoData(
                f"{results_dir() / machine} has {len(files)} result file(s) but no machine.json (asv writes it with "
                "the results; restore it from git)"
            )
        raise NoResults(
            f"no results for machine {machine!r} under {results_dir()}; machines with results: {machines()}"
        )
    files = result_files(machine)
    if not files:
        raise NoData(f"machine {machine!r} has no result files under {results_dir() / machine}")
    for path in files:
        if _prefix(path) is None:
            warn(f"{path}: not named <commit>-<environment>.json as asv names results, skipped")
    if commit is not None:
        return _of_commit(machine, commit, [p for p in files if _prefix(p)])
    by_prefix: dict[str, list[Path]] = {}
    for path in files:
        if _prefix(path):
            by_prefix.setdefault(_prefix(path), []).append(path)
    damaged: list[DamagedResults] = []
    for candidate in commits_newest_first():
        readable = []
        for path in by_prefix.get(candidate[:8], []):
            try:
                readable.append(load(path, machine))
            except DamagedResults as error:
                warn(f"{error}; skipped")
                damaged.append(error)
        if readable:
            chosen = readable[0]
            if len(readable) > 1:
                others = ", ".join(m.path.name for m in readable[1:])
                warn(f"commit {candidate[:8]} has several result sets: showing {chosen.path.name}, not {others}")
            for error in damaged:
                which = "another result set of this commit" if _prefix(error.path) == candidate[:8] else "newer results"
                chosen.notes.append(
                    f"Note: {which} unreadable, skipped: {error.path.name} ({error.reason}); "
                    f"showing commit {chosen.commit[:8]} ({chosen.path.name})."
                )
            return chosen
    if damaged:
        listed = "; ".join(str(error) for error in damaged)
        raise NoData(f"no readable results of machine {machine!r} at a commit of HEAD's history: {listed}")
    raise NoData(f"none of the results of machine {machine!r} is a commit of HEAD's history")


def _of_commit(machine: str, commit: str, files: list[Path]) -> Measurements:
    """The result set of ``commit`` (a hash or a prefix of one) among ``files``; NoResults where there is none."""
    if not re.fullmatch(r"[0-9a-fA-F]{1,40}", commit):
        raise NoResults(f"commit {commit!r} is not a commit hash or a prefix of one")
    commit = commit.lower()
    matches = [p for p in files if _prefix(p).startswith(commit[:8])]
    prefixes = sorted({_prefix(p) for p in matches})
    if len(prefixes) != 1:
        raise NoResults(f"commit {commit!r} matches {len(prefixes)} result sets of machine {machine!r}")
    readable, damaged = [], []
    for path in matches:
        try:
            readable.append(load(path, machine))
        except DamagedResults as error:
            damaged.append(error)
    if not readable:
        raise NoResults(f"the results of commit {commit!r} are unreadable: " + "; ".join(map(str, damaged)))
    for error in damaged:
        warn(f"{error}; skipped")
    chosen = readable[0]
    if not chosen.commit.startswith(commit):
        raise NoResults(f"commit {commit!r} matches 0 result sets of machine {machine!r}")
    return chosen


def commits_with(machine: str, *prefixes: str) -> list[str]:
    """The commits (8 digits, newest first in HEAD's history) whose readable results of ``machine`` measured a
    benchmark whose full name starts with one of ``prefixes``."""
    found = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in result_files(machine):
            try:
                measurements = load(path, machine)
            except DamagedResults:
                continue
            if any(measurements.has(prefix) for prefix in prefixes):
                found.add(measurements.commit[:8])
    return [c[:8] for c in commits_newest_first() if c[:8] in found]
