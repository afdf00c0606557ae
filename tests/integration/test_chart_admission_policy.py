"""The chart's placement policy enforced by the API server itself: `helm install` puts the ValidatingAdmissionPolicy
and its binding on the API test server (which evaluates them with upstream's semantics, tests/kubeapi/admission.py);
then `kubectl apply` of a TrainingRun or TrainingSweep that breaks the policy is refused with the policy's message,
a compliant one is admitted, an edit into a refused value is refused, and helm upgrades change what is allowed.
No operator runs here: nothing but the API server stands between the tenant and the cluster.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from test_chart_install import RELEASE_NS, kubectl

REPO = Path(__file__).resolve().parents[2]
SEED = yaml.safe_load((REPO / "jobs" / "gpt2-70m-50-30-20.yaml").read_text())
POLICY = "trainkit-placement"
DENIED = f"ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: "


def _run(name: str, namespace: str = "default", **scheduling) -> dict:
    run = copy.deepcopy(SEED)
    run["metadata"] = {"name": name, "namespace": namespace}
    run["spec"]["scheduling"].update(scheduling)
    return run


def _apply(server, doc: dict, tmp_path: Path):
    path = tmp_path / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return kubectl(server, "apply", "-f", str(path), check=False)


def _helm(server, *args: str):
    from support.helm import run, tool

    return run([tool("helm"), *args, str(REPO / "charts" / "trainkit"), "-n", RELEASE_NS],
               env={"KUBECONFIG": str(server.kubeconfig)})  # fmt: skip


def test_helm_installed_policy_refuses_with_its_message_and_admits_compliant_runs(kube_api, tmp_path):
    server = kube_api
    _helm(server, "install", "trainkit", "--create-namespace", "--set", "policy.priorityClassNames={team-high}",
          "--set", "policy.requireQueueName=true")  # fmt: skip
    # "auto": the server serves admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy, so helm shipped it
    policy = server.get("validatingadmissionpolicies", POLICY, None)
    assert policy["spec"]["failurePolicy"] == "Fail" and server.exists(
        "validatingadmissionpolicybindings", POLICY, None
    )

    # a priority class outside the allow-list: refused by the API server, with the policy's own message (kubectl
    # prints a 422 with its causes as a real cluster's: `The <resource> "<name>" is invalid: : <cause>`)
    proc = _apply(server, _run("preempts-others", priorityClassName="system-cluster-critical"), tmp_path)
    assert proc.returncode != 0
    assert (
        f'The trainingruns "preempts-others" is invalid: : {DENIED}spec.scheduling.priorityClassName: '
        "priority class 'system-cluster-critical' is not allowed here (allowed: team-high; "
        "chart policy.priorityClassNames)"
    ) in proc.stderr, proc.stderr
    assert not server.exists("trainingruns.trainkit.dev", "preempts-others")

    # a toleration of every taint, a control-plane nodeSelector, no Kueue queue: each refused, saying why
    keyless = _run("everywhere")
    keyless["spec"]["resources"]["tolerations"] = [{"operator": "Exists"}]
    control_plane = _run("on-the-control-plane")
    control_plane["spec"]["resources"]["nodeSelector"] = {"node-role.kubernetes.io/control-plane": ""}
    unqueued = _run("bypasses-quota")
    del unqueued["spec"]["scheduling"]["queueName"]
    for doc, says in (
        (keyless, "spec.resources.tolerations: a toleration without a key tolerates every taint; not allowed"),
        (control_plane, "spec.resources.nodeSelector: key 'node-role.kubernetes.io/control-plane' is not allowed"),
        (unqueued, "spec.scheduling.queueName: required here (every run goes through Kueue"),
    ):
        proc = _apply(server, doc, tmp_path)
        assert proc.returncode != 0 and DENIED + says in proc.stderr, proc.stderr
        assert not server.exists("trainingruns.trainkit.dev", doc["metadata"]["name"])

    # a sweep whose template breaks it: refused too (each of its runs would)
    sweep = yaml.safe_load((REPO / "jobs" / "sweep-50-30-20-neighbourhood.yaml").read_text())
    sweep["metadata"]["namespace"] = "default"
    sweep["spec"]["template"]["scheduling"] = {"queueName": "gpu-training", "priorityClassName": "system-node-critical"}
    proc = _apply(server, sweep, tmp_path)
    assert proc.returncode != 0 and DENIED + "spec.template.scheduling.priorityClassName" in proc.stderr, proc.stderr

    # compliant: admitted
    assert _apply(server, _run("fits", priorityClassName="team-high"), tmp_path).returncode == 0
    assert server.exists("trainingruns.trainkit.dev", "fits")

    # an edit into a refused value is refused, and the run keeps its spec; a metadata edit is not judged
    patch = json.dumps({"spec": {"scheduling": {"priorityClassName": "system-cluster-critical"}}})
    proc = kubectl(server, "patch", "trainingrun", "fits", "--type", "merge", "-p", patch, check=False)
    assert proc.returncode != 0 and DENIED in proc.stderr, proc.stderr
    assert server.get("trainingruns.trainkit.dev", "fits")["spec"]["scheduling"]["priorityClassName"] == "team-high"
    assert kubectl(server, "annotate", "trainingrun", "fits", "team.example.com/owner=pretraining").returncode == 0

    # helm upgrade: the same values the operator reads decide what the API server allows
    _helm(server, "upgrade", "trainkit", "--set", "policy.priorityClassNames={team-high,system-cluster-critical}",
          "--set", "policy.requireQueueName=true")  # fmt: skip
    assert (
        _apply(server, _run("preempts-others", priorityClassName="system-cluster-critical"), tmp_path).returncode == 0
    )
    # ...and without the policy (a cluster older than 1.30, or turned off) the API server admits it: the operator's
    # own check (tests/unit/test_operator_decide.py) is then the one that refuses
    _helm(server, "upgrade", "trainkit", "--set", "policy.admissionPolicy=false")
    assert not server.exists("validatingadmissionpolicies", POLICY, None)
    assert _apply(server, _run("after-policy", priorityClassName="system-node-critical"), tmp_path).returncode == 0


def test_a_namespaced_release_judges_only_its_namespaces(kube_api, tmp_path):
    server = kube_api
    for ns in ("team-a", "team-b"):
        kubectl(server, "create", "namespace", ns)
    _helm(server, "install", "trainkit", "--create-namespace", "--set", "watch.scope=namespaced",
          "--set", "watch.namespaces={team-a}")  # fmt: skip
    bad = {"priorityClassName": "system-cluster-critical"}
    proc = _apply(server, _run("in-a", "team-a", **bad), tmp_path)
    assert proc.returncode != 0 and DENIED in proc.stderr
    # another namespace is another release's (or nobody's) to judge
    assert _apply(server, _run("in-b", "team-b", **bad), tmp_path).returncode == 0
