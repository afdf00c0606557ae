"""Shared fixtures: a real S3 server on loopback (moto), one local Ray session, offline Hugging Face.

Everything here is a real server or runtime; nothing is mocked in-process.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # `support` helpers

# Offline, quiet and small: set before anything imports ray, transformers or kubernetes.
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
        "RAY_DEDUP_LOGS": "0",
        "AWS_DEFAULT_REGION": "us-east-1",
        # Planted test credentials: tests grep outputs for them to prove they never leak.
        "AWS_ACCESS_KEY_ID": "AKIATESTPLANTEDKEY01",
        "AWS_SECRET_ACCESS_KEY": "planted-test-secret-do-not-leak-0123456789",
    }
)
os.environ.setdefault("HF_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"trainkit-hf-{os.getpid()}"))
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(os.environ["HF_HOME"]) / "tiktoken"))


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API server (moto) on 127.0.0.1; sets AWS_ENDPOINT_URL for the code under test."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    old = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    yield endpoint
    if old is None:
        os.environ.pop("AWS_ENDPOINT_URL", None)
    else:
        os.environ["AWS_ENDPOINT_URL"] = old
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh, empty bucket on the S3 server; yields its s3:// URI."""
    import boto3

    name = f"tk-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    yield f"s3://{name}"


@pytest.fixture
def seed_bucket(s3_endpoint):
    """The bucket the jobs/ manifests write to (s3://trainkit-runs/...), on the S3 server."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    try:
        s3.create_bucket(Bucket="trainkit-runs")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    return "s3://trainkit-runs"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (each start costs ~10 s here)."""
    import ray

    if not ray.is_initialized():
        # address="local": never join a `ray start` cluster someone left running on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=1 << 30, log_to_driver=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_text(tmp_path_factory):
    """The three demo sources (real English text, `trainkit demo-data`'s layout: <name>/data/train-*.parquet with
    a `text` column) as local parquet, written once per session."""
    from trainkit.data.demo import demo_sources, write_parquet_source

    root = tmp_path_factory.mktemp("demo-text")
    for source in demo_sources(120_000, log=lambda _: None):
        write_parquet_source(source, str(root), files=2)
    return root
