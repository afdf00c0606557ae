"""docs/spec.md, rendered from the same structural schema the CRD carries, so the reference cannot
drift from the code (a test compares the committed file with this rendering)."""

from __future__ import annotations

import json

from trainkit.spec.crd import structural


def _type(node: dict) -> str:
    t = node.get("type", "any")
    if t == "array":
        return f"list of {_type(node.get('items', {}))}"
    if t == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type(node['additionalProperties'])}"
    return t


def _constraints(node: dict) -> str:
    out = []
    if "enum" in node:
        out.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for key, sym in (("minimum", ">"), ("maximum", "<")):
        if key in node:
            exclusive = node.get("exclusiveM" + key[1:])
            out.append(f"{sym}{'' if exclusive else '='} {node[key]:g}")
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ):
        if key in node:
            out.append(f"{label} {node[key]}")
    if "pattern" in node:
        out.append("pattern `" + node["pattern"].replace("|", "\\|") + "`")
    return "; ".join(out)


def _rows(node: dict, path: str, required: set[str], skip: frozenset[str] = frozenset()):
    for name, sub in node.get("properties", {}).items():
        p = f"{path}.{name}" if path else name
        if p in skip:
            yield f"| `{p}` | object | yes |  | a TrainingRun spec, as above |"
            continue
        default = sub.get("default")
        shown_default = "" if default in (None, {}) else f"`{json.dumps(default)}`"
        req = "yes" if name in required else ""
        desc = "; ".join(x for x in (sub.get("description", "").rstrip("."), _constraints(sub)) if x)
        yield f"| `{p}` | {_type(sub)} | {req} | {shown_default} | {desc} |"
        target = sub.get("items", sub) if sub.get("type") == "array" else sub
        if target.get("type") == "object" and "properties" in target:
            suffix = "[]" if sub.get("type") == "array" else ""
            yield from _rows(target, p + suffix, set(target.get("required", [])))


def render_reference(model, title: str, intro: str, skip: frozenset[str] = frozenset()) -> str:
    schema = structural(model)
    lines = [
        f"{title}",
        "",
        intro,
        "",
        "| field | type | required | default | constraints and meaning |",
        "| --- | --- | --- | --- | --- |",
        *_rows(schema, "spec", set(schema.get("required", [])), skip),
    ]
    return "\n".join(lines) + "\n"


def render_spec_reference() -> str:
    from trainkit.spec.models import TrainingRunSpec
    from trainkit.spec.sweep import TrainingSweepSpec

    run = render_reference(
        TrainingRunSpec,
        "# TrainingRun spec reference",
        "Generated from `trainkit.spec` by `trainkit crd --reference`; a test keeps it in sync. "
        "Cross-field rules (checked by `trainkit validate` and by the CRD's CEL rules): source names unique, "
        "weights > 0 (token proportions, normalised), `data.seqLength` <= the model's context, "
        "`training.globalBatchSize` divisible by `microBatchSize x resources.workers`, `learningRate.final` <= `peak`, "
        "`warmupSteps` or `warmupFraction` (not both), `data.totalTokens` >= one step, no credentials anywhere "
        "(name a Secret in `storage.credentialsSecret`). `metadata.name`: a DNS-1035 label of at most 40 characters.",
    )
    sweep = render_reference(
        TrainingSweepSpec,
        "## TrainingSweep spec",
        "A base run (`template`) and the mixtures to try: exactly one of `mixtures.explicit`, `mixtures.grid` or "
        "`mixtures.dirichlet`. Run `i` is named `<sweep>-<i:03d>` and writes to `<template.output.uri>/<run>/`; a source "
        "whose weight is 0 in a mixture is left out of that run. `metadata.name`: at most 36 characters.",
        skip=frozenset({"spec.template"}),
    )
    return run + "\n" + sweep
