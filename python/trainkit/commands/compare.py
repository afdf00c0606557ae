"""`trainkit compare URI... [--rank-by METRIC] [--output URI]`: a report across mixture runs.

Each URI is a run's output URI (holding spec.json) or a sweep's base output URI (runs in sub-folders).
The report (report.md, report.html, PNGs, report.json) goes to --output, default
`<first run's parent>/compare`, and the leaderboard is printed."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare mixture runs: leaderboard, plots, recommended mixture")
    p.add_argument("uris", nargs="+", metavar="URI", help="run output URIs, or a sweep's base output URI")
    p.add_argument(
        "--rank-by", default="eval.average", metavar="METRIC", help="eval.average (default), loss, or eval.<task>"
    )
    p.add_argument(
        "--output",
        default=None,
        metavar="URI",
        help="where to write the report (default: <first run's parent>/compare)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from trainkit.compare import CompareError, compare_runs
    from trainkit.storage import StorageError

    try:
        report = compare_runs(args.uris, rank_by=args.rank_by, output=args.output)
    except CompareError as e:
        print(f"trainkit compare: {e}", file=sys.stderr)
        return 1
    except (StorageError, PermissionError) as e:
        print(f"trainkit compare: storage: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(report.text)
    return 0
