"""Kueue, invalid specs, spec edits after start, deletion: kopf against the API test server.

Kueue and KubeRay are not running here: their writes (Kueue's suspend/admission, KubeRay's RayJob
status) are SIMULATED by the test through the API, where those controllers would write them.
"""

from __future__ import annotations

import time

import kubernetes

import pytest

from test_operator_support import (
    chart_rbac,
    NS,
    RAYJOBS,
    RUNS,
    events_for,
    get,
    kuberay_sets_status,
    kueue_sets_suspend,
    mounted_configmap,
    pods_with_status,
    running_operator,
    seed_doc,
    status_of,
    wait_for,
    put_json,
)


def custom(server):
    client = kubernetes.config.new_client_from_config(config_file=str(server.kubeconfig))
    return client, kubernetes.client.CustomObjectsApi(client)


def patch_run(server, name, patch):
    client, api = custom(server)
    try:
        api.patch_namespaced_custom_object("trainkit.dev", "v1alpha1", NS, "trainingruns", name, patch)
    finally:
        client.close()


def condition(status, type_):
    return next(c for c in status["conditions"] if c["type"] == type_)


@pytest.fixture(params=["cluster", "namespaced"])
def cluster(cluster, request):
    """With RBAC enforced: the operator has only the chart's ServiceAccount and roles (both scopes)."""
    chart_rbac(cluster, request.param, rbac={"secretNames": ["absent-s3"]})  # the Secret one test creates late
    return cluster


def test_kueue_holds_the_rayjob_queued_and_the_operator_never_fights_it(cluster, seed_bucket):
    with running_operator(cluster):
        cluster.create(seed_doc("queued", bucket=seed_bucket))
        wait_for(lambda: get(cluster, RAYJOBS, "queued"), what="RayJob")
        # SIMULATED Kueue: its webhook suspends the RayJob of a queue until the Workload is admitted
        kueue_sets_suspend(cluster, "queued", True)
        kuberay_sets_status(cluster, "queued", jobStatus="", jobDeploymentStatus="Suspended")  # SIMULATED KubeRay
        st = wait_for(lambda: (s := status_of(cluster, "queued")).get("phase") == "Queued" and s, what="Queued")
        assert st["reason"] == "WaitingForKueue" and "gpu-training" in st["message"]
        assert condition(st, "Admitted")["status"] == "False"
        time.sleep(2.5)  # several timer ticks: the operator must leave suspend alone
        assert get(cluster, RAYJOBS, "queued")["spec"]["suspend"] is True
        assert status_of(cluster, "queued")["phase"] == "Queued"
        # SIMULATED Kueue admits; SIMULATED KubeRay brings the cluster up and runs the job
        kueue_sets_suspend(cluster, "queued", False)
        kuberay_sets_status(cluster, "queued", jobStatus="RUNNING", jobDeploymentStatus="Running")
        st = wait_for(lambda: (s := status_of(cluster, "queued")).get("phase") == "Running" and s, what="Running")
        assert condition(st, "Admitted")["status"] == "True"


def test_missing_secret_fails_with_condition_and_event_then_recovers_when_created(cluster, seed_bucket):
    with running_operator(cluster):
        cluster.create(seed_doc("nosecret", bucket=seed_bucket, **{"storage.credentialsSecret": "absent-s3"}))
        st = wait_for(lambda: (s := status_of(cluster, "nosecret")).get("phase") == "Failed" and s, what="Failed")
        assert st["reason"] == "InvalidSpec" and "absent-s3" in st["message"]
        valid = condition(st, "SpecValid")
        assert valid["status"] == "False" and valid["reason"] == "InvalidSpec" and "does not exist" in valid["message"]
        ev = wait_for(
            lambda: [e for e in events_for(cluster, "nosecret") if e["reason"] == "InvalidSpec"], what="Event"
        )
        assert ev[0]["type"] == "Warning" and "absent-s3" in ev[0]["message"]
        assert get(cluster, RAYJOBS, "nosecret") is None  # nothing was created
        # nothing ever ran, so creating the Secret lets the run start
        cluster.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "absent-s3", "namespace": NS},
                "stringData": {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
            }
        )
        wait_for(lambda: get(cluster, RAYJOBS, "nosecret"), what="RayJob after the Secret appeared")
        st = wait_for(lambda: (s := status_of(cluster, "nosecret")).get("phase") == "Pending" and s, what="Pending")
        assert condition(st, "SpecValid")["status"] == "True"


