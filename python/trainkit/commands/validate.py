"""`trainkit validate FILE...`: check run specs; `--explain` prints the derived plan."""

from __future__ import annotations

import sys

from trainkit.spec import SpecError, derive_plan, load_runs
from trainkit.spec.explain import explain


def register(sub) -> None:
    p = sub.add_parser("validate", help="validate TrainingRun files; --explain prints the derived plan")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--explain", action="store_true", help="print steps, batch geometry and tokens per source")
    p.set_defaults(func=run)


def run(args) -> int:
    failed = False
    for path in args.files:
        try:
            runs = load_runs(path)
        except SpecError as e:
            failed = True
            for issue in e.issues:
                print(issue.render(path), file=sys.stderr)
            continue
        for tr in runs:
            if args.explain:
                print(explain(tr, derive_plan(tr.spec)))
            else:
                print(f"{path}: TrainingRun {tr.metadata.name}: valid")
    return 1 if failed else 0
