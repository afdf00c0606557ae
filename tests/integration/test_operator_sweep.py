"""TrainingSweeps through the operator (kopf) against the API test server and a real S3 server.

KubeRay is SIMULATED: the test writes each RayJob's status where KubeRay's controller would, and the
eval summary the trainer would write to S3. Everything else (the sweep controller creating runs, the run
controller creating RayJobs, statuses, garbage collection) is the real operator and API server.
"""

from __future__ import annotations

import copy
import threading
import time

import yaml

import pytest

from test_operator_support import (
    chart_rbac,
    NS,
    RAYJOBS,
    REPO,
    RUNS,
    get,
    kuberay_sets_status,
    put_json,
    running_operator,
    status_of,
    wait_for,
)

SWEEPS = "trainingsweeps.trainkit.dev"


@pytest.fixture(params=["cluster", "namespaced"])
def cluster(cluster, request):
    """With RBAC enforced: the operator has only the chart's ServiceAccount and roles (both scopes)."""
    chart_rbac(cluster, request.param)
    return cluster


AVERAGES = [31.0, 38.5, 35.0, 29.5]  # what each mixture's eval will report


def sweep_doc(bucket: str) -> dict:
    doc = yaml.safe_load((REPO / "jobs" / "sweep-50-30-20-neighbourhood.yaml").read_text())
    doc["metadata"]["name"] = "mix"
    doc["spec"]["parallelism"] = 2
    doc["spec"]["mixtures"] = {
        "explicit": [
            {"weights": {"finepdfs": 0.5, "dclm-baseline": 0.3, "fineweb-edu": 0.2}},
            {"weights": {"finepdfs": 0.2, "dclm-baseline": 0.3, "fineweb-edu": 0.5}},
            {"weights": {"finepdfs": 0.3, "dclm-baseline": 0.3, "fineweb-edu": 0.4}},
            {"weights": {"finepdfs": 0.8, "dclm-baseline": 0.2, "fineweb-edu": 0.0}},
        ]
    }
    doc["spec"]["template"]["output"]["uri"] = f"{bucket}/sweeps/mix/"
    return doc


def sweep_runs(server) -> list[dict]:
    return server.list(RUNS, NS, label_selector="trainkit.dev/sweep=mix")


