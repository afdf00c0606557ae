"""The CRD generated from trainkit.spec: committed copy in sync, structural, valid, and agreeing with
the Pydantic models on the examples in jobs/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.openapi import admit, apply_defaults, check_cel, validate_schema
from trainkit.cli import main
from trainkit.spec import parse_run
from trainkit.spec.crd import crd_files, training_run_crd, training_run_schema, training_sweep_schema

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "charts" / "trainkit" / "crds" / "trainingruns.yaml"


def test_committed_crds_match_generated():
    files = crd_files()
    assert sorted(files) == ["trainingdatas.yaml", "trainingruns.yaml", "trainingsweeps.yaml"]
    for name, text in files.items():
        assert (COMMITTED.parent / name).read_text() == text, (
            f"charts/trainkit/crds/{name} drifted from trainkit.spec: run `trainkit crd --write-dir charts/trainkit/crds`"
        )


def test_trainkit_crd_prints_it(capsys):
    assert main(["crd"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert docs[0]["metadata"]["name"] == "trainingruns.trainkit.dev"


def walk(node, path="$"):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.get("properties", {}).items():
            yield from walk(v, f"{path}.{k}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from walk(node[key], f"{path}.{key}")


@pytest.mark.parametrize("make_schema", [training_run_schema, training_sweep_schema])
def test_schema_is_structural(make_schema):
    schema = make_schema()
    text = yaml.safe_dump(schema)
    assert "$ref" not in text and "$defs" not in text
    problems = []
    for path, node in walk(schema):
        if path == "$.metadata":
            if set(node) - {"type"} and set(node.get("properties", {})) - {"name", "generateName"}:
                problems.append(f"{path}: metadata may only constrain name/generateName")
            continue
        for bad in ("anyOf", "oneOf", "allOf", "not", "$ref", "const", "title"):
            if bad in node:
                problems.append(f"{path}: has {bad}")
        if "type" not in node and not (
            node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
        ):
            problems.append(f"{path}: untyped")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties: false")
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            if bound in node and not isinstance(node[bound], bool):
                problems.append(f"{path}: {bound} must be a boolean in OpenAPI 3.0")
        if "default" in node:
            errors = validate_schema(node, apply_defaults(node, node["default"]))
            if errors:
                problems.append(f"{path}: default {node['default']!r} does not validate: {errors}")
    assert problems == []


def test_crd_shape():
    crd = training_run_crd()
    spec = crd["spec"]
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["tr"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Progress", "Loss", "Eval", "Age"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["phase"]["enum"] == ["Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended"]
    # KubeRay's values are open strings: a value a newer KubeRay adds must be storable (issue 12, item 3)
    assert status["properties"]["jobStatus"]["type"] == "string" and "enum" not in status["properties"]["jobStatus"]
    sources = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["data"]["properties"]["sources"]
    assert sources["x-kubernetes-list-type"] == "map" and sources["x-kubernetes-list-map-keys"] == ["name"]
    # Every printer column's path exists in the schema.
    root = version["schema"]["openAPIV3Schema"]
    for col in version["additionalPrinterColumns"]:
        node = root
        for part in col["jsonPath"].strip(".").split("."):
            if part in ("metadata",) and node is root:
                node = None
                break
            node = node["properties"][part]
        assert node is None or "type" in node


def test_kubernetes_validate_strict():
    exe = Path(sys.executable).with_name("kubernetes-validate")
    files = [str(COMMITTED.parent / name) for name in crd_files()]
    result = subprocess.run([str(exe), "--strict", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(files)


def training_run_documents():
    for path in sorted((REPO / "jobs").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "TrainingRun":
                yield pytest.param(doc, id=f"{path.name}:{doc['metadata']['name']}")


def example_documents(kind: str):
    for path in sorted((REPO / "jobs").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == kind:
                yield pytest.param(doc, id=f"{path.name}:{doc['metadata']['name']}")


@pytest.mark.parametrize("doc", list(example_documents("TrainingData")))
def test_training_data_examples_validate_against_schema_and_cel(doc):
    from trainkit.spec.crd import training_data_schema
    from trainkit.spec.load import parse_data

    schema = training_data_schema()
    stored, issues = admit(schema, doc)
    assert issues == []
    assert check_cel(schema, stored) == []
    assert parse_data(stored).spec == parse_data(doc).spec  # the API server's defaults are the models'


@pytest.mark.parametrize("doc", list(training_run_documents()))
def test_examples_validate_against_schema_and_cel(doc):
    schema = training_run_schema()
    stored, issues = admit(schema, doc)
    assert issues == []
    assert check_cel(schema, stored) == []
    # The API server's defaults agree with the Pydantic models' defaults.
    assert parse_run(stored).spec == parse_run(doc).spec


def test_api_server_defaults_equal_pydantic_defaults():
    minimal = {
        "apiVersion": "trainkit.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "minimal"},
        "spec": {
            "data": {"totalTokens": 10_000_000, "sources": [{"name": "a", "uri": "s3://bucket/a", "weight": 1.0}]},
            "training": {"microBatchSize": 8, "globalBatchSize": 64},
            "output": {"uri": "s3://bucket/runs/minimal"},
        },
    }
    stored, issues = admit(training_run_schema(), minimal)
    assert issues == []
    from_server = parse_run(stored).spec.model_dump()
    from_models = parse_run(minimal).spec.model_dump()
    assert from_server == from_models
    assert stored["spec"]["training"]["learningRate"]["schedule"] == "cosine"
    assert stored["spec"]["resources"]["workers"] == 1


def test_committed_field_reference_matches_models():
    from trainkit.spec.reference import render_spec_reference

    assert (REPO / "docs" / "spec.md").read_text() == render_spec_reference(), (
        "docs/spec.md drifted from trainkit.spec: run `trainkit crd --reference -o docs/spec.md`"
    )


def test_training_data_spec_is_immutable_on_update_only():
    """The CRD's transition rule (`self == oldSelf`), as the API server runs it: not on create, on every update."""
    from trainkit.spec.crd import training_data_schema

    schema = training_data_schema()
    doc = {
        "apiVersion": "trainkit.dev/v1alpha1",
        "kind": "TrainingData",
        "metadata": {"name": "edu"},
        "spec": {"inputs": ["s3://raw/edu/"], "output": {"uri": "s3://shards/"}},
    }
    stored, issues = admit(schema, doc)
    assert issues == []
    assert admit(schema, {**stored, "status": {"phase": "Ready"}}, old=stored)[1] == []
    changed = {**stored, "spec": {**stored["spec"], "inputs": ["s3://raw/web/"]}}
    (issue,) = admit(schema, changed, old=stored)[1]
    assert issue.path == "spec" and "spec is immutable" in issue.message
