"""tools/run/asv_patches.py: asv 0.6.6 as the project runs it.

The unit tests patch asv in this process (each restores what it patched); the last test runs a tiny asv
suite through the module, kills asv once the first benchmark has finished, and finds that benchmark's result
in the results directory.
"""

import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

asv_util = pytest.importorskip("asv.util")
from asv import graph, runner  # noqa: E402
from asv.commands.setup import Setup  # noqa: E402
from asv.results import Results  # noqa: E402

from tools.run import asv_patches  # noqa: E402

from conftest import pythonpath_first  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_asv(monkeypatch):
    """Whatever a test patches in asv is put back afterwards."""
    monkeypatch.setattr(asv_util, "write_json", asv_util.write_json)
    monkeypatch.setattr(Results, "add_result", Results.add_result)
    monkeypatch.setattr(Results, "load_data", Results.load_data)
    monkeypatch.setattr(Setup, "run_from_args", inspect.getattr_static(Setup, "run_from_args"))  # inherited
    monkeypatch.setattr(graph.GraphSet, "get_summary_graphs", graph.GraphSet.get_summary_graphs)
    return monkeypatch


@pytest.mark.parametrize("compact", [False, True])
def test_atomic_writes_write_what_asv_writes(tmp_path, compact):
    data = {"b": [1, 2.5, None], "a": {"x": "y"}}
    asv_util.write_json(tmp_path / "asv.json", data, api_version=2, compact=compact)
    asv_patches.write_json_atomically(tmp_path / "ours.json", data, api_version=2, compact=compact)
    assert (tmp_path / "ours.json").read_text() == (tmp_path / "asv.json").read_text()
    assert (tmp_path / "ours.json").stat().st_mode & 0o777 == 0o644
    asv_patches.write_json_atomically(tmp_path / "new" / "dir.json", data)  # asv makes the directory too
    assert json.loads((tmp_path / "new" / "dir.json").read_text()) == data


