"""TrainingData through the operator: kopf against the API test server (the chart's RBAC enforced), a real S3 server
(moto), real demo text (three sources of English parquet), the real prepare entrypoint on this session's Ray.

What is SIMULATED is KubeRay: there is none here, and executing the prepare RayJobs with the KubeRay stand-in's real
Ray nodes (tests/support/kuberay_standin.py) costs minutes on this machine (test_operator_real_ray.py). So for each
prepare RayJob the operator creates, the test runs what its head pod would run, `python -m trainkit.jobs.prepare
--spec /etc/trainkit/spec.json`, in this process: the spec file is the RayJob's ConfigMap's, the environment is its
head container's env resolved from the API server as the kubelet resolves it (the stand-in's `resolve_env`: the
storage key comes from the Secret), and then writes the RayJob status KubeRay would write (RUNNING, then SUCCEEDED
or FAILED) through the status subresource.
"""

from __future__ import annotations

import io
import json
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from test_operator_support import (
    NS,
    RAYJOBS,
    assert_no_credentials,
    chart_rbac,
    get,
    kuberay_sets_status,
    running_operator,
    seed_doc,
    status_of,
    wait_for,
)

DATAS = "trainingdatas.trainkit.dev"
SOURCES = {"manuals": 0.5, "web": 0.3, "edu": 0.2}


@pytest.fixture
def cluster(cluster):
    from trainkit.spec.crd import training_data_crd

    cluster.create(training_data_crd())
    chart_rbac(cluster, "namespaced")  # the operator acts with the chart's ServiceAccount and roles only
    return cluster


def kubectl(server, *args: str) -> str:
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(server.kubeconfig), *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def apply(server, tmp_path, *docs: dict) -> None:
    path = tmp_path / f"apply-{docs[0]['metadata']['name']}.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)}))
    kubectl(server, "apply", "--validate=false", "-f", str(path))


def data_doc(name: str, inputs: list[str], bucket: str, endpoint: str) -> dict:
    return {
        "apiVersion": "trainkit.dev/v1alpha1",
        "kind": "TrainingData",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "inputs": inputs,
            "shardTokens": 4096,
            "output": {"uri": f"{bucket}/prepared/"},
            "storage": {"endpoint": endpoint, "credentialsSecret": "trainkit-s3"},
        },
    }


def run_doc(name: str, bucket: str, datasets: dict[str, str]) -> dict:
    sources = [{"name": s, "dataset": d, "weight": SOURCES.get(s, 1.0)} for s, d in datasets.items()]
    return seed_doc(name, bucket, **{"data.sources": sources})


def data_status(server, name: str) -> dict:
    return (get(server, DATAS, name) or {}).get("status") or {}


def condition(status: dict, type_: str) -> dict:
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


def mounted_spec(server, rayjob: dict) -> dict:
    """The spec ConfigMap the RayJob's head pod mounts (its name carries the spec's hash)."""
    volumes = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]
    return get(server, "configmaps", next(v["configMap"]["name"] for v in volumes if "configMap" in v))


def run_prepare_as_its_pod(server, monkeypatch, tmp_path, rayjob: dict) -> int:
    """SIMULATED KubeRay (see the module docstring): the head pod's entrypoint, with its env and spec file."""
    from support.kuberay_standin import KubeRayStandIn
    from trainkit.jobs.prepare import main

    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = KubeRayStandIn(server.kubeconfig, NS, tmp_path / "pods").resolve_env(head)
    assert env["AWS_ACCESS_KEY_ID"] and "AWS_SECRET_ACCESS_KEY" in env  # from the Secret, by secretKeyRef
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    configmap = mounted_spec(server, rayjob)
    spec_file = tmp_path / f"{rayjob['metadata']['name']}.json"
    spec_file.write_text(configmap["data"]["spec.json"])
    assert rayjob["spec"]["entrypoint"] == "python -m trainkit.jobs.prepare --spec /etc/trainkit/spec.json"
    return main(["--spec", str(spec_file)])


