"""The test API server is as strict as a real kube-apiserver where a leniency would hide a bug of ours.

Each test names the upstream behaviour it follows (the Kubernetes source file or documentation).
"""

from __future__ import annotations

import copy
import json

import pytest
from kubeapi.store import APIError

CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")


def _crd_rt(api):
    return api.store.types[CRDS]


def _widget_crd(schema: dict, plural: str = "widgets") -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.example.dev"},
        "spec": {
            "group": "example.dev", "scope": "Namespaced",
            "names": {"plural": plural, "kind": plural.capitalize()[:-1], "singular": plural[:-1]},
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": schema}}}}],
        },
    }  # fmt: skip


# ------------------------------------------------------------------------------------- CEL cost
# Upstream: staging/src/k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go
# (StaticEstimatedCostLimit 1e7 per rule, StaticEstimatedCRDCostLimit 1e8 per CRD, the error wording) and
# cel_validation.go (cardinality: the product of maxItems/maxProperties above a rule).
def test_both_shipped_crds_are_admitted_under_the_cel_cost_limits(kube_api):
    from support.celcost import STATIC_ESTIMATED_COST_LIMIT, schema_rule_costs
    from trainkit.spec.crd import all_crds

    for crd in all_crds():
        kube_api.store.create(_crd_rt(kube_api), "v1", None, crd)
        costs = schema_rule_costs(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "s")
        assert costs and max(c.cost for c in costs) <= STATIC_ESTIMATED_COST_LIMIT
    assert kube_api.exists("customresourcedefinitions", "trainingsweeps.trainkit.dev", None)


def test_the_sweep_crd_with_unbounded_weights_is_refused_as_upstream_words_it(kube_api):
    """The bug the lenient server hid: `mixtures.explicit[].weights` had no maxProperties under a list of
    10,000, so `helm install` of the chart would have been refused by a real cluster."""
    from trainkit.spec.crd import training_sweep_crd

    crd = training_sweep_crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    weights = spec["properties"]["mixtures"]["properties"]["explicit"]["items"]["properties"]["weights"]
    assert weights["maxProperties"] == 64  # the fix: as many weights as sources
    unbounded = copy.deepcopy(crd)
    del unbounded["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["mixtures"][
        "properties"]["explicit"]["items"]["properties"]["weights"]["maxProperties"]  # fmt: skip
    with pytest.raises(APIError) as e:
        kube_api.store.create(_crd_rt(kube_api), "v1", None, unbounded)
    assert e.value.code == 422
    rule_path = ("spec.validation.openAPIV3Schema.properties[spec].properties[mixtures].properties[explicit].items"
                 ".properties[weights].x-kubernetes-validations[0].rule")  # fmt: skip
    causes = {(c["field"], c["message"]) for c in e.value.details["causes"]}
    expected = (
        "Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or "
        "adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
    assert (rule_path, expected) in causes
    assert any(f == "spec.validation.openAPIV3Schema" and "estimated rule cost total for entire OpenAPIv3 schema" in m
               for f, m in causes)  # fmt: skip
    assert e.value.message.startswith(
        'CustomResourceDefinition.apiextensions.k8s.io "trainingsweeps.trainkit.dev" is invalid: ['
    )
    assert not kube_api.exists("customresourcedefinitions", "trainingsweeps.trainkit.dev", None)


def test_cost_scales_with_bounds_like_upstream(kube_api):
    """A rule over an unbounded list of unbounded strings is refused; the same rule with maxItems/maxLength is
    admitted; a factor below 1.5 is printed with %f as getCostErrorMessage does."""
    rt = _crd_rt(kube_api)
    unbounded = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"},
                 "x-kubernetes-validations": [{"rule": "self.all(t, t.contains('x'))"}]}}}  # fmt: skip
    with pytest.raises(APIError) as e:
        kube_api.store.create(rt, "v1", None, _widget_crd(unbounded))
    assert "estimated rule cost exceeds budget by factor of" in e.value.message
    bounded = copy.deepcopy(unbounded)
    bounded["properties"]["tags"].update(maxItems=100)
    bounded["properties"]["tags"]["items"].update(maxLength=63)
    kube_api.store.create(rt, "v1", None, _widget_crd(bounded))
    from support.celcost import cost_message

    assert cost_message("estimated rule cost", 12_000_000, 10_000_000).startswith(
        "estimated rule cost exceeds budget by factor of 1.200000x ("
    )
    assert "factor of 2.5x" in cost_message("estimated rule cost", 25_000_000, 10_000_000)


