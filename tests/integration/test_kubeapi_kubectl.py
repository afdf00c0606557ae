"""kubectl (the real v1.32 binary) against the test API server: apply the CRD from `trainkit crd`, apply
a TrainingRun, re-apply (merge patch), get with server-side printing, get -o yaml, delete."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "gpt2-70m-50-30-20.yaml"

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


def kubectl(api, *args, input=None, check=True):
    cmd = ["kubectl", "--server", api.url, *args]
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60, env=os.environ.copy())
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def trainkit_crd() -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "trainkit", "crd"], capture_output=True, text=True, timeout=60, check=True
    )
    return proc.stdout


def test_kubectl_apply_crd_then_training_run(kube_api):
    out = kubectl(kube_api, "apply", "--validate=false", "-f", "-", input=trainkit_crd()).stdout
    assert "customresourcedefinition.apiextensions.k8s.io/trainingruns.trainkit.dev created" in out
    out = kubectl(kube_api, "apply", "--validate=false", "-f", str(JOB)).stdout
    assert "trainingrun.trainkit.dev/gpt2-70m-50-30-20 created" in out
    stored = kube_api.get("trainingruns.trainkit.dev", "gpt2-70m-50-30-20")
    assert stored["spec"]["data"]["sources"][0]["weight"] == 0.5
    assert stored["spec"]["data"]["shardFormat"] == "trainkit-tokens-v1"  # defaulted by the server
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored["metadata"]["annotations"]
    assert ("create", "trainkit.dev", "trainingruns", None, "default") in [
        (r.verb, r.group, r.resource, r.subresource, r.namespace) for r in kube_api.requests
    ]

    # re-applying the same file changes nothing; a changed file is a merge patch
    assert "unchanged" in kubectl(kube_api, "apply", "--validate=false", "-f", str(JOB)).stdout
    changed = yaml.safe_load(JOB.read_text())
    changed["spec"]["checkpoint"]["keep"] = 5
    out = kubectl(kube_api, "apply", "--validate=false", "-f", "-", input=yaml.safe_dump(changed)).stdout
    assert "configured" in out
    after = kube_api.get("trainingruns.trainkit.dev", "gpt2-70m-50-30-20")
    assert after["spec"]["checkpoint"]["keep"] == 5 and after["metadata"]["generation"] == 2
    assert kube_api.requests_for("trainingruns", "patch")


def test_kubectl_get_uses_printer_columns(kube_api):
    kubectl(kube_api, "apply", "--validate=false", "-f", "-", input=trainkit_crd())
    kubectl(kube_api, "apply", "--validate=false", "-f", str(JOB))
    kube_api.store.patch(kube_api.store.resolve("trainingruns.trainkit.dev"), "v1alpha1", "default", "gpt2-70m-50-30-20",
                         {"status": {"phase": "Running", "progress": {"percent": 12.5, "loss": 3.25}}},
                         "application/merge-patch+json", subresource="status")  # fmt: skip
    lines = kubectl(kube_api, "get", "tr").stdout.splitlines()
    header = lines[0].split()
    assert header == ["NAME", "PHASE", "PROGRESS", "LOSS", "EVAL", "AGE"]
    row = lines[1].split()
    assert row[:4] == ["gpt2-70m-50-30-20", "Running", "12.5", "3.25"]
    assert row[-1].endswith("s")  # an age, e.g. 1s
    # other names kubectl resolves through discovery
    assert "gpt2-70m-50-30-20" in kubectl(kube_api, "get", "trainingruns.trainkit.dev").stdout
    assert "gpt2-70m-50-30-20" in kubectl(kube_api, "get", "trainkit").stdout  # the CRD's category


def test_kubectl_get_yaml_and_delete(kube_api):
    kubectl(kube_api, "apply", "--validate=false", "-f", "-", input=trainkit_crd())
    kubectl(kube_api, "apply", "--validate=false", "-f", str(JOB))
    doc = yaml.safe_load(kubectl(kube_api, "get", "tr", "-o", "yaml").stdout)
    assert doc["kind"] == "List" and len(doc["items"]) == 1
    item = doc["items"][0]
    assert item["kind"] == "TrainingRun" and item["metadata"]["uid"] and item["metadata"]["resourceVersion"]
    one = yaml.safe_load(kubectl(kube_api, "get", "tr", "gpt2-70m-50-30-20", "-o", "yaml").stdout)
    assert one["spec"] == item["spec"]
    missing = kubectl(kube_api, "get", "tr", "nope", check=False)
    assert missing.returncode != 0 and 'trainingruns.trainkit.dev "nope" not found' in missing.stderr
    out = kubectl(kube_api, "delete", "tr", "gpt2-70m-50-30-20").stdout
    assert "deleted" in out and not kube_api.exists("trainingruns.trainkit.dev", "gpt2-70m-50-30-20")
    assert "No resources found" in kubectl(kube_api, "get", "tr").stderr


def test_kubectl_apply_rejects_invalid_run(kube_api):
    kubectl(kube_api, "apply", "--validate=false", "-f", "-", input=trainkit_crd())
    bad = yaml.safe_load(JOB.read_text())
    bad["spec"]["data"]["sources"][0]["weight"] = -1
    proc = kubectl(kube_api, "apply", "--validate=false", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert proc.returncode != 0
    assert "is invalid" in proc.stderr and "spec.data.sources[0].weight" in proc.stderr
    assert not kube_api.exists("trainingruns.trainkit.dev", "gpt2-70m-50-30-20")


def test_kubectl_server_side_apply(kube_api):
    kubectl(kube_api, "apply", "--server-side", "--validate=false", "-f", "-", input=trainkit_crd())
    out = kubectl(kube_api, "apply", "--server-side", "--validate=false", "-f", str(JOB)).stdout
    assert "serverside-applied" in out
    patches = [r for r in kube_api.raw_requests if r[0] == "PATCH" and "trainingruns" in r[1]]
    assert patches and "fieldManager=kubectl" in patches[-1][1]
    stored = kube_api.get("trainingruns.trainkit.dev", "gpt2-70m-50-30-20")
    assert stored["spec"]["training"]["globalBatchSize"] == 120 and stored["metadata"]["generation"] == 1


def _set_phase(api, phase, **extra):
    api.store.patch(api.store.resolve("trainingruns.trainkit.dev"), "v1alpha1", "default", "gpt2-70m-50-30-20",
                    {"status": {"phase": phase, **extra}}, "application/merge-patch+json", subresource="status")  # fmt: skip


def test_kubectl_wait_and_watch(kube_api):
    import threading
    import time

    kubectl(kube_api, "apply", "--validate=false", "-f", "-", input=trainkit_crd())
    kubectl(kube_api, "apply", "--validate=false", "-f", str(JOB))
    timer = threading.Timer(1.0, _set_phase, (kube_api, "Running"))
    timer.start()
    out = kubectl(
        kube_api, "wait", "--for=jsonpath={.status.phase}=Running", "tr/gpt2-70m-50-30-20", "--timeout=20s"
    ).stdout
    timer.join()
    assert "condition met" in out
    # kubectl get -w: the watch is served as Table rows with the printer columns
    proc = subprocess.Popen(["kubectl", "--server", kube_api.url, "get", "tr", "-w"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while kube_api.open_watches == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        _set_phase(kube_api, "Succeeded", progress={"percent": 100})
        while not any("Succeeded" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.terminate()
        err = proc.communicate(timeout=20)[1]
        reader.join(5)
    out = "".join(lines)
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "EVAL", "AGE"], out + err
    assert lines[-1].split()[:3] == ["gpt2-70m-50-30-20", "Succeeded", "100"], out + err


DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  replicas: 1
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d}}
    spec:
      containers:
        - {name: main, image: "img:1", env: [{name: A, value: "1"}, {name: B, value: "2"}]}
        - {name: side, image: "side:1"}
"""


