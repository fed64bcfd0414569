"""asv 0.6.6 as this project runs it: ``python -m tools.run.asv_patches <asv command> [arguments]``.

Applies the patches the command needs in this process, then runs asv's own
``asv.main.main()`` (tools/run/asv_project.py starts every asv command this way):

- every command: asv's JSON files (results, machine.json, benchmarks.json, the
  published pages) are written atomically (``write_json_atomically``), so a
  process killed mid-write leaves the previous file or the new one, never a
  truncated one;
- ``run``, ``continuous``: a commit's results file is saved after each
  benchmark's result is added (``save_after_each_benchmark``), not only when the
  commit's whole run ends, so a run stopped at a time limit keeps what finished
  (marked ``"partial": true`` until asv's own save at the commit's end);
- ``setup``: exits 0 when it succeeds (``fix_setup_exit``);
- ``publish``: the front page's summary thumbnails are drawn from one machine's
  graphs, ESTIMATORS_SUMMARY_MACHINE's (``summaries_from_one_machine``).

This module imports asv only: no torch, no suite.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile

PATCHED = "_estimators_patched"  # set on what a patch replaced: applying a patch twice changes nothing
PARTIAL = "partial"  # a results file's key: saved after a benchmark, before the commit's run ended


def write_json_atomically(path, data, api_version=None, compact=False):
    """``asv.util.write_json``'s contract and output (indent 4 and sorted keys unless ``compact``; ``version``
    added when ``api_version`` is given), written to a temporary file beside ``path`` and renamed over it.

    A kill before the rename leaves the old file (and a ``.<name>.*.tmp`` file asv never reads).
    """
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    if api_version is not None:
        data = dict(data)
        data["version"] = api_version
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            if compact:
                json.dump(data, file)
            else:
                json.dump(data, file, indent=4, sort_keys=True)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would differ from the files asv writes
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def atomic_json_writes() -> None:
    """Every JSON file asv writes is written by ``write_json_atomically``."""
    from asv import util

    util.write_json = write_json_atomically


def save_after_each_benchmark() -> None:
    """``Results.add_result`` saves the results file after adding a benchmark's result.

    asv 0.6.6 loads a commit's earlier results (``Results.load_data(results_dir)``) exactly when it will save
    them at the commit's end; that directory is remembered, and each added result is saved there at once.
    Results asv never saves (``--dry-run``, an existing environment without ``--set-commit-hash``) stay
    unsaved.
    """
    from asv.results import Results

    if getattr(Results.add_result, PATCHED, False):
        return
    load_data, add_result = Results.load_data, Results.add_result

    @functools.wraps(load_data)
    def remembering_load_data(self, result_dir):
        self._estimators_save_dir = result_dir
        return load_data(self, result_dir)

    @functools.wraps(add_result)
    def saving_add_result(self, *args, **kwargs):
        outcome = add_result(self, *args, **kwargs)
        directory = getattr(self, "_estimators_save_dir", None)
        if directory is not None:
            save_partial(self, directory)
        return outcome

    setattr(saving_add_result, PATCHED, True)
    Results.load_data, Results.add_result = remembering_load_data, saving_add_result


def save_partial(results, directory: str) -> None:
    """``results.save(directory)`` with ``PARTIAL: true`` in the file: a commit's run saved before it ended.

    asv's own save at the commit's end writes the file without the key (asv's readers ignore keys they do not
    know); tools/run/bench.py runs a commit again while its file is partial.
    """
    from asv import util

    write_json = util.write_json

    def write_partial(path, data, api_version=None, compact=False):
        write_json(path, {**data, PARTIAL: True}, api_version, compact)

    util.write_json = write_partial
    try:
        results.save(directory)
    finally:
        util.write_json = write_json


def is_partial(path) -> bool:
    """Whether the asv results file at ``path`` was saved before its commit's run ended (``save_partial``).

    A file that cannot be read as a JSON object (cut mid-write by another writer, damaged) counts as partial:
    its commit's run is not known to be whole."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError):
        return True
    return not isinstance(data, dict) or bool(data.get(PARTIAL))


def fix_setup_exit() -> None:
    """``asv setup`` returns 0 when it succeeds: asv 0.6.6 hands its list of environments to sys.exit(), so it
    exits 1 either way."""
    from asv.commands.setup import Setup

    if getattr(Setup.run_from_args, PATCHED, False):
        return
    run_from_args = Setup.run_from_args  # bound to the class

    def returning_zero(cls, args):
        run_from_args(args)
        return 0

    setattr(returning_zero, PATCHED, True)
    Setup.run_from_args = classmethod(returning_zero)


def summaries_from_one_machine(machine: str) -> None:
    """``asv publish`` draws each benchmark's summary thumbnail from ``machine``'s graphs (all machines' where it
    has none): asv 0.6.6 averages every machine's series together (the CPU's and the H100's, 8x apart)."""
    from asv import graph

    def get_summary_graphs(self, dots=None):
        for graphs in self._groups.values():
            mine = [g for g in graphs if g.params.get("machine") == machine]
            yield graph.make_summary_graph(mine or graphs)

    setattr(get_summary_graphs, PATCHED, True)
    graph.GraphSet.get_summary_graphs = get_summary_graphs


def apply(command: str, environ=os.environ) -> None:
    """The patches asv ``command`` needs (the module's docstring lists them)."""
    atomic_json_writes()
    if command in ("run", "continuous"):
        save_after_each_benchmark()
    elif command == "setup":
        fix_setup_exit()
    elif command == "publish" and environ.get("ESTIMATORS_SUMMARY_MACHINE"):
        summaries_from_one_machine(environ["ESTIMATORS_SUMMARY_MACHINE"])


def main(argv: list[str] | None = None) -> int:
    """Patch asv for ``argv``'s command, then run ``asv *argv``: asv's main ends the process with its status
    (SystemExit)."""
    args = list(sys.argv[1:] if argv is None else argv)
    apply(args[0] if args else "")
    from asv.main import main as asv_main

    sys.argv = ["asv", *args]
    asv_main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
