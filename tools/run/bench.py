"""The main job: ``python -m tools.run.bench [--commits N]`` (README's first command runs it through make).

1. Runs the asv suite on this machine (CPU and the ``small`` preset unless a
   GPU is present; see benchmarks/environment.py) over the newest N commits that
   change what is measured (estimators/, benchmarks/, pyproject.toml,
   asv.conf.json), skipping commits that already have results in results/ (a run cut
   short does not count: its file is partial, tools/run/asv_patches.py).
2. Publishes the asv dashboard to html/ and says how to open it.
3. Prints the summary report of the newest results (tools.reporting.report).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from ..arguments import positive_int
from ..reporting import report
from .asv_patches import is_partial
from .asv_project import ROOT, asv_command, machine_name, publish, run_asv

MEASURED_PATHS = ("estimators", "benchmarks", "pyproject.toml", "asv.conf.json")


def measured_commits(count: int) -> list[str]:
    """The newest ``count`` commits of HEAD's first-parent history (the history asv runs over and the dashboard
    draws: a merged branch's own commits are not on it, the merge is) that change a measured path, newest first."""
    log = ["git", "log", "--first-parent", f"-n{count}", "--format=%H", "HEAD", "--", *MEASURED_PATHS]
    return subprocess.run(log, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def has_results(machine: str, commit: str) -> bool:
    """Whether results/<machine> holds a whole run of ``commit`` (not one cut short: asv_patches.is_partial)."""
    return any(not is_partial(path) for path in (ROOT / "results" / machine).glob(f"{commit[:8]}-*.json"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--commits", type=positive_int, default=3, help="how many recent measured commits (>= 1, default 3)"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the report's live equivalence check")
    args = parser.parse_args(argv)
    started = time.time()
    machine = machine_name()
    commits = measured_commits(args.commits)
    measured = [c for c in commits if has_results(machine, c)]
    to_run = [c for c in commits if c not in measured]
    names = ", ".join(c[:8] for c in commits)
    print(f"Machine {machine}: the {len(commits)} newest commits that change what is measured are {names}.")
    if measured:
        print(f"Already in results/{machine} (not run again): {', '.join(c[:8] for c in measured)}.")
    if to_run:
        print(f"Benchmarking {len(to_run)}: {', '.join(c[:8] for c in to_run)} (about 5-9 min each on a 2-core CPU).")
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as hashes:
            hashes.write("\n".join(to_run) + "\n")
            hashes.flush()
            status = run_asv(asv_command(["run", "--show-stderr", f"HASHFILE:{hashes.name}"]))
        if status != 0:
            print(f"asv run exited {status}", file=sys.stderr)
            return status
    else:
        print("Nothing to benchmark: publishing and reporting the stored results (--commits N looks further back).")
    if publish() != 0:
        return 1
    print(
        f"\nDashboard published to {ROOT / 'html'}: open it with `python -m tools.run.asv_project preview` "
        "(serves http://127.0.0.1:8080), or any static web server over html/."
    )
    print(f"Done in {time.time() - started:.0f} s (machine {machine}).\n")
    report_args = ["--no-verify"] if args.no_verify else []
    return report.main(report_args)


if __name__ == "__main__":
    raise SystemExit(main())
