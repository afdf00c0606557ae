"""Watching the whole cluster, the operator creates its children only in namespaces that opted in (the chart's
watch.tenantNamespaceLabel, default trainkit.dev/tenant=true), twice:

- by the API server: `helm install` ships a ValidatingAdmissionPolicy that refuses the operator's ServiceAccount
  (request.userInfo) any RayJob, ConfigMap, NetworkPolicy or (a sweep's) TrainingRun in a namespace without the label, kube-system
  included; the test acts as that ServiceAccount with kubectl, RBAC enforced (the API test server evaluates the
  policy with upstream's semantics, tests/kubeapi/admission.py);
- by the operator (kopf against the API test server, the chart's RBAC): a run or a sweep in such a namespace is
  Failed with the reason before anything is created, and goes ahead once the namespace is labelled.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from test_chart_install import RELEASE_NS, kubectl
from test_operator_support import (
    NS,
    RAYJOBS,
    RUNS,
    chart_rbac,
    get,
    operator_config,
    running_operator,
    seed_doc,
    status_of,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
DENIED = (
    "ValidatingAdmissionPolicy 'trainkit-tenant-namespaces' with binding 'trainkit-tenant-namespaces' denied request"
)


def _as_operator(server, tmp_path: Path):
    """The official client with the chart's ServiceAccount token, as the operator's pod (kubectl and helm over
    the test server's plain http send no token and are served as its admin)."""
    import kubernetes

    path = server.write_token_kubeconfig(
        tmp_path / "operator-kubeconfig", server.service_account_token(RELEASE_NS, "trainkit")
    )
    return kubernetes.config.new_client_from_config(config_file=str(path))


def _create(client, doc: dict):
    """Create `doc` as the operator's client would; the ApiException's status and message, or None."""
    import kubernetes

    ns = doc["metadata"]["namespace"]
    try:
        if doc["kind"] == "RayJob":
            kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
                "ray.io", "v1", ns, "rayjobs", doc
            )
        elif doc["kind"] == "TrainingRun":
            kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
                "trainkit.dev", "v1alpha1", ns, "trainingruns", doc
            )
        elif doc["kind"] == "ConfigMap":
            kubernetes.client.CoreV1Api(client).create_namespaced_config_map(ns, doc)
        else:
            kubernetes.client.NetworkingV1Api(client).create_namespaced_network_policy(ns, doc)
    except kubernetes.client.ApiException as e:
        return e.status, json.loads(e.body)["message"]
    return None


def _children(ns: str) -> list[dict]:
    """A RayJob, a ConfigMap, a NetworkPolicy and a sweep's TrainingRun as the operator would create them in `ns`
    (shapes only)."""
    rayjob = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "r1", "namespace": ns},
              "spec": {"entrypoint": "python -m trainkit.jobs.train", "shutdownAfterJobFinishes": True}}  # fmt: skip
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "r1-spec-0123", "namespace": ns},
                 "data": {"spec.json": "{}"}, "immutable": True}  # fmt: skip
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "r1", "namespace": ns},
              "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}  # fmt: skip
    run = dict(seed_doc("mix-000"), metadata={"name": "mix-000", "namespace": ns})
    return [rayjob, configmap, policy, run]


def test_the_api_server_refuses_the_operators_creates_outside_opted_in_namespaces(kube_api, tmp_path):
    from support.helm import run, tool

    server = kube_api
    run([tool("helm"), "install", "trainkit", str(REPO / "charts" / "trainkit"), "-n", RELEASE_NS,
         "--create-namespace"], env={"KUBECONFIG": str(server.kubeconfig)})  # fmt: skip
    assert server.exists("validatingadmissionpolicybindings", "trainkit-tenant-namespaces", None)
    for ns in ("team-a", "team-b", "kube-system"):
        if not server.exists("namespaces", ns, None):
            kubectl(server, "create", "namespace", ns)
    kubectl(server, "label", "namespace", "team-a", "trainkit.dev/tenant=true")
    server.enforce_rbac()
    operator = _as_operator(server, tmp_path)
    for ns in ("team-b", "kube-system", "team-a"):
        for doc in _children(ns):
            refused = _create(operator, doc)
            if ns == "team-a":  # opted in: the chart's ClusterRole lets it create there
                assert refused is None, refused
                continue
            assert refused is not None and refused[0] == 403, (doc["kind"], refused)
            assert (
                f"{DENIED}: namespace {ns} has not opted in to trainkit: the operator creates nothing in "
                "namespaces without the label trainkit.dev/tenant=true" in refused[1]
            ), refused
    assert not server.exists("rayjobs.ray.io", "r1", "team-b") and not server.exists(
        "configmaps", "r1-spec-0123", "team-b"
    )
    import kubernetes

    core = kubernetes.client.CoreV1Api(operator)
    # least privilege otherwise: it may read a namespace's labels by name, never list namespaces
    assert core.read_namespace("team-a").metadata.labels["trainkit.dev/tenant"] == "true"
    try:
        core.list_namespace()
        raise AssertionError("listed namespaces")
    except kubernetes.client.ApiException as e:
        assert e.status == 403
    # the policy binds the operator's ServiceAccount only: the test's admin still creates what it likes there
    kubectl(server, "create", "configmap", "admins-own", "-n", "team-b")
    # a namespace that leaves (label removed with kubectl) is refused again
    kubectl(server, "label", "namespace", "team-a", "trainkit.dev/tenant-")
    refused = _create(operator, dict(_children("team-a")[1], metadata={"name": "r2-spec-0123", "namespace": "team-a"}))
    assert refused is not None and f"{DENIED}: namespace team-a has not opted in" in refused[1], refused
    operator.close()


