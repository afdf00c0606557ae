"""Pure decisions for a TrainingSweep: which runs to create next, and the status (counts, leaderboard).

A sweep owns its TrainingRuns (ownerReferences), so deleting the sweep deletes them through the
garbage collector; their artifacts in object storage are never touched. Runs are created in index
order, never more than `parallelism` unfinished at once; a run that exists is never re-created or
changed (editing a sweep affects only runs not created yet). Names are deterministic, so an operator
restart cannot create a duplicate: creating an existing name is a 409 the reconcile ignores.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from trainkit.spec.load import SpecError, issues_from, parse_spec
from trainkit.spec.models import TRAINING_RUN_API_VERSION
from trainkit.spec.status import TERMINAL_PHASES
from trainkit.spec.ranking import higher_is_better, metric_value, rank_values
from trainkit.spec.search import RunOutcome, SweepPlan, confirmation_status, plan_sweep, search_status, searches
from trainkit.spec.sweep import TrainingSweep
from trainkit.spec.sweep_status import (
    STATUS_LEADERBOARD_ROWS,
    BestRun,
    FullLeaderboard,
    LeaderboardRow,
    PackCounts,
    RunCounts,
    TrainingSweepStatus,
)

from trainkit_operator.config import OperatorConfig
from trainkit_operator.packs import (
    PackObjects,
    build_pack,
    pack_of_run,
    packed_runs_due,
    packing_spec_error,
    packs_of_plan,
)


@dataclass
class SweepDecision:
    create: list[dict] = field(default_factory=list)
    status: TrainingSweepStatus = field(default_factory=TrainingSweepStatus)
    leaderboard: dict | None = None  # every row, for object storage (full_leaderboard_doc)
    parsed: TrainingSweep | None = None
    packs: dict[str, list[str]] = field(default_factory=dict)  # pack -> its runs, as planned so far (spec.packing)


def refused_sweep(sweep: dict, message: str) -> SweepDecision:
    """Nothing created, the sweep Failed with `message` (e.g. its namespace did not opt in)."""
    generation = sweep["metadata"].get("generation")
    return SweepDecision(status=TrainingSweepStatus(phase="Failed", message=message, observed_generation=generation))


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


def one_run_each(manifests: list[dict], existing: dict[str, dict], leftovers: list[str], free: int) -> list[dict]:
    """The manifests to create now in index order, one RayJob each: at most `free`, stopping at a name still
    held by a previous sweep's leftover run."""
    create = []
    for manifest in manifests:
        if free <= 0:
            break
        name = manifest["metadata"]["name"]
        if name in existing:
            continue
        if name in leftovers:
            break
        create.append(manifest)
        free -= 1
    return create


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
    planned_packs: dict[str, list[str]] = {}
    if parsed.spec.packing is not None:
        planned_packs = packs_of_plan(meta["name"], plan.runs, parsed.spec.packing.runs_per_cluster)
        create = packed_runs_due(
            planned_packs,
            {m["metadata"]["name"]: m for m in plan.runs},
            set(existing),
            set(leftovers),
            len(unfinished),
            parsed.spec.parallelism,
        )
        # The confirmation run (the full-scale model) is never packed: it gets a RayJob of its own.
        confirmation = [plan.confirmation] if plan.confirmation else []
        create += one_run_each(confirmation, existing, leftovers, free - len(create))
    else:
        create = one_run_each(manifests, existing, leftovers, free)
    for manifest in create:
        manifest["metadata"]["namespace"] = meta.get("namespace")
        manifest["metadata"]["ownerReferences"] = [sweep_owner_reference(sweep)]

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
        leaderboard=rows[:STATUS_LEADERBOARD_ROWS],
        best=BestRun(run=best.run, metric=metric, value=best.value) if best else None,
        prior_tokens=tokens,
    )
    if parsed.spec.packing is not None:
        status.packs = pack_counts(planned_packs, set(existing), parsed.spec.packing.runs_per_cluster)
    board = full_leaderboard_doc(meta["name"], metric, rows)
    return SweepDecision(
        create=create,
        status=with_search_status(status, parsed, plan, existing),
        leaderboard=board,
        parsed=parsed,
        packs=planned_packs,
    )


