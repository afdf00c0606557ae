"""Two tenants, storage side: the operator reads a run's artifacts only with THAT run's key.

Against the API test server (real Secrets in two namespaces, read through the operator's Kube client) and
an S3 server that answers per access key (tests/support/hostile_s3.py: moto enforces no per-key bucket
policies, so each tenant's key sees only its own bucket here and the server records which key was used).
Tenant B points its output.uri at A's prefix, names A's Secret, points its endpoint elsewhere: the
operator never reads A's artifacts with A's key, never with a key of its own, and refuses the endpoint.
"""

from __future__ import annotations

import pytest

from trainkit.bench.hostile_s3 import Hostile, HostileS3
from trainkit.spec.load import parse_spec
from trainkit_operator import decide, run_reconcile
from trainkit_operator.config import OperatorConfig

from test_operator_support import PLANTED, seed_doc

KEYS = {"team-a": ("AKIATEAMA00000000001", "team-a-secret"), "team-b": ("AKIATEAMB00000000001", "team-b-secret")}


@pytest.fixture
def tenants(kube_api):
    import kubernetes

    from trainkit_operator.kube import Kube

    for ns, (key_id, secret) in KEYS.items():
        kube_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        kube_api.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "trainkit-s3", "namespace": ns},
                "stringData": {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret},
            }
        )
    state = Hostile(
        objects={
            (KEYS["team-a"][0], "team-a/runs/r/progress.json"): b'{"step": 111}',
            (KEYS["team-b"][0], "team-b/runs/r/progress.json"): b'{"step": 222}',
        }
    )
    with HostileS3(state) as s3:
        kube = Kube(kubernetes.config.new_client_from_config(config_file=str(kube_api.kubeconfig)))
        yield kube, s3
        kube.close()


def _spec(bucket: str, **updates):
    spec, _ = parse_spec(seed_doc("r", bucket=bucket, **updates)["spec"])
    spec = spec.model_copy(update={"output": spec.output.model_copy(update={"uri": f"{bucket}/runs/r"})})
    return spec


def _config(endpoint: str) -> OperatorConfig:
    return OperatorConfig(
        default_storage_endpoint=endpoint, default_credentials_secret="trainkit-s3", read_timeout=2, reads_deadline=5
    )


def test_each_run_is_read_with_its_own_namespaces_key(tenants):
    kube, s3 = tenants
    config = _config(s3.endpoint)
    a = run_reconcile.observe_storage(kube, "team-a", _spec("s3://team-a"), config)
    b = run_reconcile.observe_storage(kube, "team-b", _spec("s3://team-b"), config)
    assert a.progress is not None and a.progress["step"] == 111
    assert b.progress is not None and b.progress["step"] == 222
    used = {(kid, path) for kid, _, path in s3.state.requests}
    assert all(kid == KEYS["team-a"][0] for kid, path in used if path.startswith("/team-a"))
    assert all(kid == KEYS["team-b"][0] for kid, path in used if path.startswith("/team-b"))
    # the operator process's own AWS_* (planted by tests/conftest.py) are never sent
    assert PLANTED[0] not in {kid for kid, _ in used}


def test_b_pointing_at_as_prefix_reads_nothing_of_a(tenants):
    kube, s3 = tenants
    config = _config(s3.endpoint)
    seen = run_reconcile.observe_storage(kube, "team-b", _spec("s3://team-a"), config)
    assert seen.progress is None and seen.problems  # B's key is denied on A's bucket
    assert {kid for kid, _, _ in s3.state.requests} == {KEYS["team-b"][0]}


def test_b_naming_as_secret_gets_no_key_from_as_namespace(tenants, kube_api):
    kube, s3 = tenants
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "team-a-only", "namespace": "team-a"},
            "stringData": {"AWS_ACCESS_KEY_ID": KEYS["team-a"][0], "AWS_SECRET_ACCESS_KEY": KEYS["team-a"][1]},
        }
    )
    spec = _spec("s3://team-a", **{"storage.credentialsSecret": "team-a-only"})
    seen = run_reconcile.observe_storage(kube, "team-b", spec, _config(s3.endpoint))
    assert seen.progress is None
    assert seen.problems == ("Secret 'team-a-only' does not exist in namespace 'team-b'",)
    assert s3.state.requests == []  # nothing was read, with any key


@pytest.mark.parametrize(
    "endpoint, says",
    [
        ("http://attacker.example:9000", "is not an endpoint this operator allows"),
        ("http://169.254.169.254", "link-local or instance-metadata"),
        ("http://metadata.google.internal", "instance-metadata host"),
        ("http://[fd00:ec2::254]", "link-local or instance-metadata"),
    ],
)
def test_an_endpoint_outside_the_allow_list_is_an_invalid_spec(tenants, endpoint, says):
    _, s3 = tenants
    spec = _spec("s3://team-a", **{"storage.endpoint": endpoint})
    error = decide.storage_spec_error(spec, _config(s3.endpoint))
    assert error is not None and error.startswith("spec.storage.endpoint:") and says in error


def test_no_secret_and_no_default_is_refused_in_secret_per_namespace_mode(tenants):
    _, s3 = tenants
    spec = _spec("s3://team-a", **{"storage.credentialsSecret": None})
    config = OperatorConfig(default_storage_endpoint=s3.endpoint)
    error = decide.storage_spec_error(spec, config)
    assert error is not None and error.startswith("spec.storage.credentialsSecret: not set")
    # workload identity: allowed, and the operator reads nothing itself (it holds no key for the run)
    wi = OperatorConfig(default_storage_endpoint=s3.endpoint, credentials_mode="workloadIdentity")
    assert decide.storage_spec_error(spec, wi) is None
    seen = run_reconcile.observe_storage(tenants[0], "team-a", spec, wi)
    assert seen.problems is None and seen.progress is None and s3.state.requests == []
