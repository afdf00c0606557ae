"""ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA in Kubernetes 1.30) as the API server runs it.

Follows upstream (kubernetes staging/src/k8s.io/apiserver/pkg/admission/plugin/policy/):
- which requests a policy sees (`matching/matching.go`, `webhook/predicates/rules/rules.go`,
  `webhook/predicates/namespace`, `webhook/predicates/object`): the policy's `matchConstraints` and then each
  binding's `matchResources` (nil: everything the policy matches): `resourceRules` by operation, API group,
  version, resource (`res/sub`, `*`, `*/sub`, `res/*`, `*/*`), `resourceNames` and scope; `excludeResourceRules`;
  `namespaceSelector` on the namespace's labels (cluster-scoped objects always match, a Namespace is matched by
  its own labels); `objectSelector` on the new or the old object's labels. The admission-registration kinds
  themselves are exempt (`IsExemptAdmissionConfigurationResource`).
- evaluation (`validating/validator.go`, `validating/dispatcher.go`): `matchConditions` (any false: skipped; an
  error: the failure policy), `variables` (evaluated lazily by name, as `variables.<name>`), each validation's
  `expression` with `object`, `oldObject` (null on CREATE), `request` (the AdmissionRequest), `params`,
  `namespaceObject`; a result other than true denies with the validation's `reason` (default Invalid) and
  message (`messageExpression` if it gives a one-line string of at most 5 KiB, else `message`, else `failed
  expression: <expression>`); an evaluation error, a missing param object or a policy this server cannot
  use follows `failurePolicy` (Fail, the default: denied; Ignore: admitted).
- the binding's `validationActions`: Deny refuses the request with upstream's Status (code by reason: Invalid
  422, Forbidden 403, Unauthorized 401, RequestEntityTooLarge 413; message `<resource>.<group> "<name>" is
  forbidden: ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request: <message>`); Warn
  adds a `Warning` header (`Validation failed for ValidatingAdmissionPolicy '<p>' with binding '<b>': <m>`);
  Audit is recorded in `Store.audit_failures` (there is no audit log here).
- on create and update of the policy and binding objects (`pkg/apis/admissionregistration/validation`,
  `v1/defaults.go`): required fields, enums, expressions that do not compile and Deny together with Warn are
  422; failurePolicy defaults to Fail, matchPolicy to Equivalent, selectors to {}, rule scope to "*".

CEL is cel-python (tests/support/openapi.py evaluates CRD rules with it too): standard CEL with its macros
(`has`, `all`, `exists`, `exists_one`, `map`, `filter`), `matches`, `startsWith`, `endsWith`, `contains`,
`size`; NOT Kubernetes' CEL libraries (lists, strings extensions such as `join`, regex `find`, url,
quantity, `authorizer`), optional types (`?.`), type checking (status.typeChecking) or the runtime cost
budget. A custom resource's `object` is typed by its CRD schema (numbers are doubles), as upstream.
"""

from __future__ import annotations

import copy
import re
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import celpy
from celpy import celtypes

from support import openapi

if TYPE_CHECKING:
    from .store import ResourceType, Store

