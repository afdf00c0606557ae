"""The test API server evaluates ValidatingAdmissionPolicies as a kube-apiserver (>= 1.30) does, over HTTP with the
official client (tests/kubeapi/admission.py). Each test names the upstream behaviour it follows, under
kubernetes staging/src/k8s.io/apiserver/pkg/admission/plugin/policy/ unless said otherwise:
validating/dispatcher.go (decisions, validationActions, the denial Status), validating/validator.go
(matchConditions, messages, failurePolicy), matching/matching.go + webhook/predicates (which requests match),
pkg/apis/admissionregistration/validation (what a policy or binding may say).
"""

from __future__ import annotations

import json

import pytest

GROUP = "admissionregistration.k8s.io"


def _api(kube_api):
    import kubernetes

    return kube_api.api_client(), kubernetes


def _policy(name: str, validations: list[dict], **spec) -> dict:
    rules = spec.pop("rules", [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                               "resources": ["configmaps"]}])  # fmt: skip
    return {
        "apiVersion": f"{GROUP}/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
        "spec": {"matchConstraints": {"resourceRules": rules, **spec.pop("match", {})}, "validations": validations,
                 **spec},
    }  # fmt: skip


def _binding(name: str, policy: str, actions=("Deny",), **spec) -> dict:
    return {"apiVersion": f"{GROUP}/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
            "spec": {"policyName": policy, "validationActions": list(actions), **spec}}  # fmt: skip


def _install(kube_api, *objs: dict) -> None:
    for obj in objs:
        kube_api.create(obj)


def _cm(name: str, data: dict | None = None, labels: dict | None = None, namespace: str = "default") -> dict:
    meta = {"name": name, "namespace": namespace, **({"labels": labels} if labels else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {}}


def _create_cm(kube_api, cm: dict):
    """(status code, body) of creating `cm` over HTTP with the official client."""
    client, kubernetes = _api(kube_api)
    try:
        kubernetes.client.CoreV1Api(client).create_namespaced_config_map(cm["metadata"]["namespace"], cm)
        return 201, None
    except kubernetes.client.ApiException as e:
        return e.status, json.loads(e.body)
    finally:
        client.close()


SIZE_RULE = {"expression": "size(object.data) <= 1", "message": "at most one key"}


def test_deny_answers_upstreams_status_with_reason_and_code(kube_api):
    """dispatcher.go: `<resource> "<name>" is forbidden: ValidatingAdmissionPolicy '<p>' with binding '<b>' denied
    request: <message>`, reason from the validation (default Invalid -> 422, Forbidden -> 403), the message as a
    cause."""
    _install(kube_api, _policy("small", [SIZE_RULE]), _binding("small-b", "small"))
    code, body = _create_cm(kube_api, _cm("big", {"a": "1", "b": "2"}))
    want = "ValidatingAdmissionPolicy 'small' with binding 'small-b' denied request: at most one key"
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["message"] == f'configmaps "big" is forbidden: {want}' and body["details"]["causes"] == [
        {"message": want}
    ]
    assert _create_cm(kube_api, _cm("fine", {"a": "1"}))[0] == 201
    _install(kube_api, _policy("named", [{"expression": "object.metadata.name != 'x'", "reason": "Forbidden"}]),
             _binding("named-b", "named"))  # fmt: skip
    code, body = _create_cm(kube_api, _cm("x"))
    assert (code, body["reason"]) == (403, "Forbidden") and "failed expression: object.metadata.name != 'x'" in body[
        "message"
    ]


def test_message_expression_falls_back_to_message_then_expression(kube_api):
    """validator.go: a one-line string of at most 5 KiB from messageExpression, else message, else `failed
    expression: <expression>`; an error in messageExpression is not the request's error."""
    rules = [
        {"expression": "!has(object.data.a)", "messageExpression": "'key a is ' + object.data.a", "message": "static"},
        {"expression": "!has(object.data.b)", "messageExpression": "'two\\nlines'", "message": "b: one line instead"},
        {"expression": "!has(object.data.c)", "messageExpression": "object.data.missing", "message": "c: static"},
        {"expression": "!has(object.data.d)"},
    ]
    _install(kube_api, _policy("msgs", rules), _binding("msgs-b", "msgs"))
    for key, says in (("a", "key a is 1"), ("b", "b: one line instead"), ("c", "c: static"),
                      ("d", "failed expression: !has(object.data.d)")):  # fmt: skip
        code, body = _create_cm(kube_api, _cm(f"has-{key}", {key: "1"}))
        assert code == 422 and body["message"].endswith(f"denied request: {says}"), body["message"]


def test_failure_policy_decides_what_an_evaluation_error_does(kube_api):
    """validator.go policyDecisionActionForError: an expression that errs denies under Fail (the default) and
    admits under Ignore; a false expression denies under both."""
    broken = {"expression": "object.data.nothere == 'x'"}
    _install(kube_api, _policy("fails", [broken]), _binding("fails-b", "fails"))
    code, body = _create_cm(kube_api, _cm("a"))
    assert code == 422 and "resulted in error" in body["message"] and "object.data.nothere" in body["message"]
    kube_api.store.delete(kube_api.store.resolve("validatingadmissionpolicybindings"), None, "fails-b")
    _install(kube_api, _policy("ignores", [broken], failurePolicy="Ignore"), _binding("ignores-b", "ignores"))
    assert _create_cm(kube_api, _cm("b"))[0] == 201
    assert kube_api.get("validatingadmissionpolicies", "fails", None)["spec"]["failurePolicy"] == "Fail"  # defaulted


def test_match_constraints_select_the_requests_a_policy_sees(kube_api):
    """matching.go + webhook/predicates: operations, resources (a subresource only as `res/sub`), namespaceSelector
    (on the namespace's labels), objectSelector (new or old object's labels), excludeResourceRules."""
    kube_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "strict", "labels": {"tier": "a"}}})
    kube_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lax"}})
    policy = _policy("sel", [{"expression": "false", "message": "no"}],
                     match={"namespaceSelector": {"matchLabels": {"tier": "a"}},
                            "objectSelector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]},
                            "excludeResourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["*"],
                                                      "resources": ["configmaps"], "resourceNames": ["allowed"]}]})  # fmt: skip
    _install(kube_api, policy, _binding("sel-b", "sel"))
    assert _create_cm(kube_api, _cm("in-strict", namespace="strict"))[0] == 422
    assert _create_cm(kube_api, _cm("in-lax", namespace="lax"))[0] == 201  # namespace not selected
    assert _create_cm(kube_api, _cm("opted-out", labels={"skip": "yes"}, namespace="strict"))[0] == 201
    assert _create_cm(kube_api, _cm("allowed", namespace="strict"))[0] == 201  # excluded by name


