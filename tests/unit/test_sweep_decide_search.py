"""The operator's pure decisions for a sweep that searches: waiting for the natural prior's token counts
(and keeping them), ranking by held-out loss from the runs' statuses, the next round once one finishes,
the confirmation run beside (not among) the proxies, and the refusal to read index.json from an endpoint
the operator does not allow."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from trainkit_operator.config import OperatorConfig
from trainkit_operator.sweep_reconcile import prior_tokens
from trainkit_operator.sweeps import decide_sweep

REPO = Path(__file__).resolve().parents[2]
TOKENS = {"finepdfs": 600, "dclm-baseline": 300, "fineweb-edu": 100}
SWEEP = yaml.safe_load((REPO / "jobs" / "sweep-50-30-20-neighbourhood.yaml").read_text())
SWEEP["metadata"].update({"name": "srch", "namespace": "team-a", "uid": "sweep-uid-1", "generation": 1})
SWEEP["spec"].update(parallelism=8, maxRuns=20, rankBy="val.mean")
SWEEP["spec"]["mixtures"] = {"dirichlet": {"samples": 4, "seed": 1, "prior": "natural"}}
SWEEP["spec"]["search"] = {"rounds": 2, "runsPerRound": 2, "stopWhenMovedBelow": 0}
SWEEP["spec"]["recommend"] = {"model": "linear"}
SWEEP["spec"]["confirm"] = {}


def finished(manifest: dict, value: float | None, phase: str = "Succeeded") -> dict:
    run = copy.deepcopy(manifest)
    run["metadata"]["ownerReferences"] = [{"kind": "TrainingSweep", "uid": "sweep-uid-1", "name": "srch"}]
    run["status"] = {"phase": phase, "progress": {"loss": 9.0}}
    if value is not None:
        run["status"]["validation"] = {"step": 10, "mean": value, "sources": {}}
    return run


def value_of(manifest: dict) -> float:
    w = {s["name"]: s["weight"] for s in manifest["spec"]["data"]["sources"]}
    return round(3.0 + w.get("fineweb-edu", 0.0) - 0.5 * w.get("finepdfs", 0.0), 6)


def test_a_natural_prior_waits_for_token_counts_then_keeps_them():
    waiting = decide_sweep(SWEEP, [], tokens_problem="s3://x/index.json: not found")
    assert waiting.create == [] and waiting.status.phase == "Pending"
    assert (
        waiting.status.message
        == "waiting for the sources' token counts for the natural prior: s3://x/index.json: not found"
    )
    first = decide_sweep(SWEEP, [], prior_tokens=TOKENS)
    assert len(first.create) == 4 and first.status.prior_tokens == TOKENS
    # Once recorded, the status's counts win over anything read later (a re-prepared source changes nothing).
    recorded = {**SWEEP, "status": {"priorTokens": TOKENS}}
    again = decide_sweep(recorded, [], prior_tokens={"finepdfs": 1, "dclm-baseline": 1, "fineweb-edu": 1})
    assert [r["spec"] for r in again.create] == [r["spec"] for r in first.create]


def test_rounds_rank_by_validation_and_put_the_target_beside_the_proxies():
    recorded = {**SWEEP, "status": {"priorTokens": TOKENS}}
    round1 = decide_sweep(recorded, [], prior_tokens=None).create
    runs = [finished(m, value_of(m)) for m in round1[:3]] + [finished(round1[3], None, phase="Failed")]
    d = decide_sweep(recorded, runs)
    assert [r["metadata"]["name"] for r in d.create] == ["srch-004", "srch-005"]
    assert [r["metadata"]["labels"]["trainkit.dev/round"] for r in d.create] == ["1", "1"]
    board = [(row.run, row.value) for row in d.status.leaderboard if row.rank is not None]
    assert [v for _, v in board] == sorted(value_of(m) for m in round1[:3])  # lower held-out loss first
    assert d.status.search.round == 2 and d.status.search.recommendation.runs == 3  # the failed run is left out
    assert d.status.phase == "Running" and "search round 2 of at most 2" in d.status.message
    runs += [finished(m, value_of(m)) for m in d.create]
    d = decide_sweep(recorded, runs)
    assert [r["metadata"]["name"] for r in d.create] == ["srch-target"]
    runs.append(finished(d.create[0], 1.5))
    d = decide_sweep(recorded, runs)
    assert d.create == [] and d.status.phase == "Succeeded" and d.status.runs.total == 7
    assert "srch-target" not in [row.run for row in d.status.leaderboard]
    c = d.status.confirmation
    assert c.run == "srch-target" and c.value == 1.5 and c.rank_among_proxies == 1 and c.proxies == 5


def test_index_json_is_never_read_from_an_endpoint_the_operator_does_not_allow():
    doc = copy.deepcopy(SWEEP)
    doc["spec"]["template"]["storage"]["endpoint"] = "http://169.254.169.254"
    tokens, problem = prior_tokens(None, "team-a", doc, OperatorConfig())  # refused before any API or S3 call
    assert tokens is None and problem.startswith("template: spec.storage.endpoint: refused")
    doc["spec"]["template"]["storage"]["endpoint"] = "https://s3.elsewhere.example"
    tokens, problem = prior_tokens(None, "team-a", doc, OperatorConfig())
    assert tokens is None and "is not an endpoint this operator allows" in problem
    assert prior_tokens(None, "team-a", {**doc, "status": {"priorTokens": TOKENS}}, OperatorConfig()) == (None, None)
