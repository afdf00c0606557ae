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
    DATAS,
    NS,
    RAYJOBS,
    apply,
    assert_no_credentials,
    condition,
    data_doc,
    data_status,
    dataset_run_doc,
    events_for,
    get,
    kubectl,
    kuberay_sets_status,
    mounted_spec,
    put_json,
    pods_with_status,
    run_prepare_job,
    running_operator,
    secret_doc,
    serve_training_data,
    status_of,
    wait_for,
)

SOURCES = {"manuals": 0.5, "web": 0.3, "edu": 0.2}


@pytest.fixture
def cluster(cluster):
    # The operator acts with the chart's ServiceAccount and roles only; it may get the storage Secret (the chart's
    # storage.credentialsSecret) and the hub token Secrets listed here, no other.
    return serve_training_data(cluster, secret_names=("hf-token", "hf-token-bare"))


def run_doc(name: str, bucket: str, datasets: dict[str, str]) -> dict:
    return dataset_run_doc(name, bucket, datasets, SOURCES)


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
            assert run_prepare_job(cluster, monkeypatch, tmp_path, rj) == 0
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
        assert run_prepare_job(cluster, monkeypatch, tmp_path, rj) == 1
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


def warned(server, name: str, reason: str) -> list[dict]:
    return [e for e in events_for(server, name) if e["reason"] == reason and e["type"] == "Warning"]


def stuck_pods(server, cluster_name: str, head_waiting: dict) -> None:
    """SIMULATED KubeRay + scheduler + kubelet: the prepare cluster's head cannot start its container, its worker
    cannot be scheduled."""
    unschedulable = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient cpu.",
    }
    pods_with_status(
        server,
        cluster_name,
        {
            f"{cluster_name}-head-x": {"containerStatuses": [{"name": "ray-head", "state": {"waiting": head_waiting}}]},
            f"{cluster_name}-tokenize-worker-y": {"conditions": [unschedulable]},
        },
    )


