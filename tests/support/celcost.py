"""The API server's static CEL cost check of a CRD, estimated conservatively.

A kube-apiserver refuses a CustomResourceDefinition whose `x-kubernetes-validations` rules could cost too much
in the worst case, before any object exists. Upstream (Kubernetes 1.32):

- limits: `StaticEstimatedCostLimit` = 10,000,000 per rule and `StaticEstimatedCRDCostLimit` = 100,000,000 for
  the whole schema (staging/src/k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go),
  the request size bound `DefaultMaxRequestSizeBytes` = 3 MiB (staging/src/k8s.io/apiserver/pkg/cel/limits.go);
- a rule's cost = cel-go's worst-case estimate of one evaluation (github.com/google/cel-go checker/cost.go:
  identifiers and field selections 1, function calls 1 + arguments, a comprehension its range plus
  (condition + step) per element, string traversal factor 0.1, regex factor 0.25, list literal 10, map
  literal 30) x the rule's cardinality: the product of `maxItems`/`maxProperties` of the lists and maps above
  it, or, when one is unbounded, the request size / (minimum JSON size of the node + 1)
  (apiextensions validation/cel_validation.go CELSchemaContext, apiserver/schema/cel/compilation.go);
- sizes come from the schema (staging/src/k8s.io/apiserver/pkg/cel/common/schemas.go SchemaDeclType): a string
  `maxLength` x 4 bytes, an enum its longest value, else the request size - 2; a list `maxItems`, else
  (request size - 2) / (minimum item size + 1); a map `maxProperties`, else (request size - 2) / (minimum value
  size + 6); minimum JSON sizes: boolean 4, number 1, string 2, list 2, object 2 + its required properties
  without defaults (name + 4 + their minimum);
- wording: `Forbidden: estimated rule cost exceeds budget by factor of 2.5x (try simplifying the rule, or adding
  maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)` at
  `...x-kubernetes-validations[i].rule`, and for the total `contributed to estimated rule cost total exceeding
  cost limit for entire OpenAPIv3 schema` at each rule of >= 1% plus `x-kubernetes-validations estimated rule
  cost total for entire OpenAPIv3 schema exceeds budget by factor of ...` at `<schema path>.openAPIV3Schema`.

Conservative means: where this estimate is unsure it charges more than cel-go (e.g. string equality at the
longer operand, `&&`/`||` and `?:` for both sides), so a CRD admitted here is admitted upstream; it can
refuse a CRD upstream would accept only near the limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import celpy
from lark import Token, Tree

STATIC_ESTIMATED_COST_LIMIT = 10_000_000
STATIC_ESTIMATED_CRD_COST_LIMIT = 100_000_000
MAX_REQUEST_SIZE_BYTES = 3 * 1024 * 1024
STRING_TRAVERSAL_COST_FACTOR = 0.1
REGEX_STRING_LENGTH_COST_FACTOR = 0.25
LIST_CREATE_BASE_COST = 10
MAP_CREATE_BASE_COST = 30
_MACROS = {"all", "exists", "exists_one", "map", "filter"}
_CEL_ENV = celpy.Environment()


@dataclass(frozen=True)
class RuleCost:
    path: str  # e.g. spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule
    rule: str
    raw: int  # one evaluation, worst case
    cardinality: int
    cost: int  # raw x cardinality


@dataclass
class _Value:
    """What the estimator knows of an expression's value: its schema (None: a scalar of unknown size) and max size."""

    schema: dict | None = None
    size: int = 1  # string length, list items or map entries; 1 for scalars
    elements: list[_Value] = field(default_factory=list)  # literal lists/maps: what indexing may return


# ------------------------------------------------------------------------------- schema sizes
def min_size(schema: dict | None) -> int:
    """Minimum JSON size of a value of `schema` (upstream estimateMinSizeJSON / DeclType.MinSerializedSize)."""
    if not schema:
        return 1
    t = schema.get("type")
    if t == "boolean":
        return 4
    if t in ("number", "integer"):
        return 1
    if t == "string" or schema.get("x-kubernetes-int-or-string"):
        return 2 if t == "string" else 1
    if t == "array":
        return 2
    if t == "object":
        total = 2
        props = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name in props and "default" not in props[name]:
                total += len(name) + min_size(props[name]) + 4
        return total
    return 1


