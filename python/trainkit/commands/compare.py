"""`trainkit compare URI... [--rank-by METRIC] [--output URI]`: a report across mixture runs.

Each URI is a run's output URI (holding spec.json) or a sweep's base output URI (runs in sub-folders).
The report (report.md, report.html, PNGs, report.json) goes to --output, default
`<first run's parent>/compare`, and the leaderboard is printed."""

from __future__ import annotations

import sys

from trainkit.mixture.models import MODEL_CHOICES


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare mixture runs: leaderboard, plots, recommended mixture")
    p.add_argument("uris", nargs="+", metavar="URI", help="run output URIs, or a sweep's base output URI")
    p.add_argument(
        "--rank-by",
        default=None,
        metavar="METRIC",
        help="val.mean, val.<source>, eval.average, eval.<task> or loss (default: the sweep's rankBy, else eval.average)",
    )
    p.add_argument(
        "--sweep",
        metavar="FILE",
        help="the TrainingSweep the runs came from: its prior (the recommender's candidates), recommender settings, "
        "rounds and confirmation run",
    )
    p.add_argument(
        "--target", metavar="RUN", help="a confirmation run: compared with the proxies, not ranked among them"
    )
    p.add_argument("--model", choices=MODEL_CHOICES, help="the recommender's model (default auto: by cross-validation)")
    p.add_argument(
        "--max-distance",
        type=float,
        metavar="TV",
        help="never recommend farther than this total-variation distance from a tried mixture (default 0.25; 1: no bound)",
    )
    p.add_argument(
        "--output",
        default=None,
        metavar="URI",
        help="where to write the report (default: <first run's parent>/compare)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import replace

    from trainkit.compare import CompareError, compare_runs
    from trainkit.data import DataError
    from trainkit.mixture.recommend import Settings
    from trainkit.spec import SpecError
    from trainkit.spec.load import load_sweep
    from trainkit.storage import StorageError
    from trainkit.sweep_local import prior_token_counts

    sweep = tokens = None
    if args.max_distance is not None and not 0 < args.max_distance <= 1:
        print(f"trainkit compare: --max-distance {args.max_distance}: must be in (0, 1]", file=sys.stderr)
        return 1
    try:
        if args.sweep:
            sweep = load_sweep(args.sweep)
            tokens = prior_token_counts(sweep)
    except SpecError as e:
        for issue in e.issues:
            print(issue.render(args.sweep), file=sys.stderr)
        return 1
    except (DataError, ValueError) as e:
        print(f"trainkit compare: {args.sweep}: mixtures.dirichlet.prior natural: {e}", file=sys.stderr)
        return 1
    settings = None
    if args.model or args.max_distance is not None:
        base = Settings()
        if sweep is not None:
            from trainkit.spec.search import recommender_settings, seed_of

            base = recommender_settings(sweep.spec.recommend, seed_of(sweep))
        settings = replace(
            base,
            model=args.model or base.model,
            max_distance=base.max_distance if args.max_distance is None else args.max_distance,
        )
    rank_by = args.rank_by or (sweep.spec.rank_by if sweep is not None else "eval.average")
    try:
        report = compare_runs(
            args.uris,
            rank_by=rank_by,
            output=args.output,
            target=args.target,
            settings=settings,
            sweep=sweep,
            token_counts=tokens,
        )
    except CompareError as e:
        print(f"trainkit compare: {e}", file=sys.stderr)
        return 1
    except (StorageError, PermissionError) as e:
        print(f"trainkit compare: storage: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(report.text)
    return 0