def test_invalid_spec_past_the_schema_fails_with_invalid_spec(cluster, seed_bucket):
    # a warmup longer than the whole run (9,000 > 8,138 steps) passes the CRD schema but not derive_plan
    with running_operator(cluster):
        cluster.create(seed_doc("tiny", bucket=seed_bucket, **{"training.learningRate.warmupSteps": 9000}))
        st = wait_for(lambda: (s := status_of(cluster, "tiny")).get("phase") == "Failed" and s, what="Failed")
        assert st["reason"] == "InvalidSpec" and condition(st, "SpecValid")["status"] == "False"
        assert "warmup" in st["message"]
        assert get(cluster, RAYJOBS, "tiny") is None


def test_mutable_edit_applied_immutable_edit_refused_whole(cluster, seed_bucket):
    with running_operator(cluster):
        cluster.create(seed_doc("edits", bucket=seed_bucket))
        created = wait_for(lambda: get(cluster, RAYJOBS, "edits"), what="RayJob")
        original = mounted_configmap(created)
        kuberay_sets_status(cluster, "edits", jobStatus="RUNNING", jobDeploymentStatus="Running")  # SIMULATED KubeRay
        wait_for(lambda: status_of(cluster, "edits").get("phase") == "Running", what="Running")

        patch_run(cluster, "edits", {"spec": {"scheduling": {"backoffLimit": 5}}})
        rj = wait_for(
            lambda: (r := get(cluster, RAYJOBS, "edits"))["spec"]["backoffLimit"] == 5 and r,
            what="backoffLimit applied",
        )
        # the edited spec is a NEW immutable ConfigMap, named by its hash (which the RayJob's annotation carries);
        # the RayJob keeps mounting the one it was created with, unchanged; no ConfigMap was ever updated
        edited = f"edits-spec-{rj['metadata']['annotations']['trainkit.dev/spec-hash']}"
        cm = get(cluster, "configmaps", edited)
        assert edited != original and cm["immutable"] is True and '"backoffLimit": 5' in cm["data"]["spec.json"]
        assert (
            mounted_configmap(rj) == original
            and '"backoffLimit": 2' in get(cluster, "configmaps", original)["data"]["spec.json"]
        )
        assert {r.verb for r in cluster.requests_for("configmaps")} <= {"get", "create"}
        with pytest.raises(kubernetes.client.ApiException) as refused:  # the API server keeps it as it is
            client, _ = custom(cluster)
            try:
                kubernetes.client.CoreV1Api(client).patch_namespaced_config_map(
                    original, NS, {"data": {"spec.json": "{}"}}
                )
            finally:
                client.close()
        assert refused.value.status == 422 and "field is immutable when `immutable` is set" in refused.value.body
        st = wait_for(
            lambda: (s := status_of(cluster, "edits")).get("observedGeneration") == 2 and s, what="observedGeneration 2"
        )
        assert condition(st, "SpecApplied")["status"] == "True"

        # an edit mixing an immutable field with a mutable one: refused as a whole
        before = get(cluster, RAYJOBS, "edits")
        patch_run(
            cluster,
            "edits",
            {
                "spec": {
                    "resources": {"workers": 2},
                    "training": {"globalBatchSize": 96},
                    "scheduling": {"backoffLimit": 7},
                }
            },
        )
        st = wait_for(
            lambda: (s := status_of(cluster, "edits")) and condition(s, "SpecApplied")["status"] == "False" and s,
            what="SpecApplied False",
        )
        applied = condition(st, "SpecApplied")
        assert applied["reason"] == "ImmutableFieldChanged" and "spec.resources.workers" in applied["message"]
        assert st["phase"] == "Running"
        time.sleep(1.5)
        after = get(cluster, RAYJOBS, "edits")
        assert after["spec"] == before["spec"]  # backoffLimit 7 was NOT half-applied
        assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
        assert '"workers": 1' in get(cluster, "configmaps", edited)["data"]["spec.json"]
        wait_for(
            lambda: any(e["reason"] == "ImmutableFieldChanged" for e in events_for(cluster, "edits")), what="Event"
        )

        # reverting the edit clears the condition
        patch_run(
            cluster,
            "edits",
            {
                "spec": {
                    "resources": {"workers": 1},
                    "training": {"globalBatchSize": 120},
                    "scheduling": {"backoffLimit": 5},
                }
            },
        )
        wait_for(
            lambda: condition(status_of(cluster, "edits"), "SpecApplied")["status"] == "True", what="SpecApplied True"
        )

        # an edit that passes the CRD schema but not parse_spec (warmup longer than the run): refused, run goes on
        patch_run(cluster, "edits", {"spec": {"training": {"learningRate": {"warmupSteps": 9000}}}})
        st = wait_for(
            lambda: (s := status_of(cluster, "edits")) and condition(s, "SpecApplied")["status"] == "False" and s,
            what="invalid edit refused",
        )
        assert "invalid" in condition(st, "SpecApplied")["message"] and st["phase"] == "Running"
        assert condition(st, "SpecValid")["status"] == "True"  # the applied spec is still valid