def test_match_conditions_variables_old_object_and_request(kube_api):
    """validator.go: any false matchCondition skips the policy; `variables.<name>`, `oldObject` (null on CREATE)
    and `request` (operation, userInfo) are there; UPDATE judges the change."""
    policy = _policy(
        "frozen",
        [{"expression": "variables.unchanged", "messageExpression": "request.operation + ' by ' + "
                                                                     "request.userInfo.username + ' changes data'"}],
        matchConditions=[{"name": "updates-only", "expression": "oldObject != null"}],
        variables=[{"name": "unchanged", "expression": "object.data == oldObject.data"}],
    )  # fmt: skip
    _install(kube_api, policy, _binding("frozen-b", "frozen"))
    assert _create_cm(kube_api, _cm("c", {"k": "1"}))[0] == 201  # CREATE: the match condition is false
    client, kubernetes = _api(kube_api)
    core = kubernetes.client.CoreV1Api(client)
    try:
        core.patch_namespaced_config_map("c", "default", {"metadata": {"labels": {"l": "v"}}})  # data unchanged
        with pytest.raises(kubernetes.client.ApiException) as refused:
            core.patch_namespaced_config_map("c", "default", {"data": {"k": "2"}})
    finally:
        client.close()
    assert refused.value.status == 422 and "UPDATE by kubeapi-admin changes data" in refused.value.body


