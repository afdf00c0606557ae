"""Generate the TrainingRun CustomResourceDefinition from the Pydantic models.

Pydantic's JSON Schema is not a Kubernetes structural schema; `structural()` rewrites it:
$ref inlined, Optional[X] -> X + nullable, const -> enum, numeric exclusive bounds in OpenAPI 3.0 form,
titles dropped, object defaults so nested defaults apply, list-map keys for named lists. Cross-field
rules the JSON Schema cannot express are CEL `x-kubernetes-validations`, written below next to the
validators in `models.py` that enforce the same rules in Python.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from trainkit.spec.models import (
    API_GROUP,
    API_VERSION,
    DNS1035_LABEL,
    MAX_RUN_NAME_LENGTH,
    TrainingRunSpec,
)
from trainkit.spec.presets import MODEL_PRESETS
from trainkit.spec.ranking import MEAN_NAME
from trainkit.spec.status import TrainingRunStatus

DROP_KEYS = {"title", "$schema", "examples"}
# Lists of named items become list-maps: the API server enforces unique keys and merges by key.
LIST_MAP_KEYS = {"sources": ["name"], "tasks": ["name"], "env": ["name"], "conditions": ["type"]}


def _inline_refs(node: Any, defs: dict) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].split("/")[-1]]
            merged = {**_inline_refs(copy.deepcopy(target), defs), **{k: v for k, v in node.items() if k != "$ref"}}
            return _inline_refs(merged, defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _rewrite(node: Any) -> Any:
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in DROP_KEYS}
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"cannot express a union of {len(variants)} types structurally: {variants}")
        nullable = True
        merged = {**variants[0], **node}
        if merged.get("default", ...) is None:
            del merged["default"]
        node = {k: v for k, v in merged.items() if k not in DROP_KEYS}
        node["nullable"] = nullable
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[plain] = node.pop(bound)
            node[bound] = True
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _rewrite(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _rewrite(value)
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" in out:
        out.pop("additionalProperties", None)  # structural: never both (unknown fields are pruned)
        required = set(out.get("required", []))
        for name, sub in out["properties"].items():
            # An object property with nested defaults needs `default: {}` for them to apply when omitted.
            if (
                sub.get("type") == "object"
                and name not in required
                and "default" not in sub
                and not sub.get("nullable")
            ):
                sub["default"] = {}
            if sub.get("type") == "array" and name in LIST_MAP_KEYS:
                sub["x-kubernetes-list-type"] = "map"
                sub["x-kubernetes-list-map-keys"] = LIST_MAP_KEYS[name]
    return out


def structural(model: type[BaseModel]) -> dict:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _rewrite(_inline_refs(raw, raw.get("$defs", {})))


# ----------------------------------------------------------------------------------- CEL rules
CREDENTIAL_RE2 = "(?i)(secret|password|passwd|token|access[-_]?key|credential|private[-_]?key)"
URI_SCHEME_RULE = "!self.contains('://') || self.startsWith('s3://') || self.startsWith('file://')"
URI_RULES = [
    {"rule": URI_SCHEME_RULE, "message": "unknown URI scheme; use s3://, file:// or a local path"},
    {
        "rule": "!self.matches('^s3://[^/]*[@:]')",
        "message": "URIs must not carry credentials; name a Secret in storage.credentialsSecret",
    },
]


def _preset_map(field: str) -> str:
    return "{" + ", ".join(f"'{name}': {arch[field]}" for name, arch in MODEL_PRESETS.items()) + "}"


def _resolved(field: str, override: str) -> str:
    """CEL for the model's value of `field`: the override if set, else the preset's."""
    return (
        f"(has(self.model.overrides) && has(self.model.overrides.{override}) ? self.model.overrides.{override} "
        f": {_preset_map(field)}[self.model.preset])"
    )


def _shards_ref_rules(noun: str) -> list[dict]:
    """The CEL rules of a list of ShardsRef (sources, validation targets): what its pydantic validators check."""
    return [
        {
            "rule": "self.all(s, has(s.uri) || has(s.dataset))",
            "message": f"every {noun} needs uri (prepared shards) or dataset (a TrainingData's name)",
        },
        {"rule": "self.all(a, self.exists_one(b, b.name == a.name))", "message": f"{noun} names must be unique"},
        {
            "rule": f"self.all(s, s.name != '{MEAN_NAME}')",
            "message": f"'{MEAN_NAME}' is reserved (val.{MEAN_NAME} is the mean over the sources)",
        },
    ]


def run_spec_rules() -> dict[tuple[str, ...], list[dict]]:
    """CEL rules of a TrainingRunSpec, keyed by the path (property names, "[]" for items) below the spec."""
    workers = "(has(self.resources) && has(self.resources.workers) ? self.resources.workers : 1)"
    return {
        (): [
            {
                "rule": f"self.training.globalBatchSize % (self.training.microBatchSize * {workers}) == 0",
                "message": "training.globalBatchSize must be divisible by training.microBatchSize x resources.workers",
                "fieldPath": ".training.globalBatchSize",
            },
            {
                "rule": f"!has(self.data.seqLength) || self.data.seqLength <= {_resolved('n_positions', 'nPositions')}",
                "message": "data.seqLength is above the model's context (nPositions)",
                "fieldPath": ".data.seqLength",
            },
            {
                "rule": "self.data.totalTokens >= self.training.globalBatchSize * "
                "(has(self.data.seqLength) ? self.data.seqLength : 1024)",
                "message": "data.totalTokens must cover at least one step (globalBatchSize x seqLength tokens)",
                "fieldPath": ".data.totalTokens",
            },
        ],
        ("model",): [
            {
                "rule": "(has(self.overrides) && has(self.overrides.nEmbd) ? self.overrides.nEmbd : "
                f"{_preset_map('n_embd')}[self.preset]) % (has(self.overrides) && has(self.overrides.nHead) ? "
                f"self.overrides.nHead : {_preset_map('n_head')}[self.preset]) == 0",
                "message": "the model's hidden size must be divisible by its number of heads",
            }
        ],
        ("data", "sources"): [
            {"rule": "self.all(s, s.weight > 0.0)", "message": "every source weight must be > 0"},
            *_shards_ref_rules("source"),
        ],
        ("data", "validationTargets"): _shards_ref_rules("validation target"),
        ("data",): [
            {
                "rule": "!has(self.validationTargets) || "
                "self.validationTargets.all(t, !self.sources.exists(s, s.name == t.name))",
                "message": "a validation target cannot have a source's name (val.<name> must be one set)",
                "fieldPath": ".validationTargets",
            }
        ],
        ("scheduling",): [
            {
                "rule": "!(has(self.suspend) && self.suspend && has(self.queueName))",
                "message": "scheduling.suspend cannot be combined with scheduling.queueName: Kueue unsuspends the "
                "RayJob when it admits it",
            }
        ],
        ("data", "sources", "[]", "uri"): URI_RULES,
        ("data", "validationTargets", "[]", "uri"): URI_RULES,
        ("output", "uri"): URI_RULES,
        ("training", "learningRate"): [
            {
                "rule": "!has(self.final) || !has(self.peak) || self.final <= self.peak",
                "message": "final learning rate must not exceed the peak",
            },
            {
                "rule": "!(has(self.warmupSteps) && has(self.warmupFraction))",
                "message": "set warmupSteps or warmupFraction, not both",
            },
        ],
        ("resources", "env", "[]"): [
            {
                "rule": f"!self.name.matches('{CREDENTIAL_RE2}')",
                "message": "credentials must come from the Secret named in storage.credentialsSecret, not env",
            }
        ],
    }


def _node_at(schema: dict, path: tuple[str, ...]) -> dict:
    node = schema
    for part in path:
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def _root_schema(spec: dict, status_model: type[BaseModel], max_name: int, why: str) -> dict:
    status = structural(status_model)
    status.pop("default", None)
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {max_name}",
                "message": f"metadata.name must be at most {max_name} characters ({why})",
            },
            {
                "rule": f"self.metadata.name.matches('{DNS1035_LABEL}')",
                "message": "metadata.name must be a DNS-1035 label",
            },
        ],
    }


def _attach(root: dict, prefix: tuple[str, ...], rules_by_path: dict[tuple[str, ...], list[dict]]) -> None:
    for path, rules in rules_by_path.items():
        if rules:
            _node_at(root, prefix + path).setdefault("x-kubernetes-validations", []).extend(rules)


def training_run_schema() -> dict:
    root = _root_schema(
        structural(TrainingRunSpec),
        TrainingRunStatus,
        MAX_RUN_NAME_LENGTH,
        "names of the RayJob, RayCluster and Services derive from it",
    )
    _attach(root, ("spec",), run_spec_rules())
    return root


def training_sweep_schema() -> dict:
    from trainkit.spec.packing import MAX_PACKING_SWEEP_NAME_LENGTH
    from trainkit.spec.sweep import MAX_SWEEP_NAME_LENGTH, TrainingSweepSpec
    from trainkit.spec.sweep_status import TrainingSweepStatus

    root = _root_schema(
        structural(TrainingSweepSpec), TrainingSweepStatus, MAX_SWEEP_NAME_LENGTH, "its runs add '-NNN'"
    )
    _attach(root, ("spec", "template"), run_spec_rules())
    root["x-kubernetes-validations"].append(
        {
            "rule": f"!has(self.spec.packing) || self.metadata.name.size() <= {MAX_PACKING_SWEEP_NAME_LENGTH}",
            "message": f"metadata.name must be at most {MAX_PACKING_SWEEP_NAME_LENGTH} characters with spec.packing "
            "(its packs add '-pNNN')",
        }
    )
    _attach(
        root,
        ("spec",),
        {
            ("mixtures",): [
                {
                    "rule": "[has(self.explicit), has(self.grid), has(self.dirichlet)].filter(x, x).size() == 1",
                    "message": "set exactly one of explicit, grid or dirichlet",
                }
            ],
            ("mixtures", "explicit", "[]", "weights"): [
                {
                    "rule": "self.exists(k, self[k] > 0.0)",
                    "message": "mixture weights cannot be normalised: none is > 0",
                }
            ],
        },
    )
    return root


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Progress",
        "type": "number",
        "jsonPath": ".status.progress.percent",
        "description": "percent of steps done",
    },
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
    {"name": "Eval", "type": "number", "jsonPath": ".status.eval.average", "description": "average eval score"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _crd(kind: str, plural: str, short: list[str], schema: dict, columns: list[dict]) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/name": "trainkit", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["trainkit"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


SWEEP_PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Runs", "type": "integer", "jsonPath": ".status.runs.total"},
    {"name": "Active", "type": "integer", "jsonPath": ".status.runs.active"},
    {"name": "Done", "type": "integer", "jsonPath": ".status.runs.succeeded"},
    {"name": "Best", "type": "string", "jsonPath": ".status.best.run"},
    {"name": "Score", "type": "number", "jsonPath": ".status.best.value"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def training_run_crd() -> dict:
    return _crd("TrainingRun", "trainingruns", ["tr"], training_run_schema(), PRINTER_COLUMNS)


def training_sweep_crd() -> dict:
    return _crd("TrainingSweep", "trainingsweeps", ["tsw"], training_sweep_schema(), SWEEP_PRINTER_COLUMNS)


DATA_INPUT_RULES = [
    {
        "rule": "!self.contains('://') || ['s3://', 'gs://', 'gcs://', 'file://', 'hf://'].exists(p, self.startsWith(p))",
        "message": "unknown URI scheme; use s3://, gs://, file://, hf://datasets/ORG/NAME[@revision] or a local path",
    },
    {
        "rule": "!self.startsWith('hf://') || self.matches('^hf://datasets/[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9]')",
        "message": "hf:// inputs must be hf://datasets/ORG/NAME[@revision][/path]",
    },
    {
        "rule": "!self.matches('^(s3|gs|gcs)://[^/]*[@:]')",
        "message": "URIs must not carry credentials; name a Secret in storage.credentialsSecret",
    },
]


def training_data_schema() -> dict:
    from trainkit.spec.data import MAX_DATA_NAME_LENGTH, TrainingDataSpec, TrainingDataStatus

    root = _root_schema(
        structural(TrainingDataSpec),
        TrainingDataStatus,
        MAX_DATA_NAME_LENGTH,
        "names of its prepare RayJob, RayCluster and Services derive from it",
    )
    _attach(
        root,
        ("spec",),
        {
            ("inputs", "[]"): DATA_INPUT_RULES,
            ("inputs",): [{"rule": "self.all(a, self.exists_one(b, b == a))", "message": "inputs must not repeat"}],
            (): [
                {
                    # What the shards are is fixed by the content hash of this spec: a changed spec is new data.
                    "rule": "self == oldSelf",
                    "message": "spec is immutable: create a new TrainingData for different inputs, tokenizer or filter",
                }
            ],
            ("output", "uri"): URI_RULES,
            ("filter",): [
                {
                    "rule": "has(self.languageField) == has(self.language)",
                    "message": "set filter.languageField and filter.language together",
                }
            ],
        },
    )
    return root


DATA_PRINTER_COLUMNS: list[dict] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason"},
    {"name": "Files", "type": "integer", "jsonPath": ".status.progress.filesDone", "description": "input files done"},
    {"name": "Tokens", "type": "integer", "jsonPath": ".status.totalTokens"},
    {"name": "Hash", "type": "string", "jsonPath": ".status.contentHash", "description": "content address"},
    {"name": "URI", "type": "string", "jsonPath": ".status.uri", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def training_data_crd() -> dict:
    return _crd("TrainingData", "trainingdatas", ["tdata"], training_data_schema(), DATA_PRINTER_COLUMNS)


def all_crds() -> list[dict]:
    """Every CRD the bundle ships, in the order `trainkit crd` prints them."""
    return [training_run_crd(), training_sweep_crd(), training_data_crd()]


def render_yaml(crds: list[dict]) -> str:
    header = "# Generated by `trainkit crd` from trainkit.spec; do not edit by hand.\n"
    return header + "---\n".join(yaml.safe_dump(c, sort_keys=False, width=120) for c in crds)


def crd_files() -> dict[str, str]:
    """The chart's crds/ folder: one file per CRD, named after its plural."""
    return {f"{c['spec']['names']['plural']}.yaml": render_yaml([c]) for c in all_crds()}
