"""Two tenants, storage side: the operator reads a run's artifacts only with THAT run's key.

Against the API test server (real Secrets in two namespaces, read through the operator's Kube client) and
an S3 server that answers per access key (trainkit.bench.hostile_s3, which records which key was used), and
against a real moto server with IAM enforced (each team's key allowed its own bucket only): tenant B's own code
cannot read, write, list or claim A's prefix, and the operator reading B's run with B's key gets nothing of A's.
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


# ------------------------------------------------------------- a real S3 that enforces each team's key
@pytest.fixture(scope="module")
def iam_s3():
    """moto in its own process with IAM enforced (INITIAL_NO_AUTH_ACTION_COUNT, then /moto-api/reset-auth): two
    IAM users, each with a key whose policy allows s3:* on its own team's bucket only, as a platform team scopes a
    tenant's key. Yields (endpoint, {team: (key id, secret)})."""
    import json
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="1000"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        admin = dict(
            endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="admin", aws_secret_access_key="x"
        )
        iam, s3 = boto3.client("iam", **admin), boto3.client("s3", **admin)
        keys = {}
        for team in KEYS:
            s3.create_bucket(Bucket=team)
            iam.create_user(UserName=team)
            key = iam.create_access_key(UserName=team)["AccessKey"]
            keys[team] = (key["AccessKeyId"], key["SecretAccessKey"])
            own = [f"arn:aws:s3:::{team}", f"arn:aws:s3:::{team}/*"]
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": own}]}
            iam.put_user_policy(UserName=team, PolicyName="own-bucket", PolicyDocument=json.dumps(policy))
        reset = urllib.request.Request(
            endpoint + "/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(reset, timeout=5)  # from now on every request is authenticated and authorized
        yield endpoint, keys
    finally:
        proc.terminate()
        proc.wait(10)


def _as(monkeypatch, keys, team):
    """The process's credentials are `team`'s (what a team's pod, or its `trainkit` CLI, runs with)."""
    import s3fs

    from trainkit import storage

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys[team][0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys[team][1])
    storage._S3_CLIENTS.clear()  # clients are cached per endpoint: drop the other team's
    s3fs.S3FileSystem.clear_instance_cache()


def test_b_cannot_read_write_or_list_as_prefix_with_its_own_key(iam_s3, monkeypatch):
    """Tenant B's code (its image runs with B's key) against A's prefix: every read, write, listing and the
    owner.json claim is refused by the storage itself, and A's objects are unchanged."""
    from trainkit import artifacts, storage

    endpoint, keys = iam_s3
    options = storage.StorageOptions(endpoint=endpoint)
    a_out = "s3://team-a/runs/r"
    _as(monkeypatch, keys, "team-a")
    storage.write_json(artifacts.run_file(a_out, artifacts.PROGRESS), {"step": 7}, options)
    assert artifacts.read_progress(a_out, options)["step"] == 7

    _as(monkeypatch, keys, "team-b")
    attempts = {
        "read": lambda: storage.read_bytes(artifacts.run_file(a_out, artifacts.PROGRESS), options),
        "write": lambda: storage.write_bytes(artifacts.run_file(a_out, artifacts.PROGRESS), b'{"step": 0}', options),
        "claim": lambda: artifacts.claim_output(a_out, artifacts.OwnerRecord("k8s:team-b/r/uid-b", "h"), options),
        "list": lambda: storage.list_sizes(artifacts.checkpoints_uri(a_out), options),
    }
    for what, attempt in attempts.items():
        with pytest.raises(OSError) as refused:  # StorageError or PermissionError, both OSErrors
            attempt()
        assert "AccessDenied" in str(refused.value) or isinstance(refused.value, PermissionError), (what, refused.value)
    _as(monkeypatch, keys, "team-a")
    assert artifacts.read_progress(a_out, options)["step"] == 7  # nothing of B's reached A's prefix
    assert not storage.exists(artifacts.run_file(a_out, artifacts.OWNER), options)


def test_the_operator_reads_a_run_only_with_its_own_teams_key(iam_s3):
    """The operator's guarded reader with each run's key: A's run reads A's progress; B's run pointed at A's
    prefix reads nothing (B's key is refused by the storage), and the operator has no key of its own to try."""
    from trainkit import artifacts, storage
    from trainkit_operator import observe

    endpoint, keys = iam_s3
    config = OperatorConfig(default_storage_endpoint=endpoint, read_timeout=2, reads_deadline=5)
    import boto3

    spec = _spec("s3://team-a")
    a_key, b_key = (storage.Credentials(*keys[t]) for t in ("team-a", "team-b"))
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=a_key.access_key_id,
                 aws_secret_access_key=a_key.secret_access_key).put_object(
        Bucket="team-a", Key="runs/r/progress.json", Body=b'{"step": 41}')  # fmt: skip
    as_a = observe.read_pool(config).observe("team-a", spec.output.uri, observe.options_for(spec, config, a_key), 5)
    assert as_a.progress is not None and as_a.progress["step"] == 41
    as_b = observe.read_pool(config).observe("team-b", spec.output.uri, observe.options_for(spec, config, b_key), 5)
    assert as_b.progress is None and as_b.problems
    assert artifacts.run_file(spec.output.uri, artifacts.PROGRESS) in " ".join(as_b.problems)
