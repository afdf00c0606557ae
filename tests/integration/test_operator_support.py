"""Shared harness for the operator's integration tests (no tests here).

Real parts only: kopf really runs (kopf.testing.KopfRunner) against the HTTP Kubernetes API test
server (tests/kubeapi), the operator reads progress and eval summaries from a real S3 server (moto).
What is SIMULATED is KubeRay's controller: there is no KubeRay here, so the tests write the RayJob
status transitions (jobStatus / jobDeploymentStatus / reason / message) that KubeRay would write, and
Kueue's suspend/admit, through the same API. Each test says so where it does it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "jobs" / "gpt2-70m-50-30-20.yaml"
NS = "default"
RUNS = "trainingruns.trainkit.dev"
RAYJOBS = "rayjobs.ray.io"
PLANTED = (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])


def seed_doc(name: str | None = None, bucket: str | None = None, **spec_updates) -> dict:
    doc = yaml.safe_load(SEED.read_text())
    if name:
        doc["metadata"]["name"] = name
    if bucket:
        doc["spec"]["output"]["uri"] = f"{bucket}/runs/{NS}/{doc['metadata']['name']}/"
    for dotted, value in spec_updates.items():
        node = doc["spec"]
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return doc


def operator_config(**kw):
    from trainkit_operator.config import OperatorConfig

    base = dict(
        timer_interval=1.0,
        timer_initial_delay=0.2,
        watch_server_timeout=20,
        watch_client_timeout=25,
        watch_connect_timeout=5,
        max_workers=8,
        # The chart's storage.endpoint: where the operator reads runs' artifacts (the test's moto server,
        # which the s3_endpoint fixture publishes as AWS_ENDPOINT_URL; the operator itself ignores that variable).
        default_storage_endpoint=os.environ.get("AWS_ENDPOINT_URL"),
    )
    base.update(kw)
    return OperatorConfig(**base)


def install_runs(server):
    """The generated TrainingRun CRD and the runs' credentials Secret on the API test server."""
    from trainkit.spec.crd import training_run_crd

    server.create(training_run_crd())
    server.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "trainkit-s3", "namespace": NS},
            "stringData": {"AWS_ACCESS_KEY_ID": PLANTED[0], "AWS_SECRET_ACCESS_KEY": PLANTED[1]},
        }
    )
    return server


@pytest.fixture
def cluster(kube_api, s3_endpoint):
    """The API test server with the generated TrainingRun CRD and the run's credentials Secret."""
    return install_runs(kube_api)


def chart_rbac(server, scope: str, **values) -> str:
    """Install only the chart's ServiceAccount, (Cluster)Roles and bindings (helm-rendered, `watch.scope`
    `scope`, watching `default`), switch RBAC enforcement on and return the ServiceAccount's token;
    running_operator then authenticates with it (server.operator_token)."""
    from support.helm import render

    chart_values = {
        "storage": {"credentialsSecret": "trainkit-s3"},
        "watch": {"scope": scope, "namespaces": ["default"] if scope == "namespaced" else []},
    }
    chart_values.update(values)
    docs = render(values=chart_values, namespace="trainkit-system", extra=("--skip-crds",))
    server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "trainkit-system"}})
    kinds = ("ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    for doc in docs:
        if doc["kind"] in kinds:
            server.create(doc)
    server.enforce_rbac()
    server.operator_scope = scope  # as the chart's Deployment: cluster-wide, or the listed namespace
    server.operator_token = server.service_account_token("trainkit-system", sa["metadata"]["name"])
    return server.operator_token


@contextmanager
def running_operator(server, config=None, timeout: float = 120, metrics=None):
    """The operator under kopf's own runner, logged in to the test server; yields the runner. It
    authenticates as `server.operator_token` when chart_rbac() set one, else as the test's admin.
    `metrics`: the operator's OperatorMetrics (a test reads the port they are served on from it)."""
    import kopf
    from kopf.testing import KopfRunner

    from trainkit_operator.wiring import register

    registry = kopf.OperatorRegistry()
    token = getattr(server, "operator_token", None) or "kubeapi-test-token"

    @kopf.on.login(registry=registry)
    def login(**_):
        return kopf.ConnectionInfo(server=server.url, scheme="Bearer", token=token, insecure=True)

    kube = None
    if token != "kubeapi-test-token":  # the operator's own client authenticates as the ServiceAccount too
        import tempfile

        import kubernetes

        from trainkit_operator.kube import Kube

        path = server.write_token_kubeconfig(Path(tempfile.mkdtemp(prefix="sa-kubeconfig-")) / "config", token)
        kube = Kube(kubernetes.config.new_client_from_config(config_file=str(path)))
    register(registry, config or operator_config(), kube=kube, metrics=metrics)
    settings = kopf.OperatorSettings()
    where = ["--all-namespaces"] if getattr(server, "operator_scope", None) == "cluster" else ["--namespace", NS]
    with KopfRunner(
        ["run", "--standalone", *where, "--verbose"], registry=registry, settings=settings, timeout=timeout
    ) as runner:
        yield runner
    if kube is not None:
        kube.close()
    # A field the operator wrote that the schema (KubeRay's for RayJobs) does not declare is pruned on a real
    # cluster, with only this header to say so: fail the test instead.
    written = [w for w in server.warnings if "unknown field" in w[2]]
    assert not written, f"fields pruned as unknown (Warning headers): {written}"
    assert runner.exception is None, runner.exception
    assert runner.exit_code == 0, runner.output[-3000:]


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (KeyError, TypeError, IndexError):
            last = None
        except Exception as e:  # noqa: BLE001 - e.g. NotFound from the server
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def get(server, resource, name):
    try:
        return server.get(resource, name, NS)
    except Exception:  # noqa: BLE001
        return None


def mounted_configmap(rayjob: dict) -> str:
    """The spec ConfigMap a RayJob's head mounts (immutable, named by its spec's hash)."""
    volumes = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]
    return next(v["configMap"]["name"] for v in volumes if "configMap" in v)


