"""The chart installed on the API test server, and the operator started exactly as its Deployment says.

Real parts: helm renders the chart; kubectl applies it (`kubectl apply --validate=false --server URL`) to
the HTTP API test server (tests/kubeapi); the operator runs as a separate process with the Deployment's
command, args and environment as stored by the API server (secretKeyRef values resolved from the stored
Secret, as the kubelet would); it reads progress from a real S3 server (moto). The only stand-ins: a
kubeconfig replaces the in-cluster service-account token (KUBERNETES_SERVICE_HOST is not set), and KubeRay's
RayJob status transitions are SIMULATED by the test, written where KubeRay's controller writes them.

While the operator runs, the API server records every request it makes: each must be allowed by the RBAC
rules the chart installed (resourceNames included). Planted credentials never show in logs, objects or
Events.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from support.helm import allows, by_kind, template

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "jobs" / "gpt2-70m-50-30-20.yaml"
RUN = "gpt2-70m-50-30-20"
RELEASE_NS = "trainkit-system"
PLANTED = (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubectl(server, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["kubectl", "--server", server.url, "--token", "kubeapi-test-token", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not check or proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc


def wait_for(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as e:  # noqa: BLE001 - not there yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def secret(server, ns: str, name: str):
    server.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "stringData": {"AWS_ACCESS_KEY_ID": PLANTED[0], "AWS_SECRET_ACCESS_KEY": PLANTED[1]},
        }
    )


def container_env(server, deployment: dict) -> dict[str, str]:
    """The container's environment as the kubelet would build it (values, and secretKeyRefs from the server)."""
    ns = deployment["metadata"]["namespace"]
    env: dict[str, str] = {}
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        ref = e["valueFrom"]["secretKeyRef"]
        try:
            data = server.get("secrets", ref["name"], ns)["data"]
            env[e["name"]] = base64.b64decode(data[ref["key"]]).decode()
        except Exception:  # noqa: BLE001
            assert ref.get("optional"), f"secret {ref['name']} missing and not optional"
    return env


@contextmanager
def operator_as_deployed(server, deployment: dict, kubeconfig: Path, workdir: Path):
    """`command` + `args` + env of the stored Deployment, as a process; yields (process, health port)."""
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    command = list(c["command"]) + list(c.get("args", []))
    assert command[:3] == ["python", "-m", "trainkit_operator"]
    command[0] = sys.executable  # the image's python; here the project's venv
    env = container_env(server, deployment)
    # Stand-in for the in-cluster service account (the pod would get KUBERNETES_SERVICE_HOST + a token).
    env.update({"KUBECONFIG": str(kubeconfig), "PATH": os.environ["PATH"]})
    log = (workdir / "operator.log").open("a")
    proc = subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    port = int([a for a in command if a.startswith("--liveness=")][0].split(":")[-1].split("/")[0])
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
        return r.status


def kuberay_sets_status(server, name: str, **status):
    """SIMULATED KubeRay: the RayJob status, written through the status subresource as its controller does."""
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=str(server.kubeconfig))
    try:
        kubernetes.client.CustomObjectsApi(client).patch_namespaced_custom_object_status(
            "ray.io", "v1", "default", "rayjobs", name, {"status": status}
        )
    finally:
        client.close()


def install(server, tmp_path: Path, values: dict) -> list[dict]:
    """What `helm install --create-namespace` does, with kubectl: the namespace, then the chart's crds/
    (helm applies those first, so the templates may use them), then the rendered templates."""
    ns = tmp_path / "namespace.yaml"
    ns.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NS}}))
    kubectl(server, "apply", "--validate=false", "-f", str(ns))
    # helm installs each file of crds/ as it is (never templated): kubectl applies the folder the same way.
    out = kubectl(server, "apply", "--validate=false", "-f", str(REPO / "charts" / "trainkit" / "crds")).stdout
    assert "customresourcedefinition.apiextensions.k8s.io/trainingruns.trainkit.dev created" in out, out
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(template(values=values, namespace=RELEASE_NS, extra=("--skip-crds",)).stdout)
    kubectl(server, "apply", "--validate=false", "-f", str(rendered))
    return [d for d in yaml.safe_load_all(rendered.read_text()) if d]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("scope", ["cluster", "namespaced"])