class ActiveWatcher:
    """Samples the number of unfinished runs of the sweep while the test runs; remembers the maximum."""

    def __init__(self, server):
        self.server, self.max_active, self._stop = server, 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            runs = sweep_runs(self.server)
            active = [r for r in runs if (r.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
            self.max_active = max(self.max_active, len(active))
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def finish(server, run_name: str, average: float, bucket: str):
    """SIMULATED trainer + KubeRay: the eval summary lands in S3, then the RayJob completes."""
    out = f"{bucket}/sweeps/mix/{run_name}"
    wait_for(lambda: get(server, RAYJOBS, run_name), what=f"RayJob {run_name}")
    put_json(f"{out}/progress.json", {"step": 406, "totalSteps": 406, "loss": 3.0 + average / 100})
    put_json(f"{out}/eval/step-00000406/summary.json", {"step": 406, "average": average, "tasks": {}})
    kuberay_sets_status(server, run_name, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
    wait_for(lambda: status_of(server, run_name).get("phase") == "Succeeded", what=f"{run_name} Succeeded")


def test_sweep_runs_under_parallelism_survives_restarts_and_ranks(cluster, seed_bucket):
    from trainkit.spec.crd import training_sweep_crd

    cluster.create(training_sweep_crd())
    doc = sweep_doc(seed_bucket)
    names = [f"mix-{i:03d}" for i in range(4)]
    with ActiveWatcher(cluster) as watcher:
        with running_operator(cluster):
            cluster.create(copy.deepcopy(doc))
            wait_for(lambda: len(sweep_runs(cluster)) == 2, what="two runs")
            time.sleep(1.5)  # timer ticks: still two
            assert sorted(r["metadata"]["name"] for r in sweep_runs(cluster)) == names[:2]
            sweep = cluster.get(SWEEPS, "mix", NS)
            for run in sweep_runs(cluster):
                (ref,) = run["metadata"]["ownerReferences"]
                assert ref["uid"] == sweep["metadata"]["uid"] and ref["kind"] == "TrainingSweep"
            finish(cluster, names[0], AVERAGES[0], seed_bucket)
            wait_for(lambda: len(sweep_runs(cluster)) == 3, what="the third run after one finished")

        # The operator is gone (a restart): nothing is duplicated when it comes back, twice.
        for _ in range(2):
            with running_operator(cluster):
                time.sleep(1.5)
                assert sorted(r["metadata"]["name"] for r in sweep_runs(cluster)) == names[:3]
        with running_operator(cluster):
            for name, avg in zip(names[1:3], AVERAGES[1:3]):
                finish(cluster, name, avg, seed_bucket)
            wait_for(lambda: get(cluster, RUNS, names[3]), what="the last run")
            finish(cluster, names[3], AVERAGES[3], seed_bucket)
            st = wait_for(
                lambda: (s := cluster.get(SWEEPS, "mix", NS).get("status") or {}).get("phase") == "Succeeded" and s,
                what="sweep Succeeded",
            )
    assert watcher.max_active <= 2, f"{watcher.max_active} unfinished runs at once"
    assert len(sweep_runs(cluster)) == 4
    board = [(row["run"], row["rank"], row["value"]) for row in st["leaderboard"]]
    assert board == [("mix-001", 1, 38.5), ("mix-002", 2, 35.0), ("mix-000", 3, 31.0), ("mix-003", 4, 29.5)]
    assert st["best"] == {"run": "mix-001", "metric": "eval.average", "value": 38.5}
    assert st["runs"] == {"total": 4, "created": 4, "active": 0, "succeeded": 4, "failed": 0}
    # mix-003 left fineweb-edu out (weight 0)
    assert [s["name"] for s in cluster.get(RUNS, "mix-003", NS)["spec"]["data"]["sources"]] == [
        "finepdfs",
        "dclm-baseline",
    ]

    # Deleting the sweep deletes its runs (and their RayJobs) but never the artifacts in S3. The operator
    # must be running: kopf's timers hold finalizers on sweeps and runs until it releases them.
    import boto3

    with running_operator(cluster):
        cluster_client_delete(cluster, "mix")
        try:
            wait_for(
                lambda: (
                    not sweep_runs(cluster) and not cluster.list(RAYJOBS, NS) and get(cluster, SWEEPS, "mix") is None
                ),
                what="sweep, runs and RayJobs garbage-collected",
                timeout=90,
            )
        except AssertionError:
            left = [
                (
                    o["kind"],
                    o["metadata"]["name"],
                    o["metadata"].get("finalizers"),
                    o["metadata"].get("deletionTimestamp"),
                )
                for o in [
                    *sweep_runs(cluster),
                    *cluster.list(RAYJOBS, NS),
                    get(cluster, SWEEPS, "mix") or {"kind": "-", "metadata": {"name": "-"}},
                ]
            ]
            raise AssertionError(f"left after deleting the sweep: {left}") from None
    s3 = boto3.client("s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="trainkit-runs", Prefix="sweeps/mix/")["Contents"]}
    assert {f"sweeps/mix/{n}/eval/step-00000406/summary.json" for n in names} <= keys


def cluster_client_delete(server, name: str):
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=str(server.kubeconfig))
    try:
        kubernetes.client.CustomObjectsApi(client).delete_namespaced_custom_object(
            "trainkit.dev", "v1alpha1", NS, "trainingsweeps", name
        )
    finally:
        client.close()


def test_invalid_sweep_is_failed_with_message_and_creates_nothing(cluster, seed_bucket):
    from trainkit.spec.crd import training_sweep_crd

    cluster.create(training_sweep_crd())
    doc = sweep_doc(seed_bucket)
    doc["spec"]["rankBy"] = "eval.lambada"  # passes the schema's pattern, not the semantic check
    with running_operator(cluster):
        cluster.create(doc)
        st = wait_for(
            lambda: (s := cluster.get(SWEEPS, "mix", NS).get("status") or {}).get("phase") == "Failed" and s,
            what="sweep Failed",
        )
        time.sleep(1.0)
    assert "rankBy eval.lambada: unknown metric" in st["message"]
    assert sweep_runs(cluster) == []


def test_sweep_controller_calls_are_declared_for_rbac(cluster, seed_bucket):
    from trainkit.spec.crd import training_sweep_crd
    from trainkit_operator.api_calls import API_CALLS

    cluster.create(training_sweep_crd())
    with running_operator(cluster):
        cluster.create(sweep_doc(seed_bucket))
        wait_for(
            lambda: len(sweep_runs(cluster)) == 2 and (cluster.get(SWEEPS, "mix", NS).get("status") or {}).get("runs"),
            what="runs created and sweep status written",
        )
    declared = {(g, r + (f"/{s}" if s else ""), v) for v, g, r, s in API_CALLS}
    made = {req.rbac for req in cluster.requests if req.resource in ("trainingsweeps", "trainingruns")}
    assert made - declared == set()
    assert {("trainkit.dev", "trainingruns", "create"), ("trainkit.dev", "trainingsweeps/status", "patch")} <= made
