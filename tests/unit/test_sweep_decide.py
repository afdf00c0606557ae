"""The operator's pure sweep decisions: what to create next under the parallelism limit, and the leaderboard."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from trainkit.spec.ranking import rank_values
from trainkit_operator.sweeps import decide_sweep

REPO = Path(__file__).resolve().parents[2]
SWEEP = yaml.safe_load((REPO / "jobs" / "sweep-50-30-20-neighbourhood.yaml").read_text())
SWEEP["metadata"].update({"namespace": "team-a", "uid": "sweep-uid-1", "generation": 3})
SWEEP["spec"]["mixtures"] = {
    "explicit": [{"weights": {"finepdfs": w, "dclm-baseline": 1 - w}} for w in (0.2, 0.4, 0.6, 0.8, 0.5)]
}
SWEEP["spec"]["parallelism"] = 2


def child(manifest: dict, phase: str | None = None, loss=None, average=None, uid="sweep-uid-1") -> dict:
    run = copy.deepcopy(manifest)
    run["metadata"]["ownerReferences"] = [{"kind": "TrainingSweep", "uid": uid, "name": "seed-mix-grid"}]
    if phase:
        run["status"] = {"phase": phase, "progress": {"loss": loss}, "eval": {"average": average, "tasks": {}}}
    return run


def test_first_reconcile_creates_parallelism_runs_in_index_order():
    d = decide_sweep(SWEEP, [])
    assert [r["metadata"]["name"] for r in d.create] == ["seed-mix-grid-000", "seed-mix-grid-001"]
    for r in d.create:
        assert r["metadata"]["namespace"] == "team-a"
        (ref,) = r["metadata"]["ownerReferences"]
        assert ref["uid"] == "sweep-uid-1" and ref["controller"] is True and ref["kind"] == "TrainingSweep"
    assert d.status.phase == "Running" and d.status.runs.created == 2 and d.status.runs.total == 5
    assert d.status.observed_generation == 3


def test_no_new_run_while_parallelism_is_used():
    first = decide_sweep(SWEEP, []).create
    running = [child(m, "Running") for m in first]
    assert decide_sweep(SWEEP, running).create == []
    # One finishes: exactly one more starts, the next index.
    running[0] = child(first[0], "Succeeded", loss=3.1, average=0.40)
    d = decide_sweep(SWEEP, running)
    assert [r["metadata"]["name"] for r in d.create] == ["seed-mix-grid-002"]
    assert d.status.runs.active == 2


def test_existing_runs_are_never_recreated_and_foreign_runs_do_not_count():
    manifests = decide_sweep({**SWEEP, "spec": {**SWEEP["spec"], "parallelism": 5}}, []).create
    foreign = [child(m, "Running", uid="other-sweep") for m in manifests]
    d = decide_sweep({**SWEEP, "spec": {**SWEEP["spec"], "parallelism": 5}}, foreign)
    # runs of another sweep with the same names are not ours, and their names are taken until they go
    assert d.create == [] and d.status.runs.created == 0 and d.status.runs.active == 0
    ours = [child(m, "Running") for m in manifests]
    assert decide_sweep({**SWEEP, "spec": {**SWEEP["spec"], "parallelism": 5}}, ours).create == []


def test_leaderboard_ranks_finished_runs_by_metric_and_names_the_best():
    manifests = decide_sweep({**SWEEP, "spec": {**SWEEP["spec"], "parallelism": 5}}, []).create
    averages = [0.31, 0.45, None, 0.45, 0.38]
    runs = [
        child(m, "Succeeded" if a is not None else "Failed", loss=3.0, average=a) for m, a in zip(manifests, averages)
    ]
    status = decide_sweep(SWEEP, runs).status
    ranked = [(r.run[-3:], r.rank) for r in status.leaderboard]
    assert ranked == [("001", 1), ("003", 1), ("004", 3), ("000", 4), ("002", None)]
    assert status.best.run == "seed-mix-grid-001" and status.best.value == 0.45
    assert (
        status.phase == "Succeeded" and status.runs.failed == 1 and "4 of 5 runs succeeded, 1 failed" in status.message
    )
    assert status.leaderboard[0].weights == {"finepdfs": 0.4, "dclm-baseline": 0.6}


def test_rank_by_loss_prefers_lower_and_ignores_unfinished_runs():
    sweep = copy.deepcopy(SWEEP)
    sweep["spec"]["rankBy"] = "loss"
    sweep["spec"]["parallelism"] = 5
    manifests = decide_sweep(sweep, []).create
    runs = [
        child(manifests[0], "Succeeded", loss=3.2),
        child(manifests[1], "Succeeded", loss=2.9),
        child(manifests[2], "Running", loss=1.0),
    ]
    status = decide_sweep(sweep, runs).status
    assert status.best.run == "seed-mix-grid-001"
    running_row = next(r for r in status.leaderboard if r.run.endswith("002"))
    assert running_row.rank is None and running_row.loss == 1.0


def test_all_failed_is_failed_and_invalid_sweep_creates_nothing():
    manifests = decide_sweep({**SWEEP, "spec": {**SWEEP["spec"], "parallelism": 5}}, []).create
    assert decide_sweep(SWEEP, [child(m, "Failed") for m in manifests]).status.phase == "Failed"
    bad = copy.deepcopy(SWEEP)
    bad["spec"]["mixtures"] = {"grid": {"step": 0.01}}
    d = decide_sweep(bad, [])
    assert d.create == [] and d.status.phase == "Failed" and "above maxRuns" in d.status.message


def test_rank_values_competition_ranking():
    assert rank_values([0.5, None, 0.7, 0.5], higher_is_better=True) == [2, None, 1, 2]
    assert rank_values([3.0, 2.5, 2.5], higher_is_better=False) == [3, 1, 1]


def test_runs_of_a_previous_sweep_of_this_name_block_creation_until_collected():
    """Delete + re-apply a sweep: the old sweep's runs (same names, another owner uid) linger until the GC
    collects them; the new sweep creates nothing under their names (a 409) and says why."""
    manifests = decide_sweep(SWEEP, []).create
    old = child(manifests[0], "Running", uid="the-deleted-sweep")
    d = decide_sweep(SWEEP, [old])
    assert d.create == [] and d.status.runs.created == 0
    assert "seed-mix-grid-000 of a previous sweep" in d.status.message
    assert [r["metadata"]["name"] for r in decide_sweep(SWEEP, []).create] == ["seed-mix-grid-000", "seed-mix-grid-001"]


def test_a_diverged_run_gets_no_rank_in_sweeps_and_compare_alike():
    from trainkit.spec.ranking import metric_value

    assert metric_value("loss", float("nan"), None, {}) is None
    assert metric_value("eval.x", None, None, {"x": float("inf")}) is None
    assert metric_value("eval.average", None, 0.4, {}) == 0.4
