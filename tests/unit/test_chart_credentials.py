"""No credential ever renders from the chart.

The planted test credentials (tests/conftest.py puts them in the environment, so helm runs with them set)
are passed as values in every plausible place. The schema refuses them; and even with schema validation
skipped, no template reads them, so they never appear in the rendered manifests or NOTES. The only trace
of storage credentials in a render is the *name* of the Secret, as a secretKeyRef.
"""

from __future__ import annotations

import os

import pytest

from support.helm import by_kind, one, render, render_notes, template

PLANTED_KEY = os.environ["AWS_ACCESS_KEY_ID"]
PLANTED_SECRET = os.environ["AWS_SECRET_ACCESS_KEY"]
assert PLANTED_KEY.startswith("AKIATESTPLANTED") and "planted" in PLANTED_SECRET

# Keys a user might reach for to pass credentials straight to the chart.
CREDENTIAL_VALUES = {
    "storage.accessKeyId": PLANTED_KEY,
    "storage.secretAccessKey": PLANTED_SECRET,
    "storage.credentials.accessKeyId": PLANTED_KEY,
    "storage.credentials.secretAccessKey": PLANTED_SECRET,
    "storage.awsAccessKeyId": PLANTED_KEY,
    "aws.accessKeyId": PLANTED_KEY,
    "aws.secretAccessKey": PLANTED_SECRET,
    "operator.env.AWS_ACCESS_KEY_ID": PLANTED_KEY,
    "operator.env.AWS_SECRET_ACCESS_KEY": PLANTED_SECRET,
    "trainer.env.AWS_SECRET_ACCESS_KEY": PLANTED_SECRET,
    "secrets.AWS_SECRET_ACCESS_KEY": PLANTED_SECRET,
}


@pytest.mark.parametrize("key", sorted(CREDENTIAL_VALUES))
def test_schema_refuses_credentials_as_values(key):
    proc = template(sets={key: CREDENTIAL_VALUES[key]}, check=False)
    assert proc.returncode != 0
    assert "not allowed" in proc.stderr
    assert PLANTED_SECRET not in proc.stdout and PLANTED_KEY not in proc.stdout


def test_planted_credentials_never_render_even_without_the_schema():
    secret_name = "planted-creds-secret-name"
    sets = dict(CREDENTIAL_VALUES, **{"storage.credentialsSecret": secret_name})
    proc = template(sets=sets, extra=("--skip-schema-validation",))
    for scope_sets in ({}, {"watch.scope": "namespaced"}):
        text = template(sets=dict(sets, **scope_sets), extra=("--skip-schema-validation",)).stdout
        assert PLANTED_KEY not in text and PLANTED_SECRET not in text
    notes = render_notes(values=None, sets={"storage.credentialsSecret": secret_name})
    assert PLANTED_KEY not in notes and PLANTED_SECRET not in notes
    assert PLANTED_KEY not in proc.stdout and PLANTED_SECRET not in proc.stdout

    # The Secret's name shows up only as the operator's setting (the operator pod takes no key from it:
    # it reads each run's storage with the Secret in that run's namespace).
    docs = render(sets={"storage.credentialsSecret": secret_name})
    assert not by_kind(docs, "Secret"), "the chart must never create a Secret"
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert not [e for e in container["env"] if "valueFrom" in e]
    plain = [e for e in container["env"] if e.get("value") == secret_name]
    assert [e["name"] for e in plain] == ["TRAINKIT_CREDENTIALS_SECRET"]
    # ...and in the RBAC rule that lets the operator get it by name; nowhere else.
    (rule,) = [r for r in one(docs, "ClusterRole")["rules"] if "secrets" in r["resources"]]
    assert rule["resourceNames"] == [secret_name] and rule["verbs"] == ["get"]
    text = template(sets={"storage.credentialsSecret": secret_name}).stdout
    assert text.count(secret_name) == 2


def test_no_credentials_secret_means_no_secret_refs():
    docs = render(sets={"storage.credentialsSecret": ""})
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert not [e for e in container["env"] if "valueFrom" in e]
    assert not [e for e in container["env"] if e["name"].startswith("AWS_") and "KEY" in e["name"]]


def test_env_values_that_look_like_keys_do_not_exist():
    """Every literal env value in every rendered workload is a setting, not a key (AKIA..., long base64)."""
    import re

    for sets in ({}, {"watch.scope": "namespaced"}):
        for doc in render(sets=sets):
            if doc["kind"] != "Deployment":
                continue
            for c in doc["spec"]["template"]["spec"]["containers"]:
                for e in c["env"]:
                    value = e.get("value", "")
                    assert not re.search(r"AKIA[0-9A-Z]{12,}", value), e
                    assert not re.fullmatch(r"[A-Za-z0-9/+]{40}", value), e
