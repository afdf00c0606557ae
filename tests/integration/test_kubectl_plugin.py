"""`kubectl trainkit status|progress|logs|compare`: the REAL kubectl (v1.32) finds the `kubectl-trainkit` console
script on PATH and runs it against the API test server (KUBECONFIG) and the run's logs on a real S3 server (moto).

The TrainingRun's and TrainingSweep's statuses and the run's Events are written by the test as the operator
writes them (the operator's own writes are tested in test_operator_lifecycle/test_operator_metrics).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainkit import artifacts, storage

from test_operator_support import seed_doc

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
RUN, SWEEP, NS = "tracked-run", "mix-sweep", "default"


def kubectl(api, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(api.kubeconfig)}
    # the console script pip installed beside this interpreter, where kubectl looks for plugins
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=120, env=env)
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def set_status(api, resource: str, name: str, status: dict) -> None:
    store = api.store
    store.patch(store.resolve(resource), "v1alpha1", NS, name, {"status": status}, "application/merge-patch+json",
                subresource="status")  # fmt: skip


@pytest.fixture
def run_on_cluster(kube_api, s3_bucket, s3_endpoint):
    from trainkit.spec.crd import all_crds

    for crd in all_crds():
        kube_api.create(crd)
    doc = seed_doc(RUN, bucket=s3_bucket, **{"storage.endpoint": s3_endpoint})
    kube_api.create(doc)
    out = doc["spec"]["output"]["uri"].rstrip("/")
    set_status(kube_api, "trainingruns.trainkit.dev", RUN, {
        "phase": "Running", "reason": "JobRunning", "message": "training",
        "progress": {"step": 4069, "totalSteps": 8138, "percent": 50.0, "loss": 3.12, "tokensPerSecond": 1.5e6,
                     "etaSeconds": 333.0, "updatedAt": "2026-11-27T08:00:00Z"},
        "eval": {"step": 4000, "average": 30.5, "tasks": {"piqa": 55.0, "winogrande": 6.0},
                 "reportUri": f"{out}/eval/step-00004000/report.md"},
        "artifacts": {"output": out, "logs": f"{out}/logs/", "checkpoints": f"{out}/checkpoints/"},
        "conditions": [{"type": "Running", "status": "True", "reason": "JobRunning", "message": "",
                        "lastTransitionTime": "2026-11-27T07:00:00Z"}],
    })  # fmt: skip
    for i, (reason, message) in enumerate(
        (
            ("Created", "New -> Pending: creating the RayJob"),
            ("JobRunning", "Pending -> Running: training"),
            (
                "EvalResult",
                f"eval of step 4000: average 30.5; piqa 55, winogrande 6; report: {out}/eval/step-00004000/report.md",
            ),
        )  # fmt: skip
    ):
        kube_api.create({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"trainkit-{RUN}.{i}", "namespace": NS},
            "involvedObject": {"apiVersion": "trainkit.dev/v1alpha1", "kind": "TrainingRun", "name": RUN, "namespace": NS},
            "reason": reason, "message": message, "type": "Normal", "lastTimestamp": f"2026-11-27T07:0{i}:00Z",
            "source": {"component": "trainkit-operator"},
        })  # fmt: skip
    storage.write_bytes(artifacts.log_segment_uri(out, "driver", 0), b"[trainkit] driver: started\nfit done\n")
    storage.write_bytes(artifacts.log_segment_uri(out, "worker-0", 0), b"[trainkit] step 2/12 loss 10.1\n")
    return out


def test_plugin_is_found_by_kubectl(kube_api):
    assert "kubectl-trainkit" in kubectl(kube_api, "plugin", "list").stdout


def test_status_table_and_one_run(kube_api, run_on_cluster):
    table = kubectl(kube_api, "trainkit", "status").stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "STEP", "PERCENT", "LOSS", "TOKENS/S", "ETA", "EVAL", "AGE", "REASON"]
    row = table[1].split()
    assert row[:8] == [RUN, "Running", "4069/8138", "50.0%", "3.12", "1,500,000", "5m33s", "30.5"]
    one = kubectl(kube_api, "trainkit", "status", RUN).stdout
    out = run_on_cluster
    assert "Phase:       Running (JobRunning)" in one
    assert "step 4069/8138 (50.0%), loss 3.12, 1,500,000 tokens/s, ETA 5m33s" in one
    assert "Eval:        step 4000: average 30.5 (piqa 55, winogrande 6)" in one
    assert f"Logs:        {out}/logs/" in one and f"kubectl trainkit logs {RUN}" in one
    events = one.split("Events:", 1)[1]
    assert events.index("Created") < events.index("JobRunning") < events.index("EvalResult")  # oldest first
    missing = kubectl(kube_api, "trainkit", "status", "nope", check=False)
    assert missing.returncode == 1
    assert "kubectl trainkit: error: TrainingRun nope: not found in namespace default" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_progress_follows_the_run_to_its_end(kube_api, run_on_cluster):
    line = kubectl(kube_api, "trainkit", "progress", RUN).stdout
    assert line.startswith(f"{RUN}: [###############...............] 4069/8138 (50.0%) loss 3.12")
    assert line.rstrip().endswith("ETA 5m33s")
    done = {"phase": "Succeeded", "progress": {"step": 8138, "totalSteps": 8138, "percent": 100.0, "loss": 2.9}}
    env = {**os.environ, "KUBECONFIG": str(kube_api.kubeconfig)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen(["kubectl", "trainkit", "progress", RUN, "-w", "--interval", "0.3"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        first = proc.stdout.readline()  # the watch is running: now the run ends
        set_status(kube_api, "trainingruns.trainkit.dev", RUN, done)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    watched = [first.rstrip("\n"), *rest.splitlines()]
    assert len(watched) >= 2 and "4069/8138" in watched[0]
    assert watched[-1].endswith("8138/8138 (100.0%) loss 2.9  1,500,000 tokens/s  Succeeded")  # a merge patch: kept


def test_logs_read_from_the_runs_storage(kube_api, run_on_cluster):
    # the user's own S3 key from the environment; the endpoint from the run's spec.storage.endpoint
    text = kubectl(kube_api, "trainkit", "logs", RUN).stdout
    assert "==> driver <==\n[trainkit] driver: started\nfit done\n" in text
    assert "==> worker-0 <==\n[trainkit] step 2/12 loss 10.1\n" in text
    only = kubectl(kube_api, "trainkit", "logs", RUN, "--stream", "worker-0").stdout
    assert "driver" not in only and "loss 10.1" in only


def test_compare_prints_the_sweeps_leaderboard(kube_api, run_on_cluster):
    kube_api.create({
        "apiVersion": "trainkit.dev/v1alpha1", "kind": "TrainingSweep", "metadata": {"name": SWEEP, "namespace": NS},
        "spec": {"template": seed_doc(RUN)["spec"], "mixtures": {"explicit": [
            {"weights": {s["name"]: 1.0 for s in seed_doc(RUN)["spec"]["data"]["sources"]}}]},
                 "rankBy": "eval.average"},
    })  # fmt: skip
    set_status(kube_api, "trainingsweeps.trainkit.dev", SWEEP, {
        "phase": "Succeeded", "runs": {"total": 2, "created": 2, "succeeded": 2},
        "leaderboard": [
            {"run": f"{SWEEP}-001", "weights": {"dclm-baseline": 0.3, "finepdfs": 0.5, "fineweb-edu": 0.2}, "phase": "Succeeded",
             "loss": 3.4, "evalAverage": 31.0, "value": 31.0, "rank": 2},
            {"run": f"{SWEEP}-000", "weights": {"dclm-baseline": 0.3, "finepdfs": 0.2, "fineweb-edu": 0.5}, "phase": "Succeeded",
             "loss": 3.1, "evalAverage": 35.5, "value": 35.5, "rank": 1}],
        "best": {"run": f"{SWEEP}-000", "metric": "eval.average", "value": 35.5},
    })  # fmt: skip
    lines = kubectl(kube_api, "trainkit", "compare", SWEEP).stdout.splitlines()
    assert lines[0] == f"TrainingSweep {SWEEP}: Succeeded, 2 succeeded, 0 failed, 0 active of 2"
    assert lines[1].split() == [
        "RANK",
        "RUN",
        "PHASE",
        "DCLM-BASELINE",
        "FINEPDFS",
        "FINEWEB-EDU",
        "LOSS",
        "EVAL",
        "EVAL.AVERAGE",
    ]
    assert lines[2].split() == ["1", f"{SWEEP}-000", "Succeeded", "0.300", "0.200", "0.500", "3.1", "35.5", "35.5"]
    assert lines[3].split()[:2] == ["2", f"{SWEEP}-001"]
    assert lines[-1] == f"best: {SWEEP}-000 (eval.average 35.5)"