def test_the_whole_schemas_total_is_limited_too(kube_api):
    """Rules each under 1e7 whose sum is over 1e8: refused at the schema, the big contributors named."""
    from support.celcost import STATIC_ESTIMATED_COST_LIMIT, schema_rule_costs

    tags = {
        "type": "array",
        "maxItems": 80000,
        "items": {"type": "string", "maxLength": 250, "x-kubernetes-validations": [{"rule": "self.contains('x')"}]},
    }
    (one,) = schema_rule_costs(tags, "t")
    assert 0.5 * STATIC_ESTIMATED_COST_LIMIT < one.cost < STATIC_ESTIMATED_COST_LIMIT and one.cardinality == 80000
    schema = {"type": "object", "properties": {f"t{i}": tags for i in range(20)}}
    with pytest.raises(APIError) as e:
        kube_api.store.create(_crd_rt(kube_api), "v1", None, _widget_crd(schema))
    causes = [(c["field"], c["message"]) for c in e.value.details["causes"]]
    assert causes[-1][0] == "spec.validation.openAPIV3Schema" and causes[-1][1].startswith(
        "Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of"
    )
    assert sum("contributed to estimated rule cost total" in m for _, m in causes) == 4  # the 4 most expensive
    assert not any("estimated rule cost exceeds budget" in m for _, m in causes)


def test_a_rule_under_a_map_costs_by_its_max_properties(kube_api):
    from support.celcost import MAX_REQUEST_SIZE_BYTES, max_elements

    # upstream schemas.go: (3 MiB - 2) / (min value size 1 + 6) map entries without maxProperties
    assert (
        max_elements({"type": "object", "additionalProperties": {"type": "number"}})
        == (MAX_REQUEST_SIZE_BYTES - 2) // 7
    )
    assert max_elements({"type": "object", "additionalProperties": {"type": "number"}, "maxProperties": 5}) == 5
    assert max_elements({"type": "string", "maxLength": 10}) == 40  # maxLength is in runes, a rune is up to 4 bytes


# ------------------------------------------------------------------------------------- CEL nulls
# Upstream: a null of a `nullable: true` field is kept and is a value CEL sees (has() is true; arithmetic on
# it is an evaluation error -> 422); nulls of other fields are pruned before validation
# (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#defaulting-and-nullable).
def test_a_nullable_field_set_to_null_is_present_to_cel(kube_api):
    rt = _crd_rt(kube_api)
    schema = {"type": "object", "properties": {"n": {"type": "integer", "nullable": True}, "m": {"type": "integer"}},
              "x-kubernetes-validations": [{"rule": "!has(self.n) || self.n % 2 == 0", "message": "n must be even"},
                                           {"rule": "!has(self.m) || self.m > 0", "message": "m must be > 0"}]}  # fmt: skip
    kube_api.store.create(rt, "v1", None, _widget_crd(schema))
    widgets = kube_api.store.resolve("widgets")
    ok = kube_api.store.create(widgets, "v1", "default", {"apiVersion": "example.dev/v1", "kind": "Widget",
                                                           "metadata": {"name": "a"}, "spec": {"n": 2, "m": None}})  # fmt: skip
    assert "m" not in ok["spec"]  # not nullable: the null is pruned, the rule sees no m
    with pytest.raises(APIError) as e:
        kube_api.store.create(widgets, "v1", "default", {"apiVersion": "example.dev/v1", "kind": "Widget",
                                                          "metadata": {"name": "b"}, "spec": {"n": None}})  # fmt: skip
    assert e.value.code == 422 and "n must be even" in e.value.message, e.value.message
    assert not kube_api.exists("widgets", "b")
    json.dumps(ok)  # stored objects stay JSON


# ------------------------------------------------------------------------------ garbage collection
# Upstream: https://kubernetes.io/docs/concepts/architecture/garbage-collection/ and
# pkg/controller/garbagecollector/garbagecollector.go (attemptToDeleteItem, classifyReferences, isDangling:
# an owner is looked up by apiVersion/kind/name in the dependent's namespace and must have the uid the
# reference names); the GC finalizers come from staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go.
def _cm(api, name, owners=(), finalizers=()):
    meta = {"name": name, "ownerReferences": [dict(o) for o in owners]}
    if finalizers:
        meta["finalizers"] = list(finalizers)
    return api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta})


