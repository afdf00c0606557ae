"""`trainkit validate FILE...`: check TrainingRun, TrainingSweep and TrainingData files; `--explain` prints the derived
plan."""

from __future__ import annotations

import sys

from trainkit.spec import SpecError, derive_plan
from trainkit.spec.load import load_resources
from trainkit.spec.data import TrainingData, resolved_uri
from trainkit.spec.models import TrainingRun
from trainkit.spec.explain import explain


def register(sub) -> None:
    p = sub.add_parser(
        "validate", help="validate TrainingRun, TrainingSweep and TrainingData files; --explain prints the derived plan"
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--explain", action="store_true", help="print steps, batch geometry and tokens per source")
    p.set_defaults(func=run)


def run(args) -> int:
    failed = False
    for path in args.files:
        try:
            # Manifests of other kinds (a Kueue queue, a prepare RayJob) may sit beside runs in jobs/.
            resources = load_resources(path, allow_none=True)
        except SpecError as e:
            failed = True
            for issue in e.issues:
                print(issue.render(path), file=sys.stderr)
            continue
        if not resources:
            print(f"{path}: no TrainingRun, TrainingSweep or TrainingData (other kinds are not checked)")
        for res in resources:
            if isinstance(res, TrainingData):
                where = resolved_uri(res.spec)
                print(f"{path}: TrainingData {res.metadata.name}: valid ({len(res.spec.inputs)} input(s) -> {where})")
            elif not isinstance(res, TrainingRun):
                from trainkit.spec.sweep import mixture_count, planned_runs_at_most

                first = mixture_count(res.spec.mixtures, len(res.spec.template.data.sources))
                most = planned_runs_at_most(res.spec)
                more = f"; up to {most} with search rounds and the confirmation run" if most > first else ""
                print(f"{path}: TrainingSweep {res.metadata.name}: valid ({first} runs{more})")
            elif args.explain:
                from trainkit.data.availability import explain_data  # reads shard indexes when reachable
                from trainkit.data.loader import EXACT_NEEDS_LIMIT, sequences_needed

                plan = derive_plan(res.spec)
                weights = [src.weight for src in res.spec.data.sources]
                exact = plan.total_sequences <= EXACT_NEEDS_LIMIT
                print(explain(res, plan, sequences_needed(weights, plan.total_sequences), exact))
                data_lines, exhausted = explain_data(res.spec, plan)
                print(data_lines)
                failed |= exhausted
            else:
                print(f"{path}: TrainingRun {res.metadata.name}: valid")
    return 1 if failed else 0
