"""What a kube-apiserver does with a custom resource against its CRD's structural schema.

Used by the API test server and by the CRD tests: null-dropping, defaulting, pruning (unknown fields
are reported, for strict field validation), OpenAPI v3 validation (through jsonschema, Draft 4
semantics: OpenAPI 3.0 uses boolean exclusiveMinimum) and CEL `x-kubernetes-validations` (through
cel-python, with values typed by the schema as the API server types them: `number` is a double;
results are memoised per rule and typed node), list-type map/set uniqueness. Messages are worded as the
API server words them (`Invalid value: 0: spec.x in body should be greater than 0`, `Required value` at
the missing field, `Unsupported value: ...`, CEL: `Invalid value: "object": <message>`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import celpy
import jsonschema
from celpy import celtypes


@dataclass(frozen=True)
class SchemaIssue:
    path: str  # e.g. spec.data.sources[1].weight
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def _child(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)


# ------------------------------------------------------------------------ defaulting and pruning
def apply_defaults(schema: dict, value: Any) -> Any:
    """Return `value` with nulls of non-nullable fields dropped and schema defaults filled in."""
    value = copy.deepcopy(value)
    _default(schema, value)
    return value


def _default(schema: dict, value: Any) -> None:
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name in value and value[name] is None and not sub.get("nullable"):
                del value[name]
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default(sub, value[name])
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for v in value.values():
            _default(schema["additionalProperties"], v)
    elif isinstance(value, list) and "items" in schema:
        for v in value:
            _default(schema["items"], v)


def prune(schema: dict, value: Any, path: str = "", root: bool = True) -> tuple[Any, list[str]]:
    """Drop fields the schema does not know; return the pruned value and the dropped paths."""
    dropped: list[str] = []
    value = copy.deepcopy(value)
    _prune(schema, value, path, dropped, root)
    return value, dropped


def _prune(schema: dict, value: Any, path: str, dropped: list[str], root: bool) -> None:
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    if isinstance(value, dict):
        props = schema.get("properties")
        if preserve and props is None:
            return
        if props is not None:
            for key in list(value):
                if root and key in ("apiVersion", "kind", "metadata"):  # never pruned, declared or not
                    continue
                if key not in props:
                    if not preserve:  # preserve-unknown-fields keeps unknown keys; known ones are still pruned inside
                        dropped.append(_child(path, key))
                        del value[key]
                elif not (root and key == "metadata"):  # the API server owns metadata
                    _prune(props[key], value[key], _child(path, key), dropped, False)
        elif isinstance(schema.get("additionalProperties"), dict):
            for key, v in value.items():
                _prune(schema["additionalProperties"], v, _child(path, key), dropped, False)
    elif isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            _prune(schema["items"], v, _child(path, i), dropped, False)


# ---------------------------------------------------------------------------------- validation
def _to_draft4(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_draft4(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_draft4(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["type"] = ["integer", "string"]
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


@lru_cache(maxsize=32)
def _validator(schema_key: str):
    import json

    return _K8sValidator(_to_draft4(json.loads(schema_key)))


# The API server decodes JSON numbers into int64 or float64 and accepts an integral float (1.0) where the
# schema says `integer`; Draft 4 alone would reject it.
_K8sValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    type_checker=jsonschema.Draft4Validator.TYPE_CHECKER.redefine(
        "integer",
        lambda checker, v: (
            (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
        ),
    ),
)


def _list_map_duplicates(schema: dict, value: Any, path: str = "") -> list[SchemaIssue]:
    """x-kubernetes-list-type: map means unique keys (and set: unique items); JSON Schema cannot say that."""
    return check_list_types(schema, value, path)


def validate_schema(schema: dict, value: Any) -> list[SchemaIssue]:
    import json

    validator = _validator(json.dumps(schema, sort_keys=True))
    issues = _list_map_duplicates(schema, value)
    for err in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
        path = ""
        for part in err.absolute_path:
            path = _child(path, part)
        issues.append(_k8s_issue(err, path))
    return issues


def _go_value(v: Any) -> str:
    import json

    return json.dumps(v, separators=(",", ":")) if isinstance(v, (str, dict, list)) else (
        "null" if v is None else str(v).lower() if isinstance(v, bool) else repr(v))  # fmt: skip


_JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


def _k8s_issue(err, path: str) -> SchemaIssue:
    """A jsonschema error as the API server words it (field path + 'Invalid value: ...' etc.)."""
    import re

    kind, v, want, sch = err.validator, err.instance, err.validator_value, err.schema
    where = path or "<root>"
    if kind == "required":
        m = re.match(r"'(.+)' is a required property", err.message)
        return SchemaIssue(_child(path, m.group(1)) if m else path, "Required value")
    if kind == "type":
        got = _JSON_TYPE.get(type(v), "null")
        want = want[0] if isinstance(want, list) else want
        return SchemaIssue(path, f'Invalid value: "{got}": {where} in body must be of type {want}: {_go_value(v)}')
    if kind == "enum":
        return SchemaIssue(path, f"Unsupported value: {_go_value(v)}: supported values: "
                                 + ", ".join(_go_value(x) for x in want if x is not None))  # fmt: skip
    if kind == "minimum":
        op = "greater than" if sch.get("exclusiveMinimum") else "greater than or equal to"
        return SchemaIssue(path, f"Invalid value: {_go_value(v)}: {where} in body should be {op} {_go_value(want)}")
    if kind == "maximum":
        op = "less than" if sch.get("exclusiveMaximum") else "less than or equal to"
        return SchemaIssue(path, f"Invalid value: {_go_value(v)}: {where} in body should be {op} {_go_value(want)}")
    if kind == "maxLength":
        return SchemaIssue(path, f"Too long: may not be more than {want} bytes")
    if kind == "minLength":
        return SchemaIssue(path, f"Invalid value: {_go_value(v)}: {where} in body should be at least {want} chars long")
    if kind == "pattern":
        return SchemaIssue(path, f"Invalid value: {_go_value(v)}: {where} in body should match '{want}'")
    if kind == "maxItems":
        return SchemaIssue(path, f"Too many: {len(v)}: must have at most {want} items")
    if kind == "minItems":
        return SchemaIssue(path, f"Invalid value: {len(v)}: {where} in body should have at least {want} items")
    if kind == "multipleOf":
        return SchemaIssue(path, f"Invalid value: {_go_value(v)}: {where} in body should be a multiple of {want}")
    return SchemaIssue(path, err.message)


# ------------------------------------------------------------------------------------------ CEL
_CEL_ENV = celpy.Environment()


@lru_cache(maxsize=256)
def _program(rule: str):
    return _CEL_ENV.program(_CEL_ENV.compile(rule))


def _typed(schema: dict, value: Any) -> Any:
    """Python JSON value -> CEL value, typed by the schema (numbers are doubles, as in the API server)."""
    t = schema.get("type")
    if value is None:  # only nulls of nullable fields are left (the others were dropped): a CEL null value
        return celtypes.NullType()
    if t == "number":
        return celtypes.DoubleType(float(value))
    if t == "integer":
        return celtypes.IntType(int(value))
    if t == "boolean":
        return celtypes.BoolType(value)
    if t == "string":
        return celtypes.StringType(value)
    if t == "array":
        item = schema.get("items", {})
        return celtypes.ListType([_typed(item, v) for v in value])
    if t == "object" or isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
        return celtypes.MapType(
            # A null kept for a nullable field is present (has() is true, `null % 2` an evaluation error),
            # as upstream's unstructured-to-CEL conversion (apiserver/pkg/cel/common/values.go) keeps it.
            {celtypes.StringType(k): _typed(props.get(k, extra), v) for k, v in value.items()}
        )
    return celpy.json_to_cel(value)


_CEL_RESULTS: dict[tuple[str, str], str | None] = {}  # (rule, node) -> failure message or None


def _cel_node_key(schema: dict, value: Any) -> str:
    import json

    # The schema types the value (number vs integer), so both are part of the key.
    return json.dumps([_schema_fingerprint(schema), value], sort_keys=True, default=str)


def _schema_fingerprint(schema: dict) -> int:
    import json

    key = id(schema)
    hit = _FINGERPRINTS.get(key)
    if hit is None or hit[0] is not schema:
        if len(_FINGERPRINTS) > 10_000:
            _FINGERPRINTS.clear()
        hit = (schema, hash(json.dumps(schema, sort_keys=True, default=str)))
        _FINGERPRINTS[key] = hit
    return hit[1]


_FINGERPRINTS: dict[int, tuple[dict, int]] = {}


# A value absent from the old object (a create, or a field the update adds): transition rules are not run.
ABSENT: Any = object()
_OLD_SELF = re.compile(r"\boldSelf\b")


def is_transition_rule(rule: dict) -> bool:
    """Upstream (apiextensions-apiserver, `x-kubernetes-validations`): a rule that reads `oldSelf` is a transition
    rule, evaluated only on an update and only where the old object has a value at the same place (unless it sets
    `optionalOldSelf`, which this model does not support: such rules also run only then)."""
    return bool(_OLD_SELF.search(rule["rule"]))


def _cel_failure(rule: dict, schema: dict, value: Any, node_key: str, old: Any = ABSENT) -> str | None:
    """Evaluate one rule (memoised: cel-python takes milliseconds per rule and the result depends only on the
    rule and the typed node, and the old node for a transition rule); the failure message, or None if it holds."""
    transition = is_transition_rule(rule)
    if transition:
        node_key += "\0" + _cel_node_key(schema, old)
    key = (rule["rule"] + "\0" + str(rule.get("message", "")), node_key)
    if key in _CEL_RESULTS:
        return _CEL_RESULTS[key]
    message: str | None = None
    activation = {"self": _typed(schema, value)}
    if transition:
        activation["oldSelf"] = _typed(schema, old)
    try:
        ok = _program(rule["rule"]).evaluate(activation)
    except Exception as e:  # noqa: BLE001 - an evaluation error rejects the object, as in the API server
        ok = False
        message = f"{rule.get('message', rule['rule'])} (evaluation error: {e})"
    # celpy returns evaluation errors as values (CELEvalError), not exceptions.
    if isinstance(ok, celpy.CELEvalError):
        message = f"{rule.get('message', rule['rule'])} (evaluation error: {ok})"
    if not (isinstance(ok, (bool, celtypes.BoolType)) and bool(ok)):
        message = message or rule.get("message") or f"failed rule: {rule['rule']}"
    else:
        message = None
    if len(_CEL_RESULTS) > 20_000:
        _CEL_RESULTS.clear()
    _CEL_RESULTS[key] = message
    return message


_SELF_PATH = re.compile(r"\bself((?:\.[A-Za-z_][A-Za-z0-9_]*)+)(\s*\()?")
_SELF_ANY = re.compile(r"\bself\b")


def _paths_read(rule: str) -> tuple[tuple[str, ...], ...] | None:
    """The field paths of `self` a rule reads when it reads `self` only through them (`self.metadata.name`,
    `has(self.spec.packing)`; a trailing `.size()` is a call, not a field); None when it may read anything
    (`self[k]`, `self.all(...)`, bare `self`). The rule's result depends on nothing else, so its memo key is
    the values at those paths: an object's root rules (metadata.name) are not evaluated again for every
    status or annotation write."""
    found = _SELF_PATH.findall(rule)
    if len(found) != len(_SELF_ANY.findall(rule)):
        return None
    paths = []
    for dotted, call in found:
        parts = tuple(dotted.lstrip(".").split("."))
        if call:
            parts = parts[:-1]
        if not parts:
            return None
        paths.append(parts)
    return tuple(sorted(set(paths)))


def _at(value: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return ABSENT
        value = value[part]
    return value


def check_cel(schema: dict, value: Any, path: str = "", old: Any = ABSENT) -> list[SchemaIssue]:
    """Evaluate every x-kubernetes-validations rule whose node is present in `value`; transition rules (`oldSelf`)
    only where `old` (the stored object on an update) has that node too. Old list items are not correlated
    (upstream correlates those of map-type lists; no rule of ours sits under a list item)."""
    issues: list[SchemaIssue] = []
    rules = [r for r in schema.get("x-kubernetes-validations", []) if old is not ABSENT or not is_transition_rule(r)]
    keys: dict[tuple[tuple[str, ...], ...] | None, str] = {}
    for rule in rules:
        paths = _paths_read(rule["rule"]) if isinstance(value, dict) else None
        if paths not in keys:
            read = value if paths is None else [[p, _at(value, p) is ABSENT, _at(value, p)] for p in paths]
            keys[paths] = _cel_node_key(schema, read) + ("" if paths is None else "|paths")
        message = _cel_failure(rule, schema, value, keys[paths], old)
        if message is not None:
            got = _JSON_TYPE.get(type(value), "null")
            issues.append(SchemaIssue(path + rule.get("fieldPath", ""), f'Invalid value: "{got}": {message}'))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else None
        for key, v in value.items():
            sub = props.get(key, extra if not props else None)
            if sub is not None and v is not None:
                old_v = old.get(key, ABSENT) if isinstance(old, dict) else ABSENT
                issues += check_cel(sub, v, _child(path, key), ABSENT if old_v is None else old_v)
    elif isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            issues += check_cel(schema["items"], v, _child(path, i))
    return issues


def check_list_types(schema: dict, value: Any, path: str = "") -> list[SchemaIssue]:
    """`x-kubernetes-list-type: map` (unique keys) and `set` (unique items), as the API server enforces them."""
    issues: list[SchemaIssue] = []
    if isinstance(value, list):
        kind = schema.get("x-kubernetes-list-type")
        seen: dict = {}
        for i, v in enumerate(value):
            if kind == "map" and isinstance(v, dict):
                ident = tuple(repr(v.get(k)) for k in schema.get("x-kubernetes-list-map-keys", []))
            elif kind == "set":
                ident = repr(v)
            else:
                break
            if ident in seen:
                shown = {k: v.get(k) for k in schema.get("x-kubernetes-list-map-keys", [])} if kind == "map" else v
                issues.append(SchemaIssue(_child(path, i), f"Duplicate value: {_go_value(shown)}"))
            seen[ident] = i
        if "items" in schema:
            for i, v in enumerate(value):
                issues += check_list_types(schema["items"], v, _child(path, i))
    elif isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else None
        for key, v in value.items():
            sub = props.get(key) if props is not None else extra
            if sub:
                issues += check_list_types(sub, v, _child(path, key))
    return issues


def admit(
    schema: dict, obj: dict, strict_fields: bool = True, old: dict | None = None
) -> tuple[dict, list[SchemaIssue]]:
    """What the API server does on create/update (`old`: the stored object): prune (strict: reject unknown
    fields), default, validate, run CEL. Returns the stored object and the issues (empty when admitted)."""
    pruned, dropped = prune(schema, obj)
    issues = [SchemaIssue(p, "unknown field") for p in dropped] if strict_fields else []
    defaulted = apply_defaults(schema, pruned)
    issues += validate_schema(schema, defaulted)  # incl. list-type map/set uniqueness
    if not issues:
        issues += check_cel(schema, defaulted, old=ABSENT if old is None else old)
    return defaulted, issues
