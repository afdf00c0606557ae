"""Restarts at random points, API errors (409, 500), dropped watches: kopf against the API test server.

KubeRay is not running here: a background thread SIMULATES KubeRay's controller by writing RayJob
status transitions (Initializing -> Running/RUNNING -> Complete/SUCCEEDED or Failed/FAILED) through
the API, and the trainer's progress.json / eval summary.json into the real (moto) S3 server.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from test_operator_support import (
    chart_rbac,
    NS,
    RAYJOBS,
    get,
    kuberay_sets_status,
    operator_config,
    running_operator,
    seed_doc,
    status_of,
    wait_for,
    put_json,
)


class SimulatedKubeRay(threading.Thread):
    """SIMULATED KubeRay (+ the trainer's S3 writes): advances each RayJob one state at a time."""

    def __init__(self, server, bucket: str, names: list[str], seed: int = 0):
        super().__init__(daemon=True, name="simulated-kuberay")
        self.server, self.bucket, self.names = server, bucket, names
        self.rng = random.Random(seed)
        self.stage = {n: 0 for n in names}
        self.uids: dict[str, str] = {}
        self.stop = threading.Event()
        self.errors: list[str] = []

    def outcome(self, name: str) -> str:
        return "Succeeded" if self.names.index(name) % 2 == 0 else "Failed"

    def deleted_after_end(self, name: str) -> bool:
        return self.names.index(name) % 3 == 0

    def delete_rayjob(self, name: str):
        import kubernetes

        client = kubernetes.config.new_client_from_config(config_file=str(self.server.kubeconfig))
        try:
            kubernetes.client.CustomObjectsApi(client).delete_namespaced_custom_object(
                "ray.io", "v1", NS, "rayjobs", name
            )
        finally:
            client.close()

    def run(self):
        while not self.stop.is_set():
            for name in self.names:
                rj = get(self.server, RAYJOBS, name)
                if rj is None:
                    continue
                uid = rj["metadata"]["uid"]
                if self.uids.setdefault(name, uid) != uid:
                    self.errors.append(f"RayJob {name} was re-created (uid {self.uids[name]} -> {uid})")
                if self.rng.random() < 0.5:
                    continue  # transitions arrive at random times
                out = f"{self.bucket}/runs/{NS}/{name}"
                stage = self.stage[name]
                try:
                    if stage == 0:
                        kuberay_sets_status(self.server, name, jobStatus="", jobDeploymentStatus="Initializing")
                    elif stage == 1:
                        put_json(f"{out}/progress.json", {"step": 1000, "totalSteps": 8138, "loss": 4.0})
                        kuberay_sets_status(self.server, name, jobStatus="RUNNING", jobDeploymentStatus="Running")
                    elif stage == 2 and self.outcome(name) == "Succeeded":
                        put_json(f"{out}/progress.json", {"step": 8138, "totalSteps": 8138, "loss": 2.9})
                        put_json(
                            f"{out}/eval/step-00008138/summary.json",
                            {"step": 8138, "average": 40.0, "tasks": {"piqa": 60.0}},
                        )
                        kuberay_sets_status(self.server, name, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
                    elif stage == 2:
                        kuberay_sets_status(
                            self.server,
                            name,
                            jobStatus="FAILED",
                            jobDeploymentStatus="Failed",
                            reason="AppFailed",
                            message=f"{name}: entrypoint exited with 1",
                        )
                    elif stage == 3 and self.deleted_after_end(name):
                        # like a TTL / DeleteSelf policy: the finished RayJob goes away. A terminal run must
                        # never bring it back (kubeflow/trainer#3779).
                        if status_of(self.server, name).get("phase") != self.outcome(name):
                            continue
                        self.delete_rayjob(name)
                    else:
                        continue
                    self.stage[name] = stage + 1
                except Exception as e:  # noqa: BLE001 - e.g. an injected error; try again next round
                    self.errors.append(f"simulator: {type(e).__name__}") if stage > 2 else None
            time.sleep(0.15)


class StatusWatch(threading.Thread):
    """Samples every run's status: once shown it must never vanish, and a terminal phase never changes."""

    def __init__(self, server, names):
        super().__init__(daemon=True, name="status-watch")
        self.server, self.names = server, names
        self.seen: dict[str, dict] = {}
        self.violations: list[str] = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for name in self.names:
                st = status_of(self.server, name)
                old = self.seen.get(name)
                if old and not st.get("phase"):
                    self.violations.append(f"{name}: status lost (was {old.get('phase')})")
                if old and old.get("phase") in ("Succeeded", "Failed") and st.get("phase") != old.get("phase"):
                    self.violations.append(f"{name}: terminal {old['phase']} became {st.get('phase')}")
                if old and old.get("progress", {}).get("step", 0) > st.get("progress", {}).get("step", 0):
                    self.violations.append(f"{name}: progress went back")
                if st.get("phase"):
                    self.seen[name] = st
            time.sleep(0.05)


@pytest.fixture(params=["cluster", "namespaced"])
def cluster(cluster, request):
    """With RBAC enforced: the operator has only the chart's ServiceAccount and roles (both scopes)."""
    chart_rbac(cluster, request.param)
    return cluster


def test_fifty_restarts_at_random_points_never_two_rayjobs_no_lost_status_no_crash_loop(cluster, seed_bucket):
    names = [f"chaos-{i}" for i in range(6)]
    rng = random.Random(1234)
    config = operator_config(timer_interval=0.5, timer_initial_delay=0.1)
    kuberay = SimulatedKubeRay(cluster, seed_bucket, names, seed=99)
    watch = StatusWatch(cluster, names)
    kuberay.start()
    watch.start()
    outputs = []
    try:
        for i in range(50):
            if i < len(names):
                cluster.create(seed_doc(names[i], bucket=seed_bucket))  # runs arrive while the operator churns
            with running_operator(cluster, config) as runner:  # asserts a clean exit: no crash
                time.sleep(rng.uniform(0.0, 0.8))  # stop at a random point of its work
            outputs.append(runner.output)
        with running_operator(cluster, config) as runner:
            for name in names:
                want = kuberay.outcome(name)
                wait_for(
                    lambda name=name, want=want: status_of(cluster, name).get("phase") == want,
                    timeout=60,
                    what=f"{name} {want}",
                )
            wait_for(
                lambda: all(kuberay.stage[n] == 4 for n in names if kuberay.deleted_after_end(n)),
                timeout=30,
                what="finished RayJobs deleted",
            )
            time.sleep(2)  # several timer ticks after the deletions
        outputs.append(runner.output)
    finally:
        kuberay.stop.set()
        watch.stop.set()
        kuberay.join(5)
        watch.join(5)

    assert kuberay.errors == [] and watch.violations == []
    for name in names:
        rayjobs = cluster.list(RAYJOBS, NS, label_selector=f"trainkit.dev/run={name}")
        if kuberay.deleted_after_end(name):
            assert kuberay.stage[name] == 4 and rayjobs == []  # deleted after the end, never re-created
        else:
            assert len(rayjobs) == 1 and rayjobs[0]["metadata"]["uid"] == kuberay.uids[name]
        st = status_of(cluster, name)
        if kuberay.outcome(name) == "Succeeded":
            assert st["eval"]["average"] == 40.0 and st["progress"]["step"] == 8138
        else:
            assert st["reason"] == "AppFailed" and name in st["message"]
    creates = [r for r in cluster.requests if r.resource == "rayjobs" and r.verb == "create"]
    assert len(creates) >= len(names)  # at least one per run; the rest got 409 and adopted the existing one
    assert len(cluster.list("configmaps", NS, label_selector="trainkit.dev/run")) == len(names)
    for out in outputs:
        assert "failed with an exception" not in out  # every failure was a retried TemporaryError, never a crash


def test_api_errors_are_retried_with_backoff(cluster, seed_bucket):
    cluster.inject("POST", r"/apis/ray\.io/v1/namespaces/default/rayjobs$", 500, times=2)
    cluster.inject("PATCH", r"/trainingruns/flaky/status", 409, times=2)
    cluster.inject("GET", r"/configmaps/flaky-spec-[0-9a-f]{16}$", 500, times=1)
    with running_operator(cluster) as runner:
        cluster.create(seed_doc("flaky", bucket=seed_bucket))
        wait_for(lambda: get(cluster, RAYJOBS, "flaky"), timeout=60, what="RayJob despite two 500s")
        wait_for(
            lambda: status_of(cluster, "flaky").get("phase") == "Pending", timeout=60, what="status despite two 409s"
        )
        posts = [r for r in cluster.raw_requests if r[0] == "POST" and r[1].split("?")[0].endswith("/rayjobs")]
        assert len(posts) >= 3

        # the watch is cut: kopf must re-establish it, so a run created afterwards is still handled
        cluster.drop_watches()
        cluster.create(seed_doc("after-drop", bucket=seed_bucket))
        wait_for(lambda: get(cluster, RAYJOBS, "after-drop"), timeout=60, what="RayJob of a run created after the drop")
        assert cluster.open_watches > 0
        # a transient 500 on the status write while KubeRay reports RUNNING (SIMULATED KubeRay)
        cluster.inject("PATCH", r"/trainingruns/after-drop/status", 500, times=2)
        kuberay_sets_status(cluster, "after-drop", jobStatus="RUNNING", jobDeploymentStatus="Running")
        wait_for(
            lambda: status_of(cluster, "after-drop").get("phase") == "Running", timeout=60, what="Running after 500s"
        )
    assert len(cluster.list(RAYJOBS, NS)) == 2
    assert "failed temporarily" in runner.output and "retrying" in runner.output
