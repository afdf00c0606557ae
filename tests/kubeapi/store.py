"""The state and semantics of the test API server: resource types, objects, writes, watch history.

Everything here is synchronous and guarded by one re-entrant lock; `server.py` puts HTTP in front of it.
Errors are `APIError`s that carry the Kubernetes `Status` the HTTP layer sends back.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from support import celcost, openapi

from . import admission

# ----------------------------------------------------------------------------------------- errors
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class APIError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict:
        return status_body(self.code, self.message, self.reason, self.details)


def status_body(code: int, message: str, reason: str = "", details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure" if code >= 300 else "Success"}
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = details
    body["code"] = code
    return body


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------- resource types
@dataclass
class Version:
    name: str
    served: bool = True
    storage: bool = True
    schema: dict | None = None  # openAPIV3Schema: validation, defaulting, pruning (custom resources)
    status: bool = False  # the /status subresource
    scale: bool = False
    printer_columns: list[dict] = field(default_factory=list)


@dataclass
class ResourceType:
    group: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    versions: dict[str, Version]
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    custom: bool = False  # served from a CRD (JSON-only, merge/JSON/apply patches, returns deleted objects)
    generation: bool = False  # keeps metadata.generation
    extra_subresources: list[str] = field(default_factory=list)  # e.g. namespaces/finalize
    field_selectors: tuple[str, ...] = ()  # beyond metadata.name / metadata.namespace
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def storage_version(self) -> str:
        return next((v.name for v in self.versions.values() if v.storage), next(iter(self.versions)))

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def has_status(self, version: str) -> bool:
        return self.versions[version].status


def _builtin(group, version, plural, singular, kind, namespaced, short=(), status=False, **kw) -> ResourceType:
    return ResourceType(
        group, plural, singular, kind, namespaced, {version: Version(version, status=status)}, list(short), **kw
    )


EVENT_FIELDS = (
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
    "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
    "reason", "reportingComponent", "source", "type",
)  # fmt: skip

BUILTINS = [
    _builtin("", "v1", "namespaces", "namespace", "Namespace", False, ["ns"], status=True,
             extra_subresources=["finalize"], field_selectors=("status.phase",)),
    _builtin("", "v1", "configmaps", "configmap", "ConfigMap", True, ["cm"]),
    _builtin("", "v1", "secrets", "secret", "Secret", True, field_selectors=("type",)),
    _builtin("", "v1", "events", "event", "Event", True, ["ev"], field_selectors=EVENT_FIELDS),
    _builtin("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True, ["sa"]),
    _builtin("", "v1", "services", "service", "Service", True, ["svc"], status=True),
    _builtin("", "v1", "pods", "pod", "Pod", True, ["po"], status=True, field_selectors=("spec.nodeName", "status.phase")),
    _builtin("", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", True, ["pvc"], status=True),
    _builtin("events.k8s.io", "v1", "events", "event", "Event", True, ["ev"]),
    _builtin("coordination.k8s.io", "v1", "leases", "lease", "Lease", True),
    _builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition",
             "CustomResourceDefinition", False, ["crd", "crds"], status=True, generation=True),
    _builtin("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", True),
    _builtin("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", True),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", False),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", False),
    _builtin("apps", "v1", "deployments", "deployment", "Deployment", True, ["deploy"], status=True, generation=True),
    _builtin("batch", "v1", "jobs", "job", "Job", True, status=True, generation=True),
    _builtin("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", True, ["netpol"]),
    _builtin("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", True, ["pdb"],
             status=True, generation=True),
    _builtin("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "validatingadmissionpolicy",
             "ValidatingAdmissionPolicy", False, status=True, generation=True),
    _builtin("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings",
             "validatingadmissionpolicybinding", "ValidatingAdmissionPolicyBinding", False, generation=True),
]  # fmt: skip

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# The garbage collector's finalizers (k8s.io/apimachinery/pkg/apis/meta/v1 FinalizerOrphanDependents,
# FinalizerDeleteDependents): put on an object deleted with propagationPolicy Orphan / Foreground.
ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"


def rayjob_crd(kuberay: str | None = None) -> dict:
    """KubeRay's RayJob CRD: its names, scope, status subresource and printer columns, and with a KubeRay
    tag (e.g. "v1.4.2") KubeRay's own structural schema (trimmed to what trainkit uses, tests/data/kuberay/,
    see support.kuberay_schema), so RayJobs are pruned and typed as on a real cluster; None: schema-less."""
    crd = _schemaless_rayjob_crd()
    if kuberay:
        from support import kuberay_schema

        crd["spec"]["versions"][0]["schema"] = {"openAPIV3Schema": kuberay_schema.load(kuberay)}
    return crd


def _schemaless_rayjob_crd() -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "rayjobs.ray.io"},
        "spec": {
            "group": "ray.io",
            "scope": "Namespaced",
            "names": {"plural": "rayjobs", "singular": "rayjob", "kind": "RayJob", "listKind": "RayJobList",
                      "categories": ["all"]},
            "versions": [{
                "name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "job status", "type": "string", "jsonPath": ".status.jobStatus", "priority": 0},
                    {"name": "deployment status", "type": "string", "jsonPath": ".status.jobDeploymentStatus"},
                    {"name": "age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                }}},
            }],
        },
    }  # fmt: skip


def kopf_peering_crds() -> list[dict]:
    """kopf's peering CRDs (kopf.dev/v1 ClusterKopfPeering, KopfPeering), schema-less as kopf ships them."""
    out = []
    for kind, plural, scope in (
        ("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        ("KopfPeering", "kopfpeerings", "Namespaced"),
    ):
        out.append({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.kopf.dev"},
            "spec": {"group": "kopf.dev", "scope": scope,
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "properties": {
                             "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                         "x-kubernetes-preserve-unknown-fields": True}}}]},
        })  # fmt: skip
    return out


# ------------------------------------------------------------------------------------ selectors
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> Callable[[dict], bool]:
    """equality (=, ==, !=), set (in, notin), existence (key, !key); comma means AND."""
    if not text:
        return lambda labels: True
    reqs: list[Callable[[dict], bool]] = []
    for term in _split_top(text):
        m = re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                reqs.append(lambda lb, k=key, vs=values: k in lb and lb[k] in vs)
            else:
                reqs.append(lambda lb, k=key, vs=values: k not in lb or lb[k] not in vs)
            continue
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)", term)
        if m:
            key, op, value = m.groups()
            if op == "!=":
                reqs.append(lambda lb, k=key, v=value: lb.get(k) != v)
            else:
                reqs.append(lambda lb, k=key, v=value: k in lb and lb[k] == v)
            continue
        m = re.fullmatch(r"(!?)\s*([^=!\s()]+)", term)
        if m:
            neg, key = m.groups()
            reqs.append((lambda lb, k=key: k not in lb) if neg else (lambda lb, k=key: k in lb))
            continue
        raise APIError(400, f"unable to parse requirement: found '{term}', expected: valid label selector")
    return lambda labels: all(r(labels) for r in reqs)


def _dotted(obj: dict, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if isinstance(cur, dict):  # e.g. event "source": the component
        cur = cur.get("component")
    return "" if cur is None else str(cur)


def parse_field_selector(text: str | None, rt: ResourceType) -> Callable[[dict], bool]:
    if not text:
        return lambda obj: True
    allowed = {"metadata.name", "metadata.namespace", *rt.field_selectors}
    reqs = []
    for term in _split_top(text):
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise APIError(400, f'invalid selector: "{text}"; can\'t understand "{term}"')
        key, op, value = m.groups()
        if key not in allowed:
            raise APIError(400, f"field label not supported: {key}")
        if op == "!=":
            reqs.append(lambda o, k=key, v=value: _dotted(o, k) != v)
        else:
            reqs.append(lambda o, k=key, v=value: _dotted(o, k) == v)
    return lambda obj: all(r(obj) for r in reqs)


# -------------------------------------------------------------------------------------- patches
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# patchMergeKey of the built-in lists that merge by key (by field name: the API types are consistent);
# ports: containerPort in containers, port in Services (chosen by what the items carry).
SMP_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "imagePullSecrets": "name",
    "ownerReferences": "uid", "conditions": "type", "hostAliases": "ip", "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey", "ports": None,
    # ValidatingAdmissionPolicy(+webhook) spec lists (x-kubernetes-patch-merge-key in upstream's OpenAPI)
    "variables": "name", "matchConditions": "name",
}  # fmt: skip
SMP_MERGE_PRIMITIVES = {"finalizers"}  # patchStrategy: merge on a list of strings


def _merge_key(field: str, items: list) -> str | None:
    key = SMP_MERGE_KEYS.get(field, "")
    if key is None:  # ports
        return "containerPort" if any(isinstance(i, dict) and "containerPort" in i for i in items) else "port"
    return key or None


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch for built-in types: maps merge (null deletes), lists with a patchMergeKey
    merge by key (`$patch: delete` removes an item, `$patch: replace` replaces), `finalizers` merge as a
    set, other lists are replaced; `$setElementOrder/`, `$retainKeys` and `$deleteFromPrimitiveList/`
    directives are understood (order hints are followed loosely)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _smp_list(key, result.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_list(field: str, current: Any, patch: list) -> list:
    current = copy.deepcopy(current) if isinstance(current, list) else []
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    if field in SMP_MERGE_PRIMITIVES:
        return current + [copy.deepcopy(v) for v in patch if v not in current]
    key = _merge_key(field, current + patch)
    if key is None or not all(isinstance(p, dict) for p in patch):
        return [copy.deepcopy(p) for p in patch]
    for item in patch:
        idx = next((i for i, c in enumerate(current) if isinstance(c, dict) and c.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                current.pop(idx)
        elif idx is None:
            current.append(strategic_merge_patch({}, item))
        else:
            current[idx] = strategic_merge_patch(current[idx], item)
    return current


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise APIError(422, f"invalid JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve_parent(doc: Any, parts: list[str], path: str):
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise APIError(422, f"the server rejected our request due to an error in our request: "
                                f"doc is missing path: \"{path}\"")  # fmt: skip
    return cur


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise APIError(400, "json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    missing = APIError(422, "the server rejected our request due to an error in our request")

    def get(path):
        parts = _pointer(path)
        if not parts:
            return doc
        parent = _resolve_parent(doc, parts, path)
        last = parts[-1]
        if isinstance(parent, dict) and last in parent:
            return parent[last]
        if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
            return parent[int(last)]
        raise APIError(422, f'the server rejected our request due to an error in our request: missing path: "{path}"')

    def remove(path):
        parts = _pointer(path)
        parent = _resolve_parent(doc, parts, path)
        last = parts[-1]
        if isinstance(parent, dict) and last in parent:
            return parent.pop(last)
        if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
            return parent.pop(int(last))
        raise APIError(422, f'the server rejected our request due to an error in our request: '
                            f'unable to remove nonexistent key: "{path}"')  # fmt: skip

    def add(path, value, replace=False):
        nonlocal doc
        parts = _pointer(path)
        if not parts:
            doc = value
            return
        parent = _resolve_parent(doc, parts, path)
        last = parts[-1]
        if isinstance(parent, dict):
            if replace and last not in parent:
                raise missing
            parent[last] = value
        elif isinstance(parent, list):
            if last == "-" and not replace:
                parent.append(value)
            elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
                if replace:
                    parent[int(last)] = value
                else:
                    parent.insert(int(last), value)
            else:
                raise missing
        else:
            raise missing

    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise APIError(400, f"invalid json patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            add(path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            remove(path)
        elif kind == "replace":
            add(path, copy.deepcopy(op.get("value")), replace=True)
        elif kind == "move":
            add(path, remove(op["from"]))
        elif kind == "copy":
            add(path, copy.deepcopy(get(op["from"])))
        elif kind == "test":
            if get(path) != op.get("value"):
                raise APIError(422, f"the server rejected our request due to an error in our request: "
                                    f"testing value {path} failed")  # fmt: skip
        else:
            raise APIError(400, f"unsupported json patch operation: {kind}")
    return doc


# ---------------------------------------------------------------------------------------- store
@dataclass
class WatchEvent:
    type: str  # ADDED / MODIFIED / DELETED
    rv: int
    key: tuple[str, str]
    obj: dict
    old: dict | None


_GEN_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SYSTEM_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "selfLink")


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _no_rv(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    out.get("metadata", {}).pop("resourceVersion", None)
    out.get("metadata", {}).pop("managedFields", None)
    return out


class Store:
    def __init__(self, history_limit: int = 10_000, gc_delay: float | None = 0.1):
        self.gc_delay = gc_delay
        self._gc_wake = threading.Event()
        self._gc_thread: threading.Thread | None = None
        self._gc_closed = False
        self.lock = threading.RLock()
        self.types: dict[tuple[str, str], ResourceType] = {}
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        self.rv = 1
        self.history: deque[WatchEvent] = deque()
        self.history_limit = history_limit
        self.compacted_rv = 0  # events with rv <= this are gone
        self.listeners: list[Callable[[WatchEvent], None]] = []
        # ValidatingAdmissionPolicy failures a binding's `Audit` action recorded (no audit log here)
        self.audit_failures: list[dict] = []
        for rt in BUILTINS:
            self.register(copy.deepcopy(rt))
        for ns in SYSTEM_NAMESPACES:
            self.create(
                self.types[("", "namespaces")],
                "v1",
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )

    # ------------------------------------------------------------------------- registry
    def register(self, rt: ResourceType) -> None:
        with self.lock:
            self.types[rt.key] = rt
            self.objects.setdefault(rt.key, {})

    def unregister(self, key: tuple[str, str]) -> None:
        with self.lock:
            self.types.pop(key, None)
            for obj in list(self.objects.get(key, {}).values()):
                self._remove(key, obj)
            self.objects.pop(key, None)

    def find(self, group: str, version: str | None, plural: str) -> ResourceType | None:
        rt = self.types.get((group, plural))
        if rt is None or (version is not None and (version not in rt.versions or not rt.versions[version].served)):
            return None
        return rt

    def resolve(self, name: str) -> ResourceType:
        """'trainingruns.trainkit.dev', 'configmaps', 'tr', 'TrainingRun' -> its ResourceType."""
        with self.lock:
            plural, _, group = name.partition(".")
            if (group, plural) in self.types:
                return self.types[(group, plural)]
            for rt in sorted(self.types.values(), key=lambda t: (t.custom, t.group)):  # core first, as kubectl
                if name in (rt.plural, rt.kind, rt.singular, *rt.short_names) or (
                    group == rt.group and plural in (rt.singular, *rt.short_names)
                ):
                    return rt
        raise KeyError(name)

    def group_versions(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with self.lock:
            for rt in self.types.values():
                for v in rt.versions.values():
                    if v.served and v.name not in out.setdefault(rt.group, []):
                        out[rt.group].append(v.name)
        return out

    # ------------------------------------------------------------------------- events
    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _emit(self, type_: str, key, obj: dict, old: dict | None) -> None:
        ev = WatchEvent(type_, int(obj["metadata"]["resourceVersion"]), key, copy.deepcopy(obj), old)
        self.history.append(ev)
        while len(self.history) > self.history_limit:
            self.compacted_rv = self.history.popleft().rv
        for listener in list(self.listeners):
            listener(ev)

    def compact(self) -> None:
        """Forget all watch history (as etcd compaction does): older resourceVersions get 410 Gone."""
        with self.lock:
            self.history.clear()
            self.compacted_rv = self.rv

    def events_since(self, rv: int) -> list[WatchEvent]:
        if rv < self.compacted_rv:
            raise APIError(410, f"too old resource version: {rv} ({self.compacted_rv + 1})", "Expired")
        return [e for e in self.history if e.rv > rv]

    # ------------------------------------------------------------------------- reads
    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict:
        with self.lock:
            obj = self.objects.get(rt.key, {}).get((namespace or "", name))
            if obj is None:
                raise APIError(404, f'{rt.group_resource} "{name}" not found', "NotFound",
                               {"name": name, "group": rt.group, "kind": rt.plural})  # fmt: skip
            return copy.deepcopy(obj)

    def list(
        self, rt: ResourceType, namespace: str | None, label_selector=None, field_selector=None
    ) -> tuple[list[dict], str]:
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, rt)
        with self.lock:
            items = [
                copy.deepcopy(o)
                for (ns, _), o in sorted(self.objects.get(rt.key, {}).items())
                if (namespace is None or ns == namespace) and labels(o["metadata"].get("labels") or {}) and fields(o)
            ]
            return items, str(self.rv)

    def all_objects(self):
        with self.lock:
            for key, objs in self.objects.items():
                for obj in objs.values():
                    yield key, obj

    # ------------------------------------------------------------------------- validation
    def _check_meta(self, rt: ResourceType, obj: dict) -> None:
        meta = obj["metadata"]
        name = meta.get("name", "")
        causes = []
        pattern = _DNS_LABEL if rt.key == ("", "namespaces") else _DNS_SUBDOMAIN
        if not pattern.match(name) or len(name) > (63 if pattern is _DNS_LABEL else 253):
            what = "RFC 1123 label" if pattern is _DNS_LABEL else "RFC 1123 subdomain"
            causes.append(("metadata.name", f'Invalid value: "{name}": a lowercase {what} must consist of lower case '
                           "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"))  # fmt: skip
        for k, v in (meta.get("labels") or {}).items():
            if not isinstance(v, str) or len(v) > 63 or not _LABEL_VALUE.match(v):
                causes.append((f"metadata.labels", f'Invalid value: "{v}": a valid label must be an empty string or '
                               "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                               "alphanumeric character (63 characters at most)"))  # fmt: skip
            prefix, _, base = k.rpartition("/")
            if (
                not base
                or len(base) > 63
                or not _LABEL_NAME.match(base)
                or (prefix and not _DNS_SUBDOMAIN.match(prefix))
            ):
                causes.append(("metadata.labels", f'Invalid value: "{k}": name part must consist of alphanumeric '
                               "characters, '-', '_' or '.'"))  # fmt: skip
        refs = meta.get("ownerReferences") or []
        for i, ref in enumerate(refs):
            for f in ("apiVersion", "kind", "name", "uid"):
                if not (isinstance(ref, dict) and ref.get(f)):
                    causes.append((f"metadata.ownerReferences[{i}].{f}", "Invalid value: \"\": must not be empty" if f != "uid"
                                   else "Invalid value: \"\": uid must not be empty"))  # fmt: skip
        if sum(1 for r in refs if isinstance(r, dict) and r.get("controller")) > 1:
            causes.append(
                ("metadata.ownerReferences", "Invalid value: only one reference can have Controller set to true")
            )
        total = 0
        for k, v in (meta.get("annotations") or {}).items():
            if not isinstance(v, str):
                raise APIError(400, f"metadata.annotations[{k}]: annotation values must be strings")
            total += len(k.encode()) + len(v.encode())
        if total > 262144:  # why huge CRDs cannot be applied client-side (last-applied-configuration)
            causes.append(("metadata.annotations", "Too long: must have at most 262144 bytes"))
        if causes:
            raise self._invalid(rt, obj, causes)

    def _check_immutable(self, rt: ResourceType, old: dict, new: dict) -> None:
        """An immutable ConfigMap or Secret keeps its data (pkg/apis/core/validation/validation.go,
        ValidateConfigMapUpdate / ValidateSecretUpdate): only its metadata may change, and it can be deleted."""
        if rt.key not in (("", "configmaps"), ("", "secrets")) or old.get("immutable") is not True:
            return
        fields = ("immutable", "data", "binaryData") if rt.kind == "ConfigMap" else ("immutable", "data")
        causes = [(f, "Forbidden: field is immutable when `immutable` is set") for f in fields
                  if new.get(f) != old.get(f)]  # fmt: skip
        if causes:
            raise self._invalid(rt, new, causes)

    def _invalid(self, rt: ResourceType, obj: dict, causes: list[tuple[str, str]]) -> APIError:
        name = obj.get("metadata", {}).get("name", "")
        kind = rt.kind
        prefix = f"{kind}.{rt.group}" if rt.group else kind
        shown = [(f or "<nil>", m) for f, m in causes]  # a root-level rule has no field: the server prints <nil>
        message = f'{prefix} "{name}" is invalid: ' + (
            f"{shown[0][0]}: {shown[0][1]}" if len(shown) == 1 else "[" + ", ".join(f"{f}: {m}" for f, m in shown) + "]"
        )
        return APIError(422, message, "Invalid", {
            "name": name, "group": rt.group, "kind": kind,
            "causes": [{"reason": "FieldValueForbidden" if m.startswith("Forbidden:") else "FieldValueInvalid",
                        "message": m, "field": f} for f, m in causes],
        })  # fmt: skip

    def _admit_schema(
        self,
        rt: ResourceType,
        version: str,
        obj: dict,
        field_validation: str,
        warnings: list[str],
        old: dict | None = None,
    ) -> dict:
        schema = rt.versions[version].schema
        if rt.kind == "Secret":
            obj = self._secret_string_data(obj)
        if not schema:
            return obj
        pruned, dropped = openapi.prune(schema, obj)
        if dropped:
            if field_validation == "Strict":
                detail = ", ".join(f'unknown field "{p}"' for p in dropped)
                raise APIError(400, f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}: '
                                    f"strict decoding error: {detail}", "BadRequest")  # fmt: skip
            if field_validation != "Ignore":
                warnings.extend(f'unknown field "{p}"' for p in dropped)
        stored, issues = openapi.admit(schema, pruned, strict_fields=False, old=old)  # old: transition rules
        if issues:
            raise self._invalid(rt, stored, [(i.path, i.message) for i in issues])
        return stored

    @staticmethod
    def _secret_string_data(obj: dict) -> dict:
        if "stringData" in obj:
            obj = copy.deepcopy(obj)
            data = obj.setdefault("data", {}) or {}
            for k, v in (obj.pop("stringData") or {}).items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            obj["data"] = data
        return obj

    def _check_ns(self, rt: ResourceType, namespace: str | None) -> None:
        if not rt.namespaced:
            return
        ns = self.objects[("", "namespaces")].get(("", namespace or ""))
        if ns is None:
            raise APIError(
                404, f'namespaces "{namespace}" not found', "NotFound", {"name": namespace, "kind": "namespaces"}
            )
        if ns["metadata"].get("deletionTimestamp"):
            raise APIError(403, f"{rt.kind.lower()}s \"\" is forbidden: unable to create new content in namespace "
                                f"{namespace} because it is being terminated", "Forbidden")  # fmt: skip

    def _check_type(self, rt: ResourceType, version: str, body: Any) -> dict:
        if not isinstance(body, dict):
            raise APIError(400, "the body of the request must be a JSON object")
        body = copy.deepcopy(body)
        api_version = rt.api_version(version)
        if not body.get("kind"):
            body["kind"] = rt.kind
        if not body.get("apiVersion"):
            body["apiVersion"] = api_version
        if body["kind"] != rt.kind:
            raise APIError(400, f"the object provided is unrecognized (kind {body['kind']} is not {rt.kind})")
        if body["apiVersion"] != api_version:
            raise APIError(400, f"the API version in the data ({body['apiVersion']}) does not match the expected "
                                f"API version ({api_version})")  # fmt: skip
        if not isinstance(body.get("metadata") or {}, dict):
            raise APIError(400, "metadata must be an object")
        body["metadata"] = body.get("metadata") or {}
        return body

    # ------------------------------------------------------------------------- writes
    def _admit_policy_objects(self, rt: ResourceType, obj: dict) -> dict:
        """Defaults and validation of ValidatingAdmissionPolicies and their bindings (admission.py)."""
        if rt.key == admission.POLICIES:
            obj = admission.default_policy(obj)
            causes = admission.policy_causes(obj)
        elif rt.key == admission.BINDINGS:
            obj = admission.default_binding(obj)
            causes = admission.binding_causes(obj)
        else:
            return obj
        if causes:
            raise self._invalid(rt, obj, causes)
        return obj

    def _admit_policies(self, operation: str, rt: ResourceType, version: str, namespace: str | None, name: str,
                        obj: dict | None, old: dict | None, subresource: str | None, user: dict | None,
                        dry_run: bool, warnings: list[str]) -> None:  # fmt: skip
        """The ValidatingAdmissionPolicies bound to this write (admission.py): refused with the first denial."""
        req = admission.AdmissionRequest(operation, rt, version, subresource, namespace, name, obj, old,
                                         user or admission.user_info(None), dry_run)  # fmt: skip
        denials, warned = admission.admit(self, req, rt.versions[version].schema if rt.custom else None)
        warnings.extend(warned)
        if denials:
            code, message, reason, details = admission.denial_error(denials[0], req)
            raise APIError(code, message, reason, details)

    def create(self, rt: ResourceType, version: str, namespace: str | None, body: Any, *, field_validation: str = "Warn",
               dry_run: bool = False, warnings: list[str] | None = None, user: dict | None = None) -> dict:  # fmt: skip
        warnings = [] if warnings is None else warnings
        with self.lock:
            obj = self._check_type(rt, version, body)
            meta = obj["metadata"]
            if rt.namespaced:
                if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                    raise APIError(
                        400, "the namespace of the provided object does not match the namespace sent on the request"
                    )
                namespace = namespace or meta.get("namespace")
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
                namespace = None
            self._check_ns(rt, namespace)
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise self._invalid(
                        rt, obj, [("metadata.name", "Required value: name or generateName is required")]
                    )
                for _ in range(8):
                    candidate = meta["generateName"] + "".join(random.choices(_GEN_ALPHABET, k=5))
                    if (namespace or "", candidate) not in self.objects[rt.key]:
                        break
                meta["name"] = candidate
            if meta.get("resourceVersion"):  # etcd3 store: a plain error, which the handler makes a 500
                raise APIError(500, "Internal error occurred: resourceVersion should not be set on objects to be created",
                               "InternalError")  # fmt: skip
            for k in _SYSTEM_META + ("managedFields",):
                meta.pop(k, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_iso()
            if rt.custom or rt.generation:
                meta["generation"] = 1
            if rt.custom and rt.has_status(version):
                obj.pop("status", None)  # the main resource does not write status
            self._check_meta(rt, obj)
            obj = self._admit_schema(rt, version, obj, field_validation, warnings)
            if rt.key == ("", "namespaces"):
                obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
                obj["status"] = {"phase": "Active"}
                obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
            if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
                obj = self._crd_prepare(obj)
            obj = self._admit_policy_objects(rt, obj)
            self._admit_policies("CREATE", rt, version, namespace, (body.get("metadata") or {}).get("name") or "",
                                 obj, None, None, user, dry_run, warnings)  # fmt: skip
            if (namespace or "", obj["metadata"]["name"]) in self.objects[rt.key]:
                raise APIError(409, f'{rt.group_resource} "{obj["metadata"]["name"]}" already exists', "AlreadyExists",
                               {"name": obj["metadata"]["name"], "group": rt.group, "kind": rt.plural})  # fmt: skip
            if dry_run:
                return obj
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self.objects[rt.key][(namespace or "", obj["metadata"]["name"])] = obj
            self._emit("ADDED", rt.key, obj, None)
            if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
                self._crd_register(obj)
            return copy.deepcopy(obj)

    def update(self, rt: ResourceType, version: str, namespace: str | None, name: str, body: Any, *,
               subresource: str | None = None, field_validation: str = "Warn", dry_run: bool = False,
               require_rv: bool = True, warnings: list[str] | None = None, user: dict | None = None) -> dict:  # fmt: skip
        """PUT semantics (PATCH ends here too, with require_rv=False)."""
        warnings = [] if warnings is None else warnings
        with self.lock:
            old = self.get(rt, namespace, name)
            new = self._check_type(rt, version, body)
            meta = new["metadata"]
            if meta.get("name") and meta["name"] != name:
                raise APIError(
                    400, f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
                )
            if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
                raise APIError(
                    400, "the namespace of the provided object does not match the namespace sent on the request"
                )
            if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
                raise APIError(409, f'Operation cannot be fulfilled on {rt.group_resource} "{name}": Precondition failed: '
                                    f"UID in precondition: {meta['uid']}, UID in object meta: {old['metadata']['uid']}",
                               "Conflict", {"name": name, "group": rt.group, "kind": rt.plural})  # fmt: skip
            rv = meta.get("resourceVersion")
            if rv:
                if rv != old["metadata"]["resourceVersion"]:
                    raise APIError(409, f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object has '
                                        "been modified; please apply your changes to the latest version and try again",
                                   "Conflict", {"name": name, "group": rt.group, "kind": rt.plural})  # fmt: skip
            elif require_rv and rt.custom:
                raise self._invalid(
                    rt, old, [("metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")]
                )
            if subresource == "status":
                status = new.get("status")
                new = copy.deepcopy(old)
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
            elif subresource:
                raise APIError(404, f"the server could not find the requested resource ({subresource})")
            else:
                if rt.has_status(version):
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                    else:
                        new.pop("status", None)
                meta["name"], meta["resourceVersion"] = name, old["metadata"]["resourceVersion"]
                if rt.namespaced:
                    meta["namespace"] = namespace
                else:
                    meta.pop("namespace", None)
                for k in _SYSTEM_META:
                    if k in old["metadata"]:
                        meta[k] = old["metadata"][k]
                    else:
                        meta.pop(k, None)
                if rt.key == ("", "namespaces"):
                    new["spec"] = old.get("spec", {})  # spec.finalizers only through /finalize
            if old["metadata"].get("deletionTimestamp"):
                added = set(new["metadata"].get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
                if added:
                    raise self._invalid(rt, old, [("metadata.finalizers", "Forbidden: no new finalizers can be added if "
                                                   f"the object is being deleted, found new finalizers {sorted(added)}")])  # fmt: skip
            self._check_meta(rt, new)
            new = self._admit_schema(rt, version, new, field_validation, warnings, old)
            self._check_immutable(rt, old, new)
            if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
                new = self._crd_prepare(new)
            new = self._admit_policy_objects(rt, new)
            self._admit_policies("UPDATE", rt, version, namespace, name, new, old, subresource, user, dry_run, warnings)
            if "generation" in new["metadata"] and _spec_part(new) != _spec_part(old):
                new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            if _no_rv(new) == _no_rv(old):
                return old  # a no-op write keeps the resourceVersion and emits no event
            if dry_run:
                return new
            new["metadata"]["resourceVersion"] = self._next_rv()
            self.objects[rt.key][(namespace or "", name)] = new
            self._emit("MODIFIED", rt.key, new, old)
            if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
                self._crd_register(new)
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                return self._remove(rt.key, new) or copy.deepcopy(new)
            return copy.deepcopy(new)

    def patch(self, rt: ResourceType, version: str, namespace: str | None, name: str, patch: Any, content_type: str, *,
              subresource: str | None = None, field_validation: str = "Warn", dry_run: bool = False,
              field_manager: str | None = None, warnings: list[str] | None = None,
              user: dict | None = None) -> tuple[dict, bool]:  # fmt: skip
        """Returns (object, created)."""
        warnings = [] if warnings is None else warnings
        ct = content_type.split(";")[0].strip()
        with self.lock:
            if ct == "application/apply-patch+yaml":
                if not field_manager:
                    raise APIError(422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                                        "required for apply patch")  # fmt: skip
                if not isinstance(patch, dict):
                    raise APIError(400, "apply patch must be an object")
                try:
                    old = self.get(rt, namespace, name)
                except APIError as e:
                    if e.code != 404 or subresource:
                        raise
                    body = copy.deepcopy(patch)
                    body.setdefault("metadata", {})["name"] = name
                    return self.create(rt, version, namespace, body, field_validation=field_validation,
                                       dry_run=dry_run, warnings=warnings, user=user), True  # fmt: skip
                self._check_type(rt, version, patch)
                patched = merge_patch(old, patch)
            else:
                old = self.get(rt, namespace, name)
                if ct == "application/merge-patch+json":
                    if not isinstance(patch, dict):
                        raise APIError(400, "merge patch must be a JSON object")
                    patched = merge_patch(old, patch)
                elif ct == "application/json-patch+json":
                    patched = json_patch(old, patch)
                elif ct == "application/strategic-merge-patch+json":
                    if rt.custom:
                        raise APIError(415, "the body of the request was in an unknown format - accepted media types "
                                            "include: application/json-patch+json, application/merge-patch+json, "
                                            "application/apply-patch+yaml")  # fmt: skip
                    if not isinstance(patch, dict):
                        raise APIError(400, "strategic merge patch must be a JSON object")
                    patched = strategic_merge_patch(old, patch)
                else:
                    raise APIError(415, f"the body of the request was in an unknown format - accepted media types "
                                        f"include: application/json-patch+json, application/merge-patch+json, "
                                        f"application/apply-patch+yaml, application/strategic-merge-patch+json")  # fmt: skip
            if not isinstance(patched, dict):
                raise APIError(422, "the patched object is not an object")
            patched.setdefault("metadata", {})
            return self.update(rt, version, namespace, name, patched, subresource=subresource,
                               field_validation=field_validation, dry_run=dry_run, require_rv=False,
                               warnings=warnings, user=user), False  # fmt: skip

    def delete(self, rt: ResourceType, namespace: str | None, name: str, options: dict | None = None, *,
               dry_run: bool = False) -> dict:  # fmt: skip
        """Returns the object as stored after the call (with deletionTimestamp when finalizers hold it)."""
        options = options or {}
        with self.lock:
            obj = self.get(rt, namespace, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise APIError(409, f'Operation cannot be fulfilled on {rt.group_resource} "{name}": Precondition '
                                    f"failed: UID in precondition: {pre['uid']}, UID in object meta: "
                                    f"{obj['metadata']['uid']}", "Conflict")  # fmt: skip
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise APIError(409, f'Operation cannot be fulfilled on {rt.group_resource} "{name}": Precondition '
                                    f"failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                                    f"ResourceVersion in object meta: {obj['metadata']['resourceVersion']}",
                               "Conflict")  # fmt: skip
            if dry_run:
                return obj
            policy = options.get("propagationPolicy") or ("Orphan" if options.get("orphanDependents") else "Background")
            if policy not in ("Orphan", "Foreground", "Background"):
                raise self._invalid(rt, obj, [("propagationPolicy", f'Unsupported value: "{policy}": supported values: '
                                               '"Foreground", "Background", "Orphan"')])  # fmt: skip
            if rt.key == ("", "namespaces"):
                return self._delete_namespace(obj)
            # As the API server's generic store (staging/src/k8s.io/apiserver/pkg/registry/generic/registry/
            # store.go, deletionFinalizersForGarbageCollection): Orphan and Foreground put the GC's finalizer
            # on the object, which stays (deletionTimestamp set) until the garbage collector has orphaned or
            # deleted the dependents; Background deletes the object now and the GC collects dependents later.
            gc_finalizer = {"Orphan": ORPHAN_FINALIZER, "Foreground": FOREGROUND_FINALIZER}.get(policy)
            finalizers = list(obj["metadata"].get("finalizers") or [])
            if gc_finalizer and gc_finalizer not in finalizers:
                finalizers = [f for f in finalizers if f not in (ORPHAN_FINALIZER, FOREGROUND_FINALIZER)] + [
                    gc_finalizer
                ]
            if finalizers:
                if obj["metadata"].get("deletionTimestamp"):
                    if finalizers == list(obj["metadata"].get("finalizers") or []):
                        return obj  # already being deleted: nothing changes
                    old = copy.deepcopy(obj)
                    obj["metadata"]["finalizers"] = finalizers
                    obj["metadata"]["resourceVersion"] = self._next_rv()
                    self.objects[rt.key][(namespace or "", name)] = obj
                    self._emit("MODIFIED", rt.key, obj, old)
                    self._gc_schedule()
                    return copy.deepcopy(obj)
                old = copy.deepcopy(obj)
                meta = obj["metadata"]
                meta["finalizers"] = finalizers
                if "generation" in meta:
                    meta["generation"] += 1
                meta["deletionTimestamp"] = now_iso()
                meta["deletionGracePeriodSeconds"] = 0
                meta["resourceVersion"] = self._next_rv()
                self.objects[rt.key][(namespace or "", name)] = obj
                self._emit("MODIFIED", rt.key, obj, old)
                if gc_finalizer:
                    self._gc_schedule()
                return copy.deepcopy(obj)
            return self._remove(rt.key, obj) or obj

    def delete_collection(self, rt: ResourceType, namespace: str | None, label_selector=None, field_selector=None,
                          options: dict | None = None) -> list[dict]:  # fmt: skip
        with self.lock:
            items, _ = self.list(rt, namespace, label_selector, field_selector)
            return [self.delete(rt, o["metadata"].get("namespace"), o["metadata"]["name"], options) for o in items]

    # ------------------------------------------------------------------------- removal and GC
    def _remove(self, key, obj: dict) -> dict | None:
        """Remove from storage, emit DELETED, then garbage-collect; returns the object as deleted."""
        ns, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
        current = self.objects.get(key, {}).pop((ns or "", name), None)
        if current is None:
            return None
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._emit("DELETED", key, gone, current)
        if key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            spec = gone["spec"]
            self.unregister((spec["group"], spec["names"]["plural"]))
        self._gc_schedule()  # dependents go later, as the garbage collector (a controller) sees the owner gone
        if ns:
            nsobj = self.objects[("", "namespaces")].get(("", ns))
            if nsobj and nsobj["metadata"].get("deletionTimestamp"):
                self._finish_namespace(nsobj)
        return copy.deepcopy(gone)

    # The garbage collector, a controller in a real cluster (pkg/controller/garbagecollector/
    # garbagecollector.go): it runs after the request that deleted an owner, never inside it. With
    # `gc_delay` seconds (None: only when `collect_garbage()` is called) it runs one pass per wake-up,
    # so a cascade of n levels takes n passes, as the real one needs one sync per level.
    def _gc_schedule(self) -> None:
        if self.gc_delay is None or self._gc_closed:
            return
        self._gc_wake.set()
        if self._gc_thread is None:
            self._gc_thread = threading.Thread(target=self._gc_loop, name="kubeapi-gc", daemon=True)
            self._gc_thread.start()

    def _gc_loop(self) -> None:
        while not self._gc_closed:
            self._gc_wake.wait()
            if self._gc_closed:
                return
            time.sleep(self.gc_delay or 0)
            self._gc_wake.clear()
            with self.lock:
                if self._gc_closed:
                    return
                acted = self._gc_pass()
            if acted:
                self._gc_wake.set()  # more may be due (a cascade's next level, a finalizer now removable)

    def close(self) -> None:
        """Stop the garbage collector's thread (the store is being replaced or the server stops)."""
        self._gc_closed = True
        self._gc_wake.set()

    def collect_garbage(self) -> int:
        """Run the garbage collector now until nothing is left to do; returns how many actions it took."""
        total = 0
        with self.lock:
            while True:
                acted = self._gc_pass()
                total += acted
                if not acted:
                    return total

    def _dependents(self, uid: str) -> list[tuple[tuple[str, str], dict, dict]]:
        """(key, object, the ownerReference) of every object that names `uid` as an owner."""
        out = []
        for key, obj in list(self.all_objects()):
            for ref in obj["metadata"].get("ownerReferences") or []:
                if ref.get("uid") == uid:
                    out.append((key, obj, ref))
                    break
        return out

    def _owner_state(self, ref: dict, namespace: str) -> str:
        """'solid', 'dangling' (absent, or that name now has another uid), 'waiting' (being deleted in the
        foreground) or 'unknown' (a kind this server does not serve: never collected for it). The owner is
        looked up by apiVersion's group + kind + name, in the dependent's namespace when the kind is
        namespaced, and its uid compared (garbagecollector.go isDangling/classifyReferences)."""
        group = str(ref.get("apiVersion", "")).rpartition("/")[0]
        rt = next((t for t in self.types.values() if t.group == group and t.kind == ref.get("kind")), None)
        if rt is None:
            return "unknown"
        owner = self.objects.get(rt.key, {}).get((namespace if rt.namespaced else "", ref.get("name")))
        if owner is None or owner["metadata"]["uid"] != ref.get("uid"):
            return "dangling"
        meta = owner["metadata"]
        if meta.get("deletionTimestamp") and FOREGROUND_FINALIZER in (meta.get("finalizers") or []):
            return "waiting"
        return "solid"

    def _set_meta(self, key, obj: dict, **changes: Any) -> None:
        """A write by the garbage collector itself (ownerReferences, its finalizers): MODIFIED, or the
        object goes when its last finalizer is removed while it is being deleted."""
        old = copy.deepcopy(obj)
        for k, v in changes.items():
            if v:
                obj["metadata"][k] = v
            else:
                obj["metadata"].pop(k, None)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._emit("MODIFIED", key, obj, old)
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            self._remove(key, obj)

    def _gc_delete(self, key, obj: dict, policy: str) -> None:
        rt = self.types.get(key)
        if rt is None:
            return
        try:
            self.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"],
                        {"propagationPolicy": policy, "preconditions": {"uid": obj["metadata"]["uid"]}})  # fmt: skip
        except APIError:
            pass

    def _gc_pass(self) -> int:
        acted = 0
        for key, obj in list(self.all_objects()):
            if (
                self.objects.get(key, {}).get((obj["metadata"].get("namespace") or "", obj["metadata"]["name"]))
                is not obj
            ):
                continue  # removed earlier in this pass
            meta = obj["metadata"]
            uid = meta["uid"]
            finalizers = list(meta.get("finalizers") or [])
            if meta.get("deletionTimestamp") and ORPHAN_FINALIZER in finalizers:
                for dkey, dep, _ in self._dependents(uid):
                    refs = [r for r in dep["metadata"]["ownerReferences"] if r.get("uid") != uid]
                    self._set_meta(dkey, dep, ownerReferences=refs)
                self._set_meta(key, obj, finalizers=[f for f in finalizers if f != ORPHAN_FINALIZER])
                acted += 1
                continue
            if meta.get("deletionTimestamp") and FOREGROUND_FINALIZER in finalizers:
                deps = self._dependents(uid)
                for dkey, dep, _ in deps:
                    if not dep["metadata"].get("deletionTimestamp"):
                        self._gc_delete(
                            dkey, dep, "Foreground" if self._dependents(dep["metadata"]["uid"]) else "Background"
                        )
                        acted += 1
                blocking = [d for d in self._dependents(uid) if d[2].get("blockOwnerDeletion")]
                if not blocking:  # the owner goes once no dependent that blocks it is left
                    self._set_meta(key, obj, finalizers=[f for f in finalizers if f != FOREGROUND_FINALIZER])
                    acted += 1
                continue
            refs = meta.get("ownerReferences") or []
            if not refs or meta.get("deletionTimestamp"):
                continue
            states = [self._owner_state(r, meta.get("namespace") or "") for r in refs]
            if "unknown" in states:
                continue
            if "solid" in states:
                if len(set(states)) > 1:  # drop the references to owners that are gone or going
                    self._set_meta(key, obj, ownerReferences=[r for r, st in zip(refs, states) if st == "solid"])
                    acted += 1
                continue
            self._gc_delete(key, obj, "Foreground" if "waiting" in states and self._dependents(uid) else "Background")
            acted += 1
        return acted

    def _delete_namespace(self, ns: dict) -> dict:
        name = ns["metadata"]["name"]
        if not ns["metadata"].get("deletionTimestamp"):
            old = copy.deepcopy(ns)
            ns["metadata"]["deletionTimestamp"] = now_iso()
            ns["metadata"]["deletionGracePeriodSeconds"] = 0
            ns["status"] = {"phase": "Terminating"}
            ns["metadata"]["resourceVersion"] = self._next_rv()
            self._emit("MODIFIED", ("", "namespaces"), ns, old)
        for key, objs in list(self.objects.items()):
            rt = self.types.get(key)
            for (ons, oname), obj in list(objs.items()):
                if ons == name and rt is not None and not obj["metadata"].get("deletionTimestamp"):
                    try:
                        self.delete(rt, ons, oname)
                    except APIError:
                        pass
        return self._finish_namespace(ns) or copy.deepcopy(ns)

    def _finish_namespace(self, ns: dict) -> dict | None:
        name = ns["metadata"]["name"]
        if any(ons == name for key, objs in self.objects.items() for (ons, _) in objs):
            return None
        if ns["metadata"].get("finalizers"):
            return None
        return self._remove(("", "namespaces"), ns)

    # ------------------------------------------------------------------------- CRDs
    def _crd_prepare(self, crd: dict) -> dict:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        causes = []
        for f in ("group", "scope"):
            if not spec.get(f):
                causes.append((f"spec.{f}", "Required value"))
        if not names.get("plural") or not names.get("kind"):
            causes.append(("spec.names", "Required value: plural and kind are required"))
        if spec.get("scope") not in (None, "Namespaced", "Cluster"):
            causes.append(("spec.scope", f'Unsupported value: "{spec.get("scope")}"'))
        versions = spec.get("versions") or []
        if not versions:
            causes.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
        elif sum(1 for v in versions if v.get("storage")) != 1:
            causes.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
        if not causes and crd["metadata"]["name"] != f"{names['plural']}.{spec['group']}":
            causes.append(
                (
                    "metadata.name",
                    f'Invalid value: "{crd["metadata"]["name"]}": must be spec.names.plural+"."+spec.group',
                )
            )
        if not causes:  # the static CEL cost limits, checked at CRD create/update as upstream does
            causes += celcost.crd_cost_causes(spec)
        if causes:
            raise self._invalid(self.types[("apiextensions.k8s.io", "customresourcedefinitions")], crd, causes)
        crd = copy.deepcopy(crd)
        names = crd["spec"]["names"]
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
        storage = next(v["name"] for v in versions if v.get("storage"))
        crd["status"] = {
            "acceptedNames": copy.deepcopy(names),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found",
                 "lastTransitionTime": now_iso()},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now_iso()},
            ],
            "storedVersions": sorted({*((crd.get("status") or {}).get("storedVersions") or []), storage}),
        }  # fmt: skip
        return crd

    def _crd_register(self, crd: dict) -> None:
        spec, names = crd["spec"], crd["spec"]["names"]
        versions = {}
        for v in spec["versions"]:
            sub = v.get("subresources") or {}
            versions[v["name"]] = Version(
                v["name"], bool(v.get("served", True)), bool(v.get("storage")),
                (v.get("schema") or {}).get("openAPIV3Schema"), "status" in sub, "scale" in sub,
                v.get("additionalPrinterColumns") or [],
            )  # fmt: skip
        self.register(ResourceType(
            spec["group"], names["plural"], names.get("singular") or names["kind"].lower(), names["kind"],
            spec["scope"] == "Namespaced", versions, list(names.get("shortNames") or []),
            list(names.get("categories") or []), custom=True, generation=True,
        ))  # fmt: skip


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