def test_a_write_that_fails_midway_leaves_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    asv_patches.write_json_atomically(path, {"result": 1})
    with pytest.raises(TypeError):
        asv_patches.write_json_atomically(path, {"result": 2, "later": object()})  # json.dump fails partway
    assert json.loads(path.read_text()) == {"result": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def _results(directory=None):
    results = Results({"machine": "m"}, {}, "abcdef0123456789", 0, "3.12", "env-name", {})
    if directory is not None:
        results.load_data(str(directory))
    return results


def _add(results, name, value):
    benchmark = {"name": name, "version": "1", "params": []}
    outcome = runner.BenchmarkResult(result=[value], samples=[None], number=[None], errcode=0, stderr="", profile=None)
    results.add_result(benchmark, outcome)


def test_results_are_saved_after_each_benchmark(tmp_path, restore_asv):
    asv_patches.apply("run", environ={})
    asv_patches.save_after_each_benchmark()  # twice: still one save per result
    results = _results(tmp_path)
    path = tmp_path / results._filename
    assert not path.exists()
    _add(results, "bench.track_first", 1.0)
    assert Results.load(str(path)).get_result_value("bench.track_first", []) == [1.0]
    _add(results, "bench.track_second", 2.0)
    saved = Results.load(str(path))
    assert [saved.get_result_value(name, []) for name in ("bench.track_first", "bench.track_second")] == [[1.0], [2.0]]
    assert asv_patches.is_partial(path)
    results.save(str(tmp_path))  # asv's own save when the commit's run ends: a whole run
    assert not asv_patches.is_partial(path)
    assert Results.load(str(path)).get_result_value("bench.track_second", []) == [2.0]


def test_bench_runs_a_commit_again_while_its_results_are_partial(tmp_path, monkeypatch, restore_asv):
    from tools.run import bench

    monkeypatch.setattr(bench, "ROOT", tmp_path)
    asv_patches.apply("run", environ={})
    results = _results(tmp_path / "results")  # results/<machine>/<commit>-<environment>.json
    commit = results._commit_hash
    assert not bench.has_results("m", commit)
    _add(results, "bench.track_first", 1.0)
    assert not bench.has_results("m", commit)  # cut short here: run it again
    results.save(str(tmp_path / "results"))
    assert bench.has_results("m", commit)


def test_results_asv_would_not_save_stay_unsaved(tmp_path, restore_asv):
    """asv loads earlier results only for what it will save: a dry run or an existing environment without
    --set-commit-hash loads none, and saves none."""
    asv_patches.apply("continuous", environ={})
    saves = []
    restore_asv.setattr(asv_patches, "save_partial", lambda results, directory: saves.append(directory))
    _add(_results(), "bench.track_first", 1.0)  # never loaded: asv will not save it
    assert saves == []
    _add(_results(tmp_path), "bench.track_first", 1.0)  # control: loaded from a directory, saved there
    assert saves == [str(tmp_path)]


def test_other_commands_get_only_atomic_writes(restore_asv):
    add_result, run_from_args = Results.add_result, Setup.run_from_args
    asv_patches.apply("compare", environ={"ESTIMATORS_SUMMARY_MACHINE": "h100-80gb"})
    assert asv_util.write_json is asv_patches.write_json_atomically
    assert Results.add_result is add_result and Setup.run_from_args == run_from_args
    assert not getattr(graph.GraphSet.get_summary_graphs, asv_patches.PATCHED, False)


def test_setup_exits_zero(restore_asv):
    restore_asv.setattr(Setup, "run_from_args", classmethod(lambda cls, args: ["env-1", "env-2"]))
    asv_patches.apply("setup")
    asv_patches.fix_setup_exit()
    assert Setup.run_from_args(None) == 0


def test_publish_summarises_one_machine(restore_asv):
    restore_asv.setattr(graph, "make_summary_graph", lambda graphs: [g.params["machine"] for g in graphs])

    class Graph:
        def __init__(self, machine):
            self.params = {"machine": machine}

    graphs = graph.GraphSet.__new__(graph.GraphSet)
    graphs._groups = {"a": [Graph("cpu"), Graph("h100"), Graph("h100")], "b": [Graph("cpu")]}
    asv_patches.apply("publish", environ={"ESTIMATORS_SUMMARY_MACHINE": "h100"})
    assert list(graphs.get_summary_graphs()) == [["h100", "h100"], ["cpu"]]  # b has no h100 graph: all of b's


def test_asv_project_runs_asv_through_the_patches():
    from tools.run.asv_project import _asv_command_line

    for command in ("run", "setup", "publish", "preview"):
        assert _asv_command_line([command, "-v"]) == [sys.executable, "-m", "tools.run.asv_patches", command, "-v"]


TINY_SUITE = """
import time


def track_a_first():
    return 42


def track_b_never_ends():
    time.sleep(600)
    return 0


track_b_never_ends.timeout = 900  # asv's own limit (60 s) must not end it first
"""


def _git(cwd, *args):
    command = ["git", "-c", "user.name=asv test", "-c", "user.email=asv@test", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_a_killed_run_keeps_the_benchmarks_that_finished(tmp_path):
    """asv run in the host's own Python (an existing environment: no build), killed with SIGKILL while the
    second benchmark runs: the first one's result is in the results file, which is whole JSON."""
    project = tmp_path / "project"
    (project / "benchmarks").mkdir(parents=True)
    (project / "benchmarks" / "__init__.py").write_text("")
    (project / "benchmarks" / "bench_tiny.py").write_text(textwrap.dedent(TINY_SUITE))
    config = {
        "version": 1,
        "project": "tiny",
        "repo": ".",
        "environment_type": "existing",
        "pythons": ["same"],
        "benchmark_dir": "benchmarks",
        "results_dir": "results",
        "env_dir": "env",
        "html_dir": "html",
    }
    (project / "asv.conf.json").write_text(json.dumps(config))
    _git(project, "init", "-q")
    _git(project, "add", ".")
    _git(project, "commit", "-qm", "tiny suite")
    commit = _git(project, "rev-parse", "HEAD")
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PYTHONPATH": pythonpath_first(ROOT),
    }  # asv's ~/.asv-machine.json: a scratch one
    asv = [sys.executable, "-m", "tools.run.asv_patches"]
    subprocess.run([*asv, "machine", "--yes", "--machine=tiny"], cwd=project, env=env, check=True, capture_output=True)
    command = [*asv, "run", "--machine=tiny", f"--set-commit-hash={commit}", "--python=same", "-v"]
    log = open(tmp_path / "asv.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        command, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    results = project / "results" / "tiny"
    second_started = "benchmark.py run " + str(project / "benchmarks") + " bench_tiny.track_b_never_ends"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and second_started not in (tmp_path / "asv.log").read_text():
            assert process.poll() is None, (tmp_path / "asv.log").read_text()
            time.sleep(0.2)
        assert second_started in (tmp_path / "asv.log").read_text(), "the second benchmark never started"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # asv and its benchmark processes, as a device's time limit does
        process.wait()
        log.close()
    (saved,) = [p for p in results.glob("*.json") if p.name != "machine.json"]
    data = json.loads(saved.read_text())
    assert data["commit_hash"] == commit
    first = Results.load(str(saved))
    assert first.get_result_value("bench_tiny.track_a_first", []) == [42]
    assert "bench_tiny.track_b_never_ends" not in data["results"] and data["partial"] is True


@pytest.mark.parametrize("text", ["", "{", "[]", "null", "\udcff"])
def test_a_results_file_that_is_not_a_json_object_counts_as_partial(tmp_path, text):
    """make bench runs such a commit again instead of crashing on it."""
    path = tmp_path / "abcdef01-env.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert asv_patches.is_partial(path)
