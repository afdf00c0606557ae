"""Delete and re-apply while the old RayJob is still finalizing: the new run never takes the old RayJob.

On a real cluster garbage collection is asynchronous and KubeRay's finalizer (`ray.io/rayjob-finalizer`,
ray-operator/controllers/ray/rayjob_controller.go) keeps a deleted RayJob until its Ray job is stopped.
So `kubectl delete tr X; kubectl apply -f x.yaml` makes a new TrainingRun X (new uid) while RayJob X of the
old one still exists. SIMULATED KubeRay here: the test puts KubeRay's finalizer on each RayJob and removes
it when it decides the old job has stopped. The garbage collector is the API test server's (deferred).
"""

from __future__ import annotations

import copy

import pytest
from test_operator_support import (
    NS,
    RAYJOBS,
    RUNS,
    chart_rbac,
    get,
    kuberay_sets_status,
    mounted_configmap,
    running_operator,
    seed_doc,
    status_of,
    wait_for,
)
from test_operator_sweep import SWEEPS, sweep_doc

KUBERAY_FINALIZER = "ray.io/rayjob-finalizer"


@pytest.fixture(params=["cluster", "namespaced"])
def cluster(cluster, request):
    """With RBAC enforced: the operator has only the chart's ServiceAccount and roles (both scopes)."""
    from trainkit.spec.crd import training_sweep_crd

    cluster.create(training_sweep_crd())
    chart_rbac(cluster, request.param)
    return cluster


def _patch(server, resource: str, name: str, body: dict) -> None:
    rt = server.store.resolve(resource)
    server.store.patch(rt, rt.storage_version, NS, name, body, "application/merge-patch+json")


def kuberay_adds_finalizer(server, name: str) -> dict:
    """SIMULATED KubeRay: its first reconcile of a RayJob adds the finalizer."""
    rj = wait_for(lambda: get(server, RAYJOBS, name), what=f"RayJob {name}")
    _patch(server, RAYJOBS, name, {"metadata": {"finalizers": [KUBERAY_FINALIZER]}})
    return rj


def kuberay_finishes_finalizing(server, name: str) -> None:
    """SIMULATED KubeRay: the Ray job is stopped, the finalizer goes, and with it the RayJob."""
    _patch(server, RAYJOBS, name, {"metadata": {"finalizers": None}})


def phases_seen(server, name: str, since: int) -> list[str]:
    rt = server.store.resolve(RUNS)
    return [((e.obj.get("status") or {}).get("phase") or "") for e in server.store.events_since(since)
            if e.key == rt.key and e.obj["metadata"]["name"] == name]  # fmt: skip


def _delete(server, resource: str, name: str) -> None:
    rt = server.store.resolve(resource)
    server.store.delete(rt, NS, name)


def _reapplied_run_gets_its_own_rayjob(server, name: str, old_uid: str, mark: int) -> dict:
    new = wait_for(lambda: (r := get(server, RUNS, name)) and r["metadata"]["uid"] != old_uid and r, what="the new run")
    st = wait_for(
        lambda: (s := status_of(server, name)).get("reason") == "WaitingForPreviousRayJob" and s,
        what="the new run waiting for the old RayJob",
    )
    assert st["phase"] == "Pending" and old_uid in st["message"], st
    assert not st.get("rayJobName") and not st.get("jobDeploymentStatus"), "the old RayJob must not be recorded"
    old = get(server, RAYJOBS, name)
    assert old["metadata"]["ownerReferences"][0]["uid"] == old_uid and old["metadata"]["deletionTimestamp"]

    kuberay_finishes_finalizing(server, name)
    rj = wait_for(
        lambda: (
            (r := get(server, RAYJOBS, name))
            and r["metadata"]["ownerReferences"][0]["uid"] == new["metadata"]["uid"]
            and r
        ),
        what="the new run's own RayJob",
        timeout=60,
    )
    assert not rj["metadata"].get("deletionTimestamp")
    kuberay_sets_status(server, name, jobStatus="RUNNING", jobDeploymentStatus="Running")
    wait_for(lambda: status_of(server, name).get("phase") == "Running", what="the new run Running")
    st = status_of(server, name)
    assert st["rayJobName"] == name and st["jobDeploymentStatus"] == "Running"
    cm = get(server, "configmaps", mounted_configmap(rj))
    assert cm["metadata"]["ownerReferences"][0]["uid"] == new["metadata"]["uid"]
    assert "Failed" not in phases_seen(server, name, mark)
    return new


def test_delete_and_reapply_run_while_the_old_rayjob_finalizes(cluster, seed_bucket):
    doc = seed_doc("again", bucket=seed_bucket)
    with running_operator(cluster):
        cluster.create(copy.deepcopy(doc))
        kuberay_adds_finalizer(cluster, "again")
        kuberay_sets_status(cluster, "again", jobStatus="RUNNING", jobDeploymentStatus="Running")
        wait_for(lambda: status_of(cluster, "again").get("phase") == "Running", what="Running")
        old_uid = get(cluster, RUNS, "again")["metadata"]["uid"]

        mark = cluster.store.rv
        _delete(cluster, RUNS, "again")  # kubectl delete tr again (waits until the run is gone: kopf's finalizer)
        # kopf releases its finalizer once the run's timer has stopped: up to 60 s when a tick was running
        wait_for(lambda: get(cluster, RUNS, "again") is None, what="the old run gone", timeout=90)
        cluster.create(copy.deepcopy(doc))  # kubectl apply -f again.yaml, at once
        _reapplied_run_gets_its_own_rayjob(cluster, "again", old_uid, mark)


def test_delete_and_reapply_sweep_while_the_old_rayjob_finalizes(cluster, seed_bucket):
    doc = sweep_doc(seed_bucket)
    doc["spec"]["parallelism"] = 1
    doc["spec"]["mixtures"]["explicit"] = doc["spec"]["mixtures"]["explicit"][:1]
    with running_operator(cluster):
        cluster.create(copy.deepcopy(doc))
        kuberay_adds_finalizer(cluster, "mix-000")
        kuberay_sets_status(cluster, "mix-000", jobStatus="RUNNING", jobDeploymentStatus="Running")
        wait_for(lambda: status_of(cluster, "mix-000").get("phase") == "Running", what="Running")
        old_run_uid = get(cluster, RUNS, "mix-000")["metadata"]["uid"]

        mark = cluster.store.rv
        _delete(cluster, SWEEPS, "mix")  # the GC then deletes run mix-000, then (held by KubeRay) its RayJob
        wait_for(lambda: get(cluster, RUNS, "mix-000") is None, what="the old run collected", timeout=90)
        cluster.create(copy.deepcopy(doc))
        new_run = _reapplied_run_gets_its_own_rayjob(cluster, "mix-000", old_run_uid, mark)
        sweep = get(cluster, SWEEPS, "mix")
        assert new_run["metadata"]["ownerReferences"][0]["uid"] == sweep["metadata"]["uid"]
        wait_for(
            lambda: ((get(cluster, SWEEPS, "mix") or {}).get("status") or {}).get("phase") == "Running",
            what="the new sweep Running",
        )
