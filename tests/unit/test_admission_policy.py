"""The chart's ValidatingAdmissionPolicy (templates/admission-policy.yaml) and the operator's own placement check
(`trainkit_operator.decide.placement_spec_error`) decide alike, from the same values.

The policy is rendered by the real helm and evaluated by the API test server's admission (tests/kubeapi/
admission.py, upstream's semantics; no HTTP needed: its store admits a create in-process); the operator's
check runs on the config the rendered Deployment's environment gives it. For generated runs (every placement
field allowed, refused, absent, null, keyless, in combinations) and the same template in a TrainingSweep, both
must agree on refusing, and the policy's message names a field the operator names.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from support.helm import one, render

REPO = Path(__file__).resolve().parents[2]
SEED = yaml.safe_load((REPO / "jobs" / "gpt2-70m-50-30-20.yaml").read_text())
# a cluster that serves the policy API (helm template's defaults do not say so; `helm install` asks the cluster)
SERVES_POLICIES = ("--api-versions", "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy")
POLICIES = {
    "chart defaults": {},
    "strict": {
        "policy": {
            "priorityClassNames": ["team-high", "team-low"],
            "tolerationKeys": ["nvidia.com/gpu", "spot"],
            "nodeSelectorKeys": ["nvidia.com/gpu.product"],
            "volcanoQueues": ["research"],
            "requireQueueName": True,
        }
    },
}
VALUES = {
    "priorityClassName": [None, "team-high", "system-cluster-critical", "team-low"],
    "volcanoQueue": [None, "research", "other-team"],
    "queueName": [None, "gpu-training"],
    "tolerations": [
        None,
        [],
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        [{"operator": "Exists"}],  # no key: tolerates every taint
        [{"key": "", "operator": "Exists"}],
        [{"key": "spot", "operator": "Equal", "value": "true"}, {"key": "node-role.kubernetes.io/control-plane"}],
    ],
    "nodeSelector": [None, {}, {"nvidia.com/gpu.product": "H100"}, {"kubernetes.io/hostname": "cp-1"}],
}


def _run(choice: dict) -> dict:
    run = copy.deepcopy(SEED)
    run["metadata"]["namespace"] = "default"
    scheduling = run["spec"].setdefault("scheduling", {})
    resources = run["spec"].setdefault("resources", {})
    for key in ("priorityClassName", "volcanoQueue", "queueName"):
        scheduling.pop(key, None)
        if choice[key] is not None:
            scheduling[key] = choice[key]
    for key in ("tolerations", "nodeSelector"):
        resources.pop(key, None)
        if choice[key] is not None:
            resources[key] = choice[key]
    if choice.get("null"):  # nullable fields sent as null
        scheduling["priorityClassName"] = None
    return run


def _sweep(run: dict) -> dict:
    return {
        "apiVersion": "trainkit.dev/v1alpha1",
        "kind": "TrainingSweep",
        "metadata": {"name": "mix", "namespace": "default"},
        "spec": {"template": copy.deepcopy(run["spec"]), "mixtures": {"dirichlet": {"samples": 2, "seed": 0}}},
    }


def _choices(seed: int, count: int) -> list[dict]:
    """One change at a time from an all-allowed run, then random combinations."""
    base = {"priorityClassName": None, "volcanoQueue": None, "queueName": "gpu-training", "tolerations": None,
            "nodeSelector": None}  # fmt: skip
    out = [dict(base), dict(base, null=True)]
    for key, values in VALUES.items():
        out += [dict(base, **{key: v}) for v in values]
    rng = random.Random(seed)
    out += [{k: rng.choice(v) for k, v in VALUES.items()} for _ in range(count)]
    return out


@pytest.fixture(scope="module", params=list(POLICIES))
def installed(request):
    """(docs, a store with the chart's CRDs and policy, the operator's config from the same render)."""
    from kubeapi.store import Store

    from trainkit_operator.config import OperatorConfig

    docs = render(values=POLICIES[request.param], extra=SERVES_POLICIES)
    store = Store(gc_delay=None)
    for doc in docs:
        if doc["kind"] in ("CustomResourceDefinition", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
            rt = store.resolve(
                f"{'customresourcedefinitions' if doc['kind'] == 'CustomResourceDefinition' else doc['kind']}"
            )
            store.create(rt, "v1", None, doc)
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    config = OperatorConfig.from_env({e["name"]: e["value"] for e in container["env"] if "value" in e})
    yield docs, store, config
    store.close()


def _admitted(store, doc: dict) -> str | None:
    """None when the API server admits the create, else its message."""
    from kubeapi.store import APIError

    rt = store.resolve(doc["kind"])
    try:
        store.create(rt, "v1alpha1", "default", doc, dry_run=True)
        return None
    except APIError as e:
        assert e.code == 422 and "ValidatingAdmissionPolicy 'tk-trainkit-placement'" in e.message, e.message
        return e.message


def test_policy_and_operator_refuse_the_same_runs_and_sweeps(installed):
    from trainkit.spec.load import parse_spec

    from trainkit_operator.decide import placement_spec_error

    _, store, config = installed
    refused = admitted = 0
    for choice in _choices(seed=13, count=30):
        run = _run(choice)
        spec, _ = parse_spec(copy.deepcopy(run["spec"]))
        operator = placement_spec_error(spec, config)
        for doc, prefix in ((run, "spec."), (_sweep(run), "spec.template.")):
            policy = _admitted(store, doc)
            assert (policy is None) == (operator is None), (choice, doc["kind"], policy, operator)
            if policy is not None:
                field = policy.split("denied request: ", 1)[1].split(":", 1)[0]
                assert field.startswith(prefix) and field.replace(prefix, "spec.", 1) in operator, (policy, operator)
                refused += 1
            else:
                admitted += 1
    assert refused >= 20 and admitted >= 4  # both sides of the policy were exercised


def test_edits_that_leave_the_spec_alone_are_not_judged(installed):
    """kopf's annotations and finalizers on a run admitted before the policy narrowed (or before it existed)."""
    from kubeapi.store import APIError

    _, store, config = installed
    rt = store.resolve("TrainingRun")
    run = _run({"priorityClassName": "system-cluster-critical", "volcanoQueue": None, "queueName": None,
                "tolerations": None, "nodeSelector": None})  # fmt: skip
    bindings = store.objects[("admissionregistration.k8s.io", "validatingadmissionpolicybindings")]
    saved = dict(bindings)
    bindings.clear()  # the policy is not bound yet: the run goes in
    created = store.create(rt, "v1alpha1", "default", run)
    bindings.update(saved)
    meta = {"metadata": {"finalizers": ["kopf.zalando.org/KopfFinalizerMarker"], "annotations": {"x": "y"}}}
    store.patch(rt, "v1alpha1", "default", created["metadata"]["name"], meta, "application/merge-patch+json")
    with pytest.raises(APIError) as refused:  # but an edit of its spec is judged
        store.patch(rt, "v1alpha1", "default", created["metadata"]["name"], {"spec": {"scheduling": {"backoffLimit": 1}}},
                    "application/merge-patch+json")  # fmt: skip
    assert "priorityClassName" in refused.value.message