def test_deleting_the_run_takes_its_children_but_never_its_artifacts(cluster, seed_bucket):
    from trainkit import storage

    out = f"{seed_bucket}/runs/{NS}/gone"
    put_json(f"{out}/checkpoints/step-00000010/checkpoint.json", {"step": 10})
    with running_operator(cluster):
        cluster.create(seed_doc("gone", bucket=seed_bucket))
        rj = wait_for(lambda: get(cluster, RAYJOBS, "gone"), what="the RayJob")
        spec_cm = mounted_configmap(rj)
        wait_for(lambda: get(cluster, "configmaps", spec_cm), what="its spec ConfigMap")
        client, api = custom(cluster)
        try:
            api.delete_namespaced_custom_object("trainkit.dev", "v1alpha1", NS, "trainingruns", "gone")
        finally:
            client.close()
        wait_for(lambda: get(cluster, RUNS, "gone") is None, what="run deleted (kopf releases its finalizer)")
        wait_for(
            lambda: get(cluster, RAYJOBS, "gone") is None and get(cluster, "configmaps", spec_cm) is None,
            what="children garbage-collected",
        )
    assert storage.exists(f"{out}/checkpoints/step-00000010/checkpoint.json")


def test_stuck_initializing_surfaces_pod_reasons(cluster, seed_bucket):
    with running_operator(cluster):
        cluster.create(seed_doc("stuck", bucket=seed_bucket))
        wait_for(lambda: get(cluster, RAYJOBS, "stuck"), what="RayJob")
        # SIMULATED KubeRay + scheduler + kubelet: the Ray cluster's pods exist but cannot start
        pod_status = {
            "stuck-head-x": {
                "containerStatuses": [
                    {
                        "name": "ray-head",
                        "state": {
                            "waiting": {
                                "reason": "ImagePullBackOff",
                                "message": "Back-off pulling image registry.local/trainer:missing",
                            }
                        },
                    }
                ]
            },
            "stuck-worker-y": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    }
                ]
            },
        }
        pods_with_status(cluster, "stuck-raycluster-ab12c", pod_status)
        kuberay_sets_status(
            cluster, "stuck", jobStatus="", jobDeploymentStatus="Initializing", rayClusterName="stuck-raycluster-ab12c"
        )
        st = wait_for(
            lambda: (s := status_of(cluster, "stuck")).get("reason") == "PodsNotReady" and s, what="PodsNotReady"
        )
        assert st["phase"] == "Pending"
        assert "ImagePullBackOff" in st["message"] and "Insufficient nvidia.com/gpu" in st["message"]
        wait_for(
            lambda: any(e["reason"] == "PodsNotReady" and e["type"] == "Warning" for e in events_for(cluster, "stuck")),
            what="Warning Event",
        )