def test_kubectl_reapply_of_builtin_is_a_strategic_merge(kube_api):
    kubectl(kube_api, "apply", "--validate=false", "-f", "-", input=DEPLOYMENT)
    # a field set by someone else (not in the applied file) must survive kubectl's strategic merge patch
    kube_api.store.patch(kube_api.store.resolve("deployments"), "v1", "default", "d",
                         {"spec": {"template": {"spec": {"containers": [{"name": "main", "imagePullPolicy": "Always"}]}}}},
                         "application/strategic-merge-patch+json")  # fmt: skip
    changed = (
        DEPLOYMENT.replace("img:1", "img:2")
        .replace(', {name: B, value: "2"}', "")
        .replace('        - {name: side, image: "side:1"}\n', "")
    )
    assert "configured" in kubectl(kube_api, "apply", "--validate=false", "-f", "-", input=changed).stdout
    dep = kube_api.get("deployments", "d")
    assert dep["spec"]["template"]["spec"]["containers"] == [
        {"name": "main", "image": "img:2", "env": [{"name": "A", "value": "1"}], "imagePullPolicy": "Always"}
    ]
    assert dep["metadata"]["generation"] == 3  # two spec changes
    assert any(r[0] == "PATCH" and "/deployments/d" in r[1] for r in kube_api.raw_requests)


