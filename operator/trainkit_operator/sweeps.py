"""Pure decisions for a TrainingSweep: which runs to create next, and the status (counts, leaderboard).

A sweep owns its TrainingRuns (ownerReferences), so deleting the sweep deletes them through the
garbage collector; their artifacts in object storage are never touched. Runs are created in index
order, never more than `parallelism` unfinished at once; a run that exists is never re-created or
changed (editing a sweep affects only runs not created yet). Names are deterministic, so an operator
restart cannot create a duplicate: creating an existing name is a 409 the reconcile ignores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from trainkit.spec.load import issues_from
from trainkit.spec.models import TRAINING_RUN_API_VERSION
from trainkit.spec.status import TERMINAL_PHASES
from trainkit.spec.ranking import higher_is_better, metric_value, rank_values
from trainkit.spec.search import RunOutcome, SweepPlan, confirmation_status, plan_sweep, search_status, searches
from trainkit.spec.sweep import TrainingSweep
from trainkit.spec.sweep_status import BestRun, LeaderboardRow, RunCounts, TrainingSweepStatus

SWEEP_LABEL = "trainkit.dev/sweep"


@dataclass
class SweepDecision:
    create: list[dict] = field(default_factory=list)
    status: TrainingSweepStatus = field(default_factory=TrainingSweepStatus)


def sweep_owner_reference(sweep: dict) -> dict:
    return {
        "apiVersion": TRAINING_RUN_API_VERSION,
        "kind": "TrainingSweep",
        "name": sweep["metadata"]["name"],
        "uid": sweep["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_runs(sweep: dict, runs: list[dict]) -> dict[str, dict]:
    """The sweep's existing runs by name (owned by this sweep's uid, so a same-named old sweep's don't count)."""
    uid = sweep["metadata"].get("uid")
    return {
        r["metadata"]["name"]: r
        for r in runs
        if any(
            ref.get("uid") == uid and ref.get("kind") == "TrainingSweep"
            for ref in r["metadata"].get("ownerReferences", [])
        )
    }


def run_phase(run: dict | None) -> str:
    return ((run or {}).get("status") or {}).get("phase") or "Pending"


def run_value(run: dict | None, metric: str) -> float | None:
    """A run's value of the sweep's metric, from its status. Only finished runs have one: a half-trained
    run's loss is not comparable with a finished one's."""
    if run_phase(run) != "Succeeded":
        return None
    status = (run or {}).get("status") or {}
    ev = status.get("eval") or {}
    held_out = status.get("validation") or {}
    return metric_value(
        metric,
        (status.get("progress") or {}).get("loss"),
        ev.get("average"),
        ev.get("tasks") or {},
        held_out.get("sources") or {},
        held_out.get("mean"),
    )


def _row(manifest: dict, run: dict | None, metric: str) -> LeaderboardRow:
    status = (run or {}).get("status") or {}
    weights = {s["name"]: s["weight"] for s in manifest["spec"]["data"]["sources"]}
    return LeaderboardRow(
        run=manifest["metadata"]["name"],
        weights=weights,
        phase=run_phase(run) if run else "NotCreated",
        loss=(status.get("progress") or {}).get("loss"),
        eval_average=(status.get("eval") or {}).get("average"),
        value=run_value(run, metric),
    )


# --------------------------------------------------------------- mixture search (trainkit.spec.search)
def needs_prior_tokens(sweep: TrainingSweep) -> bool:
    """The natural prior is built from the sources' token counts (their index.json)."""
    d = sweep.spec.mixtures.dirichlet
    return d is not None and d.prior == "natural"


def recorded_prior_tokens(sweep: dict) -> dict[str, int] | None:
    """The token counts the status recorded when the sweep started: read once, so a re-prepared source can
    never change the plan of a sweep under way."""
    tokens = (sweep.get("status") or {}).get("priorTokens")
    if isinstance(tokens, dict) and tokens and all(isinstance(v, int) and v > 0 for v in tokens.values()):
        return {str(k): v for k, v in tokens.items()}
    return None


def run_outcomes(existing: dict[str, dict], metric: str) -> dict[str, RunOutcome]:
    """What the search planner needs of each existing run: finished or not, and its metric value."""
    return {
        name: RunOutcome(finished=run_phase(run) in TERMINAL_PHASES, value=run_value(run, metric))
        for name, run in existing.items()
    }


def with_search_status(status: TrainingSweepStatus, sweep: TrainingSweep, plan: SweepPlan, existing: dict[str, dict]):
    """The status's round, current recommendation and its cross-validated quality, and the confirmation run."""
    if not searches(sweep):
        return status
    metric = sweep.spec.rank_by
    target = plan.confirmation["metadata"]["name"] if plan.confirmation else None
    confirmation = None
    if target is not None:
        run = existing.get(target)
        confirmation = confirmation_status(
            plan,
            run_phase(run) if run else "NotCreated",
            run_value(run, metric),
            [run_value(existing.get(m["metadata"]["name"]), metric) for m in plan.runs],
            higher_is_better(metric),
        )
    return status.model_copy(update={"search": search_status(plan), "confirmation": confirmation})


