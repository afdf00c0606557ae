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
