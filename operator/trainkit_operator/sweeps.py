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
from trainkit.spec.sweep import TrainingSweep, expand_sweep
from trainkit.spec.sweep_status import BestRun, LeaderboardRow, RunCounts, TrainingSweepStatus

SWEEP_LABEL = "trainkit.dev/sweep"


@dataclass
class SweepDecision:
    create: list[dict] = field(default_factory=list)
    status: TrainingSweepStatus = field(default_factory=TrainingSweepStatus)


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


def _row(manifest: dict, run: dict | None, metric: str) -> LeaderboardRow:
    status = (run or {}).get("status") or {}
    progress = status.get("progress") or {}
    ev = status.get("eval") or {}
    loss = progress.get("loss")
    average = ev.get("average")
    weights = {s["name"]: s["weight"] for s in manifest["spec"]["data"]["sources"]}
    return LeaderboardRow(
        run=manifest["metadata"]["name"],
        weights=weights,
        phase=run_phase(run) if run else "NotCreated",
        loss=loss,
        eval_average=average,
        # Only finished runs rank: a half-trained run's loss is not comparable with a finished one's.
        value=metric_value(metric, loss, average, ev.get("tasks") or {}) if run_phase(run) == "Succeeded" else None,
    )


def decide_sweep(sweep: dict, runs: list[dict]) -> SweepDecision:
    """What to create now and the status to show, from the sweep object and the runs that exist."""
    meta = sweep["metadata"]
    generation = meta.get("generation")
    try:
        parsed = TrainingSweep.model_validate({k: sweep[k] for k in ("apiVersion", "kind", "metadata", "spec")})
        manifests = expand_sweep(parsed)
    except ValidationError as e:
        message = "; ".join(f"{i.path}: {i.message}" for i in issues_from(e))
        return SweepDecision(
            status=TrainingSweepStatus(
                phase="Failed", message=f"invalid sweep: {message}", observed_generation=generation
            )
        )

    existing = owned_runs(sweep, runs)
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
    rows = [_row(m, existing.get(m["metadata"]["name"]), metric) for m in manifests]
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
    if finished:
        phase = "Succeeded" if counts.succeeded else "Failed"
        message = f"{counts.succeeded} of {counts.total} runs succeeded" + (
            f", {counts.failed} failed" if counts.failed else ""
        )
    else:
        phase = "Running" if counts.created else "Pending"
        message = f"{counts.succeeded + counts.failed} of {counts.total} runs finished, {counts.active} active (parallelism {parsed.spec.parallelism})"
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
    )
    return SweepDecision(create=create, status=status)