def test_standalone_server_process(tmp_path):
    """`python -m kubeapi` serves until SIGTERM (for manual runs and out-of-pytest benchmarks)."""
    kc = tmp_path / "kc"
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    proc = subprocess.Popen([sys.executable, "-m", "kubeapi", "--kubeconfig", str(kc)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and kc.exists()
        out = subprocess.run(["kubectl", "--kubeconfig", str(kc), "get", "ns", "-o", "name"], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "KUBECACHEDIR": str(tmp_path / "cache")})  # fmt: skip
        assert "namespace/default" in out.stdout, out.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_kubectl_default_validation_is_server_side_strict(kube_api):
    """Without --validate=false kubectl reads /openapi/v3, sees that the server validates fields and sends
    fieldValidation=Strict: an unknown field is rejected with the real server's words."""
    kubectl(kube_api, "apply", "-f", "-", input=trainkit_crd())
    assert "created" in kubectl(kube_api, "apply", "-f", str(JOB)).stdout
    bad = yaml.safe_load(JOB.read_text())
    bad["metadata"]["name"] = "bad"
    bad["spec"]["bogus"] = 1
    proc = kubectl(kube_api, "apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert proc.returncode != 0
    assert ('TrainingRun in version "v1alpha1" cannot be handled as a TrainingRun: strict decoding error: '
            'unknown field "spec.bogus"') in proc.stderr  # fmt: skip
    assert not kube_api.exists("trainingruns.trainkit.dev", "bad")
    assert any("fieldValidation=Strict" in r[1] for r in kube_api.raw_requests if r[0] == "POST")


def test_kubectl_imperative_create_sends_protobuf(kube_api):
    """`kubectl create namespace|configmap|secret|serviceaccount` POST protobuf bodies: decoded for those kinds."""
    kubectl(kube_api, "create", "namespace", "team")
    kubectl(kube_api, "create", "configmap", "x", "-n", "team", "--from-literal=a=b", "--from-literal=c=d")
    kubectl(kube_api, "create", "secret", "generic", "s", "-n", "team", "--from-literal=password=hunter2")
    kubectl(kube_api, "create", "serviceaccount", "sa", "-n", "team")
    kubectl(kube_api, "label", "configmap", "x", "-n", "team", "tier=web")
    cm = kube_api.get("configmaps", "x", "team")
    assert cm["data"] == {"a": "b", "c": "d"} and cm["metadata"]["labels"] == {"tier": "web"}
    assert "generateName" not in cm["metadata"] and cm["metadata"]["uid"]
    assert kube_api.get("secrets", "s", "team")["data"] == {"password": "aHVudGVyMg=="}
    assert kube_api.get("namespaces", "team", None)["status"]["phase"] == "Active"
    assert kube_api.exists("serviceaccounts", "sa", "team")
    proc = kubectl(kube_api, "create", "deployment", "d", "--image=x", check=False)  # a kind not decoded here
    assert proc.returncode != 0 and "the body of the request was in an unknown format" in proc.stderr, proc.stderr
