"""A TrainingSweep that searches, through the operator (kopf) against the API test server and a real S3
server: the natural prior read once from the sources' index.json (with the template's Secret), round 1,
the recommendation fitted from the runs' statuses, round 2 around it, the confirmation run, and an operator
restart in the middle that creates nothing twice and nothing different.

KubeRay and the trainer are SIMULATED as in test_operator_sweep.py: the test writes what the trainer writes
(progress.json, validation.jsonl) and the RayJob's terminal status; everything else is the real operator."""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
import yaml

from test_operator_support import (
    NS,
    RAYJOBS,
    REPO,
    RUNS,
    chart_rbac,
    get,
    kuberay_sets_status,
    put_json,
    running_operator,
    status_of,
    wait_for,
)

SWEEPS = "trainingsweeps.trainkit.dev"
SOURCES = ("finepdfs", "dclm-baseline", "fineweb-edu")
TOKENS = {"finepdfs": 600_000_000, "dclm-baseline": 300_000_000, "fineweb-edu": 100_000_000}
BEST = np.array([0.3, 0.3, 0.4])


def sweep_doc() -> dict:
    doc = yaml.safe_load((REPO / "jobs" / "sweep-50-30-20-neighbourhood.yaml").read_text())
    doc["metadata"]["name"] = "srch"
    spec = doc["spec"]
    spec.update(parallelism=2, maxRuns=10, rankBy="val.mean")
    spec["mixtures"] = {"dirichlet": {"samples": 4, "seed": 3, "alpha": 2.0, "prior": "natural"}}
    spec["search"] = {"rounds": 2, "runsPerRound": 2, "stopWhenMovedBelow": 0}
    spec["recommend"] = {"model": "linear"}
    spec["confirm"] = {"model": {"preset": "gpt2-124m"}}
    return doc


def truth(weights: dict[str, float]) -> float:
    """The simulated held-out loss, to the 6 decimals a run's status keeps."""
    w = np.array([weights.get(s, 0.0) for s in SOURCES])
    return round(float(3.0 + 2.0 * np.sum((w - BEST) ** 2)), 6)


def put_indexes():
    import boto3

    s3 = boto3.client("s3")
    try:
        s3.create_bucket(Bucket="trainkit-data")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    for name, uri in zip(SOURCES, ("finepdfs-1B", "dclm-baseline-1B", "fineweb-edu-1B")):
        put_json(
            f"s3://trainkit-data/shards/{uri}/index.json",
            {"format": "trainkit-tokens-v1", "totalTokens": TOKENS[name], "shards": [{"file": "shards/0.bin"}]},
        )


def finish(server, run: dict, value: float):
    """SIMULATED trainer + KubeRay: validation.jsonl and progress.json land in S3, then the RayJob completes."""
    name = run["metadata"]["name"]
    out = run["spec"]["output"]["uri"].rstrip("/")
    wait_for(lambda: get(server, RAYJOBS, name), what=f"RayJob {name}")
    steps = 406
    put_json(f"{out}/progress.json", {"step": steps, "totalSteps": steps, "loss": value + 0.4, "finished": True})
    line = {
        "step": steps,
        "tokens": 1,
        "sources": {s["name"]: {"loss": value, "tokens": 4096} for s in run["spec"]["data"]["sources"]},
        "mean": value,
    }
    from trainkit import storage

    storage.write_bytes(f"{out}/validation.jsonl", (json.dumps(line) + "\n").encode())
    kuberay_sets_status(server, name, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
    wait_for(lambda: status_of(server, name).get("phase") == "Succeeded", what=f"{name} Succeeded", timeout=60)
    wait_for(lambda: (status_of(server, name).get("validation") or {}).get("mean") == value, what=f"{name} validation")


def runs_of(server) -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in server.list(RUNS, NS, label_selector="trainkit.dev/sweep=srch")}


def weights(run: dict) -> dict[str, float]:
    return {s["name"]: s["weight"] for s in run["spec"]["data"]["sources"]}