def test_chart_applied_with_kubectl_then_the_deployed_operator_reconciles_the_seed_run(
    kube_api, s3_endpoint, seed_bucket, tmp_path, scope
):
    server = kube_api
    _OWN.clear()
    port = free_port()
    values = {
        "operator": {"healthPort": port, "reconcileIntervalSeconds": 1, "logLevel": "debug"},
        "storage": {"endpoint": s3_endpoint, "region": "us-east-1", "credentialsSecret": "trainkit-s3"},
        "watch": {"scope": scope, "namespaces": ["default"] if scope == "namespaced" else []},
    }
    docs = install(server, tmp_path, values)

    # What the chart created, as the API server now holds it.
    assert server.exists("customresourcedefinitions", "trainingruns.trainkit.dev", None)
    crd = server.get("customresourcedefinitions", "trainingruns.trainkit.dev", None)
    assert crd["spec"]["names"]["shortNames"] == ["tr"]
    deployment = server.get("deployments", "tk-trainkit", RELEASE_NS)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert server.exists("serviceaccounts", "tk-trainkit", RELEASE_NS)
    if scope == "cluster":
        assert server.exists("clusterkopfpeerings.kopf.dev", "trainkit", None)
        roles = [server.get("clusterroles", "tk-trainkit", None)]
    else:
        assert server.exists("kopfpeerings.kopf.dev", "trainkit", "default")
        roles = [
            server.get("roles", "tk-trainkit", "default"),
            server.get("clusterroles", "tk-trainkit-cluster-read", None),
        ]
    assert len(roles) == len(by_kind(docs, "Role") + by_kind(docs, "ClusterRole"))

    # Watching the whole cluster, the operator serves only namespaces a cluster administrator opted in.
    if scope == "cluster":
        kubectl(server, "label", "namespace", "default", "trainkit.dev/tenant=true")
    # The credentials Secret, in the release namespace (the operator pod's env) and the run's namespace.
    secret(server, RELEASE_NS, "trainkit-s3")
    secret(server, "default", "trainkit-s3")

    # From here the API server enforces RBAC as a real one: the operator authenticates as the chart's
    # ServiceAccount (the token its pod would mount) and may do only what the chart's roles grant.
    server.enforce_rbac()
    sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    sa_kubeconfig = server.write_token_kubeconfig(
        tmp_path / "sa-kubeconfig", server.service_account_token(RELEASE_NS, sa)
    )
    first_request = len(server.requests)
    with operator_as_deployed(server, deployment, sa_kubeconfig, tmp_path) as (proc, health_port):
        # The Deployment's probes: kopf's health endpoint answers once the operator is up.
        assert wait_for(lambda: healthz(health_port) == 200, what="kopf /healthz", timeout=60)

        with own_requests(server, "trainingruns"):
            kubectl(server, "apply", "--validate=false", "-f", str(SEED))
        rayjob = wait_for(lambda: server.get("rayjobs.ray.io", RUN, "default"), what="the RayJob")
        run = server.get("trainingruns.trainkit.dev", RUN, "default")
        assert rayjob["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
        head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert head["image"] == "ghcr.io/trainkit/trainkit-trainer:0.1.0"  # the chart's default trainer image
        assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == "2.60.0"
        volumes = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]
        mounted = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
        assert mounted.startswith(f"{RUN}-spec-") and server.get("configmaps", mounted, "default")["immutable"]
        wait_for(
            lambda: server.get("trainingruns.trainkit.dev", RUN, "default")["status"]["phase"] == "Pending",
            what="phase Pending",
        )

        # SIMULATED KubeRay: the Ray cluster is starting (the operator then looks at its pods).
        with own_requests(server, "rayjobs"):
            kuberay_sets_status(
                server, RUN, jobStatus="", jobDeploymentStatus="Initializing", rayClusterName=f"{RUN}-raycluster-abcde"
            )
        wait_for(
            lambda: [r for r in server.requests[first_request:] if r.resource == "pods" and r.verb == "list"],
            what="the operator listing the Ray pods",
        )

        # SIMULATED KubeRay: running; the trainer wrote progress.json (read by the operator with the
        # credentials its Deployment took from the Secret, at the chart's storage endpoint).
        from trainkit import storage

        out = "s3://trainkit-runs/runs/default/gpt2-70m-50-30-20"
        storage.write_json(
            f"{out}/progress.json", {"step": 2000, "totalSteps": 8138, "loss": 3.4, "updatedAt": "2026-11-27T08:00:00Z"}
        )
        with own_requests(server, "rayjobs"):
            kuberay_sets_status(server, RUN, jobStatus="RUNNING", jobDeploymentStatus="Running")
        status = wait_for(
            lambda: (
                (s := server.get("trainingruns.trainkit.dev", RUN, "default")["status"]).get("progress", {}).get("step")
                == 2000
                and s
            ),
            what="Running with progress",
        )
        assert status["phase"] == "Running" and status["progress"]["loss"] == 3.4

        # A user extends the deadline: a mutable field, which the operator patches into the RayJob.
        with own_requests(server, "trainingruns"):
            kubectl(
                server,
                "patch",
                "tr",
                RUN,
                "-n",
                "default",
                "--type=merge",
                "-p",
                json.dumps({"spec": {"scheduling": {"activeDeadlineSeconds": 86400}}}),
            )
        wait_for(
            lambda: server.get("rayjobs.ray.io", RUN, "default")["spec"].get("activeDeadlineSeconds") == 86400,
            what="the new deadline on the RayJob",
        )

        with own_requests(server, "rayjobs"):
            kuberay_sets_status(server, RUN, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
        wait_for(
            lambda: server.get("trainingruns.trainkit.dev", RUN, "default")["status"]["phase"] == "Succeeded",
            what="phase Succeeded",
        )
        with own_requests(server, "trainingruns"):
            table = kubectl(server, "get", "tr", "-n", "default").stdout
        assert "Succeeded" in table
        assert proc.poll() is None, "the operator exited"
    assert proc.returncode == 0 or proc.returncode == -signal.SIGTERM
    log = (tmp_path / "operator.log").read_text()
    assert "Traceback" not in log, log[-4000:]
    assert " 403 " not in log and "Forbidden" not in log, log[-4000:]

    # Every request the operator made is allowed by the rules the chart installed (recorded by the server).
    ours = [r for i, r in enumerate(server.requests) if i >= first_request and not _made_by_the_test(i, r)]
    assert len(ours) > 20
    denied = sorted(
        {
            (r.verb, r.group, r.resource, r.subresource, r.name if r.resource == "secrets" else None)
            for r in ours
            if not _allowed(roles, r, scope)
        }
    )
    assert not denied, f"requests the chart's RBAC would forbid: {denied}"
    # The check has teeth: without the Secret rule, the recorded read of the run's Secret is refused.
    stripped = [dict(role, rules=[x for x in role["rules"] if "secrets" not in x["resources"]]) for role in roles]
    secret_reads = [r for r in ours if r.resource == "secrets"]
    assert secret_reads and not any(_allowed(stripped, r, scope) for r in secret_reads)
    # And the operator's declared list (which the chart's rules are built from) covers what it did.
    from trainkit_operator.api_calls import API_CALLS, PEERING_CALLS

    declared = set(API_CALLS) | set(PEERING_CALLS)
    undeclared = {(r.verb, r.group, r.resource, r.subresource or "") for r in ours} - declared
    assert not undeclared, f"calls missing from trainkit_operator.api_calls: {sorted(undeclared)}"
    (tmp_path / "requests.json").write_text(
        json.dumps(sorted({(r.verb, r.group, r.resource, r.subresource or "") for r in ours}))
    )

    # No planted credential in the operator's log, the objects it wrote, or Events.
    dump = log
    for resource in ("trainingruns.trainkit.dev", "rayjobs.ray.io", "configmaps", "events"):
        dump += json.dumps(server.list(resource))
    for value in PLANTED:
        assert value not in dump


_OWN: list[tuple[int, int, str]] = []  # (first, last request index, resource) of the test's own calls


@contextmanager
def own_requests(server, resource: str):
    """Requests on `resource` made while the test itself acts (kubectl, SIMULATED KubeRay) are not the operator's."""
    first = len(server.requests)
    yield
    _OWN.append((first, len(server.requests), resource))


def _made_by_the_test(index: int, r) -> bool:
    return any(first <= index < last and r.resource == resource for first, last, resource in _OWN)


def _allowed(roles: list[dict], r, scope: str) -> bool:
    namespaced_roles = [x for x in roles if x["kind"] == "Role"]
    cluster_roles = [x for x in roles if x["kind"] == "ClusterRole"]
    if r.namespace is not None:
        candidates = cluster_roles + [x for x in namespaced_roles if x["metadata"]["namespace"] == r.namespace]
    else:
        candidates = cluster_roles  # cluster-scoped, or across all namespaces: a Role never allows it
    return allows(candidates, r.verb, r.group, r.resource, r.subresource, r.name)


@pytest.mark.timeout(240)
def test_helm_install_upgrade_uninstall_on_the_api_test_server(kube_api, tmp_path):
    """The real helm against the API test server: install (crds/ first, templates checked against the
    server's OpenAPI), NOTES, an upgrade that switches the RBAC scope, and uninstall (CRDs stay)."""
    from support.helm import run as run_tool
    from support.helm import tool

    server = kube_api
    env = {"KUBECONFIG": str(server.kubeconfig)}
    chart = str(REPO / "charts" / "trainkit")
    helm = tool("helm")

    bad = run_tool(
        [
            helm,
            "install",
            "trainkit",
            chart,
            "-n",
            RELEASE_NS,
            "--create-namespace",
            "--set",
            "storage.secretAccessKey=" + PLANTED[1],
        ],
        env=env,
        check=False,
    )
    assert bad.returncode != 0 and "secretAccessKey" in bad.stderr and PLANTED[1] not in bad.stderr
    assert not server.exists("deployments", "trainkit", RELEASE_NS)

    proc = run_tool([helm, "install", "trainkit", chart, "-n", RELEASE_NS, "--create-namespace"], env=env)
    assert "STATUS: deployed" in proc.stdout
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n trainkit-system rollout status deployment/trainkit" in notes
    assert "create secret generic trainkit-s3" in notes
    for name in (
        "trainingruns.trainkit.dev",
        "trainingsweeps.trainkit.dev",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    ):
        assert server.exists("customresourcedefinitions", name, None), name
    assert (
        server.get("deployments", "trainkit", RELEASE_NS)["metadata"]["labels"]["app.kubernetes.io/managed-by"]
        == "Helm"
    )
    assert server.exists("clusterroles", "trainkit", None) and server.exists(
        "clusterkopfpeerings.kopf.dev", "trainkit", None
    )
    chart_secrets = [s for s in server.list("secrets", RELEASE_NS) if s.get("type") != "helm.sh/release.v1"]
    assert not chart_secrets, "the chart itself creates no Secret"

    # Upgrade to namespaced: the cluster-wide role goes, a Role per namespace comes.
    run_tool(
        [
            helm,
            "upgrade",
            "trainkit",
            chart,
            "-n",
            RELEASE_NS,
            "--set",
            "watch.scope=namespaced",
            "--set",
            "watch.namespaces={default}",
        ],
        env=env,
    )
    assert not server.exists("clusterroles", "trainkit", None)
    assert server.exists("clusterroles", "trainkit-cluster-read", None)
    assert server.exists("roles", "trainkit", "default") and server.exists(
        "kopfpeerings.kopf.dev", "trainkit", "default"
    )
    assert not server.exists("clusterkopfpeerings.kopf.dev", "trainkit", None)
    dep = server.get("deployments", "trainkit", RELEASE_NS)
    env_vars = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env_vars["TRAINKIT_NAMESPACES"] == "default"

    # Uninstall: the operator and its rights go; CRDs (and so users' runs) stay. (Helm's last step, purging
    # its own release record, sends a protobuf DeleteOptions the test server does not decode: tolerated.)
    proc = run_tool([helm, "uninstall", "trainkit", "-n", RELEASE_NS], env=env, check=False)
    assert proc.returncode == 0 or "Failed to purge the release" in proc.stderr, proc.stderr
    assert not server.exists("deployments", "trainkit", RELEASE_NS)
    assert not server.exists("roles", "trainkit", "default")
    assert server.exists("customresourcedefinitions", "trainingruns.trainkit.dev", None)
