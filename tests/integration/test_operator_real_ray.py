"""The real launch path and its faults: `kubectl apply` -> operator (kopf) -> RayJob -> REAL Ray nodes -> S3 -> status.

Nothing about KubeRay is simulated here: tests/support/kuberay_standin.py executes the RayJobs the operator built,
from their own templates (a head with the head group's rayStartParams, each worker replica its own Ray node, env
resolved from the API server, the ConfigMap bind-mounted at /etc/trainkit in a private mount namespace per pod,
the entrypoint submitted by KubeRay's K8sJobMode submitter command), and writes the RayJob status with KubeRay's
state machine (suspend, backoffLimit retries on a new cluster, shutdownAfterJobFinishes). moto S3 on loopback,
the API test server, real kubectl, real Ray Train with 2 workers on 2 worker nodes (head num-cpus 0), the tiny
model, the real GPT-2 tokenizer on English text. What IS simulated: Kueue (the test writes what its preemption
writes: the Workload's Evicted condition and `suspend: true` on the RayJob, later the readmission), said where done.

Three runs of the same tiny spec (8 steps, a checkpoint every 2; different output URIs) go through ONE operator
and ONE stand-in side by side, each applied once the previous one's Ray cluster is up (one cluster boots at a time):
- `rr-ref`, uninterrupted, with an eval at the end: the reference weights for the others;
- `rr-faults`, in a Kueue queue with backoffLimit 1, paused by the trainer at steps 3, 5 and 7
  (TEST_PAUSE_AT_STEPS, docs/training.md) so each fault lands after a checkpoint: at 3 a worker node's raylet
  is SIGKILLed (Ray Train restarts the group from step 2 on the same cluster, the kubelet restarts the pod); at 5
  Kueue preempts it (KubeRay tears the cluster down; readmitted, a NEW cluster resumes from step 4); at 7 the
  driver is SIGKILLed (KubeRay retries on a NEW cluster, which resumes from step 6). The operator is restarted in
  the middle of each. Its final weights must be byte-identical to `rr-ref`'s, with the same per-source counts;
- `rr-fail`, backoffLimit 0: its driver is SIGKILLed once it connects, so the one attempt it has is used up and
  the run is Failed with KubeRay's reason; the operator is restarted meanwhile.
Each scenario runs in its own thread from the module fixture; the tests below read what they recorded. The
stand-in's timeline (printed at the end) says where the time goes.

Measured (6 Dec 2026, this shared 2-core machine under other engineers' load, load average 11-36): the module in
507, 588 and 720 s over three runs, 368-467 CPU-seconds in all (one run: Ray Train workers 87 s, Ray's per-node
agents, raylets and `ray start` 72 s, the heads' dashboards 29 s, Ray Train's controller and helper actors 62 s,
drivers and job supervisors 32 s, this pytest process with the operator, stand-in, API server and moto 27 s, the
eval 7 s). Under that load a node often misses Ray's hard-coded 30 s registration deadline and the stand-in
restarts its pod as the kubelet would (6-7 CPU-seconds and 40-70 s each). On an idle 2-core machine, without
those restarts, ~350-430 CPU-seconds on two cores: about 4 minutes, an estimate, not a measurement.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from test_operator_support import (
    NS,
    RAYJOBS,
    WORKLOAD_CRD,
    assert_no_credentials,
    events_for,
    get,
    install_runs,
    kueue_sets_suspend,
    kueue_sets_workload,
    operator_config,
    running_operator,
    status_of,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None,
        reason="the KubeRay stand-in gives each pod a private mount namespace (unshare -m), which needs root",
    ),
]

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "tests" / "data" / "lm_eval_tasks"
STEPS = 8
QUEUE = "gpu-training"
SCENARIO_TIMEOUT = float(os.environ.get("TK_REAL_RAY_TIMEOUT", "1200"))
STEP_TIMEOUT = SCENARIO_TIMEOUT / 4  # one reaction (a pod restart, a teardown, a status write) on a loaded machine


def kubectl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    from support.helm import kubectl as kubectl_path

    return subprocess.run([kubectl_path(), *args], capture_output=True, text=True, timeout=timeout, check=True)


def run_document(name: str, bucket: str, endpoint: str, sources: dict[str, str], **spec) -> dict:
    """The one tiny spec every run here shares; `spec` adds per-run blocks (eval, scheduling, resources.env)."""
    resources = {
        "workers": 2,
        "gpusPerWorker": 0,
        "cpusPerWorker": 1,
        "memoryPerWorker": "2Gi",
        "headCpus": 1,
        "headMemory": "2Gi",
        "env": spec.pop("env", []),
    }
    return {
        "apiVersion": "trainkit.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"preset": "tiny"},
            "data": {
                "seqLength": 32,
                "totalTokens": STEPS * 4 * 32,
                "whenExhausted": "repeat",
                "sources": [{"name": n, "uri": u, "weight": w} for (n, u), w in zip(sources.items(), (0.5, 0.3, 0.2))],
            },
            "training": {
                "microBatchSize": 2,
                "globalBatchSize": 4,
                "precision": "fp32",
                "seed": 7,
                "learningRate": {"peak": 3e-3, "final": 3e-4, "warmupSteps": 2},
                "logEverySteps": 2,
            },
            "checkpoint": {"everySteps": 2, "keep": 2},
            "eval": spec.pop("eval", {"atEnd": False}),
            "resources": resources,
            "output": {"uri": f"{bucket}/runs/{NS}/{name}/"},
            "storage": {"endpoint": endpoint, "credentialsSecret": "trainkit-s3"},
            **spec,
        },
    }


def pod_env() -> dict[str, str]:
    """What the trainer image would carry: this checkout's code and the offline tokenizer cache. No AWS_*:
    the pods get storage credentials only through the RayJob's secretKeyRefs."""
    keep = ("TIKTOKEN_CACHE_DIR", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python"), str(REPO / "operator"), str(REPO)])
    # Poll intervals and start-up limits for a loaded 2-core machine running three Ray clusters at once
    env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"
    env["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "600"
    return env


class Operator:
    """The operator under kopf, stopped and started again as its Deployment's pod would be replaced."""

    def __init__(self, server, config):
        self.server, self.config = server, config
        self.lock = threading.Lock()  # one scenario at a time takes it down
        self.restarts = 0
        self._stack: ExitStack | None = None

    def start(self) -> None:
        self._stack = ExitStack()
        self._stack.enter_context(running_operator(self.server, self.config, timeout=120))

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    @contextmanager
    def down(self):
        """The operator is gone for the block, then a new one starts."""
        with self.lock:
            self.stop()
            try:
                yield
            finally:
                self.start()
                self.restarts += 1


@dataclass
class Launch:
    """One API server, one operator, one stand-in and the runs' data, for the whole module."""

    server: Any
    standin: Any
    operator: Operator
    bucket: str
    endpoint: str
    sources: dict[str, str]
    tasks_uri: str
    tmp: Path

    def apply(self, doc: dict) -> None:
        path = self.tmp / f"{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        kubectl("apply", "-f", str(path))

    def clusters_of(self, name: str) -> list[str]:
        return [c for c in self.standin.clusters_started if c.startswith(f"{name}-")]

    def children(self, run_name: str) -> dict[str, list[str]]:
        """The run's children by kind, found by their owner reference to the run's uid."""
        uid = get(self.server, "trainingruns.trainkit.dev", run_name)["metadata"]["uid"]
        out = {}
        for resource in (RAYJOBS, "configmaps", "networkpolicies"):
            out[resource] = [
                o["metadata"]["name"]
                for o in self.server.list(resource, NS)
                if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
            ]
        return out


@pytest.fixture(scope="module")
def launch(s3_endpoint, tmp_path_factory):
    import boto3

    from kubeapi.fixtures import point_clients_at
    from kubeapi.server import KubeAPIServer
    from support.kuberay_standin import KubeRayStandIn
    from test_train_run import write_source
    from trainkit import storage

    from pydoc_data.topics import topics

    tmp = tmp_path_factory.mktemp("real-ray")
    bucket = f"s3://tk-real-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket[5:])
    docs = [topics[k] for k in sorted(topics)]
    sources = {}
    for i, name in enumerate(("manuals", "web", "edu")):
        sources[name] = f"{bucket}/shards/{name}"
        write_source(sources[name], docs[i::3][:12])
    storage.upload_dir(TASKS / "tk_winogrande", f"{bucket}/tasks/winogrande-like")

    with pytest.MonkeyPatch.context() as mp, KubeAPIServer() as server:
        point_clients_at(server, tmp, mp)
        install_runs(server)
        server.create(WORKLOAD_CRD)
        (tmp / "pods").mkdir()
        # The pods must not be able to read credentials from anywhere but the Secret
        assert not any(k.startswith("AWS_") for k in pod_env())
        standin = KubeRayStandIn(server.kubeconfig, NS, tmp / "pods", extra_env=pod_env())
        # a 2 s timer: the storage reads behind progress need no more; RayJob changes wake the operator at once
        operator = Operator(server, operator_config(ray_ttl_seconds_after_finished=0, timer_interval=2.0))
        operator.start()
        try:
            with standin:
                yield Launch(
                    server, standin, operator, bucket, s3_endpoint, sources, f"{bucket}/tasks/winogrande-like", tmp
                )
        finally:
            operator.stop()
            print("---- KubeRay stand-in timeline\n" + standin.timeline_text(), file=sys.stderr)
            if standin.errors:
                print(f"---- stand-in errors: {standin.errors}", file=sys.stderr)


class Scenario(threading.Thread):
    """A scenario's script in its own thread: what it saw goes in `seen`, a failure in `error`."""

    def __init__(self, name: str, script, launch: Launch):
        super().__init__(name=name, daemon=True)
        self.script, self.launch = script, launch
        self.seen: dict = {}
        self.error: str | None = None
        self.started_at = time.monotonic()
        self.took: float | None = None

    def run(self) -> None:
        try:
            self.script(self.launch, self.seen)
        except BaseException:  # noqa: BLE001 - reported by the tests that read this scenario
            self.error = traceback.format_exc()
        self.took = time.monotonic() - self.started_at
        self.launch.standin.note(self.name, f"test: scenario {'failed' if self.error else 'done'} in {self.took:.0f} s")

    def result(self) -> dict:
        self.join(SCENARIO_TIMEOUT)
        if self.is_alive():
            pytest.fail(f"scenario {self.name} still running after {SCENARIO_TIMEOUT:.0f} s; saw {self.seen}")
        if self.error:
            pytest.fail(f"scenario {self.name} failed:\n{self.error}\nsaw: {json.dumps(self.seen, default=str)}")
        return self.seen


def terminal(launch: Launch, name: str, timeout: float = SCENARIO_TIMEOUT) -> dict:
    return wait_for(
        lambda: (s := status_of(launch.server, name)).get("phase") in ("Succeeded", "Failed") and s,
        timeout=timeout,
        interval=1,
        what=f"a terminal phase of {name}",
    )


def paused_at(launch: Launch, gate: Path, step: int, name: str) -> None:
    wait_for(
        lambda: (gate / f"paused-{step}").exists(), timeout=SCENARIO_TIMEOUT, interval=0.5, what=f"{name} at {step}"
    )
    (gate / f"paused-{step}").unlink()
    launch.standin.note(name, f"test: the trainer waits at step {step}")


CONDITIONS = {"SpecValid", "SpecApplied", "Admitted", "Running", "Succeeded", "Failed", "MetricsFinite"}


def restart_check(launch: Launch, name: str, before: dict, rayjob_uid: str) -> dict:
    """Once the restarted operator has written the status again: still exactly one child of each kind, the
    same RayJob, and nothing of the status lost (startTime, progress, the last checkpoint, every condition)."""
    rj = get(launch.server, RAYJOBS, name)
    after = status_of(launch.server, name)
    return {
        "children": launch.children(name),
        "rayjob_uid_same": rj is not None and rj["metadata"]["uid"] == rayjob_uid,
        "start_time": (before.get("startTime"), after.get("startTime")),
        "progress_total": (after.get("progress") or {}).get("totalSteps"),
        "checkpoint": (
            (before.get("lastCheckpoint") or {}).get("step"),
            (after.get("lastCheckpoint") or {}).get("step"),
        ),
        "missing_conditions": sorted(CONDITIONS - {c["type"] for c in after.get("conditions") or []}),
        "phase_after": after.get("phase"),
    }


def pids_alive(pids: list[int]) -> list[int]:
    """The processes among `pids` that still run (a zombie waiting for its parent to reap it does not)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def metrics_start_steps(uri: str) -> list[int]:
    """Where each attempt of the run began, in order (metrics.jsonl's startStep, one per logged step)."""
    from trainkit import artifacts

    return [int(line["startStep"]) for line in artifacts.read_metrics(uri)]


def after_cluster_ready(launch: Launch, other: str) -> None:
    """Start once `other`'s Ray cluster is up: at most one cluster boots at a time (Ray gives a starting node 30 s
    to register, which nine nodes booting together on two loaded cores do not all make)."""
    wait_for(
        lambda: (c := launch.standin.cluster_of(other)) is not None and c.ready_at is not None,
        timeout=SCENARIO_TIMEOUT,
        interval=0.5,
        what=f"{other}'s cluster Ready",
    )


def reference_run(launch: Launch, seen: dict) -> None:
    after_cluster_ready(launch, "rr-faults")
    doc = run_document(
        "rr-ref",
        launch.bucket,
        launch.endpoint,
        launch.sources,
        eval={"tasks": [{"name": "tk_winogrande", "path": launch.tasks_uri, "limit": 4}], "batchSize": 2},
    )
    seen["doc"] = doc
    launch.apply(doc)
    seen["status"] = terminal(launch, "rr-ref")


def faults_run(launch: Launch, seen: dict) -> None:
    name, standin, server = "rr-faults", launch.standin, launch.server
    gate = launch.tmp / "gate"
    gate.mkdir()
    env = [{"name": "TEST_PAUSE_AT_STEPS", "value": "3,5,7"}, {"name": "TEST_PAUSE_DIR", "value": str(gate)}]
    doc = run_document(
        name,
        launch.bucket,
        launch.endpoint,
        launch.sources,
        env=env,
        scheduling={"queueName": QUEUE, "backoffLimit": 1},
    )
    seen["doc"] = doc
    out = doc["spec"]["output"]["uri"]
    launch.apply(doc)

    # 1. a worker node's raylet killed at step 3 (checkpoint 2 exists); the operator down meanwhile
    paused_at(launch, gate, 3, name)
    rj = get(server, RAYJOBS, name)
    uid = rj["metadata"]["uid"]
    before = wait_for(
        lambda: (s := status_of(server, name)).get("lastCheckpoint") and s,
        timeout=STEP_TIMEOUT,
        what="checkpoint 2 shown",
    )
    pod = standin.worker_pods(name)[1]
    raylet = pod.pid_of("/raylet ")
    assert raylet, f"no raylet in pod {pod.name}"
    with launch.operator.down():
        os.kill(raylet, signal.SIGKILL)
        standin.note(name, f"test: SIGKILL raylet {raylet} of {pod.name} at step 3; operator down")
        (gate / "resume-3").touch()
        wait_for(
            lambda: standin.worker_pods(name)[1].restarts == 1,
            timeout=STEP_TIMEOUT,
            what="the kubelet restarts the pod",
        )
    seen["raylet"] = {"pod": pod.name, "checkpoint_before": before["lastCheckpoint"]["step"]}

    # 2. Kueue preempts it at step 5 (checkpoint 4 exists)
    paused_at(launch, gate, 5, name)
    wait_for(lambda: status_of(server, name)["progress"]["step"] == 4, timeout=STEP_TIMEOUT, what="step 4 shown")
    seen["raylet"]["restart"] = restart_check(launch, name, before, uid)
    seen["raylet"]["clusters"] = launch.clusters_of(name)
    seen["raylet"]["start_steps"] = metrics_start_steps(out)
    cluster1 = standin.cluster_of(name)
    from support.kuberay_standin import process_tree

    cluster1_pids = [pid for pod in cluster1.pods for pid, _ in process_tree(pod.proc.pid)]
    # SIMULATED Kueue (pkg/scheduler/preemption/preemption.go, jobframework/reconciler.go "handle eviction"):
    # the Workload gets Evicted (reason Preempted), then the job reconciler's stopJob sets suspend: true.
    evicted = {
        "type": "Evicted",
        "status": "True",
        "reason": "Preempted",
        "message": "Preempted to accommodate a workload (UID: 1234, JobUID: 5678) due to prioritization in the "
        "ClusterQueue",
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    kueue_sets_workload(server, f"rayjob-{name}-1a2b3", uid, [evicted])
    kueue_sets_suspend(server, name, True)
    standin.note(name, "test: Kueue evicts the Workload and sets suspend: true at step 5")
    queued = wait_for(
        lambda: (
            (s := status_of(server, name)).get("phase") == "Queued"
            and get(server, RAYJOBS, name)["status"].get("jobDeploymentStatus") == "Suspended"
            and s
        ),
        timeout=STEP_TIMEOUT,
        interval=0.5,
        what="Suspended RayJob and a Queued run",
    )
    before = queued
    with launch.operator.down():
        standin.note(name, "test: operator restarted while preempted")
    # Ray's driver watcher (`while kill -s 0 <supervisor>; do sleep 1`) may outlive the pods by a second
    wait_for(lambda: not pids_alive(cluster1_pids), timeout=10, what="the first cluster's processes gone")
    seen["preempt"] = {
        "queued": {k: queued.get(k) for k in ("phase", "reason", "message", "lastCheckpoint", "progress")},
        "processes_left": pids_alive(cluster1_pids),
        "clusters_while_suspended": launch.clusters_of(name),
        "rayjobs": [r["metadata"]["name"] for r in server.list(RAYJOBS, NS)],
    }
    (gate / "resume-5").touch()
    # SIMULATED Kueue readmits it: quota reserved again, then RunWithPodSetsInfo sets suspend: false
    kueue_sets_workload(server, f"rayjob-{name}-1a2b3", uid, [{**evicted, "status": "False"}])
    kueue_sets_suspend(server, name, False)
    standin.note(name, "test: Kueue readmits it (suspend: false)")
    wait_for(lambda: status_of(server, name).get("phase") == "Running", timeout=SCENARIO_TIMEOUT, what="Running again")
    seen["preempt"]["restart"] = restart_check(launch, name, before, uid)

    # 3. the driver killed at step 7 (checkpoint 6 exists): KubeRay retries on a new cluster
    paused_at(launch, gate, 7, name)
    seen["preempt"]["clusters"] = launch.clusters_of(name)
    seen["preempt"]["start_steps"] = metrics_start_steps(out)
    info = wait_for(
        lambda: (i := standin.job_info(name)) and (i.get("driver_info") or {}).get("pid") and i, what="driver"
    )
    before = status_of(server, name)
    with launch.operator.down():
        os.kill(int(info["driver_info"]["pid"]), signal.SIGKILL)
        standin.note(name, f"test: SIGKILL driver {info['driver_info']['pid']} at step 7; operator down")
        (gate / "resume-7").touch()
        retrying = wait_for(
            lambda: (st := get(server, RAYJOBS, name)["status"]).get("jobDeploymentStatus") == "Retrying" and st,
            timeout=STEP_TIMEOUT,
            interval=0.2,
            what="KubeRay retrying",
        )
    seen["driver"] = {
        "killed_job": info.get("submission_id"),
        "retrying": {k: retrying.get(k) for k in ("reason", "message", "failed", "jobStatus")},
    }
    seen["status"] = terminal(launch, name)
    seen["driver"]["restart"] = restart_check(launch, name, before, uid)
    seen["driver"]["clusters"] = launch.clusters_of(name)
    seen["driver"]["start_steps"] = metrics_start_steps(out)
    seen["rayjob_status"] = get(server, RAYJOBS, name)["status"]
    seen["children"] = launch.children(name)
    seen["events"] = [(e["type"], e["reason"]) for e in events_for(server, name)]


def exhausted_run(launch: Launch, seen: dict) -> None:
    name, server = "rr-fail", launch.server
    after_cluster_ready(launch, "rr-ref")
    doc = run_document(name, launch.bucket, launch.endpoint, launch.sources, scheduling={"backoffLimit": 0})
    launch.apply(doc)
    info = wait_for(
        lambda: (i := launch.standin.job_info(name)) and (i.get("driver_info") or {}).get("pid") and i,
        timeout=SCENARIO_TIMEOUT,
        interval=0.5,
        what="the driver connected",
    )
    uid = get(server, RAYJOBS, name)["metadata"]["uid"]
    before = status_of(server, name)
    with launch.operator.down():
        os.kill(int(info["driver_info"]["pid"]), signal.SIGKILL)
        launch.standin.note(name, f"test: SIGKILL driver {info['driver_info']['pid']}; operator down")
        wait_for(
            lambda: get(server, RAYJOBS, name)["status"].get("jobDeploymentStatus") == "Failed",
            timeout=STEP_TIMEOUT,
            interval=0.5,
            what="KubeRay's Failed",
        )
    seen["status"] = terminal(launch, name, timeout=STEP_TIMEOUT)
    seen["restart"] = restart_check(launch, name, before, uid)
    seen["rayjob_status"] = get(server, RAYJOBS, name)["status"]
    seen["clusters"] = launch.clusters_of(name)
    seen["table"] = kubectl("get", "tr", name, "-n", NS).stdout
    seen["events"] = [(e["type"], e["reason"]) for e in events_for(server, name)]


@pytest.fixture(scope="module")
def scenarios(launch):
    runs = {
        "ref": Scenario("rr-ref", reference_run, launch),
        "faults": Scenario("rr-faults", faults_run, launch),
        "fail": Scenario("rr-fail", exhausted_run, launch),
    }
    for s in runs.values():
        s.start()
    yield runs


def final_checkpoint(uri: str) -> dict:
    """The final checkpoint's weights (bytes), per-source counts and stream digest."""
    from trainkit import storage

    ckpt = storage.join(uri, "checkpoints", f"step-{STEPS:08d}")
    manifest = json.loads(storage.read_bytes(storage.join(ckpt, "checkpoint.json")))
    state = json.loads(storage.read_bytes(storage.join(ckpt, "trainer", "state.json")))
    return {
        "weights": storage.read_bytes(storage.join(ckpt, "model.safetensors")),
        "sources": manifest["sourceSequences"],
        "digest": state["streamDigest"],
    }


def same_final_weights_as_reference(scenarios) -> None:
    ref, faults = scenarios["ref"].result(), scenarios["faults"].result()
    mine = final_checkpoint(faults["doc"]["spec"]["output"]["uri"])
    theirs = final_checkpoint(ref["doc"]["spec"]["output"]["uri"])
    assert mine["sources"] == theirs["sources"] and mine["digest"] == theirs["digest"]
    assert mine["weights"] == theirs["weights"], "final weights differ from the uninterrupted run's"


# ---------------------------------------------------------------------------------------------- tests
def test_kubectl_apply_trains_on_real_ray_nodes_and_reports_succeeded(launch, scenarios):
    from trainkit import artifacts, storage

    seen = scenarios["ref"].result()
    st, out = seen["status"], seen["doc"]["spec"]["output"]["uri"]
    assert st["phase"] == "Succeeded", json.dumps(st, indent=1)
    rj = get(launch.server, RAYJOBS, "rr-ref")
    assert rj["status"]["jobDeploymentStatus"] == "Complete" and rj["status"]["jobStatus"] == "SUCCEEDED"
    assert rj["status"]["succeeded"] == 1 and rj["status"]["startTime"] and rj["status"]["endTime"]
    assert launch.clusters_of("rr-ref") == [rj["status"]["rayClusterName"]]
    assert storage.exists(storage.join(out, "checkpoints", f"step-{STEPS:08d}", "checkpoint.json"))
    assert storage.exists(storage.join(out, "eval", f"step-{STEPS:08d}", "report.md"))
    assert st["progress"]["step"] == STEPS and st["progress"]["percent"] == 100
    assert st["eval"]["step"] == STEPS and st["eval"]["average"] is not None
    table = kubectl("get", "tr", "rr-ref", "-n", NS).stdout
    assert "Succeeded" in table and "100" in table and str(round(st["eval"]["average"], 4))[:4] in table, table
    # The trainer read the spec from the mounted ConfigMap: the head pod's mount namespace had it, the host not
    assert not Path("/etc/trainkit/spec.json").exists()
    # ...and its storage key only through the Secret's secretKeyRefs: never in an object, Event or log
    logs = [p.read_text(errors="replace") for p in (launch.tmp / "pods").rglob("*.log")]
    logs += [storage.read_bytes(u).decode(errors="replace") for u in storage.find(artifacts.logs_uri(out))]
    assert_no_credentials(launch.server, *logs)
    # shutdownAfterJobFinishes with ttlSecondsAfterFinished 0: the cluster is gone after the job
    wait_for(lambda: launch.standin.cluster_of("rr-ref") is None, timeout=60, what="cluster deleted")
    assert not launch.standin.errors, launch.standin.errors


def test_driver_killed_with_retries_exhausted_fails_with_kuberays_reason(scenarios):
    seen = scenarios["fail"].result()
    st, rjs = seen["status"], seen["rayjob_status"]
    assert rjs["jobDeploymentStatus"] == "Failed" and rjs["reason"] == "AppFailed" and rjs["failed"] == 1
    assert st["phase"] == "Failed" and st["reason"] == "AppFailed", st
    assert "exit code" in st["message"], st["message"]  # Ray's own words for the killed driver
    assert len(seen["clusters"]) == 1  # backoffLimit 0: no retry
    assert "Failed" in seen["table"], seen["table"]
    assert ("Warning", "AppFailed") in seen["events"], seen["events"]


def test_worker_raylet_killed_mid_run_ray_train_restarts_the_group(scenarios):
    seen = scenarios["faults"].result()["raylet"]
    assert len(seen["clusters"]) == 1  # the same Ray cluster: Ray Train's FailureConfig restart, not KubeRay's
    assert seen["checkpoint_before"] == 2
    # the restarted group resumed from checkpoint 2 (metrics lines of the second attempt say startStep 2)
    assert 2 in seen["start_steps"], seen["start_steps"]
    same_final_weights_as_reference(scenarios)


def test_kueue_preemption_tears_down_the_cluster_and_resumes_on_a_new_one(scenarios):
    seen = scenarios["faults"].result()
    pre = seen["preempt"]
    assert pre["queued"]["phase"] == "Queued" and pre["queued"]["reason"] == "Preempted", pre["queued"]
    assert "Preempted to accommodate" in pre["queued"]["message"], pre["queued"]["message"]
    assert pre["queued"]["lastCheckpoint"]["step"] == 4
    assert pre["processes_left"] == []  # KubeRay deleted the cluster
    assert len(pre["clusters_while_suspended"]) == 1 and len(pre["clusters"]) == 2  # resumed on a NEW cluster
    assert 4 in pre["start_steps"], pre["start_steps"]
    assert pre["rayjobs"].count("rr-faults") == 1 and seen["children"][RAYJOBS] == ["rr-faults"]
    assert ("Normal", "Preempted") in seen["events"], seen["events"]
    same_final_weights_as_reference(scenarios)


def test_driver_killed_kuberay_retries_on_a_new_cluster_and_resumes(scenarios):
    seen = scenarios["faults"].result()
    drv = seen["driver"]
    assert drv["retrying"]["reason"] == "AppFailed" and drv["retrying"]["failed"] == 1, drv["retrying"]
    assert len(drv["clusters"]) == 3  # the retry ran on a third cluster
    assert 6 in drv["start_steps"], drv["start_steps"]
    assert seen["status"]["phase"] == "Succeeded", seen["status"]
    assert seen["rayjob_status"]["failed"] == 1 and seen["rayjob_status"]["succeeded"] == 1
    same_final_weights_as_reference(scenarios)


def test_operator_restarts_leave_no_duplicate_children_and_no_lost_status(launch, scenarios):
    faults, fail = scenarios["faults"].result(), scenarios["fail"].result()
    checks = {
        "raylet": faults["raylet"]["restart"],
        "preempt": faults["preempt"]["restart"],
        "driver": faults["driver"]["restart"],
        "exhausted": fail["restart"],
    }
    for what, check in checks.items():
        kids = check["children"]
        assert len(kids[RAYJOBS]) == 1 and len(kids["configmaps"]) == 1, (what, kids)
        assert len(kids["networkpolicies"]) == 1, (what, kids)
        assert check["rayjob_uid_same"], (what, check)
        first, now = check["start_time"]
        assert first and now == first, (what, check)  # the run's start, not the latest attempt's
        assert check["progress_total"] == STEPS and not check["missing_conditions"], (what, check)
        assert check["checkpoint"][0] is None or (check["checkpoint"][1] or 0) >= check["checkpoint"][0], (what, check)
    assert launch.operator.restarts == 4
