"""Spread (interquartile range over median) of every time_ benchmark in one result set.

    python -m tools.spread --machine h100-80gb [--commit HASH] [--min-batch 8]
"""

from __future__ import annotations

import argparse
import statistics

from . import asv_results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machine", required=True)
    parser.add_argument("--commit")
    parser.add_argument("--min-batch", type=int, default=8, help="also summarise batches >= this")
    args = parser.parse_args(argv)
    measurements = asv_results.latest(args.machine, args.commit)
    rows = [(name, params, m) for (name, params), m in measurements.items() if ".time_" in name and m.spread is not None]
    print(f"machine {args.machine}, commit {measurements.commit[:8]}: {len(rows)} timings")
    groups = {"all": rows, f"batch >= {args.min_batch}": [r for r in rows if r[1] and isinstance(r[1][-1], int) and r[1][-1] >= args.min_batch]}
    for label, group in groups.items():
        spreads = sorted(m.spread for _, _, m in group)
        if not spreads:
            continue
        over = sum(s > 0.03 for s in spreads)
        print(f"{label:>12}: n={len(spreads)} median {statistics.median(spreads):.2%}  p90 {spreads[int(0.9 * (len(spreads) - 1))]:.2%}  "
              f"max {spreads[-1]:.2%}  above 3%: {over}")
    print("widest:")
    for name, params, m in sorted(rows, key=lambda r: -r[2].spread)[:8]:
        print(f"  {name.split('.', 1)[1]}{params}: median {m.median * 1e3:.3f} ms, spread {m.spread:.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