def _ref(obj, block=False):
    group_version = obj["apiVersion"]
    return {"apiVersion": group_version, "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "blockOwnerDeletion": block}  # fmt: skip


def _rayjob(api, name, finalizers=()):
    meta = {"name": name, "finalizers": list(finalizers)} if finalizers else {"name": name}
    return api.create({"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta, "spec": {}})


def test_background_collection_happens_after_the_delete_not_in_it(kube_api):
    import time

    owner = _rayjob(kube_api, "owner")
    _cm(kube_api, "dep", [_ref(owner)])
    rj = kube_api.store.resolve("rayjobs")
    kube_api.store.delete(rj, "default", "owner")
    assert not kube_api.exists("rayjobs", "owner")
    assert kube_api.exists("configmaps", "dep"), "the GC is a controller: dependents outlive the owner's DELETE"
    deadline = time.monotonic() + 10
    while kube_api.exists("configmaps", "dep") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not kube_api.exists("configmaps", "dep")


def test_owner_resolution_by_kind_name_and_uid(kube_api):
    owner = _rayjob(kube_api, "owner")
    ghost = {**_ref(owner), "name": "never-existed", "uid": "00000000-0000-0000-0000-000000000000"}
    _cm(kube_api, "of-a-missing-owner", [ghost])
    _cm(kube_api, "of-the-old-incarnation", [{**_ref(owner), "uid": "11111111-1111-1111-1111-111111111111"}])
    _cm(kube_api, "of-an-unserved-kind", [{"apiVersion": "example.dev/v1", "kind": "Nothing", "name": "x", "uid": "2"}])
    _cm(kube_api, "of-one-live-and-one-gone", [_ref(owner), ghost])
    _cm(kube_api, "of-the-live-owner", [_ref(owner)])
    kube_api.collect_garbage()
    left = sorted(c["metadata"]["name"] for c in kube_api.list("configmaps", "default"))
    assert left == ["of-an-unserved-kind", "of-one-live-and-one-gone", "of-the-live-owner"]
    # a reference to a gone owner is dropped when another owner lives
    assert kube_api.get("configmaps", "of-one-live-and-one-gone")["metadata"]["ownerReferences"] == [_ref(owner)]


def test_foreground_deletion_waits_for_blocking_dependents(kube_api):
    owner = _rayjob(kube_api, "owner")
    _cm(kube_api, "blocking", [_ref(owner, block=True)], finalizers=["example.dev/hold"])
    _cm(kube_api, "not-blocking", [_ref(owner)], finalizers=["example.dev/hold"])
    rj = kube_api.store.resolve("rayjobs")
    kube_api.store.delete(rj, "default", "owner", {"propagationPolicy": "Foreground"})
    kube_api.collect_garbage()
    held = kube_api.get("rayjobs", "owner")
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert kube_api.get("configmaps", "blocking")["metadata"]["deletionTimestamp"]
    cms = kube_api.store.resolve("configmaps")
    kube_api.store.patch(
        cms, "v1", "default", "not-blocking", {"metadata": {"finalizers": None}}, "application/merge-patch+json"
    )
    kube_api.collect_garbage()
    assert kube_api.exists("rayjobs", "owner"), "a dependent with blockOwnerDeletion still holds the owner"
    kube_api.store.patch(
        cms, "v1", "default", "blocking", {"metadata": {"finalizers": None}}, "application/merge-patch+json"
    )
    kube_api.collect_garbage()
    assert not kube_api.exists("rayjobs", "owner")


# ---------------------------------------------------------------------------------------- RBAC
# Upstream: plugin/pkg/auth/authorizer/rbac/rbac.go + pkg/apis/rbac/v1/evaluation_helpers.go (rule matching,
# resourceNames only for named requests), staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/
# errors.go (the 403 wording), plugin/pkg/admission/gc/gc_admission.go (blockOwnerDeletion needs
# update on <owner>/finalizers).
def _sa_client(api, token):
    import kubernetes

    configuration = kubernetes.client.Configuration()
    configuration.host = api.url
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return kubernetes.client.ApiClient(configuration)


def _role(api, ns, name, rules):
    api.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, "namespace": ns},
                "rules": rules})  # fmt: skip
    api.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name, "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "ops"}]})  # fmt: skip


