"""Tenant B cannot reach tenant A's Ray head (issue 13, item 2).

The operator runs under kopf against the API test server (KubeRay v1.7.0's RayJob schema) and reconciles one
run in each of two namespaces. Two guards, each checked on what the operator really created:
- a NetworkPolicy per run: judged with Kubernetes' NetworkPolicy semantics (tests/support/netpol.py; no CNI
  runs here) for pods labelled as the RayJob's own templates label them;
- Ray token auth: the RayJob asks KubeRay for it (authOptions.mode token); the KubeRay stand-in does what
  KubeRay v1.7.0 does with that (a token Secret per cluster, RAY_AUTH_MODE/RAY_AUTH_TOKEN from it) and starts
  A's REAL Ray head from A's head template. Its dashboard (the job API on 8265, which runs any code it is
  sent) refuses requests without A's token, with another token, and a worker node without it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from test_operator_support import PLANTED, RAYJOBS, running_operator, seed_doc, wait_for

pytestmark = pytest.mark.slow

TENANTS = ("team-a", "team-b")
RUN = "mix"


def _apply_in(server, ns: str, bucket: str) -> None:
    server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    server.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "trainkit-s3", "namespace": ns},
            "stringData": {"AWS_ACCESS_KEY_ID": PLANTED[0], "AWS_SECRET_ACCESS_KEY": PLANTED[1]},
        }
    )
    doc = seed_doc(RUN, **{"output.uri": f"{bucket}/{ns}/{RUN}/"})
    doc["metadata"]["namespace"] = ns
    server.create(doc, namespace=ns)


def _pods_of(rayjob: dict) -> dict[str, dict[str, str]]:
    """The labels of the RayJob's pods, as KubeRay gives them the templates' labels."""
    spec = rayjob["spec"]
    cluster = spec["rayClusterSpec"]
    return {
        "head": cluster["headGroupSpec"]["template"]["metadata"]["labels"],
        "worker": cluster["workerGroupSpecs"][0]["template"]["metadata"]["labels"],
        "submitter": spec["submitterPodTemplate"]["metadata"]["labels"],
    }


@pytest.fixture(scope="module")
def two_tenants(tmp_path_factory, s3_endpoint):
    from kubeapi import KubeAPIServer
    from trainkit.spec.crd import training_run_crd

    import sys

    tmp = tmp_path_factory.mktemp("two-tenants")
    with KubeAPIServer() as server, pytest.MonkeyPatch.context() as mp:
        path = server.write_kubeconfig(tmp / "kubeconfig")  # as the kube_api fixture does, for this module
        mp.setenv("KUBECONFIG", str(path))
        kube_config = sys.modules.get("kubernetes.config.kube_config")
        if kube_config is not None and hasattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION"):
            mp.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
        server.operator_scope = "cluster"  # running_operator: watch every namespace
        server.create(training_run_crd())
        for ns in TENANTS:
            _apply_in(server, ns, "s3://tenants")
        with running_operator(server):
            rayjobs = {
                ns: wait_for(lambda ns=ns: server.get(RAYJOBS, RUN, ns), timeout=60, what=f"{ns}'s RayJob")
                for ns in TENANTS
            }
        policies = [p for ns in TENANTS for p in server.list("networkpolicies.networking.k8s.io", ns)]
        yield server, rayjobs, policies


def test_each_run_gets_a_network_policy_that_admits_only_its_own_pods_and_kuberay(two_tenants):
    from support.netpol import PodRef, admits

    _, rayjobs, policies = two_tenants
    assert sorted(p["metadata"]["namespace"] for p in policies) == sorted(TENANTS)  # one per run, own namespace
    for p in policies:
        (owner,) = p["metadata"]["ownerReferences"]
        assert owner["kind"] == "TrainingRun" and owner["name"] == RUN  # garbage-collected with the run
    a = {role: PodRef("team-a", labels) for role, labels in _pods_of(rayjobs["team-a"]).items()}
    b = {role: PodRef("team-b", labels) for role, labels in _pods_of(rayjobs["team-b"]).items()}
    kuberay = PodRef("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"})
    for port in (6379, 8265, 10001, 12345):  # GCS, dashboard/job API, Ray client, an object-manager port
        assert admits(policies, a["worker"], a["head"], port)  # the run's own traffic flows
        assert admits(policies, a["submitter"], a["head"], port)
        assert not admits(policies, b["head"], a["head"], port)  # another tenant's Ray pods cannot
        assert not admits(policies, b["worker"], a["worker"], port)
        # ... not even a pod in B's namespace wearing A's labels (a podSelector is namespace-local)
        assert not admits(policies, PodRef("team-b", dict(a["worker"].labels)), a["head"], port)
        # ... nor an unrelated pod in A's own namespace
        assert not admits(policies, PodRef("team-a", {"app": "notebook"}), a["head"], port)
    assert admits(policies, kuberay, a["head"], 8265)  # KubeRay reads job status from the dashboard
    assert not admits(policies, kuberay, a["head"], 6379)  # ...and nothing else
    assert not admits(policies, PodRef("default", {"app.kubernetes.io/name": "kuberay-operator"}), a["head"], 8265)


def _dashboard(url: str, token: str | None) -> int:
    headers = {"x-ray-authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.skipif(os.geteuid() != 0, reason="the stand-in's private mount namespaces need root")
def test_tenant_a_ray_head_refuses_whoever_lacks_its_token(two_tenants, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from support.kuberay_standin import KubeRayStandIn

    server, rayjobs, _ = two_tenants
    rj = rayjobs["team-a"]
    assert rj["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}  # stored: v1.7.0 knows it
    standin = KubeRayStandIn(server.kubeconfig, "team-a", tmp_path)
    cluster = standin._create_cluster(rj, "mix-a1")  # the head pod only, from A's template
    try:
        secret = server.get("secrets", "mix-a1", "team-a")  # KubeRay's per-cluster token Secret
        assert secret["metadata"]["ownerReferences"][0]["kind"] == "RayJob"
        token = cluster.auth_token
        assert token and token not in json.dumps(rj)  # the token is never in the RayJob (nor the operator)
        jobs = f"{cluster.dashboard}/api/jobs/"
        wait_for(lambda: _dashboard(jobs, token) == 200, timeout=120, interval=0.5, what="A's dashboard")
        assert _dashboard(jobs, None) == 401
        assert _dashboard(jobs, "b-" + token[2:]) == 403  # another cluster's (or a guessed) token
        head_env = (Path(cluster.pods[0].log).read_text(errors="replace"), standin.errors)
        assert standin.errors == [], head_env
        # A node without the token cannot join A's cluster (GCS refuses it): Ray's own check, run for real.
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-" + token}
        joined = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "start", f"--address=127.0.0.1:{cluster.gcs_port}",
             "--num-cpus=0", f"--temp-dir={cluster.temp_dir}-intruder"],
            capture_output=True, text=True, timeout=90, env=env,
        )  # fmt: skip
        assert joined.returncode != 0
        assert "InvalidAuthToken" in joined.stdout + joined.stderr
    finally:
        standin._delete_cluster(cluster)
        standin.api_client.close()
