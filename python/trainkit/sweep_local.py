"""`trainkit sweep --local`: a sweep's runs one after another on this machine, then the comparison.

The same runs the operator would create (`trainkit.spec.search.plan_sweep`: the sweep's mixtures, then,
for a sweep that searches, each later round's mixtures around the recommendation, then the confirmation
run), trained through the same code path as `trainkit run` (preflight, Ray Train on a local Ray, eval at
the end), so a sweep tried on a laptop and one run on a cluster differ only in where they run. A run that
already finished (its final checkpoint and eval exist) is not trained again: re-running the command
resumes the sweep, and the plan (a pure function of the finished runs' results) comes out the same.
"""

from __future__ import annotations

import os
import sys

from trainkit.spec import SpecError, TrainingRunSpec, derive_plan, parse_run
from trainkit.spec.search import RunOutcome, SweepPlan, plan_sweep, searches
from trainkit.storage import StorageError, StorageOptions


def prior_token_counts(sweep) -> dict[str, int] | None:
    """Each source's token count, when the sweep samples from the natural prior (read from index.json)."""
    from trainkit import storage
    from trainkit.data.shards import source_token_counts

    d = sweep.spec.mixtures.dirichlet
    if d is None or d.prior != "natural":
        return None
    template = sweep.spec.template
    missing = [s.name for s in template.data.sources if s.uri is None]
    if missing:
        raise ValueError(
            f"sources {', '.join(missing)} name a TrainingData: the natural prior of a local sweep needs their uri"
        )
    sources = [(s.name, storage.absolute_uri(s.uri, os.getcwd())) for s in template.data.sources if s.uri]
    return source_token_counts(sources, StorageOptions.from_spec(template.storage))


def run_sweep_locally(sweep, report_uri: str | None = None, num_cpus: int | None = None) -> int:
    from trainkit.compare import CompareError, compare_runs
    from trainkit.data import DataError

    try:
        tokens = prior_token_counts(sweep)
    except (DataError, ValueError, StorageError, PermissionError) as e:
        print(f"mixtures.dirichlet.prior natural: {e}", file=sys.stderr)
        return 1
    outcomes: dict[str, RunOutcome] = {}
    # Ray is loaded and started only for the first run to train: a sweep whose runs' status cannot be read
    # fails in seconds, and one that is all done does not start Ray at all.
    ray_before = sys.modules.get("ray")
    started = ray_before is None or not ray_before.is_initialized()
    shown = 0
    try:
        while True:
            plan = plan_sweep(sweep, outcomes, tokens)
            for r in plan.rounds[shown:] if searches(sweep) else []:
                print(round_line(r, plan.max_rounds), flush=True)
            shown = len(plan.rounds)
            pending = [m for m in plan.all_runs if m["metadata"]["name"] not in outcomes]
            if not pending:
                break
            for manifest in pending:
                try:
                    code = _train(manifest, sweep.spec.rank_by, plan, outcomes, num_cpus)
                except (StorageError, PermissionError) as e:
                    print(f"trainkit sweep: error: reading the runs' status: {e}", file=sys.stderr)
                    return 1
                if code:
                    return code
    finally:
        ray = sys.modules.get("ray")
        if started and ray is not None and ray.is_initialized():
            ray.shutdown()
    if plan.stopped:
        print(f"search ended: {plan.stopped}", flush=True)

    outputs = [m["spec"]["output"]["uri"] for m in plan.all_runs]
    try:
        report = compare_runs(
            [_absolute(u) for u in outputs],
            rank_by=sweep.spec.rank_by,
            output=report_uri,
            sweep=sweep,
            token_counts=tokens,
        )
    except (CompareError, StorageError, PermissionError) as e:
        print(f"comparison failed: {e}", file=sys.stderr)
        return 1
    print(report.text)
    return 0


def _absolute(uri: str) -> str:
    from trainkit import storage

    return storage.absolute_uri(uri, os.getcwd())


def _train(
    manifest: dict, rank_by: str, plan: SweepPlan, outcomes: dict[str, RunOutcome], num_cpus: int | None = None
) -> int:
    """Train one run of the plan here (unless it already finished) and record its outcome."""
    from trainkit import artifacts
    from trainkit.compare import load_run_results, parse_metric
    from trainkit.spec.search import CONFIRMATION_ROLE, ROLE_LABEL, ROUND_LABEL
    from trainkit.train.launch import PreflightError, connect_ray, resolve_local_paths, run_spec

    name = manifest["metadata"]["name"]
    try:
        spec = resolve_local_paths(parse_run(manifest, name).spec, os.getcwd())
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 1
    labels = manifest["metadata"]["labels"]
    where = (
        "confirmation run"
        if labels.get(ROLE_LABEL) == CONFIRMATION_ROLE
        else f"round {int(labels.get(ROUND_LABEL, '0')) + 1}/{plan.max_rounds}"
    )
    index = len(outcomes) + 1
    options = StorageOptions.from_spec(spec.storage)
    weights = ", ".join(f"{s.name} {s.weight:.2f}" for s in spec.data.sources)
    total = derive_plan(spec).total_steps
    if artifacts.latest_complete_checkpoint(spec.output.uri, options) == total and _evaluated(spec, options):
        print(f"[{index}] {name} ({where}; {weights}): already done", flush=True)
    else:
        print(f"[{index}] {name} ({where}; {weights}): {total} steps -> {spec.output.uri}", flush=True)
        import ray

        if not ray.is_initialized():
            connect_ray(num_cpus, log_to_driver=False)
        try:
            run_spec(spec, name=name, max_failures=1)  # Ray is connected already: run_spec keeps it
        except PreflightError as e:
            print(f"{name}: {e}", file=sys.stderr)
            return 1
    result = load_run_results(spec.output.uri, options)
    outcomes[name] = RunOutcome(finished=True, value=parse_metric(rank_by).value(result))
    return 0


def round_line(r, max_rounds: int) -> str:
    """A finished round of a sweep that searches: the recommendation and its cross-validated quality."""
    rec = r.recommendation
    cv = rec.chosen_cv
    quality = (
        f"{rec.model}, cross-validated Spearman {cv.spearman:.2f}" if cv and cv.spearman is not None else rec.model
    )
    moved = "" if r.moved is None else f", moved {r.moved:.3f}"
    weights = ", ".join(f"{s} {w:.2f}" for s, w in (rec.weights or {}).items())
    return (
        f"after round {r.round + 1}/{max_rounds} ({r.runs} runs): {weights or 'no recommendation'} ({quality}{moved})"
    )


def _evaluated(spec: TrainingRunSpec, options: StorageOptions) -> bool:
    """True when the run asks for no eval, or its eval folder holds a committed summary."""
    from trainkit import artifacts
    from trainkit.train.launch import eval_at_end_requested

    if not eval_at_end_requested(spec):
        return True
    return artifacts.read_latest_eval_summary(spec.output.uri, options) is not None
