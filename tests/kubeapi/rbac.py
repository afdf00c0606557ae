"""Authentication and RBAC authorization as a kube-apiserver does them, opt in per test.

Follows upstream:
- tokens -> users: a ServiceAccount's user is `system:serviceaccount:<ns>:<name>` with the groups
  `system:serviceaccounts`, `system:serviceaccounts:<ns>`, `system:authenticated`
  (staging/src/k8s.io/apiserver/pkg/authentication/serviceaccount/util.go); an unknown token is 401;
- the RBAC authorizer (plugin/pkg/auth/authorizer/rbac/rbac.go, pkg/apis/rbac/v1/evaluation_helpers.go):
  ClusterRoleBindings grant their ClusterRole's rules everywhere, RoleBindings grant their Role's or
  ClusterRole's rules in their namespace; a rule matches by verb, API group, resource (`res/sub` for a
  subresource; `*` in each), and `resourceNames` only for requests that name an object (so never for
  list, watch, create or deletecollection); `system:masters` may do anything; non-resource URLs
  (discovery, /version, /openapi, /healthz) are open to authenticated users (system:discovery);
- the 403 body: `<resource>.<group> "<name>" is forbidden: User "<user>" cannot <verb> resource "<res>" in
  API group "<group>" in the namespace "<ns>"` (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/
  responsewriters/errors.go forbiddenMessage; `at the cluster scope` without a namespace);
- OwnerReferencesPermissionEnforcement (plugin/pkg/admission/gc/gc_admission.go): setting
  `blockOwnerDeletion: true` on a reference needs `update` on the owner's `finalizers` subresource.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MASTERS = "system:masters"
ADMIN_TOKEN = "kubeapi-test-token"  # the test's own kubeconfig: cluster-admin


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = field(default=())


ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))  # a request without credentials


def service_account_user(namespace: str, name: str) -> User:
    return User(f"system:serviceaccount:{namespace}:{name}",
                ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"))  # fmt: skip


def _subject_matches(subject: dict, user: User, binding_namespace: str | None) -> bool:
    kind = subject.get("kind")
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace or ""
        return user.name == f"system:serviceaccount:{ns}:{subject.get('name')}"
    if kind == "User":
        return user.name == subject.get("name")
    if kind == "Group":
        return subject.get("name") in user.groups
    return False


def _has(values: Iterable[str] | None, want: str) -> bool:
    values = list(values or [])
    return "*" in values or want in values


def rule_allows(rule: dict, verb: str, group: str, resource: str, subresource: str | None, name: str | None) -> bool:
    if not _has(rule.get("verbs"), verb) or not _has(rule.get("apiGroups"), group):
        return False
    combined = f"{resource}/{subresource}" if subresource else resource
    resources = list(rule.get("resources") or [])
    if not ("*" in resources or combined in resources or (subresource and f"*/{subresource}" in resources)):
        return False
    names = rule.get("resourceNames")
    return not names or (name is not None and name in names)


def _rules(objects: dict, key: tuple[str, str], namespace: str | None, name: str) -> list[dict]:
    obj = objects.get(key, {}).get((namespace or "", name))
    return list((obj or {}).get("rules") or [])


def allowed(objects: dict, user: User, verb: str, group: str, resource: str, subresource: str | None,
            namespace: str | None, name: str | None) -> bool:  # fmt: skip
    """RBAC's decision for one request, from the Role/ClusterRole(+Binding) objects in the store."""
    if MASTERS in user.groups:
        return True
    rules: list[dict] = []
    for crb in objects.get(("rbac.authorization.k8s.io", "clusterrolebindings"), {}).values():
        if any(_subject_matches(s, user, None) for s in crb.get("subjects") or []):
            ref = crb.get("roleRef") or {}
            if ref.get("kind") == "ClusterRole":
                rules += _rules(objects, ("rbac.authorization.k8s.io", "clusterroles"), None, ref.get("name", ""))
    if namespace:
        for (ns, _), rb in objects.get(("rbac.authorization.k8s.io", "rolebindings"), {}).items():
            if ns != namespace or not any(_subject_matches(s, user, ns) for s in rb.get("subjects") or []):
                continue
            ref = rb.get("roleRef") or {}
            if ref.get("kind") == "Role":
                rules += _rules(objects, ("rbac.authorization.k8s.io", "roles"), ns, ref.get("name", ""))
            elif ref.get("kind") == "ClusterRole":
                rules += _rules(objects, ("rbac.authorization.k8s.io", "clusterroles"), None, ref.get("name", ""))
    return any(rule_allows(r, verb, group, resource, subresource, name) for r in rules)


def forbidden_reason(
    user: User, verb: str, group: str, resource: str, subresource: str | None, namespace: str | None
) -> str:
    res = f"{resource}/{subresource}" if subresource else resource
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return f'User "{user.name}" cannot {verb} resource "{res}" in API group "{group}" {where}'


def forbidden_message(user: User, verb: str, group: str, resource: str, subresource: str | None,
                      namespace: str | None, name: str | None) -> str:  # fmt: skip
    qualified = f"{resource}.{group}" if group else resource
    subject = f'{qualified} "{name}"' if name else qualified
    return f"{subject} is forbidden: {forbidden_reason(user, verb, group, resource, subresource, namespace)}"


def new_blocking_refs(new_refs: list[Any] | None, old_refs: list[Any] | None) -> list[dict]:
    """References that set blockOwnerDeletion now and did not before (gc_admission.go blockingOwnerRefs)."""
    before = {(r.get("uid"), bool(r.get("blockOwnerDeletion"))) for r in old_refs or [] if isinstance(r, dict)}
    return [r for r in new_refs or [] if isinstance(r, dict) and r.get("blockOwnerDeletion")
            and (r.get("uid"), True) not in before]  # fmt: skip