def test_runs_wait_for_prepared_data_then_start_with_its_uris(
    cluster, s3_endpoint, s3_bucket, demo_text, ray_session, monkeypatch, tmp_path
):
    from trainkit import storage

    for source in SOURCES:
        storage.upload_dir(demo_text / source, f"{s3_bucket}/raw/{source}")
    broken = io.BytesIO()
    pq.write_table(pa.table({"body": ["text under another column"] * 4}), broken)
    storage.write_bytes(f"{s3_bucket}/raw/broken/data/train-00000-of-00001.parquet", broken.getvalue())

    with running_operator(cluster):
        # A run naming three TrainingData that do not exist yet: it waits, saying for what.
        apply(cluster, tmp_path, run_doc("mix", s3_bucket, {s: s for s in SOURCES}))
        st = wait_for(lambda: (s := status_of(cluster, "mix")).get("reason") == "WaitingForData" and s, what="wait")
        assert st["phase"] == "Pending" and not get(cluster, RAYJOBS, "mix")
        ready = condition(st, "DataReady")
        assert ready["status"] == "False" and ready["reason"] == "WaitingForData"
        assert "source edu: TrainingData 'edu' does not exist (yet)" in ready["message"]

        apply(cluster, tmp_path, *[data_doc(s, [f"{s3_bucket}/raw/{s}/"], s3_bucket, s3_endpoint) for s in SOURCES])
        jobs = {
            s: wait_for(lambda s=s: get(cluster, RAYJOBS, f"data-{s}"), what=f"the prepare RayJob of {s}")
            for s in SOURCES
        }
        for source, rj in jobs.items():
            st = wait_for(
                lambda s=source: data_status(cluster, s).get("phase") == "Preparing" and data_status(cluster, s)
            )
            assert st["rayJobName"] == f"data-{source}" and st["uri"].startswith(f"{s3_bucket}/prepared/")
            owner = rj["metadata"]["ownerReferences"][0]
            assert owner["kind"] == "TrainingData" and owner["name"] == source
        st = wait_for(
            lambda: (
                "is Preparing" in condition(status_of(cluster, "mix"), "DataReady")["message"]
                and status_of(cluster, "mix")
            )
        )
        assert st["phase"] == "Pending" and not get(cluster, RAYJOBS, "mix")

        # SIMULATED KubeRay runs each prepare job (module docstring) and reports it.
        for rj in jobs.values():
            kuberay_sets_status(cluster, rj["metadata"]["name"], jobStatus="RUNNING", jobDeploymentStatus="Running")
            assert run_prepare_as_its_pod(cluster, monkeypatch, tmp_path, rj) == 0
            kuberay_sets_status(cluster, rj["metadata"]["name"], jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
        prepared = {
            s: wait_for(lambda s=s: data_status(cluster, s).get("phase") == "Ready" and data_status(cluster, s))
            for s in SOURCES
        }
        for st in prepared.values():
            index = storage.read_json(st["uri"] + "index.json")
            assert st["totalTokens"] == index["totalTokens"] > 1000 and st["shards"] == len(index["shards"])
            assert st["fingerprint"] == index["tokenizer"]["fingerprint"] and st["contentHash"] in st["uri"]
            assert st["progress"]["filesDone"] == st["progress"]["filesTotal"] == 2
            assert condition(st, "Ready")["status"] == "True"
        table = kubectl(cluster, "get", "trainingdatas")
        assert "Ready" in table and str(prepared["edu"]["totalTokens"]) in table
        # Its spec names its shards (the content hash): the API server refuses to change it (a CEL transition rule).
        changed = data_doc("edu", [f"{s3_bucket}/raw/web/"], s3_bucket, s3_endpoint)
        refused = subprocess.run(
            ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "apply", "--validate=false", "-f", "-"],
            input=json.dumps(changed),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0 and "spec is immutable" in refused.stderr

        # The run starts, with each source's URI and fingerprint in its status and in the spec its trainer reads.
        rj = wait_for(lambda: get(cluster, RAYJOBS, "mix"), what="the run's RayJob")
        st = wait_for(lambda: len((s := status_of(cluster, "mix")).get("datasets") or {}) == 3 and s)
        assert st["datasets"] == {
            s: {"dataset": s, "uri": prepared[s]["uri"], "fingerprint": prepared[s]["fingerprint"]} for s in SOURCES
        }
        assert condition(st, "DataReady")["status"] == "True"
        spec_json = json.loads(mounted_spec(cluster, rj)["data"]["spec.json"])
        sources = {s["name"]: s for s in spec_json["spec"]["data"]["sources"]}
        for s in SOURCES:
            assert (sources[s]["dataset"], sources[s]["uri"]) == (s, prepared[s]["uri"])
            assert sources[s]["fingerprint"] == prepared[s]["fingerprint"]
        assert rj["metadata"]["ownerReferences"][0]["name"] == "mix"

        # A second TrainingData for the same content is Ready at once: the same URI, no RayJob, no work.
        again = data_doc("edu-again", [f"{s3_bucket}/raw/edu/"], s3_bucket, s3_endpoint)
        apply(cluster, tmp_path, again)
        st = wait_for(
            lambda: data_status(cluster, "edu-again").get("phase") == "Ready" and data_status(cluster, "edu-again")
        )
        assert st["uri"] == prepared["edu"]["uri"] and st["totalTokens"] == prepared["edu"]["totalTokens"]
        assert not get(cluster, RAYJOBS, "data-edu-again") and not st.get("rayJobName")

        # A TrainingData whose input lacks the text column fails, naming the file; a run naming it fails too.
        apply(cluster, tmp_path, data_doc("broken", [f"{s3_bucket}/raw/broken/"], s3_bucket, s3_endpoint))
        apply(cluster, tmp_path, run_doc("mix-broken", s3_bucket, {"edu": "edu", "web": "broken"}))
        rj = wait_for(lambda: get(cluster, RAYJOBS, "data-broken"), what="the broken data's RayJob")
        kuberay_sets_status(cluster, "data-broken", jobStatus="RUNNING", jobDeploymentStatus="Running")
        assert run_prepare_as_its_pod(cluster, monkeypatch, tmp_path, rj) == 1
        kuberay_sets_status(
            cluster,
            "data-broken",
            jobStatus="FAILED",
            jobDeploymentStatus="Failed",
            reason="AppFailed",
            message="exit 1",
        )
        st = wait_for(
            lambda: data_status(cluster, "broken").get("phase") == "Failed" and data_status(cluster, "broken")
        )
        why = f"{s3_bucket}/raw/broken/data/train-00000-of-00001.parquet: no 'text' column (columns: body)"
        assert why in st["message"] and why in condition(st, "Failed")["message"]
        assert not storage.exists(st["uri"] + "index.json")  # nothing half-written presented as a source
        st = wait_for(lambda: (s := status_of(cluster, "mix-broken")).get("phase") == "Failed" and s)
        assert (
            st["reason"] == "DataFailed"
            and "source web: TrainingData 'broken' Failed: prepare failed: " in st["message"]
        )
        assert why in st["message"] and not get(cluster, RAYJOBS, "mix-broken")

        # Deleting a TrainingData deletes its RayJob and ConfigMap, never its shards; the run keeps its URIs.
        edu_spec = mounted_spec(cluster, get(cluster, RAYJOBS, "data-edu"))["metadata"]["name"]
        kubectl(cluster, "delete", "trainingdata", "edu")
        cluster.collect_garbage()
        assert not get(cluster, RAYJOBS, "data-edu") and not get(cluster, "configmaps", edu_spec)
        index = storage.read_json(prepared["edu"]["uri"] + "index.json")
        assert all(storage.exists(prepared["edu"]["uri"] + s["file"]) for s in index["shards"])
        assert status_of(cluster, "mix")["datasets"]["edu"]["uri"] == prepared["edu"]["uri"]

    assert_no_credentials(cluster, json.dumps(cluster.list(DATAS, NS)))