def parse_sweep(sweep: dict) -> TrainingSweep:
    return TrainingSweep.model_validate({k: sweep[k] for k in ("apiVersion", "kind", "metadata", "spec")})


def decide_sweep(
    sweep: dict, runs: list[dict], prior_tokens: dict[str, int] | None = None, tokens_problem: str | None = None
) -> SweepDecision:
    """What to create now and the status to show, from the sweep object and the runs that exist.
    `prior_tokens`: the sources' token counts for a natural prior (the recorded ones win), or why they
    could not be read (the sweep then waits, creating nothing)."""
    meta = sweep["metadata"]
    generation = meta.get("generation")
    try:
        parsed = parse_sweep(sweep)
    except ValidationError as e:
        message = "; ".join(f"{i.path}: {i.message}" for i in issues_from(e))
        return SweepDecision(
            status=TrainingSweepStatus(
                phase="Failed", message=f"invalid sweep: {message}", observed_generation=generation
            )
        )
    tokens = (recorded_prior_tokens(sweep) or prior_tokens) if needs_prior_tokens(parsed) else None
    if needs_prior_tokens(parsed) and tokens is None:
        why = tokens_problem or "not read yet"
        return SweepDecision(
            status=TrainingSweepStatus(
                phase="Pending",
                message=f"waiting for the sources' token counts for the natural prior: {why}"[:4000],
                observed_generation=generation,
            )
        )

    existing = owned_runs(sweep, runs)
    try:
        plan = plan_sweep(parsed, run_outcomes(existing, parsed.spec.rank_by), tokens)
    except ValueError as e:  # token counts that do not fit the sources (a source renamed since they were read)
        return SweepDecision(
            status=TrainingSweepStatus(
                phase="Failed", message=f"mixture prior: {e}"[:4000], observed_generation=generation
            )
        )
    manifests = plan.all_runs
    # Runs of this name owned by a previous sweep of this name (deleted, not yet garbage-collected):
    # creating one would be a 409; creation in index order stops there until it is gone.
    leftovers = sorted({r["metadata"]["name"] for r in runs} - set(existing))
    unfinished = [n for n, r in existing.items() if run_phase(r) not in TERMINAL_PHASES]
    free = max(0, parsed.spec.parallelism - len(unfinished))
    create = []
    for manifest in manifests:
        if free == 0:
            break
        name = manifest["metadata"]["name"]
        if name in existing:
            continue
        if name in leftovers:
            break
        manifest["metadata"]["namespace"] = meta.get("namespace")
        manifest["metadata"]["ownerReferences"] = [sweep_owner_reference(sweep)]
        create.append(manifest)
        free -= 1

    metric = parsed.spec.rank_by
    # The confirmation run is a bigger model: shown beside the proxies (status.confirmation), not ranked among them.
    rows = [_row(m, existing.get(m["metadata"]["name"]), metric) for m in plan.runs]
    for row, rank in zip(rows, rank_values([r.value for r in rows], higher_is_better(metric))):
        row.rank = rank
    rows.sort(key=lambda r: (r.rank is None, r.rank or 0, r.run))

    phases = [
        run_phase(existing.get(m["metadata"]["name"])) if m["metadata"]["name"] in existing else None for m in manifests
    ]
    counts = RunCounts(
        total=len(manifests),
        created=len(existing) + len(create),
        active=len(unfinished) + len(create),
        succeeded=sum(p == "Succeeded" for p in phases),
        failed=sum(p == "Failed" for p in phases),
    )
    finished = counts.succeeded + counts.failed == counts.total
    if finished and searches(parsed) and plan.stopped is None:
        finished = False  # the planner has not seen these results yet: the next round follows
    if finished:
        phase = "Succeeded" if counts.succeeded else "Failed"
        message = f"{counts.succeeded} of {counts.total} runs succeeded" + (
            f", {counts.failed} failed" if counts.failed else ""
        )
        if plan.stopped:
            message += f"; search ended: {plan.stopped}"
    else:
        phase = "Running" if counts.created else "Pending"
        message = f"{counts.succeeded + counts.failed} of {counts.total} runs finished, {counts.active} active (parallelism {parsed.spec.parallelism})"
        if searches(parsed):
            message += f"; search round {plan.round + 1} of at most {plan.max_rounds}"
        if leftovers:
            message += (
                f"; waiting for {', '.join(leftovers)} of a previous sweep of this name to be deleted before "
                "creating this sweep's own"
            )
    best = next((r for r in rows if r.rank == 1), None)
    status = TrainingSweepStatus(
        phase=phase,
        message=message,
        observed_generation=generation,
        runs=counts,
        leaderboard=rows,
        best=BestRun(run=best.run, metric=metric, value=best.value) if best else None,
        prior_tokens=tokens,
    )
    return SweepDecision(create=create, status=with_search_status(status, parsed, plan, existing))