def status_of(server, name) -> dict:
    return (get(server, RUNS, name) or {}).get("status") or {}


def patch_as_controller(server, plural: str, name: str, body: dict, status: bool = False) -> None:
    """A merge patch through the API, as another controller writes it (`status`: the status subresource)."""
    import kubernetes

    group, version = {"rayjobs": ("ray.io", "v1"), "workloads": ("kueue.x-k8s.io", "v1beta2")}[plural]
    client = kubernetes.config.new_client_from_config(config_file=str(server.kubeconfig))
    try:
        api = kubernetes.client.CustomObjectsApi(client)
        patch = api.patch_namespaced_custom_object_status if status else api.patch_namespaced_custom_object
        patch(group, version, NS, plural, name, body)
    finally:
        client.close()


def kuberay_sets_status(server, name: str, **status):
    """SIMULATED KubeRay: write the RayJob status as KubeRay's controller would (status subresource)."""
    patch_as_controller(server, "rayjobs", name, {"status": status}, status=True)


def kueue_sets_suspend(server, name: str, suspend: bool):
    """SIMULATED Kueue: its webhook suspends a queued RayJob; admission un-suspends it."""
    patch_as_controller(server, "rayjobs", name, {"spec": {"suspend": suspend}})


# The part of Kueue's Workload CRD the tests store (kueue.x-k8s.io/v1beta2, the stored version).
WORKLOAD_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "workloads.kueue.x-k8s.io"},
    "spec": {
        "group": "kueue.x-k8s.io",
        "scope": "Namespaced",
        "names": {"plural": "workloads", "singular": "workload", "kind": "Workload", "listKind": "WorkloadList"},
        "versions": [
            {
                "name": "v1beta2",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}


def kueue_sets_workload(server, name: str, job_uid: str, conditions: list[dict]) -> None:
    """SIMULATED Kueue: the Workload it keeps for a job (labelled with the job's uid), created if absent, with
    these status conditions (status subresource)."""
    if not server.list("workloads", NS, label_selector=f"kueue.x-k8s.io/job-uid={job_uid}"):
        server.create(
            {
                "apiVersion": "kueue.x-k8s.io/v1beta2",
                "kind": "Workload",
                "metadata": {"name": name, "namespace": NS, "labels": {"kueue.x-k8s.io/job-uid": job_uid}},
                "spec": {"queueName": "gpu-training"},
            }
        )
    patch_as_controller(server, "workloads", name, {"status": {"conditions": conditions}}, status=True)


def put_json(uri: str, obj: dict):
    from trainkit import storage

    storage.write_json(uri, obj)


def events_for(server, name: str) -> list[dict]:
    return [e for e in server.list("events", NS) if (e.get("involvedObject") or {}).get("name") == name]


def assert_no_credentials(server, *texts: str):
    """The planted credentials appear nowhere but in the Secret itself."""
    dump = ""
    for resource in (RUNS, RAYJOBS, "configmaps", "events", "pods"):
        dump += json.dumps(server.list(resource, NS))
    for text in (dump, *texts):
        for value in PLANTED:
            assert value not in text


# ------------------------------------------------------------------------------------- TrainingData
DATAS = "trainingdatas.trainkit.dev"


def serve_training_data(server, secret_names: tuple[str, ...] = ()):
    """The TrainingData CRD on the test server, and the chart's RBAC (namespaced) enforced: the operator may get
    the chart's storage Secret and the Secrets named here (rbac.secretNames), no other."""
    from trainkit.spec.crd import training_data_crd

    server.create(training_data_crd())
    chart_rbac(server, "namespaced", rbac={"secretNames": list(secret_names)})
    return server


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


def data_doc(name: str, inputs: list[str], bucket: str, endpoint: str, **spec) -> dict:
    return {
        "apiVersion": "trainkit.dev/v1alpha1",
        "kind": "TrainingData",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "inputs": inputs,
            "shardTokens": 4096,
            "output": {"uri": f"{bucket}/prepared/"},
            "storage": {"endpoint": endpoint, "credentialsSecret": "trainkit-s3"},
            **spec,
        },
    }


def secret_doc(name: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "stringData": data}


def data_status(server, name: str) -> dict:
    return (get(server, DATAS, name) or {}).get("status") or {}


def condition(status: dict, type_: str) -> dict:
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


def mounted_spec(server, rayjob: dict) -> dict:
    """The spec ConfigMap the RayJob's head pod mounts (its name carries the spec's hash)."""
    return get(server, "configmaps", mounted_configmap(rayjob))


def prepare_pod(server, tmp_path, rayjob: dict) -> tuple[dict[str, str], Path]:
    """SIMULATED KubeRay + kubelet for a prepare RayJob's head pod: its container's env resolved from the API server
    as the kubelet resolves it (the KubeRay stand-in's `resolve_env`: Secrets by secretKeyRef) and its spec file
    (the ConfigMap the pod mounts at /etc/trainkit/spec.json, written to `tmp_path`)."""
    from support.kuberay_standin import KubeRayStandIn

    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = KubeRayStandIn(server.kubeconfig, NS, tmp_path / "pods").resolve_env(head)
    assert env["AWS_ACCESS_KEY_ID"] and "AWS_SECRET_ACCESS_KEY" in env  # from the Secret, by secretKeyRef
    assert rayjob["spec"]["entrypoint"] == "python -m trainkit.jobs.prepare --spec /etc/trainkit/spec.json"
    spec_file = tmp_path / f"{rayjob['metadata']['name']}.json"
    spec_file.write_text(mounted_spec(server, rayjob)["data"]["spec.json"])
    return env, spec_file


def run_prepare_job(server, monkeypatch, tmp_path, rayjob: dict) -> int:
    """SIMULATED KubeRay running a prepare RayJob: RUNNING, the head pod's entrypoint run in this process (on this
    session's Ray) with its env and spec file (`prepare_pod`), then SUCCEEDED or FAILED as its exit code says, each
    written as KubeRay writes the RayJob's status. Returns the exit code."""
    from trainkit.jobs.prepare import main

    name = rayjob["metadata"]["name"]
    kuberay_sets_status(server, name, jobStatus="RUNNING", jobDeploymentStatus="Running")
    env, spec_file = prepare_pod(server, tmp_path, rayjob)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = main(["--spec", str(spec_file)])
    if code == 0:
        kuberay_sets_status(server, name, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
    else:
        kuberay_sets_status(
            server, name, jobStatus="FAILED", jobDeploymentStatus="Failed", reason="AppFailed", message=f"exit {code}"
        )
    return code


def pods_with_status(server, cluster_name: str, statuses: dict[str, dict]) -> None:
    """SIMULATED KubeRay + scheduler + kubelet: pods of Ray cluster `cluster_name` (its `ray.io/cluster` label), each
    with the status given (pod name -> status), written through the status subresource as they write it."""
    import kubernetes

    client = server.api_client()
    try:
        core = kubernetes.client.CoreV1Api(client)
        for pod_name, st in statuses.items():
            server.create(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": pod_name, "namespace": NS, "labels": {"ray.io/cluster": cluster_name}},
                    "spec": {"containers": [{"name": "ray", "image": "registry.local/trainer:0.1.0"}]},
                }
            )
            core.patch_namespaced_pod_status(pod_name, NS, {"status": st}, _preload_content=False).read()
    finally:
        client.close()


def dataset_run_doc(name: str, bucket: str, datasets: dict[str, str], weights: dict[str, float] | None = None) -> dict:
    """The seed run with sources naming TrainingData (`dataset:`, source name -> TrainingData name) instead of URIs."""
    sources = [{"name": s, "dataset": d, "weight": (weights or {}).get(s, 1.0)} for s, d in datasets.items()]
    return seed_doc(name, bucket, **{"data.sources": sources})
