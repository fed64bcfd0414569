"""Spread (interquartile range over median) of every time_ benchmark in one or more result sets.

    python -m tools.reporting.spread --machine h100-80gb [--commit HASH ...] [--min-batch 8]

Several ``--commit`` pool their timings (e.g. repeated runs of the same code).
Without ``--commit``, the newest commit of HEAD's history with a readable
result set; results files that are not result sets are named on stderr and
skipped, and the header says which newer ones were skipped and why.

Exit status: 0 the summary; 1 nothing to summarise (no readable results, or no
timing with quartiles in them); 2 a usage error (argparse's: an unknown machine,
a commit without a readable result set).
"""

from __future__ import annotations

import argparse
import statistics
import sys

from ..arguments import positive_int
from . import results as asv_results


def main(argv=None) -> int:
    """The summary of ``argv`` (sys.argv's by default) on stdout; the exit status of the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machine", required=True)
    parser.add_argument("--commit", action="append", help="commit (prefix); repeatable (default: the newest)")
    parser.add_argument("--min-batch", type=positive_int, default=8, help="also summarise batches >= this")
    args = parser.parse_args(argv)
    try:
        result_sets = [asv_results.latest(args.machine, commit) for commit in args.commit or [None]]
    except asv_results.NoResults as missing:
        parser.error(str(missing))
    except asv_results.NoData as nothing:
        print(f"{parser.prog}: error: {nothing}", file=sys.stderr)
        return 1
    rows = [
        (measurements.commit, name, params, m)
        for measurements in result_sets
        for (name, params), m in measurements.items()
        if ".time_" in name and m.spread is not None
    ]
    commits = ", ".join(measurements.commit[:8] for measurements in result_sets)
    if not rows:
        message = f"machine {args.machine}, commit {commits}: no timing (time_ benchmark) with quartiles"
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 1
    for measurements in result_sets:
        for note in measurements.notes:
            print(note)
    print(f"machine {args.machine}, commit {commits}: {len(rows)} timings")
    groups = {
        "all": rows,
        f"batch >= {args.min_batch}": [
            r for r in rows if r[2] and isinstance(r[2][-1], int) and r[2][-1] >= args.min_batch
        ],
    }
    for label, group in groups.items():
        spreads = sorted(m.spread for *_, m in group)
        if not spreads:
            continue
        over = sum(s > 0.03 for s in spreads)
        p90 = spreads[int(0.9 * (len(spreads) - 1))]
        print(
            f"{label:>12}: n={len(spreads)} median {statistics.median(spreads):.2%}  p90 {p90:.2%}  "
            f"max {spreads[-1]:.2%}  above 3%: {over}"
        )
    print("widest:")
    for commit, name, params, m in sorted(rows, key=lambda r: -r[3].spread)[:8]:
        print(
            f"  {name.split('.', 1)[1]}{params} at {commit[:8]}: median {m.median * 1e3:.3f} ms, spread {m.spread:.2%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
