"""The real launch path: `kubectl apply` -> operator (kopf) -> RayJob -> REAL Ray nodes -> training -> S3 -> status.

Nothing about KubeRay is simulated here: tests/support/kuberay_standin.py executes the RayJob the operator
built, from its own templates (a head with the head group's rayStartParams, each worker replica its own Ray
node, env resolved from the API server, the ConfigMap bind-mounted at /etc/trainkit in a private mount
namespace per pod, the entrypoint submitted with `ray job submit --submission-id`), and writes the RayJob
status with KubeRay's state machine. moto S3 on loopback, the API test server, real kubectl, real Ray Train
with 2 workers on 2 worker nodes (head num-cpus 0), the tiny model, the real GPT-2 tokenizer on English text.

State (3 Dec 2026): opt-in (TRAINKIT_REAL_RAY=1). It passed here in 286 s (load average 11-16 on the shared
2 cores; each Ray node took 30-60 s to start, and under that load a worker raylet once timed out at start,
which the stand-in now survives by restarting exited worker pods as the kubelet would). Make it default once
the CI machine is known to be quieter. It leaves an empty /etc/trainkit on the host (the bind-mount target).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_operator_support import (
    NS,
    RAYJOBS,
    get,
    operator_config,
    running_operator,
    status_of,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="private mount namespaces need root"),
    pytest.mark.skipif(
        os.environ.get("TRAINKIT_REAL_RAY") != "1", reason="opt-in: TRAINKIT_REAL_RAY=1 (see docstring)"
    ),
]

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "tests" / "data" / "lm_eval_tasks"


def kubectl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    from support.helm import kubectl as kubectl_path

    return subprocess.run([kubectl_path(), *args], capture_output=True, text=True, timeout=timeout, check=True)


def run_document(name: str, bucket: str, endpoint: str, sources: dict[str, str], tasks_uri: str) -> dict:
    return {
        "apiVersion": "trainkit.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"preset": "tiny"},
            "data": {
                "seqLength": 32,
                "totalTokens": 8 * 4 * 32,
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
            "checkpoint": {"everySteps": 4, "keep": 2},
            "eval": {"tasks": [{"name": "tk_winogrande", "path": tasks_uri, "limit": 4}], "batchSize": 2},
            "resources": {
                "workers": 2,
                "gpusPerWorker": 0,
                "cpusPerWorker": 1,
                "memoryPerWorker": "2Gi",
                "headCpus": 1,
                "headMemory": "2Gi",
            },
            "output": {"uri": f"{bucket}/runs/{NS}/{name}/"},
            "storage": {"endpoint": endpoint, "credentialsSecret": "trainkit-s3"},
        },
    }


def pod_env() -> dict[str, str]:
    """What the trainer image would carry: this checkout's code and the offline tokenizer cache. No AWS_*:
    the pods get storage credentials only through the RayJob's secretKeyRefs."""
    keep = ("TIKTOKEN_CACHE_DIR", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python"), str(REPO / "operator"), str(REPO)])
    env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"
    return env


def test_kubectl_apply_trains_on_real_ray_nodes_and_reports_succeeded(cluster, s3_endpoint, s3_bucket, tmp_path):
    from support.kuberay_standin import KubeRayStandIn
    from test_train_run import write_source
    from trainkit import storage

    from pydoc_data.topics import topics

    docs = [topics[k] for k in sorted(topics)]
    sources = {}
    for i, name in enumerate(("manuals", "web", "edu")):
        sources[name] = f"{s3_bucket}/shards/{name}"
        write_source(sources[name], docs[i::3][:12])
    storage.upload_dir(TASKS / "tk_winogrande", f"{s3_bucket}/tasks/winogrande-like")
    doc = run_document("real-ray", s3_bucket, s3_endpoint, sources, f"{s3_bucket}/tasks/winogrande-like")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))

    # The pods must not be able to read credentials from anywhere but the Secret
    assert "AWS_ACCESS_KEY_ID" not in pod_env()
    standin = KubeRayStandIn(cluster.kubeconfig, NS, tmp_path / "pods", extra_env=pod_env())
    (tmp_path / "pods").mkdir()
    started = time.monotonic()
    with running_operator(cluster, operator_config(ray_ttl_seconds_after_finished=0), timeout=600), standin:
        kubectl("apply", "-f", str(tmp_path / "run.yaml"))
        try:
            st = wait_for(
                lambda: (s := status_of(cluster, "real-ray")).get("phase") in ("Succeeded", "Failed") and s,
                timeout=float(os.environ.get("TK_REAL_RAY_TIMEOUT", "420")),
                interval=1,
                what="a terminal phase",
            )
        finally:
            for log in sorted((tmp_path / "pods").rglob("*.log")):
                print(f"---- {log}\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        assert st["phase"] == "Succeeded", json.dumps(st, indent=1)
        took = time.monotonic() - started
        rj = get(cluster, RAYJOBS, "real-ray")
        assert rj["status"]["jobDeploymentStatus"] == "Complete" and rj["status"]["jobStatus"] == "SUCCEEDED"
        assert rj["status"]["succeeded"] == 1 and rj["status"]["startTime"] and rj["status"]["endTime"]
        assert len(standin.clusters_started) == 1 and not standin.errors, standin.errors

        out = doc["spec"]["output"]["uri"]
        assert storage.exists(storage.join(out, "checkpoints", "step-00000008", "checkpoint.json"))
        assert storage.exists(storage.join(out, "eval", "step-00000008", "report.md"))
        assert st["progress"]["step"] == 8 and st["progress"]["percent"] == 100
        assert st["eval"]["step"] == 8 and st["eval"]["average"] is not None
        table = kubectl("get", "tr", "real-ray", "-n", NS).stdout
        assert "Succeeded" in table and "100" in table and str(round(st["eval"]["average"], 4))[:4] in table, table
        # the trainer read the spec from the mounted ConfigMap: the head pod's mount namespace had it, the host not
        assert not Path("/etc/trainkit/spec.json").exists()
        # the cluster is gone after the job (shutdownAfterJobFinishes, ttlSecondsAfterFinished 0)
        wait_for(lambda: standin.jobs["real-ray"].cluster is None, timeout=30, what="cluster deleted")
        print(f"real launch path: kubectl apply -> Succeeded in {took:.0f} s", file=sys.stderr)