def test_rbac_allows_what_the_roles_grant_and_answers_403_as_upstream(kube_api):
    import kubernetes
    from kubernetes.client.exceptions import ApiException

    kube_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}})
    for n in ("mine", "theirs"):
        kube_api.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n, "namespace": "default"}})
    _role(
        kube_api,
        "default",
        "op",
        [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["mine"], "verbs": ["get", "list"]},
        ],
    )
    kube_api.enforce_rbac()
    token = kube_api.service_account_token("ops", "op")
    client = _sa_client(kube_api, token)
    core = kubernetes.client.CoreV1Api(client)
    try:
        core.create_namespaced_config_map("default", {"metadata": {"name": "ok"}})
        assert core.list_namespaced_config_map("default").items
        core.read_namespaced_secret("mine", "default")
        with pytest.raises(ApiException) as e:
            core.read_namespaced_secret("theirs", "default")
        assert e.value.status == 403
        body = json.loads(e.value.body)
        assert (
            body["reason"] == "Forbidden"
            and body["code"] == 403
            and body["details"] == {"name": "theirs", "group": "", "kind": "secrets"}
        )
        assert body["message"] == (
            'secrets "theirs" is forbidden: User "system:serviceaccount:ops:op" cannot get '
            'resource "secrets" in API group "" in the namespace "default"'
        )
        with pytest.raises(ApiException) as e:  # resourceNames never grant a list
            core.list_namespaced_secret("default")
        assert e.value.status == 403
        with pytest.raises(ApiException) as e:  # the Role is only for its namespace
            core.list_namespaced_config_map("kube-system")
        assert e.value.status == 403 and 'in the namespace "kube-system"' in json.loads(e.value.body)["message"]
        with pytest.raises(ApiException) as e:
            core.list_namespace()
        assert json.loads(e.value.body)["message"].endswith(
            'cannot list resource "namespaces" in API group "" at the cluster scope'
        )
        with pytest.raises(ApiException) as e:
            core.delete_namespaced_config_map("ok", "default")
        assert e.value.status == 403 and kube_api.exists("configmaps", "ok")
    finally:
        client.close()
    bad = _sa_client(kube_api, "not-a-token")
    try:
        with pytest.raises(ApiException) as e:
            kubernetes.client.CoreV1Api(bad).list_namespaced_config_map("default")
        assert e.value.status == 401
    finally:
        bad.close()
    # without enforce_rbac (the default) nothing is checked
    assert not kubeapi_default_enforces()


def kubeapi_default_enforces() -> bool:
    from kubeapi import KubeAPIServer

    return KubeAPIServer().rbac_enforced


def test_block_owner_deletion_needs_update_on_the_owners_finalizers(kube_api):
    import kubernetes
    from kubernetes.client.exceptions import ApiException

    owner = _rayjob(kube_api, "owner")
    _role(
        kube_api,
        "default",
        "op",
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch", "get"]}],
    )
    kube_api.enforce_rbac()
    client = _sa_client(kube_api, kube_api.service_account_token("ops", "op"))
    core = kubernetes.client.CoreV1Api(client)
    try:
        core.create_namespaced_config_map("default", {"metadata": {"name": "plain", "ownerReferences": [_ref(owner)]}})
        with pytest.raises(ApiException) as e:
            core.create_namespaced_config_map(
                "default", {"metadata": {"name": "blocking", "ownerReferences": [_ref(owner, block=True)]}}
            )
        assert e.value.status == 403
        message = json.loads(e.value.body)["message"]
        assert message.startswith(
            'configmaps "blocking" is forbidden: cannot set blockOwnerDeletion if an ownerReference '
            'refers to a resource you can\'t set finalizers on: User "system:serviceaccount:ops:op" '
            'cannot update resource "rayjobs/finalizers" in API group "ray.io" in the namespace "default"'
        )
        with pytest.raises(ApiException) as e:  # turning it on later by a patch is checked too
            core.patch_namespaced_config_map(
                "plain", "default", {"metadata": {"ownerReferences": [_ref(owner, block=True)]}}
            )
        assert e.value.status == 403
        _role(
            kube_api,
            "default",
            "finalizers",
            [{"apiGroups": ["ray.io"], "resources": ["rayjobs/finalizers"], "verbs": ["update"]}],
        )
        core.create_namespaced_config_map(
            "default", {"metadata": {"name": "blocking", "ownerReferences": [_ref(owner, block=True)]}}
        )
    finally:
        client.close()


