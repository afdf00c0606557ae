"""The operator end to end through kopf against the API test server and a real S3 server (moto).

KubeRay is not running here: every RayJob status transition below is SIMULATED by the test, written
through the API exactly where KubeRay's controller writes it (the RayJob's status subresource).
"""

from __future__ import annotations

import subprocess

import pytest

from test_operator_support import (
    chart_rbac,
    NS,
    RAYJOBS,
    RUNS,
    SEED,
    assert_no_credentials,
    events_for,
    get,
    kuberay_sets_status,
    mounted_configmap,
    running_operator,
    seed_doc,
    status_of,
    wait_for,
    put_json,
)


@pytest.fixture(params=["cluster", "namespaced"])
def cluster(cluster, request):
    """The lifecycle runs with RBAC enforced: the operator has only the chart's ServiceAccount and roles,
    rendered for a cluster-wide and for a namespaced install."""
    chart_rbac(cluster, request.param)
    return cluster


RUN = "gpt2-70m-50-30-20"


def kubectl(server, *args: str) -> str:
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(server.kubeconfig), *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_seed_run_from_apply_to_succeeded_with_eval_average(cluster, seed_bucket):
    out_uri = "s3://trainkit-runs/runs/default/gpt2-70m-50-30-20"
    with running_operator(cluster) as runner:
        kubectl(cluster, "apply", "--validate=false", "-f", str(SEED))
        rj = wait_for(lambda: get(cluster, RAYJOBS, RUN), what="the RayJob")
        run = get(cluster, RUNS, RUN)

        # the RayJob: owner, labels, Kueue, GPU worker group from the spec, spec from the owned ConfigMap
        (owner,) = rj["metadata"]["ownerReferences"]
        assert owner["uid"] == run["metadata"]["uid"] and owner["controller"] is True and owner["kind"] == "TrainingRun"
        assert rj["metadata"]["labels"]["trainkit.dev/run"] == RUN
        assert rj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-training"
        assert rj["spec"]["shutdownAfterJobFinishes"] is True and rj["spec"]["backoffLimit"] == 2
        worker = rj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
        assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert worker["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        cm = get(cluster, "configmaps", mounted_configmap(rj))
        assert cm["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"] and cm["immutable"] is True
        assert '"totalTokens": 1000000000' in cm["data"]["spec.json"]
        assert rj["spec"]["entrypoint"] == "python -m trainkit.jobs.train --spec /etc/trainkit/spec.json"

        st = wait_for(
            lambda: status_of(cluster, RUN).get("phase") == "Pending" and status_of(cluster, RUN), what="Pending"
        )
        assert {c["type"] for c in st["conditions"]} == {
            "SpecValid",
            "SpecApplied",
            "Admitted",
            "Running",
            "Succeeded",
            "Failed",
            "MetricsFinite",
        }
        assert st["observedGeneration"] == 1 and st["rayJobName"] == RUN

        # SIMULATED KubeRay: cluster up, job running; the trainer has written progress.json to S3
        put_json(
            f"{out_uri}/progress.json",
            {
                "step": 4069,
                "totalSteps": 8138,
                "tokens": 500000000,
                "loss": 3.12,
                "tokensPerSecond": 1.5e6,
                "mfu": 0.43,
                "etaSeconds": 333.0,
                "updatedAt": "2026-11-27T08:00:00Z",
            },
        )
        # A complete checkpoint (every listed file there, with its size) and a newer, torn one (a listed file missing):
        # the status shows the complete one, by the same rule the trainer resumes by.
        from trainkit import storage

        storage.write_bytes(f"{out_uri}/checkpoints/step-00004000/model.safetensors", b"weights")
        put_json(
            f"{out_uri}/checkpoints/step-00004000/checkpoint.json", {"step": 4000, "files": {"model.safetensors": 7}}
        )
        put_json(
            f"{out_uri}/checkpoints/step-00004050/checkpoint.json", {"step": 4050, "files": {"model.safetensors": 7}}
        )
        kuberay_sets_status(
            cluster,
            RUN,
            jobStatus="RUNNING",
            jobDeploymentStatus="Running",
            rayClusterName=f"{RUN}-raycluster-abcde",
            startTime="2026-11-27T07:00:00Z",
        )
        st = wait_for(
            lambda: (
                (s := status_of(cluster, RUN)).get("phase") == "Running"
                and s.get("progress", {}).get("step") == 4069
                and s
            ),
            what="Running with progress",
        )
        assert (
            st["progress"]["percent"] == 50.0
            and st["progress"]["loss"] == 3.12
            and st["progress"]["etaSeconds"] == 333.0
        )
        assert st["jobStatus"] == "RUNNING" and st["jobDeploymentStatus"] == "Running"
        assert st["lastCheckpoint"]["step"] == 4000
        assert st["startTime"] == "2026-11-27T07:00:00Z"

        # SIMULATED KubeRay: job done; the evaluator has written its summary
        put_json(f"{out_uri}/progress.json", {"step": 8138, "totalSteps": 8138, "loss": 2.92})
        put_json(f"{out_uri}/eval/step-00004000/summary.json", {"step": 4000, "average": 30.0, "tasks": {"piqa": 55.0}})
        put_json(
            f"{out_uri}/eval/step-00008138/summary.json",
            {
                "step": 8138,
                "average": 38.15,
                "tasks": {
                    "mmlu": 24.11,
                    "hellaswag": 27.03,
                    "arc_challenge": 21.67,
                    "piqa": 57.29,
                    "winogrande": 51.46,
                    "truthfulqa_mc2": 47.31,
                },
            },
        )
        kuberay_sets_status(
            cluster, RUN, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete", endTime="2026-11-27T08:10:00Z"
        )
        st = wait_for(lambda: (s := status_of(cluster, RUN)).get("phase") == "Succeeded" and s, what="Succeeded")
        assert st["eval"]["average"] == 38.15 and st["eval"]["step"] == 8138 and st["eval"]["tasks"]["mmlu"] == 24.11
        assert st["progress"]["percent"] == 100.0 and st["progress"]["loss"] == 2.92
        assert st["completionTime"] == "2026-11-27T08:10:00Z"
        assert st["artifacts"]["checkpoints"] == f"{out_uri}/checkpoints/"
        conds = {c["type"]: c["status"] for c in st["conditions"]}
        assert conds["Succeeded"] == "True" and conds["Running"] == "False" and conds["Failed"] == "False"

        # Events for the transitions
        reasons = wait_for(
            lambda: (
                {e["reason"] for e in events_for(cluster, RUN)} >= {"JobRunning", "JobSucceeded"}
                and {e["reason"] for e in events_for(cluster, RUN)}
            ),
            what="Events",
        )
        assert "Created" in reasons or "Creating" in reasons

        # printer columns filled: what `kubectl get trainingruns` shows
        table = kubectl(cluster, "get", "trainingruns")
        assert "Succeeded" in table and "38.15" in table and "2.92" in table and "100" in table

        # terminal is sticky: a late, contradictory KubeRay status changes nothing
        kuberay_sets_status(cluster, RUN, jobStatus="RUNNING", jobDeploymentStatus="Running")
        before = cluster.get(RUNS, RUN, NS)["metadata"]["resourceVersion"]
        import time

        time.sleep(2.5)  # more than two timer ticks
        after = cluster.get(RUNS, RUN, NS)
        assert after["status"]["phase"] == "Succeeded" and after["metadata"]["resourceVersion"] == before

    assert_no_credentials(cluster, runner.output)
    # every API call recorded by the server is one the operator declares (the ClusterRole is built from it)
    from trainkit_operator.api_calls import API_CALLS

    declared = {(g, r + (f"/{s}" if s else ""), v) for v, g, r, s in API_CALLS}
    made = {req.rbac for req in cluster.requests}
    ours = {m for m in made if m[1] not in ("trainingruns", "rayjobs/status") or m[2] != "create"}
    kubectl_or_test = {
        ("trainkit.dev", "trainingruns", "create"),
        ("trainkit.dev", "trainingruns", "get"),
        ("ray.io", "rayjobs/status", "patch"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "create"),
    }
    undeclared = {m for m in ours - declared if m not in kubectl_or_test}
    assert not undeclared, f"calls the operator made but api_calls.API_CALLS does not list: {sorted(undeclared)}"
    # and the operator's own core calls really happened (the list is not padded)
    for call in [
        ("ray.io", "rayjobs", "create"),
        ("", "configmaps", "create"),
        ("", "secrets", "get"),
        ("trainkit.dev", "trainingruns/status", "patch"),
        ("", "events", "create"),
        ("ray.io", "rayjobs", "watch"),
    ]:
        assert call in made, call


def test_failed_with_kuberay_reason_is_sticky_and_never_recreated(cluster, seed_bucket):
    doc = seed_doc("fails", bucket=seed_bucket)
    with running_operator(cluster):
        cluster.create(doc)
        wait_for(lambda: get(cluster, RAYJOBS, "fails"), what="RayJob")
        # SIMULATED KubeRay: the job failed; including the documented contradiction jobStatus RUNNING under Failed
        kuberay_sets_status(
            cluster,
            "fails",
            jobStatus="RUNNING",
            jobDeploymentStatus="Failed",
            reason="DeadlineExceeded",
            message="The RayJob has passed the activeDeadlineSeconds. DeletionTimestamp is set.",
        )
        st = wait_for(lambda: (s := status_of(cluster, "fails")).get("phase") == "Failed" and s, what="Failed")
        assert st["reason"] == "DeadlineExceeded" and "activeDeadlineSeconds" in st["message"]
        failed = next(c for c in st["conditions"] if c["type"] == "Failed")
        assert failed["status"] == "True" and failed["reason"] == "DeadlineExceeded"
        wait_for(
            lambda: any(
                e["reason"] == "DeadlineExceeded" and e["type"] == "Warning" for e in events_for(cluster, "fails")
            ),
            what="Warning Event",
        )
        # the RayJob goes away (e.g. a TTL): the terminal run must not resurrect it
        cluster.store.delete(cluster.store.types[("ray.io", "rayjobs")], NS, "fails") if hasattr(
            cluster.store, "delete"
        ) else None
        import kubernetes

        client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
        try:
            try:
                kubernetes.client.CustomObjectsApi(client).delete_namespaced_custom_object(
                    "ray.io", "v1", NS, "rayjobs", "fails"
                )
            except kubernetes.client.ApiException as e:
                assert e.status == 404
        finally:
            client.close()
        import time

        time.sleep(2.5)
        assert get(cluster, RAYJOBS, "fails") is None
        assert status_of(cluster, "fails")["phase"] == "Failed"
    creates = [
        r for r in cluster.requests if r.resource == "rayjobs" and r.verb == "create" and r.name in (None, "fails")
    ]
    assert len(creates) == 1


def test_a_secret_the_chart_does_not_allow_is_an_invalid_spec_not_endless_retries(cluster, seed_bucket):
    """With RBAC the operator may read only the Secrets the chart names (rbac.secretNames): a run naming
    another is Failed/InvalidSpec with a message saying so (today: 403, retried forever, no status)."""
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "team-creds", "namespace": NS},
            "stringData": {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
        }
    )
    doc = seed_doc("other-secret", bucket=seed_bucket, **{"storage.credentialsSecret": "team-creds"})
    with running_operator(cluster):
        cluster.create(doc)
        st = wait_for(
            lambda: (s := status_of(cluster, "other-secret")).get("phase") == "Failed" and s, what="Failed InvalidSpec"
        )
        assert st["reason"] == "InvalidSpec" and "rbac.secretNames" in st["message"] and "team-creds" in st["message"]
        assert not get(cluster, RAYJOBS, "other-secret")
