"""Bad TrainingRun specs: each is rejected by `trainkit validate` with a line naming the field, and
each one a structural schema can express is rejected by the generated CRD's schema and CEL rules too
(as the API server would, with strict field validation, which kubectl uses by default)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from support.openapi import admit
from trainkit.cli import main
from trainkit.spec.crd import training_run_schema

REPO = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((REPO / "jobs" / "gpt2-70m-50-30-20.yaml").read_text())


def setpath(doc: dict, path: str, value) -> None:
    """Set (or, with value=DELETE, remove) a dotted path like spec.data.sources[0].weight."""
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node = doc
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    last = parts[-1]
    key = int(last[1:-1]) if last.startswith("[") else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value


DELETE = object()

# (id, {path: value}, text the error line must contain, caught by the CRD schema too)
BAD_SPECS = [
    ("weight-zero", {"spec.data.sources[0].weight": 0}, "spec.data.sources[0].weight", True),
    ("weight-negative", {"spec.data.sources[1].weight": -0.3}, "spec.data.sources[1].weight", True),
    ("weight-not-number", {"spec.data.sources[0].weight": "half"}, "spec.data.sources[0].weight", True),
    ("weight-numeric-string", {"spec.data.sources[0].weight": "0.5"}, "spec.data.sources[0].weight", True),
    ("weight-null", {"spec.data.sources[2].weight": None}, "spec.data.sources[2].weight", True),
    ("duplicate-source-names", {"spec.data.sources[1].name": "finepdfs"}, "duplicate source name 'finepdfs'", True),
    ("no-sources", {"spec.data.sources": []}, "spec.data.sources", True),
    (
        "validation-target-named-like-a-source",
        {"spec.data.validationTargets": [{"name": "finepdfs", "uri": "s3://bucket/x"}]},
        "validationTargets: duplicate name 'finepdfs'",
        True,
    ),
    ("source-named-mean", {"spec.data.sources[0].name": "mean"}, "'mean' is reserved", True),
    (
        "validation-target-named-mean",
        {"spec.data.validationTargets": [{"name": "mean", "uri": "s3://bucket/x"}]},
        "'mean' is reserved",
        True,
    ),
    (
        "validation-target-without-shards",
        {"spec.data.validationTargets": [{"name": "downstream"}]},
        "set uri (prepared shards) or dataset",
        True,
    ),
    (
        "validation-target-credentials-in-uri",
        {"spec.data.validationTargets": [{"name": "downstream", "uri": "s3://AKIAX:secret@bucket/x"}]},
        "credentials",
        True,
    ),
    ("sources-missing", {"spec.data.sources": DELETE}, "spec.data.sources", True),
    ("unknown-preset", {"spec.model.preset": "gpt2-7b"}, "spec.model.preset", True),
    ("seq-above-context", {"spec.data.seqLength": 2048}, "above the model's context 1024", True),
    ("global-batch-not-divisible", {"spec.training.globalBatchSize": 121}, "not divisible", True),
    ("global-batch-vs-workers", {"spec.resources.workers": 7}, "resources.workers", True),
    ("negative-lr", {"spec.training.learningRate.peak": -1.0e-4}, "spec.training.learningRate.peak", True),
    ("final-lr-above-peak", {"spec.training.learningRate.final": 1.0e-3}, "above the peak", True),
    ("both-warmups", {"spec.training.learningRate.warmupFraction": 0.02}, "warmupSteps or warmupFraction", True),
    ("unknown-precision", {"spec.training.precision": "fp8"}, "spec.training.precision", True),
    ("name-not-dns-label", {"metadata.name": "GPT2_Run"}, "metadata.name", True),
    ("name-starts-with-digit", {"metadata.name": "70m-run"}, "metadata.name", True),
    ("name-too-long", {"metadata.name": "a" * 41}, "at most 40", True),
    ("output-unknown-scheme", {"spec.output.uri": "gs://bucket/runs/x"}, "unknown URI scheme 'gs://'", True),
    ("source-unknown-scheme", {"spec.data.sources[0].uri": "http://example.org/x"}, "spec.data.sources[0].uri", True),
    ("credentials-in-uri", {"spec.output.uri": "s3://AKIAX:secret@bucket/x"}, "credentials", True),
    ("credentials-inline-storage", {"spec.storage.secretAccessKey": "abc"}, "credentials must not be written", True),
    ("credentials-inline-password", {"spec.storage.password": "hunter2"}, "spec.storage.password", True),
    (
        "credentials-in-env",
        {"spec.resources.env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]},
        "credential",
        True,
    ),
    ("typo-top-level", {"spec.trainng": {"seed": 1}}, "spec.trainng: unknown field", True),
    (
        "typo-nested",
        {"spec.training.learningrate": {"peak": 1.0e-3}},
        "spec.training.learningrate: unknown field",
        True,
    ),
    ("micro-batch-zero", {"spec.training.microBatchSize": 0}, "spec.training.microBatchSize", True),
    ("dropout-above-one", {"spec.training.dropout": 1.5}, "spec.training.dropout", True),
    ("betas-three", {"spec.training.optimizer.betas": [0.9, 0.95, 0.99]}, "spec.training.optimizer.betas", True),
    ("beta-one", {"spec.training.optimizer.betas": [0.9, 1.0]}, "spec.training.optimizer.betas[1]", True),
    ("eval-limit-zero", {"spec.eval.tasks": [{"name": "piqa", "limit": 0}]}, "spec.eval.tasks[0].limit", True),
    ("eval-duplicate-tasks", {"spec.eval.tasks": [{"name": "piqa"}, {"name": "piqa"}]}, "duplicate eval task", True),
    (
        "toleration-operator",
        {"spec.resources.tolerations[0].operator": "Maybe"},
        "spec.resources.tolerations[0].operator",
        True,
    ),
    ("memory-not-quantity", {"spec.resources.memoryPerWorker": "lots"}, "spec.resources.memoryPerWorker", True),
    ("heads-do-not-divide", {"spec.model.overrides": {"nEmbd": 500}}, "not divisible by 8 heads", True),
    ("queue-name-invalid", {"spec.scheduling.queueName": "GPU_Queue"}, "spec.scheduling.queueName", True),
    ("endpoint-not-http", {"spec.storage.endpoint": "ftp://minio:9000"}, "spec.storage.endpoint", True),
    (
        "pull-secret-invalid",
        {"spec.resources.imagePullSecrets": ["My Secret"]},
        "spec.resources.imagePullSecrets[0]",
        True,
    ),
    ("checkpoint-every-zero", {"spec.checkpoint.everySteps": 0}, "spec.checkpoint.everySteps", True),
    ("tokens-below-one-step", {"spec.data.totalTokens": 1000}, "less than one step", True),
    ("bool-as-string", {"spec.training.compile": "yes"}, "spec.training.compile", True),
    ("wrong-api-version", {"apiVersion": "trainkit.dev/v1"}, "apiVersion", False),
    (
        "warmup-longer-than-run",
        {"spec.data.totalTokens": 1228800, "spec.training.learningRate.warmupSteps": 10},
        "warmup (10 steps) is not shorter than the run (10 steps)",
        False,
    ),
]


def mutated(changes: dict) -> dict:
    doc = copy.deepcopy(BASE)
    for path, value in changes.items():
        setpath(doc, path, value)
    return doc


def test_there_are_at_least_30_distinct_bad_specs():
    assert len({case[0] for case in BAD_SPECS}) >= 30


@pytest.mark.parametrize("case_id,changes,expected,_", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_validate_rejects_with_field_named(case_id, changes, expected, _, tmp_path, capsys):
    path = tmp_path / f"{case_id}.yaml"
    path.write_text(yaml.safe_dump(mutated(changes), sort_keys=False))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines, "no error printed"
    # Every line has the documented shape: file: field.path: message
    assert all(re.match(rf"^{re.escape(str(path))}: \S+: .+", line) for line in lines), err
    assert expected in err, err


@pytest.mark.parametrize(
    "case_id,changes", [(c[0], c[1]) for c in BAD_SPECS if c[3]], ids=[c[0] for c in BAD_SPECS if c[3]]
)
def test_crd_schema_rejects_too(case_id, changes):
    schema = training_run_schema()
    _, issues = admit(schema, mutated(changes))
    assert issues, f"{case_id} passed the CRD schema"


def test_base_spec_is_admitted_by_crd_schema():
    _, issues = admit(training_run_schema(), copy.deepcopy(BASE))
    assert issues == []


def test_all_errors_of_a_file_are_reported_at_once(tmp_path, capsys):
    doc = mutated({"spec.data.sources[0].weight": -1, "spec.training.precision": "fp8", "spec.trainng": {}})
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    for field in ("spec.data.sources[0].weight", "spec.training.precision", "spec.trainng"):
        assert field in err


def test_exponent_without_dot_gets_a_hint(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    text = (REPO / "jobs" / "gpt2-70m-50-30-20.yaml").read_text().replace("peak: 5.0e-4", "peak: 5e-4")
    path.write_text(text)
    assert main(["validate", str(path)]) == 1
    assert "write 5.0e-4" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content,expected",
    [
        ("spec: [1, 2", "invalid YAML"),
        ("", "no YAML document"),
        ("- just\n- a list\n", "expected a TrainingRun mapping"),
    ],
)
def test_unreadable_files(tmp_path, capsys, content, expected):
    path = tmp_path / "f.yaml"
    path.write_text(content)
    assert main(["validate", str(path)]) == 1
    assert expected in capsys.readouterr().err


def test_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read file" in capsys.readouterr().err
