"""Logs that outlive Ray: a local Ray Train run (2 workers, moto S3) whose rank 1 raises; the driver's and both
workers' stdout/stderr, the worker's traceback included, are read back from `<output>/logs/` by `trainkit logs`
in a separate process that has no Ray at all."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from trainkit import artifacts, storage
from trainkit.train.launch import run_training
from trainkit.train.logship import LogPolicy

from test_train_run import FaultEnv, make_spec, write_source

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def failed_run(ray_session, s3_endpoint, tmp_path_factory):
    import boto3

    bucket = f"tk-logs-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    from pydoc_data.topics import topics

    docs = [topics[k] for k in sorted(topics)]
    sources = {}
    for i, name in enumerate(("manuals", "web", "edu")):
        sources[name] = f"s3://{bucket}/shards/{name}"
        write_source(sources[name], docs[i::3][:6])
    out = f"s3://{bucket}/runs/fails"
    marker = tmp_path_factory.mktemp("fault") / "logs"
    with FaultEnv(at_step=3, rank=1, marker=marker), pytest.raises(Exception, match="injected failure"):
        # Small segments: the rotation is exercised by a real run, not only by the unit tests.
        run_training(make_spec(sources, out), name=f"logs-{uuid.uuid4().hex[:6]}", log_policy=LogPolicy(1.0, 256, 1000))
    return out


def trainkit_logs(*args: str, endpoint: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": endpoint}
    return subprocess.run(
        [sys.executable, "-m", "trainkit", "logs", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_failed_workers_traceback_is_readable_under_logs(failed_run, s3_endpoint):
    segments = artifacts.list_log_segments(failed_run)
    assert set(segments) == {"driver", "worker-0", "worker-1"}
    assert len(segments["driver"]) > 1  # rotated at 256 bytes (the traceback alone is longer)
    got = trainkit_logs(failed_run, endpoint=s3_endpoint)
    assert got.returncode == 0, got.stderr
    text = got.stdout
    for stream in ("driver", "worker-0", "worker-1"):
        assert f"==> {stream} <==" in text
    worker1 = trainkit_logs(failed_run, "--stream", "worker-1", endpoint=s3_endpoint).stdout
    assert "Traceback (most recent call last)" in worker1
    assert "InjectedFault: TEST_FAULT_AT_STEP: injected failure at step 3 on rank 1" in worker1
    assert "==> worker-0 <==" not in worker1
    driver = trainkit_logs(failed_run, "--stream", "driver", endpoint=s3_endpoint).stdout
    assert "injected failure at step 3 on rank 1" in driver  # the driver's own traceback of the failed fit
    # Segments join back into whole lines: the concatenation of every stored driver segment is what was printed.
    joined = b"".join(
        storage.read_bytes(artifacts.log_segment_uri(failed_run, "driver", i)) for i in segments["driver"]
    )
    assert all(
        len(storage.read_bytes(artifacts.log_segment_uri(failed_run, "driver", i))) == 256
        for i in segments["driver"][:-1]
    )
    assert driver.split("==> driver <==\n", 1)[1] == joined.decode("utf-8", errors="replace")


def test_logs_of_a_run_without_logs_say_so(s3_endpoint, s3_bucket):
    got = trainkit_logs(f"{s3_bucket}/runs/none-{uuid.uuid4().hex[:6]}", endpoint=s3_endpoint)
    assert got.returncode == 1
    assert "trainkit logs: error: no logs under" in got.stderr and "Traceback" not in got.stderr