def max_elements(schema: dict | None) -> int:
    """Max string length / list items / map entries of `schema` (upstream SchemaDeclType MaxElements)."""
    if not schema:
        return 1
    t = schema.get("type")
    if t == "string" or schema.get("x-kubernetes-int-or-string"):
        if schema.get("maxLength") is not None:
            return max(0, int(schema["maxLength"])) * 4
        if t == "string" and schema.get("enum"):
            return max(len(str(v)) for v in schema["enum"])
        return MAX_REQUEST_SIZE_BYTES - 2
    if t == "array":
        if schema.get("maxItems") is not None:
            return max(0, int(schema["maxItems"]))
        return (MAX_REQUEST_SIZE_BYTES - 2) // (min_size(schema.get("items")) + 1)
    if t == "object" and isinstance(schema.get("additionalProperties"), dict):
        if schema.get("maxProperties") is not None:
            return max(0, int(schema["maxProperties"]))
        return (MAX_REQUEST_SIZE_BYTES - 2) // (min_size(schema["additionalProperties"]) + 6)
    return 1


def _value(schema: dict | None) -> _Value:
    return _Value(schema, max_elements(schema))


_KEY_SCHEMA: dict = {"type": "string"}  # map keys: strings of unknown length


def _member(v: _Value, name: str) -> _Value:
    s = v.schema or {}
    props = s.get("properties") or {}
    if name in props:
        return _value(props[name])
    if isinstance(s.get("additionalProperties"), dict):
        return _value(s["additionalProperties"])
    return _Value(None, 1)


def _element(v: _Value) -> _Value:
    """What iterating or indexing `v` yields: list items, map keys (iteration) or values (indexing)."""
    if v.elements:
        biggest = max(v.elements, key=lambda e: e.size)
        return biggest
    s = v.schema or {}
    if s.get("type") == "array":
        return _value(s.get("items"))
    if isinstance(s.get("additionalProperties"), dict):
        return _value(s["additionalProperties"])
    return _Value(None, 1)


def _iteration_var(v: _Value) -> _Value:
    s = v.schema or {}
    if s.get("type") == "object":  # a comprehension over a map ranges over its keys
        return _Value(_KEY_SCHEMA, MAX_REQUEST_SIZE_BYTES - 2)
    return _element(v)


# ------------------------------------------------------------------------------- expression cost
def _factor(size: int, factor: float) -> int:
    return math.ceil(size * factor)