def test_the_operator_fails_a_run_and_a_sweep_outside_opted_in_namespaces_and_creates_nothing(cluster, seed_bucket):
    from trainkit.spec.crd import training_data_crd, training_sweep_crd

    server = cluster  # the TrainingRun CRD and the namespace's storage Secret
    server.create(training_sweep_crd())
    server.create(training_data_crd())
    data = {"apiVersion": "trainkit.dev/v1alpha1", "kind": "TrainingData", "metadata": {"name": "web", "namespace": NS},
            "spec": {"inputs": [f"{seed_bucket}/raw/web/"], "output": {"uri": f"{seed_bucket}/prepared/"},
                     "storage": {"credentialsSecret": "trainkit-s3"}}}  # fmt: skip
    chart_rbac(server, "cluster")  # the chart's ClusterRole: get on namespaces to read the label
    config = operator_config(tenant_namespace_label=("trainkit.dev/tenant", "true"))
    sweep = yaml.safe_load((REPO / "jobs" / "sweep-50-30-20-neighbourhood.yaml").read_text())
    sweep["metadata"] = {"name": "mix", "namespace": NS}
    sweep["spec"]["mixtures"] = {"explicit": [{"weights": {"finepdfs": 0.5, "dclm-baseline": 0.3, "fineweb-edu": 0.2}}]}
    sweep["spec"]["template"]["output"]["uri"] = f"{seed_bucket}/sweeps/mix/"
    with running_operator(server, config):
        server.create(seed_doc("outsider", bucket=seed_bucket))
        server.create(sweep)
        server.create(data)
        st = wait_for(lambda: (s := status_of(server, "outsider")).get("phase") == "Failed" and s, what="Failed")
        says = f"namespace '{NS}' has not opted in to trainkit: the operator serves only namespaces labelled "
        assert st["reason"] == "InvalidSpec" and says + "trainkit.dev/tenant=true" in st["message"], st
        assert f"kubectl label namespace {NS} trainkit.dev/tenant=true" in st["message"]
        swept = wait_for(lambda: (server.get("trainingsweeps.trainkit.dev", "mix", NS).get("status") or {}).get(
            "phase") == "Failed" and server.get("trainingsweeps.trainkit.dev", "mix", NS)["status"], what="sweep Failed")  # fmt: skip
        assert says in swept["message"]
        prepared = wait_for(lambda: (s := get(server, "trainingdatas.trainkit.dev", "web").get("status") or {}).get(
            "phase") == "Failed" and s, what="TrainingData Failed")  # fmt: skip
        assert says in prepared["message"], prepared
        assert not server.list(RAYJOBS, NS) and not server.list("configmaps", NS)
        assert not server.list("networkpolicies.networking.k8s.io", NS)
        assert [r["metadata"]["name"] for r in server.list(RUNS, NS)] == ["outsider"]  # the sweep made none

        # a cluster administrator opts the namespace in: nothing had run, so the run starts, and the sweep goes ahead
        kubectl(server, "label", "namespace", NS, "trainkit.dev/tenant=true")
        wait_for(lambda: get(server, RAYJOBS, "outsider"), timeout=60, what="the run's RayJob once opted in")
        wait_for(lambda: get(server, RUNS, "mix-000"), timeout=60, what="the sweep's first run")