# ------------------------------------------------------------------------ the whole leaderboard
def full_leaderboard_doc(sweep_name: str, metric: str, rows: list[LeaderboardRow]) -> dict:
    """Every run's row, ranked (what the status's top rows are cut from); `digest` names its content."""
    body = {
        "sweep": sweep_name,
        "rankBy": metric,
        "higherIsBetter": higher_is_better(metric),
        "rows": [r.model_dump(by_alias=True, exclude_none=True, mode="json") for r in rows],
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return {**body, "digest": digest}


# A changing leaderboard is written at most this often (a finished sweep's is written at once): a 512-run
# sweep's runs finishing one by one would otherwise rewrite it 512 times.
LEADERBOARD_WRITE_INTERVAL_SECONDS = 30.0


def leaderboard_write_due(previous: FullLeaderboard | None, digest: str, now: str, final: bool) -> bool:
    """Whether the whole leaderboard should be written now (pure)."""
    if previous is None or previous.digest is None or previous.written_at is None:
        return True
    if previous.digest == digest:
        return False
    if final:
        return True
    return seconds_between(previous.written_at, now) >= LEADERBOARD_WRITE_INTERVAL_SECONDS


def seconds_between(earlier: str, later: str) -> float:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    try:
        return (datetime.strptime(later, fmt) - datetime.strptime(earlier, fmt)).total_seconds()
    except ValueError:
        return float("inf")  # an unreadable time: write


def pack_counts(packs: dict[str, list[str]], have: set[str], runs_per_cluster: int) -> PackCounts:
    return PackCounts(
        runs_per_cluster=runs_per_cluster,
        total=len(packs),
        created=sum(all(n in have for n in names) for names in packs.values()),
    )


# --------------------------------------------------------------------------------------- packs
@dataclass(frozen=True)
class PackDecision:
    create: list[PackObjects] = field(default_factory=list)
    problem: str | None = None  # why no pack may be created (the packed runs show it too, as InvalidSpec)


def decide_packs(
    sweep: dict,
    parsed: TrainingSweep,
    planned: dict[str, list[str]],
    runs: list[dict],
    pack_rayjobs: list[dict],
    config: OperatorConfig,
    refusal: str | None = None,
) -> PackDecision:
    """The packs to create now (`planned`: SweepDecision.packs): each pack whose runs all exist (their uids read back) and that has no RayJob
    yet (of any owner: a previous sweep's leftover of the same name is waited for). Members are the runs
    labelled into the pack, with the specs they carry; one whose spec no longer parses is left out.
    `refusal`: why the operator refuses the template on the cluster (decide.operator_refusal): then none."""
    packing = parsed.spec.packing
    if packing is None:
        return PackDecision()
    template = parsed.spec.template
    problem = refusal or packing_spec_error(template, config)
    if problem is not None:
        return PackDecision(problem=problem)
    existing = owned_runs(sweep, runs)
    made = {r["metadata"]["name"] for r in pack_rayjobs}
    create = []
    for pack, members in planned.items():
        if pack in made or any(n not in existing for n in members):
            continue
        specs = []
        for name in members:
            run = existing[name]
            if pack_of_run(run) != pack:
                continue  # created before the sweep asked for packing: it runs on its own RayJob
            try:
                spec, _ = parse_spec(run.get("spec") or {}, source=f"TrainingRun {name}")
            except SpecError:
                continue  # its own status says why (InvalidSpec)
            specs.append((run, spec))
        if specs:
            create.append(build_pack(sweep, pack, specs, template, packing.runs_per_cluster, config))
    return PackDecision(create=create)