def test_warn_and_audit_actions_admit(kube_api):
    """dispatcher.go: Warn admits with a Warning header (`Validation failed for ValidatingAdmissionPolicy '<p>'
    with binding '<b>': <message>`), Audit admits and records."""
    _install(kube_api, _policy("soft", [SIZE_RULE]), _binding("soft-b", "soft", actions=("Warn", "Audit")))
    assert _create_cm(kube_api, _cm("big", {"a": "1", "b": "2"}))[0] == 201
    warned = [w for _, _, w in kube_api.warnings]
    assert "Validation failed for ValidatingAdmissionPolicy 'soft' with binding 'soft-b': at most one key" in warned
    assert kube_api.store.audit_failures == [{"policy": "soft", "binding": "soft-b", "message": "at most one key"}]


def test_params_from_a_configmap_and_parameter_not_found_action(kube_api):
    """paramKind + the binding's paramRef (name, namespace): `params` is the object; none found denies under
    parameterNotFoundAction Deny (`failed to configure binding: no params found ...`), admits under Allow."""
    policy = _policy("limits", [{"expression": "size(object.data) <= int(params.data.max)", "message": "too many"}],
                     paramKind={"apiVersion": "v1", "kind": "ConfigMap"})  # fmt: skip
    ref = {"name": "limits", "namespace": "default", "parameterNotFoundAction": "Deny"}
    _install(kube_api, policy, _binding("limits-b", "limits", paramRef=ref,
                                        matchResources={"objectSelector": {"matchLabels": {"judged": "yes"}}}))  # fmt: skip
    code, body = _create_cm(kube_api, _cm("one", {"a": "1"}, labels={"judged": "yes"}))
    assert code == 422 and "failed to configure binding: no params found" in body["message"]
    kube_api.create(_cm("limits", {"max": "1"}))
    assert _create_cm(kube_api, _cm("two", {"a": "1"}, labels={"judged": "yes"}))[0] == 201
    assert _create_cm(kube_api, _cm("three", {"a": "1", "b": "2"}, labels={"judged": "yes"}))[0] == 422


@pytest.mark.parametrize(
    "obj, field",
    [
        (_policy("p", [{"expression": "object.data.("}]), "spec.validations[0].expression"),
        (_policy("p", []), "spec.validations"),
        (_policy("p", [SIZE_RULE], rules=[]), "spec.matchConstraints.resourceRules"),
        (_policy("p", [dict(SIZE_RULE, reason="Teapot")]), "spec.validations[0].reason"),
        (_binding("b", "p", actions=("Deny", "Warn")), "spec.validationActions"),
        (_binding("b", "p", actions=()), "spec.validationActions"),
    ],
)
def test_policies_and_bindings_are_validated_on_create(kube_api, obj, field):
    """pkg/apis/admissionregistration/validation: expressions must compile, validations (or auditAnnotations) and
    resourceRules are required, reasons are an enum, Deny and Warn never together."""
    client, kubernetes = _api(kube_api)
    plural = (
        "validatingadmissionpolicies"
        if obj["kind"] == "ValidatingAdmissionPolicy"
        else "validatingadmissionpolicybindings"
    )
    try:
        with pytest.raises(kubernetes.client.ApiException) as refused:
            kubernetes.client.CustomObjectsApi(client).create_cluster_custom_object(GROUP, "v1", plural, obj)
    finally:
        client.close()
    assert refused.value.status == 422
    assert field in [c["field"] for c in json.loads(refused.value.body)["details"]["causes"]]


def test_immutable_configmaps_keep_their_data(kube_api):
    """pkg/apis/core/validation/validation.go ValidateConfigMapUpdate: with `immutable: true` data, binaryData and
    immutable itself are forbidden to change; metadata may."""
    kube_api.create(dict(_cm("frozen", {"k": "1"}), immutable=True))
    client, kubernetes = _api(kube_api)
    core = kubernetes.client.CoreV1Api(client)
    try:
        core.patch_namespaced_config_map("frozen", "default", {"metadata": {"labels": {"l": "v"}}})
        for patch, field in (({"data": {"k": "2"}}, "data"), ({"immutable": False}, "immutable")):
            with pytest.raises(kubernetes.client.ApiException) as refused:
                core.patch_namespaced_config_map("frozen", "default", patch)
            assert refused.value.status == 422
            assert {"field": field, "message": "Forbidden: field is immutable when `immutable` is set",
                    "reason": "FieldValueForbidden"} in json.loads(refused.value.body)["details"]["causes"]  # fmt: skip
    finally:
        client.close()
    assert kube_api.get("configmaps", "frozen")["data"] == {"k": "1"}
