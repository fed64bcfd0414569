"""The reporting tools on damaged, missing and empty results: a named warning or a clear error, never a traceback,
never an older commit's figures shown as if they were the newest (tools/reporting/*, tools/arguments.py).

Each test builds a results directory of its own ($ESTIMATORS_RESULTS_DIR) from one real result set, copied under
commits of HEAD's history; nothing is benchmarked and no model is built (the report runs with --no-verify).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools import arguments
from tools.reporting import report, results, spread

from conftest import pythonpath_first

ROOT = Path(__file__).resolve().parents[1]
MACHINE = "cpu-2core-avx2"
HISTORY = results.commits_newest_first()
NEW, OLD = HISTORY[1], HISTORY[3]  # any two commits of HEAD's history, NEW the newer

pytestmark = pytest.mark.skipif(len(HISTORY) < 4, reason="needs a history of at least 4 commits")


def _template() -> dict:
    """The newest real result set of MACHINE, as JSON."""
    path = results.RESULTS / MACHINE
    newest = next(c for c in HISTORY if list(path.glob(f"{c[:8]}-*.json")))
    return json.loads(next(path.glob(f"{newest[:8]}-*.json")).read_text())


TEMPLATE = _template()


def result_set(commit: str, machine: str = MACHINE, drop: str | tuple[str, ...] | None = None) -> dict:
    """The template as ``commit``'s result set on ``machine``, without the benchmarks whose names start with
    ``drop`` (one prefix or several)."""
    data = copy.deepcopy(TEMPLATE)
    data["commit_hash"] = commit
    data["params"]["machine"] = machine
    if drop:
        data["results"] = {name: entry for name, entry in data["results"].items() if not name.startswith(drop)}
    return data


def file_of(directory: Path, commit: str, machine: str = MACHINE) -> Path:
    return directory / machine / f"{commit[:8]}-{TEMPLATE['env_name']}.json"


def write(directory: Path, commit: str, content, machine: str = MACHINE) -> Path:
    """A results file of ``commit``: ``content`` as bytes if it is bytes, else as JSON; and the machine.json."""
    (directory / machine).mkdir(parents=True, exist_ok=True)
    description = json.loads((results.RESULTS / MACHINE / "machine.json").read_text())
    (directory / machine / "machine.json").write_text(json.dumps({**description, "machine": machine}))
    path = file_of(directory, commit, machine)
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    return tmp_path


def run(main, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a tool's main(argv), argparse's exits included."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as exit_:
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


def _entry(mutate):
    data = result_set(NEW)
    name = next(n for n in data["results"] if n.startswith("bench_training.") and data["results"][n][0])
    columns = data["result_columns"]
    data["results"][name] = mutate(data["results"][name], columns)
    return data


def _set(entry, columns, column, value):
    entry = list(entry)
    entry[columns.index(column)] = value
    return entry


REAL = json.dumps(result_set(NEW)).encode()
DAMAGES = {
    "empty": (b"", "empty"),
    "blank": (b"\n  \n", "empty"),
    "truncated": (REAL[: len(REAL) // 2], "not valid JSON"),
    "not JSON": (b"results: none", "not valid JSON"),
    "not UTF-8": (b"\xff\xfe{", "not UTF-8"),
    "nested too deep": (b"[" * 100_000, "not valid JSON"),
    "empty object": ({}, "empty JSON object"),
    "array": ([], "holds an array"),
    "null": (None, "holds null"),
    "number": (3, "holds a number"),
    "string": ("results", "holds a string"),
    "no version": ({k: v for k, v in result_set(NEW).items() if k != "version"}, "format version None"),
    "missing key": ({k: v for k, v in result_set(NEW).items() if k != "results"}, "missing results"),
    "results not an object": ({**result_set(NEW), "results": []}, "not an object"),
    "another machine's": (result_set(NEW, machine="h100-80gb"), "recorded on machine 'h100-80gb'"),
    "another commit's": (result_set(OLD), "not of the commit its name gives"),
    "entry a string": (_entry(lambda entry, columns: "x"), "is a string, not a list"),
    "entry a number": (_entry(lambda entry, columns: 3), "is a number, not a list"),
    "params not lists": (_entry(lambda e, c: _set(e, c, "params", "abc")), "not lists of strings"),
    "params not literals": (_entry(lambda e, c: _set(e, c, "params", [["ste", "x y"]])), "not a Python literal"),
    "result too short": (_entry(lambda e, c: _set(e, c, "result", [0.1])), "not a list of"),
    "result a string": (_entry(lambda e, c: _set(e, c, "result", "fast")), "not a list of"),
    "quartile a string": (
        _entry(lambda e, c: _set(e, c, "stats_q_25", ["x"] * len(e[c.index("result")]))),
        "values that are not numbers",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_newest_file_is_named_and_skipped_and_the_header_says_so(results_dir, damage):
    content, reason = DAMAGES[damage]
    write(results_dir, OLD, result_set(OLD))
    damaged = write(results_dir, NEW, content)

    status, out, err = run(report.main, "--machine", MACHINE, "--markdown")
    assert status == 0, err
    assert str(damaged) in err and reason in err and "Traceback" not in err
    header = out.split("### ")[0]
    assert f"commit `{OLD[:8]}`" in header and NEW[:8] not in header.replace(damaged.name, "")
    note = next(line for line in header.splitlines() if line.startswith("Note: "))
    assert note.startswith(f"Note: newer results unreadable, skipped: {damaged.name} (") and reason in note

    with pytest.raises(results.NoResults, match="unreadable"):
        results.latest(MACHINE, NEW[:8])


@pytest.mark.parametrize("damage", ["null", "array", "empty object", "truncated", "entry a string"])
@pytest.mark.parametrize(
    "mode", [["--quality"], ["--precision"], ["--no-verify"], ["--reference", "docs/reference-run.txt"]]
)
def test_every_mode_shows_the_older_commit_with_a_note(results_dir, damage, mode):
    write(results_dir, OLD, result_set(OLD))
    damaged = write(results_dir, NEW, DAMAGES[damage][0])
    status, out, err = run(report.main, "--machine", MACHINE, *mode)
    assert status == 0, err
    assert str(damaged) in err
    assert out.startswith(f"Note: newer results unreadable, skipped: {damaged.name}")
    assert OLD[:8] in out.splitlines()[1]


@pytest.mark.parametrize("damage", ["null", "number", "empty", "entry a string"])
def test_spread_names_the_damaged_file_and_shows_the_older_commit_with_a_note(results_dir, damage):
    write(results_dir, OLD, result_set(OLD))
    damaged = write(results_dir, NEW, DAMAGES[damage][0])
    status, out, err = run(spread.main, "--machine", MACHINE)
    assert status == 0, err
    assert str(damaged) in err
    lines = out.splitlines()
    assert lines[0].startswith(f"Note: newer results unreadable, skipped: {damaged.name}")
    assert lines[1].startswith(f"machine {MACHINE}, commit {OLD[:8]}:")


TOOLS = {"report": (report.main, ["--no-verify"]), "spread": (spread.main, [])}


@pytest.mark.parametrize("tool", TOOLS)
def test_a_commit_whose_file_is_damaged_or_missing_is_a_usage_error(results_dir, tool):
    main, extra = TOOLS[tool]
    write(results_dir, OLD, result_set(OLD))
    damaged = write(results_dir, NEW, b"[]")
    status, out, err = run(main, "--machine", MACHINE, "--commit", NEW[:10], *extra)
    assert status == 2 and not out
    assert "error:" in err and str(damaged) in err and "holds an array" in err
    for missing in ("0000000", "", "HEAD~1"):
        status, _, err = run(main, "--machine", MACHINE, "--commit", missing, *extra)
        assert status == 2 and "error:" in err and repr(missing) in err


@pytest.mark.parametrize("tool", TOOLS)
def test_no_readable_results_is_no_data(results_dir, tool):
    main, extra = TOOLS[tool]
    damaged = write(results_dir, NEW, b"null")
    status, out, err = run(main, "--machine", MACHINE, *extra)
    assert status == 1 and not out
    assert "error: no readable results" in err and str(damaged) in err and "Traceback" not in err


def test_a_damaged_machine_description_is_named(results_dir):
    write(results_dir, NEW, result_set(NEW))
    description = results_dir / MACHINE / "machine.json"
    description.write_text("[]")
    status, out, err = run(report.main, "--machine", MACHINE, "--markdown")
    assert status == 1 and not out and f"{description}: not the description of machine" in err


@pytest.mark.parametrize("tool", TOOLS)
def test_a_missing_machine_description_is_named_not_no_results(results_dir, tool):
    main, extra = TOOLS[tool]
    write(results_dir, NEW, result_set(NEW))
    (results_dir / MACHINE / "machine.json").unlink()
    status, out, err = run(main, "--machine", MACHINE, *extra)
    assert status == 1 and not out and "Traceback" not in err
    assert f"{results_dir / MACHINE} has 1 result file(s) but no machine.json" in err and "no results for" not in err
    status, _, err = run(main, "--machine", "no-such-machine", *extra)  # a machine that has nothing: as before
    assert status == 2 and "no results for machine 'no-such-machine'" in err


def test_a_machine_without_results_of_this_history_is_no_data(results_dir):
    write(results_dir, NEW, result_set(NEW))
    file_of(results_dir, NEW).rename(file_of(results_dir, "f" * 40))
    status, out, err = run(report.main, "--machine", MACHINE, "--markdown")
    assert status == 1 and not out and "is a commit of HEAD's history" in err


@pytest.mark.parametrize(
    ("mode", "dropped", "message"),
    [
        ("--quality", "bench_quality.", "no quality results (bench_quality)"),
        ("--data-parallel", "bench_data_parallel.", "no data-parallel results"),
        ("--markdown", "bench_training.", "no training step results"),
        ("--no-verify", "bench_training.", "no training step results"),
    ],
)
def test_an_empty_table_is_an_error_that_says_which_commits_have_it(results_dir, mode, dropped, message):
    write(results_dir, OLD, result_set(OLD))
    write(results_dir, NEW, result_set(NEW, drop=dropped))
    status, out, err = run(report.main, "--machine", MACHINE, mode)
    assert status == 1 and not out
    assert f"commit {NEW[:8]}: {message}" in err
    if mode != "--data-parallel":  # the template has no data-parallel figure (a CPU machine)
        assert f"commits with them (--commit): {OLD[:8]}" in err


def test_precision_without_its_results_is_an_error_and_a_missing_precision_is_named(results_dir):
    write(results_dir, OLD, result_set(OLD, drop=("bench_precision.", "bench_dense.")))
    status, out, err = run(report.main, "--machine", MACHINE, "--precision")
    assert status == 0, err
    assert "| fp32 |" in out and "No rows for bf16, tf32" in out

    write(results_dir, NEW, result_set(NEW, drop=("bench_precision.", "bench_dense.", "bench_training.")))
    status, out, err = run(report.main, "--machine", MACHINE, "--precision")
    assert status == 1 and not out and "no Dense or fused ste step in any precision" in err


MODES = [["--markdown"], ["--precision"], ["--reference", "docs/reference-run.txt"], ["--quality"], ["--data-parallel"]]


@pytest.mark.parametrize(("first", "second"), list(itertools.combinations(MODES, 2)))
def test_report_modes_exclude_each_other(first, second):
    status, out, err = run(report.main, "--machine", MACHINE, *first, *second)
    assert status == 2 and not out and "not allowed with argument" in err


def test_a_reference_entry_before_any_heading_names_the_file_and_line(tmp_path):
    reference = tmp_path / "reference.txt"
    text = (ROOT / "docs" / "reference-run.txt").read_text()
    entry = "\n".join(
        [
            "1. Current (batch_size=1)...",
            "   Forward: 1.00 ± 0.10 ms",
            "   Backward: 2.00 ± 0.10 ms",
            "   Total: 3.00 ms",
            "   Memory: 4.0 MB",
        ]
    )
    reference.write_text("header\n\n" + entry + "\n" + text)
    status, out, err = run(report.main, "--machine", MACHINE, "--reference", str(reference))
    assert status == 2 and not out
    assert f"{reference}:3: entry '1. Current (batch_size=1)...' comes before the first 'ESTIMATOR: <name>'" in err
    reference.write_bytes(b"\xff\xfe")
    status, _, err = run(report.main, "--machine", MACHINE, "--reference", str(reference))
    assert status == 2 and f"{reference}: cannot be read as text" in err


def test_a_machine_without_results_reports_the_closest_and_says_which(results_dir, monkeypatch):
    write(results_dir, OLD, result_set(OLD, machine="h100-80gb"), machine="h100-80gb")
    write(results_dir, NEW, result_set(NEW, machine="h100-80gb"), machine="h100-80gb")
    write(results_dir, OLD, result_set(OLD))
    write(results_dir, OLD, result_set(OLD, machine="cpu-2core"), machine="cpu-2core")
    write(results_dir, NEW, result_set(NEW, machine="cpu-2core"), machine="cpu-2core")
    monkeypatch.setenv("ESTIMATORS_ASV_MACHINE", "cpu-2core-avx512")
    status, out, err = run(report.main, "--markdown")
    assert status == 0, err
    note = "Note: this machine, cpu-2core-avx512, has no results; these are cpu-2core's, the closest machine: the same"
    assert out.startswith(note) and "Machine `cpu-2core`" in out.splitlines()[1]
    assert "this machine, cpu-2core-avx512, has no results: reporting cpu-2core's" in err

    # A GPU: the same model first, even with fewer result files; else the machine with the most.
    write(results_dir, OLD, result_set(OLD, machine="h200"), machine="h200")
    assert results.closest_machine("h200-x2")[0] == "h200"
    assert results.closest_machine("a100-40gb") == (
        "cpu-2core",
        "no a100 machine has results; the machine with the most result files",
    )
    # Named explicitly, a machine without results is a usage error that lists those with results.
    status, _, err = run(report.main, "--machine", "cpu-2core-avx512", "--markdown")
    assert status == 2 and "no results for machine 'cpu-2core-avx512'" in err and "'cpu-2core-avx2'" in err


def test_the_command_line_exits_without_a_traceback(results_dir):
    write(results_dir, OLD, result_set(OLD))
    damaged = write(results_dir, NEW, b"null")
    env = {**os.environ, "PYTHONPATH": pythonpath_first(ROOT), results.RESULTS_ENV: str(results_dir)}
    for module, arguments_ in [
        ("tools.reporting.report", ["--quality"]),
        ("tools.reporting.spread", []),
        ("tools.reporting.report", ["--commit", NEW[:8], "--quality"]),
    ]:
        command = [sys.executable, "-m", module, "--machine", MACHINE, *arguments_]
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert result.returncode == (2 if "--commit" in arguments_ else 0), result.stderr
        assert str(damaged) in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        (arguments.factor, "0", "a regression factor must be > 1 and finite (1.05 = 5% slower), got 0"),
        (arguments.factor, "1", "must be > 1"),
        (arguments.factor, "0.9", "must be > 1"),
        (arguments.factor, "inf", "must be > 1 and finite"),
        (arguments.factor, "nan", "must be > 1 and finite"),
        (arguments.factor, "x", "must be > 1 and finite (1.05 = 5% slower), got 'x'"),
        (arguments.positive_float, "x", "expected a finite number > 0, got 'x'"),
        (arguments.positive_float, "0", "expected a finite number > 0, got 0"),
        (arguments.positive_float, "inf", "expected a finite number > 0, got inf"),
        (arguments.positive_int, "1.5", "expected an integer >= 1, got '1.5'"),
        (arguments.positive_int, "0", "expected an integer >= 1, got 0"),
    ],
)
def test_argument_types_state_the_rule_they_enforce(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        kind(text)
    assert message in str(refused.value)


def test_argument_types_accept_their_rule():
    assert arguments.factor("1.05") == 1.05 and arguments.positive_float("1e-3") == 1e-3
    assert arguments.positive_int("1") == 1


def test_a_run_cut_short_is_shown_with_a_note(results_dir):
    """A results file saved per benchmark by a run that was stopped (asv_patches.PARTIAL) is its commit's
    figures, and the report says that what the run did not reach reads n/a."""
    from tools.run.asv_patches import PARTIAL

    write(results_dir, NEW, {**result_set(NEW), PARTIAL: True})
    status, out, err = run(report.main, "--machine", MACHINE, "--no-verify")
    assert status == 0, err
    assert out.startswith(f"Note: {file_of(results_dir, NEW, MACHINE).name} holds a run cut short")
    write(results_dir, NEW, result_set(NEW))  # control: the whole run
    status, out, err = run(report.main, "--machine", MACHINE, "--no-verify")
    assert status == 0 and "cut short" not in out
