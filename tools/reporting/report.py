"""The summary report of the latest asv results, laid out like the reference run (docs/reference-run.txt).

    python -m tools.reporting.report [--machine NAME] [--commit HASH] [--no-verify] [--markdown]
    python -m tools.reporting.report --machine h100-80gb --reference docs/reference-run.txt

Per estimator: the equivalence verification, computed live on this machine
(max |logits - current| of every implementation at batch 1 and 2, PASS at
1e-4); then forward, backward, total and peak memory per implementation and
batch, read from asv's results (medians +- half the interquartile range;
nothing is timed here); then the speedup against ``current`` at batch 1, the
per-sample speedup at larger batches and the ratio to the Floor benchmark.
``--reference`` instead compares the results with the reference run's figures;
``--quality`` prints the speed x quality table: per estimator, its fused step's
cost against the Floor at batch 16 beside its quality figures (bench_quality);
``--data-parallel`` the data-parallel table (bench_data_parallel, multi-GPU machines).
These modes (``--markdown``, ``--reference``, ``--precision``, ``--quality``,
``--data-parallel``) exclude each other.

Which results: those of ``--commit``, else of the newest commit of HEAD's
history with a readable result set; results files that are not result sets are
named on stderr and skipped, and the header says which newer ones were skipped
and why. Without ``--machine``, this machine's results, or where it has none
(e.g. a new CPU generation), the closest machine's that has: the same device
kind first (cpu-* for a CPU, the same GPU model), then the most result files;
the header and stderr name it.

Exit status: 0 the report; 1 nothing to report (no readable results, or none
of what the table shows at that commit; stderr says which commits have them);
2 a usage error (argparse's: an unknown machine, a commit without a readable
result set, a missing or malformed reference file, modes combined).
"""

from __future__ import annotations

import argparse
import re
import sys

from . import results as asv_results
from .live_check import equivalence
from .tables.common import EmptyReport
from .tables.data_parallel import data_parallel_report
from .tables.markdown import markdown_report
from .tables.precision import precision_report
from .tables.quality import quality_report
from .tables.reference import reference_comparison
from .tables.summary import text_report


def machine_preset(machine: str) -> str:
    """The preset a machine's results were measured with (recorded by tools/run/asv_project.py in its description).

    NoData where its machine.json is unreadable."""
    description = asv_results.machine_info(machine).get("os", "")
    found = re.search(r"preset (\w+)", str(description))
    return found.group(1) if found else "small"


def this_machine() -> tuple[str, list[str]]:
    """This machine's name (tools/run/asv_project.py's), or where it has no results the closest machine's that
    has (results.closest_machine), with a note saying so (also on stderr)."""
    from ..run.asv_project import machine_name

    name = machine_name()
    if name in asv_results.machines() and asv_results.result_files(name):
        return name, []
    chosen, why = asv_results.closest_machine(name)
    asv_results.warn(f"this machine, {name}, has no results: reporting {chosen}'s ({why})")
    return chosen, [f"Note: this machine, {name}, has no results; these are {chosen}'s, the closest machine: {why}."]


def render(args, measurements, preset: str) -> str:
    """The report ``args`` asks for."""
    if args.reference:
        return reference_comparison(measurements, args.machine, args.reference)
    if args.precision:
        return precision_report(measurements, args.machine)
    if args.quality:
        return quality_report(measurements, args.machine)
    if args.data_parallel:
        return data_parallel_report(measurements, args.machine)
    if args.markdown:
        return markdown_report(measurements, args.machine, preset)
    return text_report(measurements, args.machine, preset, check=None if args.no_verify else equivalence(preset))


def main(argv=None) -> int:
    """The report of ``argv`` (sys.argv's by default) on stdout; the exit status of the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--machine",
        help="asv machine name (default: this machine's, as tools/run/asv_project.py names it, or where it has no "
        "results the closest machine's that has)",
    )
    parser.add_argument("--commit", help="commit (prefix) to report (default: the newest with results)")
    parser.add_argument("--no-verify", action="store_true", help="skip the live equivalence verification")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--markdown", action="store_true", help="markdown tables instead of the text report")
    modes.add_argument("--precision", action="store_true", help="Dense, Floor, fused, bmm in every precision")
    modes.add_argument("--reference", help="compare with the reference run's output (e.g. docs/reference-run.txt)")
    modes.add_argument("--quality", action="store_true", help="the speed x quality table of every estimator")
    modes.add_argument("--data-parallel", action="store_true", help="the data-parallel table (multi-GPU machines)")
    args = parser.parse_args(argv)
    notes = []
    try:
        if args.machine is None:
            args.machine, notes = this_machine()
        measurements = asv_results.latest(args.machine, args.commit)
        preset = machine_preset(args.machine)
        text = render(args, measurements, preset)
    except asv_results.NoResults as missing:
        parser.error(str(missing))
    except asv_results.NoData as nothing:
        print(f"{parser.prog}: error: {nothing}", file=sys.stderr)
        return 1
    except EmptyReport as empty:
        commits = asv_results.commits_with(args.machine, *empty.benchmarks)
        where = f"commits with them (--commit): {', '.join(commits[:8])}" if commits else "no commit has them"
        print(f"{parser.prog}: error: {empty}; {where}", file=sys.stderr)
        return 1
    print("\n".join([*notes, *measurements.notes, text]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