class _Estimator:
    def __init__(self, self_value: _Value):
        self.scopes: list[dict[str, _Value]] = [{"self": self_value}]

    def lookup(self, name: str) -> _Value:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return _Value(None, 1)

    def cost(self, node: Any) -> tuple[int, _Value]:
        if isinstance(node, Token):
            return 0, _Value(None, 1)
        kids = node.children
        data = node.data
        if data in ("expr",) and len(kids) == 3:  # cond ? a : b, charged for both branches
            c, _ = self.cost(kids[0])
            a, va = self.cost(kids[1])
            b, vb = self.cost(kids[2])
            return c + a + b, va if va.size >= vb.size else vb
        if data in ("conditionalor", "conditionaland") and len(kids) == 2:
            a, _ = self.cost(kids[0])
            b, _ = self.cost(kids[1])
            return a + b, _Value(None, 1)
        if data in ("relation", "addition", "multiplication") and len(kids) == 2:
            op = kids[0]
            left_cost, left = self.cost(op.children[0])
            right_cost, right = self.cost(kids[1])
            total = left_cost + right_cost + 1
            if op.data in ("relation_eq", "relation_ne", "relation_lt", "relation_le", "relation_gt", "relation_ge"):
                if _is_string(left) or _is_string(right):
                    total += _factor(max(left.size, right.size), STRING_TRAVERSAL_COST_FACTOR)
            elif op.data == "relation_in":
                total += right.size
            elif op.data == "addition_add" and (_is_string(left) or left.schema and left.schema.get("type") == "array"):
                return total + _factor(left.size + right.size, STRING_TRAVERSAL_COST_FACTOR), \
                    _Value(left.schema, left.size + right.size)  # fmt: skip
            return total, _Value(None, 1)
        if data == "unary" and len(kids) == 2:
            c, v = self.cost(kids[1])
            return c + 1, v
        if data == "member_dot":
            c, v = self.cost(kids[0])
            return c + 1, _member(v, str(kids[1]))
        if data == "member_index":
            c, v = self.cost(kids[0])
            ci, _ = self.cost(kids[1])
            return c + ci + 1, _element(v)
        if data == "member_dot_arg":
            return self.method(kids)
        if data == "ident":
            return 1, self.lookup(str(kids[0]))
        if data == "ident_arg":
            return self.function(str(kids[0]), kids[1].children if len(kids) > 1 else [])
        if data == "literal":
            text = str(kids[0])
            if text[:1] in ("'", '"') or text[:2].lower() in ("r'", 'r"'):
                length = len(text.strip("rR")) - 2
                return 0, _Value({"type": "string"}, max(0, length))
            return 0, _Value(None, 1)
        if data == "list_lit":
            total, elements = LIST_CREATE_BASE_COST, []
            for e in _exprs(kids):
                c, v = self.cost(e)
                total += c
                elements.append(v)
            return total, _Value({"type": "array"}, len(elements), elements)
        if data == "map_lit":
            total, elements = MAP_CREATE_BASE_COST, []
            entries = _exprs(kids)
            for i, e in enumerate(entries):
                c, v = self.cost(e)
                total += c
                if i % 2:
                    elements.append(v)
            return total, _Value({"type": "object"}, len(elements), elements)
        if len(kids) == 1:  # the grammar's pass-through levels (expr -> conditionalor -> ... -> primary)
            return self.cost(kids[0])
        total = 1  # anything else: every part plus one call
        last = _Value(None, 1)
        for k in kids:
            c, last = self.cost(k)
            total += c
        return total, last

    def function(self, name: str, args: list) -> tuple[int, _Value]:
        exprs = _exprs(args)
        if name == "has":  # a presence test: the selection without reading the value
            c, _ = self.cost(exprs[0])
            return c + 1, _Value(None, 1)
        total, values = 1, []
        for e in exprs:
            c, v = self.cost(e)
            total += c
            values.append(v)
        return total, _Value(None, 1)

    def method(self, kids: list) -> tuple[int, _Value]:
        target_cost, target = self.cost(kids[0])
        name = str(kids[1])
        args = _exprs(kids[2:]) if len(kids) > 2 else []
        var = _ident_name(args[0]) if name in _MACROS and len(args) == 2 else None
        if var is not None:
            n = target.size
            self.scopes.append({var: _iteration_var(target)})
            try:
                body_cost, body = self.cost(args[1])
            finally:
                self.scopes.pop()
            # per element: the loop condition (1) + the step (1 + body), as cel-go's comprehension estimate
            total = target_cost + n * (body_cost + 2) + 1
            if name == "map":
                return total, _Value({"type": "array"}, n, [body])
            if name == "filter":
                return total, _Value(target.schema if target.schema and target.schema.get("type") == "array"
                                     else {"type": "array"}, n, target.elements)  # fmt: skip
            return total, _Value(None, 1)
        total = target_cost + 1
        values = []
        for a in args:
            c, v = self.cost(a)
            total += c
            values.append(v)
        if name in ("startsWith", "endsWith") and values:
            total += _factor(values[0].size, STRING_TRAVERSAL_COST_FACTOR)
        elif name == "contains" and values:
            total += _factor(target.size * values[0].size, STRING_TRAVERSAL_COST_FACTOR)
        elif name == "matches" and values:
            total += _factor(target.size, STRING_TRAVERSAL_COST_FACTOR) * _factor(
                values[0].size, REGEX_STRING_LENGTH_COST_FACTOR
            )
        elif name in ("lowerAscii", "upperAscii", "trim", "replace", "split", "join", "indexOf", "lastIndexOf",
                      "substring", "find", "findAll"):  # fmt: skip
            total += _factor(target.size, STRING_TRAVERSAL_COST_FACTOR) * max(1, len(values))
            return total, _Value({"type": "string"}, target.size) if name != "split" else _Value(
                {"type": "array"}, target.size
            )
        return total, _Value(None, 1)


def _is_string(v: _Value) -> bool:
    return bool(v.schema and v.schema.get("type") == "string")


def _exprs(nodes: list) -> list:
    """The argument expressions of an exprlist/mapinits (or the nodes themselves)."""
    out: list = []
    for n in nodes:
        if isinstance(n, Tree) and n.data in ("exprlist", "mapinits", "fieldinits"):
            out += [c for c in n.children if isinstance(c, Tree)]
        elif isinstance(n, Tree):
            out.append(n)
    return out


