"""The chart's RBAC grants exactly the API calls the operator declares, and nothing more.

The operator keeps every (verb, group, resource, subresource) it uses in
`trainkit_operator.api_calls` (its integration tests check the list against the requests the API test
server records, and tests/integration/test_chart_install.py checks the recorded requests against the
chart's installed rules). Here: the rendered rules equal that list exactly, in both scopes, with no wildcards.
"""

from __future__ import annotations

import pytest

from support.helm import by_kind, grants, render

CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings"}


def declared(peering_resource: str | None) -> set[tuple[str, str, str, str]]:
    from trainkit_operator.api_calls import API_CALLS, PEERING_CALLS

    calls = set(API_CALLS)
    if peering_resource:
        calls |= {c for c in PEERING_CALLS if c[2] == peering_resource}
    return calls


def test_cluster_role_grants_exactly_the_declared_calls():
    docs = render()
    assert grants(by_kind(docs, "ClusterRole")) == declared("clusterkopfpeerings")


def test_without_peering_no_peering_rights():
    docs = render(sets={"peering.enabled": False})
    assert grants(by_kind(docs, "ClusterRole")) == declared(None)


@pytest.mark.parametrize("namespaces", [["default"], ["ml-a", "ml-b"]])
def test_namespaced_roles_grant_exactly_the_declared_calls(namespaces):
    docs = render(values={"watch": {"scope": "namespaced", "namespaces": namespaces}})
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(namespaces)
    want = declared("kopfpeerings")
    for role in roles:
        # each namespace gets every namespaced right; the cluster-scoped reads come from the ClusterRole
        assert grants([role]) == {c for c in want if c[2] not in CLUSTER_SCOPED}
    assert grants(by_kind(docs, "ClusterRole")) == {c for c in want if c[2] in CLUSTER_SCOPED}


def test_every_declared_call_is_granted_and_nothing_else_in_any_variant():
    for values in ({}, {"rbac": {"allSecretNames": True, "secretNames": [], "create": True}},
                   {"storage": {"credentialsSecret": "other"}}):
        got = grants(by_kind(render(values=values), "ClusterRole"))
        assert got == declared("clusterkopfpeerings"), values


def test_no_rbac_objects_when_rbac_create_is_false():
    docs = render(sets={"rbac.create": False})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not by_kind(docs, kind)