GROUP = "admissionregistration.k8s.io"
POLICIES = (GROUP, "validatingadmissionpolicies")
BINDINGS = (GROUP, "validatingadmissionpolicybindings")
# rules.IsExemptAdmissionConfigurationResource: policies never judge the objects that configure admission.
EXEMPT = {(GROUP, r) for r in ("validatingadmissionpolicies", "validatingadmissionpolicybindings",
                               "mutatingadmissionpolicies", "mutatingadmissionpolicybindings",
                               "validatingwebhookconfigurations", "mutatingwebhookconfigurations")}  # fmt: skip
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT", "*")
REASON_CODES = {"Invalid": 422, "Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413}
VALIDATION_ACTIONS = ("Deny", "Warn", "Audit")
MAX_MESSAGE_BYTES = 5 * 1024  # celconfig.MaxEvaluatedMessageExpressionSizeBytes
_IDENTIFIER = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")

_ENV = celpy.Environment()


def _equal(a: Any, b: Any) -> Any:
    """`==` as cel-go has it with heterogeneous equality (Kubernetes' CEL): values of different types are unequal,
    so a map, list or number compared with null is false (cel-python has no overload for some and errs)."""
    if isinstance(a, celpy.CELEvalError):
        return a
    if isinstance(b, celpy.CELEvalError):
        return b
    # celpy has two nulls: the literal is None, a null typed by a schema (openapi._typed) NullType()
    a, b = (None if isinstance(v, celtypes.NullType) else v for v in (a, b))
    try:
        return celtypes.BoolType(bool(a == b))
    except TypeError:  # celpy's numbers refuse to compare with other types
        return celtypes.BoolType(False)


def _not_equal(a: Any, b: Any) -> Any:
    equal = _equal(a, b)
    return equal if isinstance(equal, celpy.CELEvalError) else celtypes.BoolType(not bool(equal))


class CELError(Exception):
    """A CEL expression that did not compile or evaluate; the message is the expression's and CEL's."""


@lru_cache(maxsize=512)
def _program(expression: str):
    try:
        return _ENV.program(_ENV.compile(expression), functions={"_==_": _equal, "_!=_": _not_equal})
    except Exception as e:  # noqa: BLE001 - celpy's parse errors have several classes
        raise CELError(f"compilation failed: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e.args[0]) if getattr(e, "args", None) else str(e)
    return text.strip().splitlines()[0][:300] if text.strip() else type(e).__name__


def evaluate(expression: str, activation: dict[str, Any]) -> Any:
    """The expression's value; CELError when it does not compile or its evaluation fails."""
    program = _program(expression)
    try:
        value = program.evaluate(activation)
    except Exception as e:  # noqa: BLE001 - celpy raises CELEvalError and sometimes plain Python errors
        raise CELError(f"expression '{expression}' resulted in error: {_first_line(e)}") from None
    if isinstance(value, celpy.CELEvalError):
        raise CELError(f"expression '{expression}' resulted in error: {_first_line(value)}")
    return value


def cel_value(value: Any, schema: dict | None = None) -> Any:
    """A JSON value as CEL sees it: typed by an OpenAPI schema when there is one (a custom resource's)."""
    if value is None:
        return None
    return openapi._typed(schema, value) if schema else celpy.json_to_cel(value)


# ------------------------------------------------------------------------------ defaults and validation
def _default_match_resources(match: dict) -> None:
    match.setdefault("matchPolicy", "Equivalent")
    match.setdefault("namespaceSelector", {})
    match.setdefault("objectSelector", {})
    for rules in ("resourceRules", "excludeResourceRules"):
        for rule in match.get(rules) or []:
            if isinstance(rule, dict):
                rule.setdefault("scope", "*")


def default_policy(obj: dict) -> dict:
    obj = copy.deepcopy(obj)
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("failurePolicy", "Fail")
        if isinstance(spec.get("matchConstraints"), dict):
            _default_match_resources(spec["matchConstraints"])
    return obj


def default_binding(obj: dict) -> dict:
    obj = copy.deepcopy(obj)
    spec = obj.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("matchResources"), dict):
        _default_match_resources(spec["matchResources"])
    return obj


def _check_expression(path: str, expression: Any, causes: list[tuple[str, str]]) -> None:
    if not isinstance(expression, str) or not expression.strip():
        causes.append((path, "Required value: expression is not specified"))
        return
    try:
        _program(expression)
    except CELError as e:
        causes.append((path, f"Invalid value: {expression!r}: {e}"))


def _check_rules(path: str, rules: Any, causes: list[tuple[str, str]], required: bool) -> None:
    if not rules:
        if required:
            causes.append((path, "Required value"))
        return
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        at = f"{path}[{i}]"
        for f in ("apiGroups", "apiVersions", "resources", "operations"):
            values = rule.get(f) if isinstance(rule, dict) else None
            if not values:
                causes.append((f"{at}.{f}", "Required value"))
            elif "*" in values and len(values) > 1:
                causes.append((f"{at}.{f}", "Invalid value: if '*' is present, must not specify other values"))
        for op in (rule.get("operations") or []) if isinstance(rule, dict) else []:
            if op not in OPERATIONS:
                causes.append((f"{at}.operations", f'Unsupported value: "{op}": supported values: '
                                                   + ", ".join(f'"{o}"' for o in OPERATIONS)))  # fmt: skip
        scope = rule.get("scope", "*") if isinstance(rule, dict) else "*"
        if scope not in ("Cluster", "Namespaced", "*"):
            causes.append(
                (f"{at}.scope", f'Unsupported value: "{scope}": supported values: "*", "Cluster", "Namespaced"')
            )


def _check_match_resources(path: str, match: Any, causes: list[tuple[str, str]], required: bool) -> None:
    if not isinstance(match, dict):
        if required:
            causes.append((path, "Required value"))
        return
    if match.get("matchPolicy") not in ("Exact", "Equivalent"):
        causes.append((f"{path}.matchPolicy", f'Unsupported value: "{match.get("matchPolicy")}": supported values: '
                                              '"Equivalent", "Exact"'))  # fmt: skip
    _check_rules(f"{path}.resourceRules", match.get("resourceRules"), causes, required)
    _check_rules(f"{path}.excludeResourceRules", match.get("excludeResourceRules"), causes, False)
    for sel in ("namespaceSelector", "objectSelector"):
        try:
            selector_matches(match.get(sel) or {}, {})
        except ValueError as e:
            causes.append((f"{path}.{sel}", f"Invalid value: {e}"))


def policy_causes(obj: dict) -> list[tuple[str, str]]:
    """What upstream's ValidateValidatingAdmissionPolicy refuses (the part modelled here), as (field, message)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    causes: list[tuple[str, str]] = []
    if spec.get("failurePolicy") not in ("Fail", "Ignore"):
        causes.append(("spec.failurePolicy", f'Unsupported value: "{spec.get("failurePolicy")}": supported values: '
                                             '"Fail", "Ignore"'))  # fmt: skip
    _check_match_resources("spec.matchConstraints", spec.get("matchConstraints"), causes, required=True)
    kind = spec.get("paramKind")
    if kind is not None and (not isinstance(kind, dict) or not kind.get("apiVersion") or not kind.get("kind")):
        causes.append(("spec.paramKind", "Required value: apiVersion and kind are required"))
    validations, audits = spec.get("validations") or [], spec.get("auditAnnotations") or []
    if not validations and not audits:
        causes.append(
            ("spec.validations", "Required value: validations or auditAnnotations must contain at least one item")
        )
    for i, v in enumerate(validations):
        at = f"spec.validations[{i}]"
        v = v if isinstance(v, dict) else {}
        _check_expression(f"{at}.expression", v.get("expression"), causes)
        if "messageExpression" in v:
            _check_expression(f"{at}.messageExpression", v.get("messageExpression"), causes)
        if "\n" in str(v.get("message", "")):
            causes.append((f"{at}.message", "Invalid value: message must not contain line breaks"))
        if "reason" in v and v["reason"] not in REASON_CODES:
            causes.append((f"{at}.reason", f'Unsupported value: "{v["reason"]}": supported values: '
                                           + ", ".join(f'"{r}"' for r in sorted(REASON_CODES))))  # fmt: skip
    names: set[str] = set()
    for field_name in ("variables", "matchConditions"):
        for i, item in enumerate(spec.get(field_name) or []):
            at = f"spec.{field_name}[{i}]"
            item = item if isinstance(item, dict) else {}
            name = item.get("name")
            if not isinstance(name, str) or not name:
                causes.append((f"{at}.name", "Required value"))
            elif field_name == "variables" and not _IDENTIFIER.match(name):
                causes.append((f"{at}.name", f'Invalid value: "{name}": name is not a valid CEL identifier'))
            elif field_name == "matchConditions" and (field_name, name) in names:
                causes.append((f"{at}.name", f'Duplicate value: "{name}"'))
            names.add((field_name, name) if field_name == "matchConditions" else name)  # type: ignore[arg-type]
            _check_expression(f"{at}.expression", item.get("expression"), causes)
    for i, a in enumerate(audits):
        _check_expression(f"spec.auditAnnotations[{i}].valueExpression", (a or {}).get("valueExpression"), causes)
    return causes


def binding_causes(obj: dict) -> list[tuple[str, str]]:
    """What upstream's ValidateValidatingAdmissionPolicyBinding refuses (the part modelled here)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    causes: list[tuple[str, str]] = []
    if not spec.get("policyName"):
        causes.append(("spec.policyName", "Required value"))
    actions = spec.get("validationActions")
    if not actions:
        causes.append(("spec.validationActions", "Required value: at least one validation action is required"))
    else:
        for a in actions:
            if a not in VALIDATION_ACTIONS:
                causes.append(("spec.validationActions", f'Unsupported value: "{a}": supported values: "Audit", '
                                                         '"Deny", "Warn"'))  # fmt: skip
        if len(set(actions)) != len(actions):
            causes.append(("spec.validationActions", "Duplicate value: validation actions must be unique"))
        if "Deny" in actions and "Warn" in actions:
            causes.append(("spec.validationActions", "Invalid value: must not contain both Deny and Warn "
                                                     "(repeating the same validation failure information in the API "
                                                     "response and headers serves no purpose)"))  # fmt: skip
    ref = spec.get("paramRef")
    if isinstance(ref, dict):
        if ref.get("name") and ref.get("selector") is not None:
            causes.append(("spec.paramRef.name", "Forbidden: name and selector are mutually exclusive"))
        if ref.get("parameterNotFoundAction") not in ("Allow", "Deny"):
            causes.append(("spec.paramRef.parameterNotFoundAction", "Required value"))
    _check_match_resources("spec.matchResources", spec.get("matchResources"), causes, required=False)
    return causes


# ------------------------------------------------------------------------------------------- matching
def selector_matches(selector: dict, labels: dict) -> bool:
    """A metav1.LabelSelector (matchLabels + matchExpressions In/NotIn/Exists/DoesNotExist); {} matches all."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f'"{op}" is not a valid label selector operator')
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class AdmissionRequest:
    """One write as admission sees it."""

    operation: str  # CREATE UPDATE DELETE
    rt: "ResourceType"
    version: str
    subresource: str | None
    namespace: str | None
    name: str
    object: dict | None
    old_object: dict | None
    user: dict  # userInfo: username, groups
    dry_run: bool = False
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))


def _rule_matches(rule: dict, req: AdmissionRequest) -> bool:
    """webhook/predicates/rules/rules.go Matcher.Matches."""

    def has(values: list, want: str) -> bool:
        return "*" in values or want in values

    scope = rule.get("scope") or "*"
    if scope == "Cluster" and req.rt.namespaced or scope == "Namespaced" and not req.rt.namespaced:
        return False
    if not has(rule.get("operations") or [], req.operation):
        return False
    if not has(rule.get("apiGroups") or [], req.rt.group) or not has(rule.get("apiVersions") or [], req.version):
        return False
    wanted = f"{req.rt.plural}/{req.subresource}" if req.subresource else req.rt.plural
    for res in rule.get("resources") or []:
        if res in ("*/*", wanted):
            return True
        res_main, _, res_sub = res.partition("/")
        if not req.subresource and res == "*":
            return True
        if req.subresource and (
            res_main == "*" and res_sub == req.subresource or res_main == req.rt.plural and res_sub == "*"
        ):
            return True
    return False


def _rules_match(rules: list, req: AdmissionRequest) -> bool:
    for rule in rules or []:
        if _rule_matches(rule, req) and (not rule.get("resourceNames") or req.name in rule["resourceNames"]):
            return True
    return False


def matches(match: dict, req: AdmissionRequest, namespace_labels: dict | None) -> bool:
    """matching.go Matcher.Matches: namespaceSelector, objectSelector, excludeResourceRules, resourceRules."""
    if req.rt.key == ("", "namespaces"):
        labels = ((req.object or req.old_object or {}).get("metadata") or {}).get("labels") or {}
        if not selector_matches(match.get("namespaceSelector") or {}, labels):
            return False
    elif req.rt.namespaced and not selector_matches(match.get("namespaceSelector") or {}, namespace_labels or {}):
        return False
    selector = match.get("objectSelector") or {}
    if selector:
        objects = [o for o in (req.object, req.old_object) if o is not None]
        if not any(selector_matches(selector, (o.get("metadata") or {}).get("labels") or {}) for o in objects):
            return False
    if _rules_match(match.get("excludeResourceRules") or [], req):
        return False
    rules = match.get("resourceRules")
    return True if not rules else _rules_match(rules, req)


# ------------------------------------------------------------------------------------------ evaluation
@dataclass
class Decision:
    policy: str
    binding: str | None
    message: str
    reason: str = "Invalid"


class _LazyVariables(celtypes.MapType):
    """`variables`: each evaluated when first read, once (upstream composes them lazily); an error in one is
    the error of the expressions that read it."""

    def __init__(self, definitions: list[dict], activation: dict[str, Any]):
        super().__init__({})
        self._definitions = {d.get("name"): d.get("expression") for d in definitions}
        self._activation = activation

    def __contains__(self, key: object) -> bool:
        return str(key) in self._definitions

    def __getitem__(self, key: Any) -> Any:
        name = str(key)
        if name not in self._definitions:
            raise KeyError(key)
        if not super().__contains__(celtypes.StringType(name)):
            try:
                value = evaluate(self._definitions[name], self._activation)
            except CELError as e:
                value = celpy.CELEvalError(str(e))
            super().__setitem__(celtypes.StringType(name), value)
        return super().__getitem__(celtypes.StringType(name))


def _request_variable(req: AdmissionRequest) -> dict:
    """The `request` variable (cel.CreateAdmissionRequest): the AdmissionRequest's fields."""
    kind = {"group": req.rt.group, "version": req.version, "kind": req.rt.kind}
    resource = {"group": req.rt.group, "version": req.version, "resource": req.rt.plural}
    return {
        "uid": req.uid, "kind": kind, "resource": resource, "subResource": req.subresource or "",
        "requestKind": kind, "requestResource": resource, "requestSubResource": req.subresource or "",
        "name": req.name, "namespace": req.namespace or "", "operation": req.operation,
        "userInfo": req.user, "dryRun": req.dry_run,
    }  # fmt: skip


def _namespace_variable(namespace: dict | None) -> dict | None:
    """`namespaceObject` (cel.CreateNamespaceObject): the namespace's name, labels, annotations, uid, spec, status."""
    if namespace is None:
        return None
    meta = namespace.get("metadata") or {}
    keep = ("name", "generateName", "namespace", "labels", "annotations", "uid", "creationTimestamp",
            "deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "generation", "finalizers",
            "ownerReferences")  # fmt: skip
    return {"metadata": {k: meta[k] for k in keep if k in meta}, "spec": namespace.get("spec") or {},
            "status": namespace.get("status") or {}}  # fmt: skip


def _message(validation: dict, activation: dict[str, Any]) -> str:
    """The deny message as validator.go picks it: messageExpression's one-line string, else message, else the
    expression."""
    if validation.get("messageExpression"):
        try:
            value = evaluate(validation["messageExpression"], activation)
        except CELError:
            value = None
        if isinstance(value, str):
            text = value.strip()
            if text and len(text.encode()) <= MAX_MESSAGE_BYTES and "\n" not in text:
                return text
    if (validation.get("message") or "").strip():
        return validation["message"].strip()
    return f"failed expression: {validation.get('expression', '').strip()}"


def _validate(policy: dict, activation_base: dict[str, Any], params: Any) -> list[tuple[str, str, bool]]:
    """(reason, message, is_error) of each failed validation of one policy for one param object."""
    spec = policy["spec"]
    activation = dict(activation_base, params=params)
    activation["variables"] = _LazyVariables(spec.get("variables") or [], activation)
    failures: list[tuple[str, str, bool]] = []
    errors: list[str] = []
    for condition in spec.get("matchConditions") or []:
        try:
            value = evaluate(condition["expression"], activation)
        except CELError as e:
            errors.append(str(e))
            continue
        if not (isinstance(value, celtypes.BoolType) and bool(value)):
            return []  # any false match condition: the policy does not apply
    if errors:
        return [("Invalid", errors[0], True)]
    for validation in spec.get("validations") or []:
        try:
            ok = evaluate(validation["expression"], activation)
        except CELError as e:
            failures.append(("Invalid", str(e), True))
            continue
        if not (isinstance(ok, celtypes.BoolType) and bool(ok)):
            failures.append((validation.get("reason") or "Invalid", _message(validation, activation), False))
    return failures


def _params(store: "Store", policy: dict, binding: dict, req: AdmissionRequest) -> list[Any] | str:
    """The param objects a binding selects ([None] without paramKind), or why it is mis-configured."""
    kind = policy["spec"].get("paramKind")
    if kind is None:
        return [None]
    ref = binding["spec"].get("paramRef")
    if not isinstance(ref, dict):
        return "paramKind is set but the binding has no paramRef"
    group = str(kind.get("apiVersion", "")).rpartition("/")[0]
    rt = next((t for t in store.types.values() if t.group == group and t.kind == kind.get("kind")), None)
    if rt is None:
        return f"failed to find resource referenced by paramKind: '{kind.get('apiVersion')}, Kind={kind.get('kind')}'"
    namespace = (ref.get("namespace") or req.namespace or "") if rt.namespaced else ""
    found = [o for (ns, name), o in store.objects.get(rt.key, {}).items()
             if ns == namespace and (name == ref["name"] if ref.get("name")
                                     else selector_matches(ref.get("selector") or {}, o["metadata"].get("labels") or {}))]  # fmt: skip
    if found:
        return [cel_value(copy.deepcopy(o), rt.versions[rt.storage_version].schema) for o in found]
    if ref.get("parameterNotFoundAction") == "Allow":
        return []
    return "no params found for policy binding with `Deny` parameterNotFoundAction"


def admit(store: "Store", req: AdmissionRequest, schema: dict | None) -> tuple[list[Decision], list[str]]:
    """(denials, warnings) of every bound policy for one write; the caller refuses on the first denial."""
    if req.rt.key in EXEMPT:
        return [], []
    policies = sorted(store.objects.get(POLICIES, {}).values(), key=lambda p: p["metadata"]["name"])
    if not policies:
        return [], []
    bindings = sorted(store.objects.get(BINDINGS, {}).values(), key=lambda b: b["metadata"]["name"])
    namespace = store.objects[("", "namespaces")].get(("", req.namespace or "")) if req.rt.namespaced else None
    ns_labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    base = {
        "object": cel_value(req.object, schema),
        "oldObject": cel_value(req.old_object, schema),
        "request": celpy.json_to_cel(_request_variable(req)),
        "namespaceObject": cel_value(_namespace_variable(namespace)),
    }
    denials: list[Decision] = []
    warnings: list[str] = []
    for policy in policies:
        name = policy["metadata"]["name"]
        fail = policy["spec"].get("failurePolicy", "Fail") == "Fail"
        if not matches(policy["spec"].get("matchConstraints") or {}, req, ns_labels):
            continue
        for binding in bindings:
            spec = binding.get("spec") or {}
            if spec.get("policyName") != name:
                continue
            if spec.get("matchResources") is not None and not matches(spec["matchResources"], req, ns_labels):
                continue
            bname = binding["metadata"]["name"]
            params = _params(store, policy, binding, req)
            if isinstance(params, str):
                if fail:
                    denials.append(Decision(name, bname, f"failed to configure binding: {params}"))
                continue
            for param in params:
                for reason, message, is_error in _validate(policy, base, param):
                    if is_error and not fail:
                        continue  # failurePolicy Ignore: an error admits
                    actions = spec.get("validationActions") or []
                    if "Deny" in actions:
                        denials.append(Decision(name, bname, message, reason))
                    if "Warn" in actions:
                        warnings.append(f"Validation failed for ValidatingAdmissionPolicy '{name}' with binding "
                                        f"'{bname}': {message}")  # fmt: skip
                    if "Audit" in actions:
                        store.audit_failures.append({"policy": name, "binding": bname, "message": message})
    return denials, warnings


def denial_error(denial: Decision, req: AdmissionRequest) -> tuple[int, str, str, dict]:
    """(code, message, reason, details) of the Status a denial answers (dispatcher.go + admission.NewForbidden)."""
    if denial.binding is not None:
        text = f"ValidatingAdmissionPolicy '{denial.policy}' with binding '{denial.binding}' denied request: {denial.message}"
    else:
        text = f"ValidatingAdmissionPolicy '{denial.policy}' denied request: {denial.message}"
    name = req.name or ((req.object or {}).get("metadata") or {}).get("generateName") or "Unknown"
    message = f'{req.rt.group_resource} "{name}" is forbidden: {text}'
    details = {"name": name, "group": req.rt.group, "kind": req.rt.plural, "causes": [{"message": text}]}
    return REASON_CODES.get(denial.reason, 422), message, denial.reason, details


def user_info(user: Any) -> dict:
    """userInfo of the request's user (rbac.User), the test's admin when RBAC is not enforced."""
    if user is None:
        return {"username": "kubeapi-admin", "groups": ["system:masters", "system:authenticated"]}
    return {"username": user.name, "groups": list(user.groups)}
