"""OperatorConfig from the environment, and the declared API calls."""

from __future__ import annotations

import pytest

from trainkit_operator.api_calls import API_CALLS
from trainkit_operator.config import OperatorConfig


def test_defaults_and_env():
    assert OperatorConfig.from_env({}) == OperatorConfig()
    cfg = OperatorConfig.from_env(
        {
            "TRAINKIT_TRAINER_IMAGE": "r/t:1",
            "TRAINKIT_NAMESPACES": "a, b",
            "TRAINKIT_TIMER_INTERVAL": "2.5",
            "TRAINKIT_STORAGE_ENDPOINT": "http://minio:9000",
            "TRAINKIT_CREDENTIALS_SECRET": "s3",
            "TRAINKIT_EXTRA_LABELS": "team=nlp",
        }
    )
    assert cfg.trainer_image == "r/t:1" and cfg.namespaces == ("a", "b") and cfg.timer_interval == 2.5
    assert cfg.default_storage_endpoint == "http://minio:9000" and cfg.default_credentials_secret == "s3"
    assert cfg.extra_labels == {"team": "nlp"}
    # what the Helm chart passes for an empty node pool
    empty = OperatorConfig.from_env({"TRAINKIT_NODE_SELECTOR": "{}", "TRAINKIT_TOLERATIONS": "[]"})
    assert empty.default_node_selector == {} and empty.default_tolerations == ()


@pytest.mark.parametrize(
    "env,match",
    [
        ({"TRAINKIT_TIMER_INTERVAL": "soon"}, "not a number"),
        ({"TRAINKIT_TIMER_INTERVAL": "0"}, "> 0"),
        ({"TRAINKIT_IMAGE_PULL_POLICY": "Sometimes"}, "IMAGE_PULL_POLICY"),
        ({"TRAINKIT_WATCH_SERVER_TIMEOUT": "600"}, "CLIENT_TIMEOUT"),
        ({"TRAINKIT_EXTRA_LABELS": "oops"}, "key=value"),
        ({"TRAINKIT_NODE_SELECTOR": "gpu=yes"}, "not JSON"),
        ({"TRAINKIT_NODE_SELECTOR": '{"a": 1}'}, "strings"),
        ({"TRAINKIT_TOLERATIONS": '{"key": "x"}'}, "JSON list"),
        ({"TRAINKIT_TOLERATIONS": '[{"keys": "x"}]'}, "keys among"),
        ({"TRAINKIT_TENANT_NAMESPACE_LABEL": "trainkit.dev/tenant"}, "TENANT_NAMESPACE_LABEL.*not key=value"),
        ({"TRAINKIT_TENANT_NAMESPACE_LABEL": "=true"}, "not key=value"),
    ],
)
def test_bad_env_is_refused(env, match):
    with pytest.raises(ValueError, match=match):
        OperatorConfig.from_env(env)


def test_api_calls_are_least_privilege():
    verbs = {(g, r): set() for _, g, r, _ in API_CALLS}
    for verb, g, r, _ in API_CALLS:
        verbs[(g, r)].add(verb)
    assert verbs[("", "secrets")] == {"get"}  # existence check only: never list/watch all Secrets
    assert "delete" not in {v for v, *_ in API_CALLS}  # children go by ownerReferences, artifacts are never deleted
