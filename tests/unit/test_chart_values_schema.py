"""values.schema.json: helm refuses bad values before rendering, naming the field and the reason.

Each case runs the real `helm template` and checks the error names the offending value's path and says
what is wrong with it; a last test checks every case is accepted once the bad value is fixed, so the
cases fail only because of their one bad value.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from support.helm import CHART, template

# (id, values overlay, words that must appear in helm's error)
BAD_VALUES = [
    ("typo-top-level-key", {"operater": {"logLevel": "debug"}}, ["operater", "not allowed"]),
    ("typo-nested-key", {"watch": {"scope": "cluster", "namespace": ["a"]}}, ["watch", "namespace", "not allowed"]),
    (
        "scope-not-an-option",
        {"watch": {"scope": "everywhere"}},
        ["watch.scope", "must be one of", "cluster", "namespaced"],
    ),
    (
        "namespace-not-dns",
        {"watch": {"scope": "namespaced", "namespaces": ["ML_Team"]}},
        ["watch.namespaces.0", "pattern"],
    ),
    (
        "duplicate-namespaces",
        {"watch": {"scope": "namespaced", "namespaces": ["a", "a"]}},
        ["watch.namespaces", "unique"],
    ),
    (
        "pull-policy",
        {"operator": {"image": {"pullPolicy": "Sometimes"}}},
        ["operator.image.pullPolicy", "must be one of"],
    ),
    ("digest-not-sha256", {"operator": {"image": {"digest": "latest"}}}, ["operator.image.digest", "pattern"]),
    ("log-level", {"operator": {"logLevel": "verbose"}}, ["operator.logLevel", "must be one of"]),
    ("privileged-port", {"operator": {"healthPort": 80}}, ["operator.healthPort", "greater than or equal to 1024"]),
    ("port-as-string", {"operator": {"healthPort": "8080"}}, ["operator.healthPort", "Invalid type", "integer"]),
    (
        "memory-not-a-quantity",
        {"operator": {"resources": {"limits": {"memory": "lots"}}}},
        ["operator.resources.limits.memory", "pattern"],
    ),
    ("endpoint-without-scheme", {"storage": {"endpoint": "minio.local:9000"}}, ["storage.endpoint", "pattern"]),
    (
        "endpoint-with-credentials",
        {"storage": {"endpoint": "https://AKIAX:secret@minio.local"}},
        ["storage.endpoint", "pattern"],
    ),
    ("secret-name-not-dns", {"storage": {"credentialsSecret": "My S3 Keys"}}, ["storage.credentialsSecret", "pattern"]),
    ("access-key-in-values", {"storage": {"accessKeyId": "AKIAEXAMPLE"}}, ["storage", "accessKeyId", "not allowed"]),
    ("secret-key-in-values", {"storage": {"secretAccessKey": "abc"}}, ["storage", "secretAccessKey", "not allowed"]),
    ("peering-name-not-dns", {"peering": {"name": "Trainkit Peering"}}, ["peering.name", "pattern"]),
    (
        "interval-zero",
        {"operator": {"reconcileIntervalSeconds": 0}},
        ["operator.reconcileIntervalSeconds", "greater than 0"],
    ),
    ("ray-version-not-semver", {"trainer": {"rayVersion": "latest"}}, ["trainer.rayVersion", "pattern"]),
    (
        "extra-label-with-comma",
        {"trainer": {"extraLabels": {"team": "a,b=c"}}},
        ["trainer.extraLabels.team", "pattern"],
    ),
    (
        "secret-names-not-a-list",
        {"rbac": {"secretNames": "trainkit-s3"}},
        ["rbac.secretNames", "Invalid type", "array"],
    ),
    ("peering-enabled-string", {"peering": {"enabled": "yes"}}, ["peering.enabled", "Invalid type", "boolean"]),
    (
        "toleration-operator",
        {"nodePool": {"tolerations": [{"key": "gpu", "operator": "Maybe"}]}},
        ["nodePool.tolerations.0.operator", "must be one of"],
    ),
    (
        "toleration-effect",
        {"nodePool": {"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoRun"}]}},
        ["nodePool.tolerations.0.effect", "must be one of"],
    ),
    (
        "node-selector-value-not-string",
        {"nodePool": {"nodeSelector": {"gpu": 1}}},
        ["nodePool.nodeSelector.gpu", "Invalid type", "string"],
    ),
    ("removed-option", {"kueue": {"defaultQueueName": "gpu-training"}}, ["kueue", "not allowed"]),
    ("trainer-image-empty-repo", {"trainer": {"image": {"repository": ""}}}, ["trainer.image.repository"]),
    (
        "shell-in-namespace",
        {"watch": {"scope": "namespaced", "namespaces": ["a; rm -rf /"]}},
        ["watch.namespaces.0", "pattern"],
    ),
]
assert len(BAD_VALUES) >= 10


@pytest.mark.parametrize("overlay,words", [(v, w) for _, v, w in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES])
def test_bad_value_is_rejected_with_a_clear_message(overlay, words):
    proc = template(values=overlay, check=False)
    assert proc.returncode != 0, f"helm accepted {overlay}"
    err = proc.stderr
    assert "values don't meet the specifications of the schema" in err, err
    for word in words:
        assert word in err, f"{word!r} missing from helm's error:\n{err}"
    assert not proc.stdout.strip()  # nothing rendered


def _merge(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for k, v in overlay.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def test_schema_itself_is_valid_and_accepts_every_shipped_values_file():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    for f in (CHART / "ci").glob("*.yaml"):
        jsonschema.Draft7Validator(schema).validate(_merge(defaults, yaml.safe_load(f.read_text())))


def test_every_bad_case_is_bad_only_because_of_its_value():
    """The same overlays through Python's jsonschema: each is rejected at the path the test names."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    validator = jsonschema.Draft7Validator(schema)
    for case_id, overlay, words in BAD_VALUES:
        errors = list(validator.iter_errors(_merge(defaults, overlay)))
        assert errors, case_id
        for error in errors:
            path = ".".join(str(p) for p in error.absolute_path)
            assert path == "" or words[0].startswith(path) or path.startswith(words[0]), (case_id, path, words[0])


def test_helm_accepts_good_values_of_the_same_fields():
    good = {
        "watch": {"scope": "namespaced", "namespaces": ["ml-team", "default"]},
        "operator": {
            "image": {"pullPolicy": "Always", "digest": "sha256:" + "a" * 64},
            "logLevel": "debug",
            "healthPort": 8443,
            "resources": {"limits": {"memory": "2Gi", "cpu": 2}},
        },
        "storage": {"endpoint": "http://minio.minio.svc:9000", "credentialsSecret": "s3.keys-1", "region": "us-east-1"},
        "peering": {"name": "trainkit.peering-2", "enabled": True},
        "trainer": {"rayVersion": "2.60.1", "extraLabels": {"example.com/team": "a_b.c-d"}},
        "nodePool": {
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}],
        },
    }
    proc = template(values=good)
    assert "kind: Deployment" in proc.stdout
