"""The chart's RBAC grants exactly the API calls the operator declares, and nothing more.

The operator keeps every (verb, group, resource, subresource) it uses in `trainkit_operator.api_calls`
(its integration tests check that list against the requests the API test server records, and
tests/integration/test_chart_install.py checks the requests of the operator started as the chart's
Deployment against the rules the chart installed). Here: the rendered rules equal that list exactly,
in both scopes, with no wildcards.
"""

from __future__ import annotations

import pytest

from support.helm import by_kind, grants, render

CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings"}
# kopf lists and watches namespaces only to resolve the namespaces it is told to watch; watching the whole
# cluster it never does (tests/integration/test_chart_install.py records it), so the cluster-wide role
# leaves them out.
NAMESPACE_READS = {("list", "", "namespaces", ""), ("watch", "", "namespaces", "")}
# whether a run's namespace opted in (watch.tenantNamespaceLabel): checked only watching the whole cluster (a
# namespaced install's listed namespaces are its opt-in), and not at all when the label is turned off
NAMESPACE_GET = {("get", "", "namespaces", "")}


def declared(scope: str, peering: bool = True, opt_in: bool = True) -> set[tuple[str, str, str, str]]:
    from trainkit_operator.api_calls import API_CALLS, PEERING_CALLS

    calls = set(API_CALLS)
    if scope == "cluster":
        calls -= NAMESPACE_READS
    if scope != "cluster" or not opt_in:
        calls -= NAMESPACE_GET
    if peering:
        resource = "clusterkopfpeerings" if scope == "cluster" else "kopfpeerings"
        calls |= {c for c in PEERING_CALLS if c[2] == resource}
    return calls


def test_cluster_role_grants_exactly_the_declared_calls():
    assert grants(by_kind(render(), "ClusterRole")) == declared("cluster")


def test_without_peering_no_peering_rights():
    assert grants(by_kind(render(sets={"peering.enabled": False}), "ClusterRole")) == declared("cluster", peering=False)


@pytest.mark.parametrize("namespaces", [["default"], ["ml-a", "ml-b"]])
def test_namespaced_roles_grant_exactly_the_declared_calls(namespaces):
    docs = render(values={"watch": {"scope": "namespaced", "namespaces": namespaces}})
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(namespaces)
    want = declared("namespaced")
    for role in roles:
        # each namespace gets every namespaced right; the cluster-scoped reads come from the ClusterRole
        assert grants([role]) == {c for c in want if c[2] not in CLUSTER_SCOPED}
    assert grants(by_kind(docs, "ClusterRole")) == {c for c in want if c[2] in CLUSTER_SCOPED}


def test_without_opt_in_namespaces_no_namespace_get():
    docs = render(sets={"watch.tenantNamespaceLabel": ""})
    assert grants(by_kind(docs, "ClusterRole")) == declared("cluster", opt_in=False)


def test_secret_options_change_names_never_verbs():
    for values in (
        {"rbac": {"allSecretNames": True, "secretNames": [], "create": True}},
        {"rbac": {"allSecretNames": False, "secretNames": ["a", "b"], "create": True}},
        {"storage": {"credentialsSecret": "other"}},
    ):
        assert grants(by_kind(render(values=values), "ClusterRole")) == declared("cluster"), values


def test_no_rbac_objects_when_rbac_create_is_false():
    docs = render(sets={"rbac.create": False})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not by_kind(docs, kind)