def _ident_name(node: Any) -> str | None:
    while isinstance(node, Tree) and len(node.children) == 1 and node.data != "ident":
        node = node.children[0]
    if isinstance(node, Tree) and node.data == "ident":
        return str(node.children[0])
    return None


def rule_cost(rule: str, schema: dict, is_root: bool = False) -> int:
    """Worst-case cost of one evaluation of `rule` with `self` typed by `schema`."""
    if is_root:  # the root of a resource always exposes apiVersion, kind, metadata.name/generateName
        schema = dict(schema)
        props = dict(schema.get("properties") or {})
        props["apiVersion"] = {"type": "string"}
        props["kind"] = {"type": "string"}
        props["metadata"] = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}},
        }
        schema["properties"] = props
    tree = _CEL_ENV.compile(rule)
    cost, _ = _Estimator(_value(schema)).cost(tree)
    return cost


# ------------------------------------------------------------------------------- the CRD check
def schema_rule_costs(schema: dict, path: str) -> list[RuleCost]:
    """Every rule of an openAPIV3Schema with its estimated cost; `path` is the schema's field path."""
    out: list[RuleCost] = []

    def walk(node: dict, where: str, cardinality: int | None, is_root: bool) -> None:
        if not isinstance(node, dict):
            return
        for i, r in enumerate(node.get("x-kubernetes-validations") or []):
            raw = rule_cost(r["rule"], node, is_root)
            card = cardinality if cardinality is not None else MAX_REQUEST_SIZE_BYTES // (min_size(node) + 1)
            out.append(RuleCost(f"{where}.x-kubernetes-validations[{i}].rule", r["rule"], raw, card, raw * card))
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, f"{where}.properties[{name}]", cardinality, False)
        if isinstance(node.get("items"), dict):
            bound = node.get("maxItems")
            walk(
                node["items"],
                f"{where}.items",
                None if cardinality is None or bound is None else cardinality * int(bound),
                False,
            )
        if isinstance(node.get("additionalProperties"), dict):
            bound = node.get("maxProperties")
            walk(node["additionalProperties"], f"{where}.additionalProperties.schema",
                 None if cardinality is None or bound is None else cardinality * int(bound), False)  # fmt: skip

    walk(schema, path, 1, True)
    return out


def _factor_text(cost: int, limit: int) -> str:
    factor = cost / limit
    if factor > 100.0:
        return "more than 100x"
    if factor < 1.5:
        return f"{factor:f}x"
    return f"{factor:.1f}x"


def cost_message(what: str, cost: int, limit: int) -> str:
    return (f"{what} exceeds budget by factor of {_factor_text(cost, limit)} (try simplifying the rule, or adding "
            "maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)")  # fmt: skip


CONTRIBUTED = "Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema"


def crd_cost_causes(crd_spec: dict) -> list[tuple[str, str]]:
    """(field, message) causes for a CRD spec whose CEL rules are over the static limits; [] when admitted.

    The API server validates the internal version, where one schema shared by every version is hoisted to
    `spec.validation` (what the error paths of a one-version v1 CRD name); differing schemas stay per version."""
    versions = crd_spec.get("versions") or []
    schemas = [((v.get("schema") or {}).get("openAPIV3Schema")) for v in versions]
    if schemas and all(s == schemas[0] for s in schemas):
        targets = [("spec.validation", schemas[0])]
    else:
        targets = [(f"spec.versions[{i}].schema", s) for i, s in enumerate(schemas)]
    causes: list[tuple[str, str]] = []
    for where, schema in targets:
        if not schema:
            continue
        costs = schema_rule_costs(schema, f"{where}.openAPIV3Schema")
        for c in costs:
            if c.cost > STATIC_ESTIMATED_COST_LIMIT:
                causes.append(
                    (c.path, "Forbidden: " + cost_message("estimated rule cost", c.cost, STATIC_ESTIMATED_COST_LIMIT))
                )
        total = sum(c.cost for c in costs)
        if total > STATIC_ESTIMATED_CRD_COST_LIMIT:
            expensive = sorted((c for c in costs if c.cost >= STATIC_ESTIMATED_CRD_COST_LIMIT // 100),
                               key=lambda c: -c.cost)[:4]  # fmt: skip
            for c in expensive:
                causes.append((c.path, CONTRIBUTED))
            causes.append((f"{where}.openAPIV3Schema", "Forbidden: " + cost_message(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema", total,
                STATIC_ESTIMATED_CRD_COST_LIMIT)))  # fmt: skip
    return causes