def test_a_request_without_credentials_is_anonymous_and_the_client_sends_its_token(kube_api, tmp_path):
    """kubernetes==36.0.0 dropped the kubeconfig's and the in-cluster token (kubernetes-client/python#2582,
    #2584): every call of the operator went out as system:anonymous. Any token worked here before, and none."""
    import kubernetes
    from kubernetes.client.exceptions import ApiException

    _role(kube_api, "default", "op", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    kube_api.enforce_rbac()
    anonymous = kubernetes.client.Configuration()
    anonymous.host = kube_api.url
    client = kubernetes.client.ApiClient(anonymous)
    try:
        with pytest.raises(ApiException) as e:
            kubernetes.client.CoreV1Api(client).list_namespaced_config_map("default")
        assert e.value.status == 403 and 'User "system:anonymous"' in json.loads(e.value.body)["message"]
    finally:
        client.close()
    path = kube_api.write_token_kubeconfig(tmp_path / "sa", kube_api.service_account_token("ops", "op"))
    client = kubernetes.config.new_client_from_config(config_file=str(path))
    try:
        assert kubernetes.client.CoreV1Api(client).list_namespaced_config_map("default").items == []
    finally:
        client.close()


# -------------------------------------------------------------------------------- RayJob schema
# Upstream: ray-project/kuberay ray-operator/config/crd/bases/ray.io_rayjobs.yaml (v1.4.2, v1.7.0), trimmed
# to the fields trainkit emits (tests/data/kuberay/, tests/support/kuberay_schema.py); pruning, defaulting
# and type checks of a structural schema as any custom resource.
@pytest.mark.parametrize("tag", ["v1.4.2", "v1.7.0"])
def test_every_rayjob_trainkit_builds_is_stored_unpruned_by_kuberays_schema(tag):
    from kubeapi import KubeAPIServer
    from support.kuberay_schema import emitted_rayjobs, has_token_auth

    with KubeAPIServer(rayjob=tag) as api:
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "research"}})
        schema = api.store.resolve("rayjobs").versions["v1"].schema
        assert schema["properties"]["spec"]["properties"]["rayClusterSpec"]["properties"]["headGroupSpec"]
        for i, rj in enumerate(emitted_rayjobs(token_auth=has_token_auth(tag))):
            rj["metadata"]["name"] = f"rj-{i}"
            warnings: list[str] = []
            ns = rj["metadata"]["namespace"]
            stored = api.store.create(api.store.resolve("rayjobs"), "v1", ns, rj, warnings=warnings)
            assert warnings == [], warnings
            assert stored["spec"]["rayClusterSpec"] == rj["spec"]["rayClusterSpec"]
            assert stored["spec"]["submitterPodTemplate"] == rj["spec"]["submitterPodTemplate"]


def test_kuberay_1_4_has_no_token_auth_so_the_operator_must_be_told():
    # KubeRay v1.4.2's CRD has no rayClusterSpec.authOptions: a RayJob asking for Ray token auth is stored
    # without it (pruned, with a warning) and its Ray cluster runs open. docs/install.md: set
    # rayClusters.tokenAuth=false there and rely on the NetworkPolicy; v1.7.0 keeps it.
    from kubeapi import KubeAPIServer
    from support.kuberay_schema import emitted_rayjobs

    for tag, kept in (("v1.4.2", False), ("v1.7.0", True)):
        with KubeAPIServer(rayjob=tag) as api:
            api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "research"}})
            rj = emitted_rayjobs(token_auth=True)[0]
            assert rj["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
            warnings: list[str] = []
            stored = api.store.create(api.store.resolve("rayjobs"), "v1", "research", rj, warnings=warnings)
            assert ("authOptions" in stored["spec"]["rayClusterSpec"]) is kept
            assert any("spec.rayClusterSpec.authOptions" in w for w in warnings) is not kept, warnings


def test_a_misspelt_rayjob_field_is_pruned_with_a_warning_and_a_mistyped_one_refused(kube_api):
    import kubernetes
    from support.kuberay_schema import emitted_rayjobs

    rj = copy.deepcopy(emitted_rayjobs()[0])
    rj["metadata"].update(name="typo", namespace="default")
    rj["spec"]["shutdownAfterJobFinish"] = True  # misspelt (shutdownAfterJobFinishes)
    rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    client = kube_api.api_client()
    try:
        api = kubernetes.client.CustomObjectsApi(client)
        stored = api.create_namespaced_custom_object("ray.io", "v1", "default", "rayjobs", rj)
        assert "shutdownAfterJobFinish" not in stored["spec"]
        (method, path, first), (_, _, second) = kube_api.warnings
        assert method == "POST" and path.endswith("/rayjobs")
        assert {first, second} == {
            'unknown field "spec.shutdownAfterJobFinish"',
            'unknown field "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].imagePullPolicyy"',
        }
        bad = copy.deepcopy(emitted_rayjobs()[0])
        bad["metadata"].update(name="mistyped", namespace="default")
        bad["spec"]["backoffLimit"] = "2"  # an integer in KubeRay's schema
        with pytest.raises(kubernetes.client.ApiException) as e:
            api.create_namespaced_custom_object("ray.io", "v1", "default", "rayjobs", bad)
        assert e.value.status == 422 and "spec.backoffLimit" in json.loads(e.value.body)["message"]
    finally:
        client.close()