def test_unusable_secrets_stuck_pods_and_stalled_prepares_are_said_clearly(cluster, s3_endpoint, s3_bucket, tmp_path):
    """The runs' rules for a TrainingData: a Secret it names that is missing, lacks its key or is outside the chart's
    rbac.secretNames fails it (InvalidSpec, the Secret and key named, a Warning Event) until fixed; a prepare whose
    pods cannot start says why (PodsNotReady); one that makes no progress past spec.progressDeadlineSeconds gets
    Progressing=False. KubeRay, the scheduler and the kubelet are SIMULATED (statuses written through the API, the
    kubelet's CreateContainerConfigError text from the KubeRay stand-in's own env resolution). No Ray work."""
    from support.kuberay_standin import KubeRayStandIn, PodConfigError

    hub = ["hf://datasets/acme/edu-text"]
    cluster.create(secret_doc("hf-token-bare", token="a key of the wrong name"))
    cluster.create(secret_doc("team-token", HF_TOKEN="hf_notListedInTheChart"))
    with running_operator(cluster):
        apply(
            cluster,
            tmp_path,
            data_doc("hub-edu", hub, s3_bucket, s3_endpoint, hfTokenSecret="hf-token", progressDeadlineSeconds=3),
            data_doc("no-key", hub, s3_bucket, s3_endpoint, hfTokenSecret="hf-token-bare"),
            data_doc("not-allowed", hub, s3_bucket, s3_endpoint, hfTokenSecret="team-token"),
            data_doc(
                "no-s3-key",
                hub,
                s3_bucket,
                s3_endpoint,
                storage={"endpoint": s3_endpoint, "credentialsSecret": "hf-token-bare"},
            ),
            run_doc("hub-run", s3_bucket, {"edu": "hub-edu"}),
        )
        expected = {
            "hub-edu": "spec.hfTokenSecret: Secret 'hf-token' does not exist in namespace 'default'; create it with "
            "key HF_TOKEN",
            "no-key": "spec.hfTokenSecret: Secret 'hf-token-bare' in namespace 'default' has no key HF_TOKEN",
            "not-allowed": "spec.hfTokenSecret: the operator may not read Secret 'team-token' in namespace 'default' "
            "(403 Forbidden); name a Secret the chart allows, or add it to the chart's rbac.secretNames",
            "no-s3-key": "spec.storage.credentialsSecret: Secret default/hf-token-bare lacks AWS_ACCESS_KEY_ID or "
            "AWS_SECRET_ACCESS_KEY",
        }
        for name, words in expected.items():
            st = wait_for(lambda n=name: data_status(cluster, n).get("phase") == "Failed" and data_status(cluster, n))
            assert st["reason"] == "InvalidSpec" and words in st["message"], st
            assert words in condition(st, "SpecValid")["message"] and condition(st, "SpecValid")["status"] == "False"
            assert not get(cluster, RAYJOBS, f"data-{name}") and not st.get("rayJobName")
            event = wait_for(lambda n=name: warned(cluster, n, "InvalidSpec"), what=f"the Warning Event of {name}")
            assert words in event[0]["message"]
        st = wait_for(lambda: (s := status_of(cluster, "hub-run")).get("phase") == "Failed" and s)
        assert st["reason"] == "DataFailed" and expected["hub-edu"] in st["message"]

        # Nothing ran: creating the Secret starts the prepare, and the run naming it waits for it again.
        cluster.create(secret_doc("hf-token", HF_TOKEN="hf_plantedHubTokenDoNotLeak0123456789"))
        rj = wait_for(lambda: get(cluster, RAYJOBS, "data-hub-edu"), what="the prepare RayJob once the Secret exists")
        st = wait_for(
            lambda: data_status(cluster, "hub-edu").get("phase") == "Preparing" and data_status(cluster, "hub-edu")
        )
        assert condition(st, "SpecValid")["status"] == "True" and condition(st, "Failed")["status"] == "False"
        st = wait_for(lambda: "'hub-edu' is Preparing" in (s := status_of(cluster, "hub-run")).get("message", "") and s)
        assert (st["phase"], st["reason"]) == ("Pending", "WaitingForData")

        # The Secret loses its key after the RayJob exists: its pods cannot start, and the status says why.
        client = cluster.api_client()
        try:
            import kubernetes

            kubernetes.client.CoreV1Api(client).delete_namespaced_secret("hf-token", NS)
        finally:
            client.close()
        cluster.create(secret_doc("hf-token", token="renamed by mistake"))
        head = rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        with pytest.raises(PodConfigError) as kubelet:
            KubeRayStandIn(cluster.kubeconfig, NS, tmp_path / "pods").resolve_env(head)
        assert str(kubelet.value) == "couldn't find key HF_TOKEN in Secret default/hf-token"
        stuck_pods(
            cluster,
            "data-hub-edu-raycluster-ab12c",
            {"reason": "CreateContainerConfigError", "message": str(kubelet.value)},
        )
        kuberay_sets_status(
            cluster,
            "data-hub-edu",
            jobStatus="",
            jobDeploymentStatus="Initializing",
            rayClusterName="data-hub-edu-raycluster-ab12c",
        )
        st = wait_for(
            lambda: data_status(cluster, "hub-edu").get("reason") == "PodsNotReady" and data_status(cluster, "hub-edu")
        )
        assert st["phase"] == "Preparing"
        assert (
            "data-hub-edu-raycluster-ab12c-head-x/ray-head: CreateContainerConfigError: couldn't find key HF_TOKEN in Secret default/hf-token"
            in st["message"]
        )
        assert "Unschedulable: 0/3 nodes are available: 3 Insufficient cpu." in st["message"]
        wait_for(lambda: warned(cluster, "hub-edu", "PodsNotReady"), what="the PodsNotReady Warning Event")

        # No progress for longer than spec.progressDeadlineSeconds (3 s here): Progressing=False, saying what is known.
        st = wait_for(
            lambda: condition(s := data_status(cluster, "hub-edu"), "Progressing")["status"] == "False" and s,
            what="Progressing=False",
        )
        stalled = condition(st, "Progressing")
        assert (
            stalled["reason"] == "ProgressDeadlineExceeded" and "spec.progressDeadlineSeconds (3)" in stalled["message"]
        )
        assert "0/0 files" in stalled["message"] and "CreateContainerConfigError" in stalled["message"]
        assert st["phase"] == "Preparing" and st["reason"] == "PodsNotReady"  # the more specific cause stays shown

        # The pods start and a file is done: progress resets the clock.
        kuberay_sets_status(cluster, "data-hub-edu", jobStatus="RUNNING", jobDeploymentStatus="Running")
        put_json(st["uri"] + "prepare-progress.json", {"filesDone": 1, "filesTotal": 2, "tokens": 4096, "documents": 7})
        st = wait_for(
            lambda: condition(s := data_status(cluster, "hub-edu"), "Progressing")["status"] == "True" and s,
            what="Progressing=True again",
        )
        assert st["reason"] == "Preparing" and st["progress"]["filesDone"] == 1
    assert_no_credentials(cluster, json.dumps(cluster.list(DATAS, NS)))