@pytest.mark.parametrize("k8s", ["1.30.0", kubernetes_validate.latest_version()])
def test_the_policy_objects_pass_the_upstream_schema(installed, k8s):
    """admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy(+Binding) as Kubernetes' own OpenAPI has them,
    from 1.30 (GA) to the newest schemas on hand: the placement policy and the opt-in namespaces one."""
    docs, _, _ = installed
    shipped = [d for d in docs if d["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")]
    assert (
        sorted(d["metadata"]["name"] for d in shipped)
        == ["tk-trainkit-placement"] * 2 + ["tk-trainkit-tenant-namespaces"] * 2
    )
    for doc in shipped:
        kubernetes_validate.validate(doc, k8s, strict=True)


def test_auto_ships_the_policy_only_where_the_cluster_serves_it():
    kinds = lambda docs: sorted(d["kind"] for d in docs if d["kind"].startswith("ValidatingAdmission"))  # noqa: E731
    assert kinds(render()) == []  # helm template's defaults: no such API known (a pre-1.30 cluster looks the same)
    # placement, and (watching the whole cluster) opt-in namespaces: a policy and a binding each
    both = ["ValidatingAdmissionPolicy"] * 2 + ["ValidatingAdmissionPolicyBinding"] * 2
    assert kinds(render(extra=SERVES_POLICIES)) == both
    assert kinds(render(sets={"policy.admissionPolicy": False}, extra=SERVES_POLICIES)) == []
    assert len(kinds(render(sets={"policy.admissionPolicy": True}))) == 4
    assert len(kinds(render(sets={"policy.admissionPolicy": True, "watch.tenantNamespaceLabel": ""}))) == 2
    # a namespaced install lists its namespaces: no opt-in label there
    scoped = render(sets={"watch.scope": "namespaced", "watch.namespaces": "{team-a,team-b}"}, extra=SERVES_POLICIES)
    assert kinds(scoped) == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    selector = one(scoped, "ValidatingAdmissionPolicyBinding")["spec"]["matchResources"]["namespaceSelector"]
    assert selector == {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                              "values": ["team-a", "team-b"]}]}  # fmt: skip
