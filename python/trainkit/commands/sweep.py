"""`trainkit sweep FILE`: print the TrainingRuns a TrainingSweep stands for (for GitOps, or clusters
without the operator); `--local` runs them one after another on this machine and compares them."""

from __future__ import annotations

import sys

import yaml

from trainkit.spec import SpecError
from trainkit.spec.load import load_sweep
from trainkit.spec.sweep import expand_sweep


def register(sub) -> None:
    p = sub.add_parser("sweep", help="render (or --local: run) the TrainingRuns of a TrainingSweep")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--local", action="store_true", help="run every run here, one after another, then compare them")
    p.add_argument("--output", help="with --local: where the comparison report goes (default: <sweep output>/compare)")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        sweep = load_sweep(args.file)
    except SpecError as e:
        for issue in e.issues:
            print(issue.render(args.file), file=sys.stderr)
        return 1
    from trainkit.data import DataError
    from trainkit.sweep_local import prior_token_counts, run_sweep_locally

    if args.local:
        return run_sweep_locally(sweep, report_uri=args.output)
    try:
        runs = expand_sweep(sweep, prior_token_counts(sweep))
    except (DataError, ValueError) as e:
        print(f"{args.file}: mixtures.dirichlet.prior natural: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(runs, sort_keys=False))
    from trainkit.spec.search import searches

    if searches(sweep):
        # Later rounds and the confirmation run depend on these runs' results: the operator and --local plan
        # them as the runs finish.
        print(
            f"{args.file}: these are round 1's {len(runs)} runs; later search rounds and the confirmation run are "
            "planned from their results (by the operator, or `trainkit sweep --local`)",
            file=sys.stderr,
        )
    return 0