def test_rounds_and_confirmation_through_the_operator_with_a_restart(cluster, seed_bucket):
    from trainkit.spec.crd import training_sweep_crd
    from trainkit.spec.search import RunOutcome, plan_sweep
    from trainkit.spec.sweep import TrainingSweep

    chart_rbac(cluster, "namespaced")  # only the chart's RBAC: the sweep reads its Secret and index.json as runs do
    cluster.create(training_sweep_crd())
    doc = sweep_doc()
    values: dict[str, float] = {}

    def finish_all(names):
        for name in names:
            run = runs_of(cluster)[name]
            values[name] = truth(weights(run))
            finish(cluster, run, values[name])

    # Round 1 without its index.json: the sweep waits, creating nothing, and says why.
    with running_operator(cluster):
        cluster.create(copy.deepcopy(doc))
        st = wait_for(lambda: (cluster.get(SWEEPS, "srch", NS).get("status") or {}).get("message"), what="a status")
        time.sleep(1.5)
        assert runs_of(cluster) == {}
        st = cluster.get(SWEEPS, "srch", NS)["status"]
        assert st["phase"] == "Pending" and "waiting for the sources' token counts" in st["message"]
        assert "index.json" in st["message"]

    put_indexes()
    with running_operator(cluster):
        wait_for(lambda: len(runs_of(cluster)) == 2, what="the first two runs (parallelism 2)")
        st = wait_for(
            lambda: (s := cluster.get(SWEEPS, "srch", NS).get("status") or {}).get("priorTokens") and s,
            what="the token counts in the status",
        )
        assert st["priorTokens"] == TOKENS
        finish_all(["srch-000", "srch-001"])
        wait_for(lambda: len(runs_of(cluster)) == 4, what="the rest of round 1")
        finish_all(["srch-002", "srch-003"])
        wait_for(lambda: len(runs_of(cluster)) == 6, what="round 2")
        st = wait_for(
            lambda: (
                ((s := cluster.get(SWEEPS, "srch", NS).get("status") or {}).get("search") or {}).get("round") == 2 and s
            ),
            what="round 2 in the status",
        )
        assert st["search"]["recommendation"]["model"] == "linear" and st["search"]["history"][0]["round"] == 1

    # A restart (twice) in the middle of round 2: the same two runs, nothing new, nothing changed.
    before = {n: weights(r) for n, r in runs_of(cluster).items()}
    for _ in range(2):
        with running_operator(cluster):
            time.sleep(1.5)
            assert {n: weights(r) for n, r in runs_of(cluster).items()} == before

    with running_operator(cluster):
        finish_all(["srch-004", "srch-005"])
        wait_for(lambda: "srch-target" in runs_of(cluster), what="the confirmation run")
        target = runs_of(cluster)["srch-target"]
        finish(cluster, target, 2.5)  # the bigger model: a lower loss than any proxy
        st = wait_for(
            lambda: (s := cluster.get(SWEEPS, "srch", NS).get("status") or {}).get("phase") == "Succeeded" and s,
            what="sweep Succeeded",
        )

    # Every run is what the pure planner makes of the same results, in this process (no shared cache).
    sweep = TrainingSweep.model_validate(doc)
    outcomes = {n: RunOutcome(True, v) for n, v in values.items()}
    plan = plan_sweep(sweep, outcomes, TOKENS)
    made = runs_of(cluster)
    assert [m["metadata"]["name"] for m in plan.all_runs] == sorted(made)
    for m in plan.all_runs:
        assert weights(made[m["metadata"]["name"]]) == weights(m)
        assert made[m["metadata"]["name"]]["metadata"]["ownerReferences"][0]["kind"] == "TrainingSweep"
    assert [made[f"srch-{i:03d}"]["metadata"]["labels"]["trainkit.dev/round"] for i in range(6)] == list("000011")
    assert made["srch-target"]["metadata"]["labels"]["trainkit.dev/role"] == "confirmation"
    assert made["srch-target"]["spec"]["model"]["preset"] == "gpt2-124m"
    # Round 2 started at round 1's recommendation.
    rec1 = plan.rounds[0].recommendation.weights
    assert weights(made["srch-004"]) == pytest.approx({s: w for s, w in rec1.items() if round(w, 6) > 0}, abs=2e-6)

    search = st["search"]
    assert search["round"] == 2 and search["rounds"] == 2 and search["stopped"] == "all 2 round(s) done"
    rec = search["recommendation"]
    assert rec["weights"] == pytest.approx(plan.recommendation.weights, abs=1e-6) and rec["runs"] == 6
    assert rec["cvSpearman"] == pytest.approx(plan.recommendation.chosen_cv.spearman, abs=1e-4)
    assert [h["round"] for h in search["history"]] == [1, 2]
    conf = st["confirmation"]
    assert conf["run"] == "srch-target" and conf["phase"] == "Succeeded" and conf["value"] == 2.5
    assert conf["rankAmongProxies"] == 1 and conf["proxies"] == 6
    assert conf["predicted"] == pytest.approx(plan.recommendation.predicted, abs=1e-5)
    # The leaderboard ranks the six proxies by their held-out loss; the target is not among them.
    board = [(row["run"], row["value"]) for row in st["leaderboard"]]
    assert [r for r, _ in board] == sorted(values, key=values.get)
    assert st["runs"]["total"] == 7 and st["runs"]["succeeded"] == 7
    assert "search ended: all 2 round(s) done" in st["message"]
