"""KubeRay's RayJob structural schema, trimmed to what trainkit emits, as test data for the API test server.

A real cluster stores a RayJob pruned and type-checked by KubeRay's CRD
(ray-project/kuberay ray-operator/config/crd/bases/ray.io_rayjobs.yaml): a misspelt or mistyped field
that `build_rayjob` or a mutable patch writes is silently dropped there (a `Warning: unknown field`
header) or refused (422). The full schema is 1.3 MB (pod templates); tests/data/kuberay/ holds it
trimmed, descriptions removed, keeping every node small enough whole (< 2 KB: the whole status, small
spec fields) and, inside the pod templates, only the properties trainkit's RayJobs use. The upstream
file is not available offline; regenerate from a KubeRay checkout when build_rayjob starts using a new field:

    PYTHONPATH=python:operator:tests python -m support.kuberay_schema <kuberay>/ray-operator/config/crd/bases/ray.io_rayjobs.yaml v1.4.2

Regeneration fails, naming the field, when trainkit emits something KubeRay's schema does not declare.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).resolve().parents[1] / "data" / "kuberay"
WHOLE_BELOW_BYTES = 2048
OLDEST_TAG = "v1.4.2"  # the oldest KubeRay the chart supports (Chart.yaml trainkit.dev/requires-kuberay)
# The API test server's default: the newest KubeRay we test against, which has rayClusterSpec.authOptions
# (since v1.5.1), so the operator's default config (Ray token auth on) is stored unpruned.
DEFAULT_TAG = "v1.7.0"
TOKEN_AUTH_SINCE = (1, 5, 1)


def has_token_auth(tag: str) -> bool:
    """Whether KubeRay `tag` knows rayClusterSpec.authOptions (ray-operator/apis/ray/v1/raycluster_types.go)."""
    return tuple(int(x) for x in tag.lstrip("v").split(".")[:3]) >= TOKEN_AUTH_SINCE


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _merge(a: dict | None, b: dict) -> dict:
    if a is None:
        return b
    out = dict(a)
    if "properties" in b:
        props = dict(out.get("properties") or {})
        for k, v in b["properties"].items():
            props[k] = _merge(props.get(k), v) if k in props else v
        out["properties"] = props
    for key in ("items", "additionalProperties"):
        if isinstance(b.get(key), dict):
            out[key] = _merge(out.get(key) if isinstance(out.get(key), dict) else None, b[key])
    return out


def trim(schema: dict, value: Any, path: str = "") -> dict:
    """`schema` keeping only what `value` uses (nodes under WHOLE_BELOW_BYTES stay whole). Raises
    ValueError naming a field of `value` the schema does not declare."""
    if len(json.dumps(schema)) < WHOLE_BELOW_BYTES or schema.get("x-kubernetes-preserve-unknown-fields"):
        return copy.deepcopy(schema)
    out = {k: copy.deepcopy(v) for k, v in schema.items() if k not in ("properties", "items", "additionalProperties")}
    if isinstance(value, dict) and "properties" in schema:
        out["properties"] = {}
        for k, v in value.items():
            if k not in schema["properties"]:
                raise ValueError(f"{path}.{k}: not a field of KubeRay's RayJob schema")
            out["properties"][k] = trim(schema["properties"][k], v, f"{path}.{k}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        merged: dict | None = None
        for k, v in value.items():
            merged = _merge(merged, trim(schema["additionalProperties"], v, f"{path}.{k}"))
        out["additionalProperties"] = merged or {"type": schema["additionalProperties"].get("type", "object")}
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        merged = None
        for i, v in enumerate(value):
            merged = _merge(merged, trim(schema["items"], v, f"{path}[{i}]"))
        out["items"] = merged or {"type": schema["items"].get("type", "object")}
    elif "properties" in schema or "items" in schema or "additionalProperties" in schema:
        for key in ("properties", "items", "additionalProperties"):
            if key in schema:
                out[key] = {} if key == "properties" else {"type": "object"}
    return out


def emitted_rayjobs(token_auth: bool = True) -> list[dict]:
    """RayJobs build_rayjob makes, with every optional branch on (env, secrets, tolerations, queues...).
    `token_auth` False: as configured for KubeRay < 1.5.1 (no authOptions in its CRD)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from test_operator_builders import seed_run  # the unit tests' seed run
    from trainkit.spec import parse_spec
    from trainkit_operator.builders import build_rayjob
    from trainkit_operator.config import OperatorConfig

    config = OperatorConfig(service_account="trainer", ray_token_auth=token_auth)
    runs = [
        seed_run(
            **{
                "resources.env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
                "resources.imagePullSecrets": ["reg"],
                "resources.tolerations": [
                    {"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}
                ],
                "scheduling.priorityClassName": "high",
                "scheduling.activeDeadlineSeconds": 3600,
                "storage.region": "us-east-1",
                "storage.endpoint": "http://minio:9000",
            }
        ),
        seed_run(**{"scheduling.queueName": None, "scheduling.volcanoQueue": "q", "resources.gpusPerWorker": 0}),
        # suspend is the user's only without Kueue (with a queueName it is refused: Kueue unsuspends on admission)
        seed_run(**{"scheduling.queueName": None, "scheduling.suspend": True}),
    ]
    return [build_rayjob(run, parse_spec(run["spec"])[0], config) for run in runs]


def trimmed_schema(upstream_crd: dict, tag: str) -> dict:
    version = next(v for v in upstream_crd["spec"]["versions"] if v["name"] == "v1")
    full = _strip(version["schema"]["openAPIV3Schema"])
    merged: dict | None = None
    for rj in emitted_rayjobs(token_auth=has_token_auth(tag)):
        merged = _merge(merged, trim(full, {k: v for k, v in rj.items() if k in ("spec",)}, ""))
    assert merged is not None
    merged["properties"]["status"] = full["properties"]["status"]  # small: whole
    for k in ("apiVersion", "kind", "metadata"):
        merged["properties"][k] = full["properties"][k]
    return {"source": f"ray-project/kuberay {tag} ray-operator/config/crd/bases/ray.io_rayjobs.yaml (spec.versions[v1])",
            "note": "trimmed by tests/support/kuberay_schema.py: descriptions dropped, pod templates cut to the fields trainkit emits",
            "openAPIV3Schema": merged}  # fmt: skip


def load(tag: str = DEFAULT_TAG) -> dict:
    return json.loads((DATA / f"ray.io_rayjobs.{tag}.trimmed.json").read_text())["openAPIV3Schema"]


if __name__ == "__main__":
    source, tag = sys.argv[1], sys.argv[2]
    out = trimmed_schema(yaml.safe_load(Path(source).read_text()), tag)
    DATA.mkdir(parents=True, exist_ok=True)
    target = DATA / f"ray.io_rayjobs.{tag}.trimmed.json"
    target.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(target, target.stat().st_size)
