"""The user's own storage reads (CLI, trainer): control reads go through the one guarded transport with
`own_read_guard` (the default of StorageOptions); bulk reads keep bounded timeouts and refuse redirects.
Servers: `trainkit.bench.hostile_s3` on 127.0.0.1 (the campaign's), a redirect pointing at an honest one
under another name that must see no request."""

from __future__ import annotations

import time

import pytest

from trainkit import storage
from trainkit.bench.hostile_s3 import Hostile, HostileS3
from trainkit.cli import main


@pytest.fixture
def redirecting():
    """(options for a server that answers every request with a 301 to another host, that other host)."""
    with HostileS3(Hostile()) as elsewhere, HostileS3(Hostile(behaviour="redirect")) as hostile:
        hostile.state.redirect_to = elsewhere.endpoint.replace("127.0.0.1", "localhost")
        yield storage.StorageOptions(endpoint=hostile.endpoint), elsewhere


def test_control_reads_are_guarded_by_default(monkeypatch):
    """No guard given: the user's own (the process's credentials and endpoint settings, local paths allowed),
    limits from TRAINKIT_READ_TIMEOUT / TRAINKIT_READ_MAX_BYTES."""
    monkeypatch.setenv(storage.READ_TIMEOUT_ENV, "7")
    monkeypatch.setenv(storage.READ_MAX_BYTES_ENV, "4096")
    guard = storage.StorageOptions().guard
    assert guard.own_storage and guard.request_deadline == 7 and guard.max_response_bytes == 4096
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    assert storage.StorageOptions().resolved_endpoint() == "http://127.0.0.1:9"
    # the operator's guard (a tenant's storage) never takes the endpoint from the environment
    assert storage.StorageOptions(guard=storage.ReadGuard()).resolved_endpoint() is None


def test_a_silent_server_ends_a_control_read_within_its_deadline(monkeypatch):
    monkeypatch.setenv(storage.READ_TIMEOUT_ENV, "0.5")
    with HostileS3(Hostile(behaviour="silent")) as silent:
        options = storage.StorageOptions(endpoint=silent.endpoint)
        storage._guarded_client(options)  # botocore's set-up is not the read's time
        started = time.monotonic()
        with pytest.raises(storage.StorageError, match=r"reading s3://b/run/progress.json: ReadTimeoutError"):
            storage.read_bytes("s3://b/run/progress.json", options)
        took = time.monotonic() - started
        assert took < options.guard.operation_deadline + 20, took  # not the minutes of botocore's own retries
        assert len(silent.state.requests) == options.guard.attempts == 3


def test_control_and_bulk_reads_refuse_a_redirect(redirecting, tmp_path):
    options, elsewhere = redirecting
    reads = {
        "read_bytes": lambda: storage.read_bytes("s3://b/run/progress.json", options),
        "exists": lambda: storage.exists("s3://b/run/spec.json", options),
        "list_names": lambda: storage.list_names("s3://b/run/eval", options),
        "create_exclusive": lambda: storage.create_exclusive("s3://b/run/owner.json", b"{}", options),
        "read_bulk": lambda: storage.read_bulk("s3://b/shards/shard-0.bin", options),
        "read_ranges": lambda: storage.read_ranges([("s3://b/shards/shard-0.bin", 0, 8)], options),
        "download_file": lambda: storage.download_file("s3://b/ckpt/model.safetensors", tmp_path / "w", options),
    }
    for name, read in reads.items():
        with pytest.raises(storage.StorageRefused, match=r"redirected \(301\) to 'localhost'; not followed") as e:
            read()
        assert "s3://b/" in str(e.value), (name, e.value)  # the object is named, not only the request
        assert not (tmp_path / "w").exists()
    assert elsewhere.state.requests == []


def test_s3fs_under_the_bulk_paths_refuses_a_redirect(redirecting):
    """aiohttp (s3fs's transport) follows redirects to any host unless told not to; s3fs's own retries are
    cut to one here (they only repeat the refusal)."""
    options, elsewhere = redirecting
    fs, path = storage.filesystem("s3://b/data/docs.jsonl", options)
    retries, fs.retries = fs.retries, 1
    try:
        with pytest.raises(Exception) as caught:
            fs.cat_file(path)
    finally:
        fs.retries = retries
    chain, e = [], caught.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__ or getattr(e, "kwargs", {}).get("error")
    assert any(isinstance(c, storage.StorageRefused) for c in chain), chain
    assert elsewhere.state.requests == []


def test_bulk_reads_have_a_bounded_read_timeout_not_a_deadline(monkeypatch):
    monkeypatch.setattr(storage, "BULK_READ_TIMEOUT", 0.5)
    with HostileS3(Hostile(behaviour="silent")) as silent:
        options = storage.StorageOptions(endpoint=silent.endpoint)
        with pytest.raises(storage.StorageError, match=r"reading s3://b/shards/shard-0.bin: .*Read timeout"):
            storage.read_bulk("s3://b/shards/shard-0.bin", options, attempts=1)


def test_a_bad_read_setting_is_one_line_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv(storage.READ_TIMEOUT_ENV, "soon")
    assert main(["report", "s3://b/run"]) == 1
    err = capsys.readouterr().err
    assert err == "trainkit report: error: TRAINKIT_READ_TIMEOUT='soon': must be a positive number\n"
