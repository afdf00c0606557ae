"""Paths read from object storage never leave their prefix: a checkpoint.json written by someone who can write
the prefix lists `../../../../home/ray/x.pth` (S3 stores and lists that literal key), and neither resume nor
eval fetches it or writes outside its own folder. Against a real S3 server (moto)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from trainkit import artifacts, storage
from trainkit.data.shards import DataError, parse_index
from trainkit.eval.checkpoint import CheckpointError, fetch_checkpoint
from trainkit.train import checkpoint

EVIL = "../../../../home/ray/x.pth"


def hostile_checkpoint(bucket: str, endpoint: str) -> str:
    name = bucket[len("s3://") :]
    s3 = boto3.client("s3", endpoint_url=endpoint)
    prefix = "runs/victim/checkpoints/step-00000004"
    files = {"config.json": b'{"model_type": "gpt2"}', "model.safetensors": b"weights", EVIL: b"pickled code"}
    for rel, data in files.items():
        s3.put_object(Bucket=name, Key=f"{prefix}/{rel}", Body=data)
    manifest = {"step": 4, "files": {rel: len(data) for rel, data in files.items()}}
    s3.put_object(Bucket=name, Key=f"{prefix}/checkpoint.json", Body=json.dumps(manifest).encode())
    return f"{bucket}/runs/victim"


def test_eval_refuses_a_manifest_entry_outside_the_checkpoint(s3_bucket, s3_endpoint, tmp_path):
    run = hostile_checkpoint(s3_bucket, s3_endpoint)
    cache = tmp_path / "a" / "b" / "c" / "cache"
    with pytest.raises(CheckpointError, match=r"checkpoint.json.*'\.\.'"):
        fetch_checkpoint(artifacts.checkpoint_uri(run, 4), cache_dir=cache)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "nothing was downloaded"


def test_resume_passes_over_a_manifest_entry_outside_the_checkpoint(s3_bucket, s3_endpoint, tmp_path):
    run = hostile_checkpoint(s3_bucket, s3_endpoint)
    assert artifacts.read_manifest(artifacts.checkpoint_uri(run, 4)) is None  # not a checkpoint: never resumed
    assert artifacts.latest_complete_checkpoint(run) is None
    with pytest.raises(FileNotFoundError):
        checkpoint.download(run, 4, tmp_path / "a" / "b" / "c" / "dest")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "rel",
    [EVIL, "/etc/passwd", "a/../../b", "a\\..\\b", "a//b", "./a", "a/\0b", "", "C:/x", "x" * 5000, 7, None],
)
def test_the_one_path_check_refuses_every_escape(rel):
    with pytest.raises(storage.UnsafePath, match="index.json"):
        storage.safe_relpath(rel, "s3://b/src/index.json")
    with pytest.raises(artifacts.ArtifactError):
        artifacts.parse_manifest({"step": 1, "files": {rel: 1} if isinstance(rel, str) else {}}, "checkpoint.json")


@pytest.mark.parametrize("rel", ["model.safetensors", "trainer/state.json", "shards/000001.bin", "a.b/c..d"])
def test_ordinary_relative_paths_pass(rel):
    assert storage.safe_relpath(rel, "x") == rel


def test_a_shard_index_naming_a_file_outside_its_source_is_refused():
    doc = {
        "format": "trainkit-tokens-v1",
        "tokenizer": {"name": "gpt2", "fingerprint": "f", "vocabSize": 50257, "eosId": 50256},
        "dtype": "uint16",
        "shards": [{"file": "../other-tenant/shards/000000.bin", "tokens": 1, "documents": 1, "bytes": 2, "crc32": 0}],
    }
    with pytest.raises(DataError, match=r"index.json: field 'shards\[\].file'.*'\.\.'"):
        parse_index(doc, "s3://b/src")


def test_download_dir_never_writes_outside_its_destination(s3_bucket, s3_endpoint, tmp_path):
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(
        Bucket=s3_bucket[len("s3://") :], Key=f"d/{EVIL}", Body=b"x"
    )
    with pytest.raises(storage.UnsafePath):
        storage.download_dir(f"{s3_bucket}/d", tmp_path / "a" / "b" / "c" / "dest")
    assert not [p for p in Path(tmp_path).rglob("*") if p.is_file()]
