"""Held-out validation loss on real parts: `trainkit prepare` on a local Ray writes a hash-chosen held-out
split of real English text to a moto S3 server, a 2-worker Ray Train run (DDP over gloo) measures the
loss on it, and an independent computation with transformers on the checkpoint agrees.

The split is checked against the documents themselves (an independent hash of each text), and the
tokens the mixed stream delivers are checked against the training shards: no held-out document is in
them, and none reaches training."""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid

import numpy as np
import pytest

from trainkit import artifacts, storage
from trainkit.data import MixtureLoader, MixtureSource, load_tokenizer
from trainkit.data.prepare import run_prepare
from trainkit.spec import parse_spec
from trainkit.train import checkpoint
from trainkit.train.launch import run_training

pytestmark = pytest.mark.slow

FRACTION = 0.2
SEQ = 32
BUDGET = 5 * SEQ  # 5 rows per source: odd, so the 2 workers make unequal shares (one pads a pass)


def documents() -> dict[str, list[str]]:
    """Two sources of real English: paragraphs of Python's topic help, split by topic."""
    from pydoc_data.topics import topics

    paras = [p for k in sorted(topics) for p in topics[k].split("\n\n") if len(p) > 200]
    return {"odd": paras[1::2][:150], "even": paras[0::2][:150]}


def independently_held_out(text: str) -> bool:
    """The rule index.json states, computed here from the text alone."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < FRACTION


def split_documents(tokens: np.ndarray, eos: int) -> list[tuple[int, ...]]:
    ends = np.flatnonzero(tokens == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tuple(tokens[a:b].tolist()) for a, b in zip(starts, ends)]


def shard_tokens(uri: str, entries: list[dict]) -> np.ndarray:
    return np.concatenate([np.frombuffer(storage.read_bytes(f"{uri}/{s['file']}"), "<u2") for s in entries])


@pytest.fixture(scope="module")
def prepared(s3_endpoint, ray_session):
    import boto3

    bucket = f"tk-val-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    uris = {}
    for name, docs in documents().items():
        body = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
        storage.write_bytes(f"s3://{bucket}/text/{name}/part-0.jsonl", body)
        uris[name] = f"s3://{bucket}/tokens/{name}"
        run_prepare(
            f"s3://{bucket}/text/{name}", uris[name], shard_tokens=4096, holdout_fraction=FRACTION, log=lambda _: None
        )
    return {"bucket": f"s3://{bucket}", "uris": uris}


def test_held_out_documents_are_the_hashed_ones_and_never_reach_training(prepared):
    tok = load_tokenizer("gpt2")
    for name, docs in documents().items():
        uri = prepared["uris"][name]
        index = storage.read_json(f"{uri}/index.json")
        held = index["validation"]
        assert held["fraction"] == FRACTION and "blake2b" in held["rule"]
        expected = {tuple(ids) for d, ids in zip(docs, tok.encode_batch(docs)) if independently_held_out(d)}
        kept = {tuple(ids) for d, ids in zip(docs, tok.encode_batch(docs)) if not independently_held_out(d)}
        assert 0 < len(expected) < len(docs) and held["documents"] == len(expected)
        assert index["totalDocuments"] == len(docs) - len(expected)
        assert all(s["file"].startswith("validation/") for s in held["shards"])
        assert not any(s["file"].startswith("validation/") for s in index["shards"])

        validation = split_documents(shard_tokens(uri, held["shards"]), tok.eos_id)
        training = split_documents(shard_tokens(uri, index["shards"]), tok.eos_id)
        assert set(validation) == expected and len(validation) == len(expected)
        assert set(training) == kept and not set(training) & expected  # every document on exactly one side
        assert held["tokens"] == sum(len(d) + 1 for d in validation)

    # What the mixed stream hands the trainer: every row is a window of the training shards.
    windows = set()
    for uri in prepared["uris"].values():
        index = storage.read_json(f"{uri}/index.json")
        for s in index["shards"]:
            t = shard_tokens(uri, [s])
            windows |= {t[i : i + SEQ + 1].tobytes() for i in range(0, len(t) - SEQ, SEQ + 1)}
    sources = [MixtureSource(n, u, 0.5) for n, u in prepared["uris"].items()]
    with MixtureLoader(
        sources,
        seq_length=SEQ,
        global_batch=8,
        micro_batch=8,
        fingerprint=tok.fingerprint,
        vocab_size=50257,
        when_exhausted="repeat",
        seed=3,
    ) as stream:
        _, rows = stream.read_global(400)
    assert all(np.asarray(r, "<u2").tobytes() in windows for r in rows)


def test_validation_loss_of_a_checkpoint_equals_transformers_on_the_same_tokens(prepared):
    import torch
    from transformers import GPT2LMHeadModel

    out = f"{prepared['bucket']}/runs/val"
    steps = 6
    # The run trains on the first source only; the second is a validation target, measured the same way.
    (trained, trained_uri), (target, target_uri) = list(prepared["uris"].items())
    spec = parse_spec(
        {
            "model": {"preset": "tiny"},
            "data": {
                "seqLength": SEQ,
                "totalTokens": steps * 4 * SEQ,
                "whenExhausted": "repeat",
                "sources": [{"name": trained, "uri": trained_uri, "weight": 1.0}],
                "validationTargets": [{"name": target, "uri": target_uri}],
            },
            "training": {
                "microBatchSize": 2,
                "globalBatchSize": 4,
                "precision": "fp32",
                "seed": 7,
                "logEverySteps": 2,
                "learningRate": {"peak": 3e-3, "final": 3e-4, "warmupSteps": 1},
            },
            "eval": {"validationTokens": BUDGET, "batchSize": 2},
            "checkpoint": {"everySteps": steps, "keep": 1},
            "resources": {"workers": 2, "gpusPerWorker": 0, "cpusPerWorker": 1, "memoryPerWorker": "4Gi"},
            "output": {"uri": out},
        }
    )[0]
    run_training(spec, name=f"val-{uuid.uuid4().hex[:6]}")

    lines = artifacts.read_validation(out)
    assert [v["step"] for v in lines] == [steps]
    progress = storage.read_json(f"{out}/progress.json")
    assert progress["validation"]["step"] == steps
    assert progress["validation"]["mean"] == pytest.approx(lines[-1]["mean"])

    with tempfile.TemporaryDirectory() as tmp:
        model = GPT2LMHeadModel.from_pretrained(checkpoint.download(out, steps, tmp)).eval()

    losses = {}
    for name, uri in prepared["uris"].items():
        index = storage.read_json(f"{uri}/index.json")
        rows = []
        for s in index["validation"]["shards"]:  # the first whole rows of seqLength+1, shard by shard
            t = shard_tokens(uri, [s]).astype(np.int64)
            rows += [t[i : i + SEQ + 1] for i in range(0, len(t) - SEQ, SEQ + 1)]
        x = torch.as_tensor(np.stack(rows[: BUDGET // SEQ]))
        with torch.no_grad():
            losses[name] = float(model(input_ids=x, labels=x).loss)  # transformers shifts the labels itself
        measured = lines[-1]["sources"][name]
        assert measured["tokens"] == (BUDGET // SEQ) * SEQ
        assert measured["loss"] == pytest.approx(losses[name], rel=1e-5)
    assert lines[-1]["targets"] == [target]
    assert lines[-1]["mean"] == pytest.approx(losses[trained], rel=1e-5)  # a target is not in the mean
    # Training moved the model: held-out loss is below a uniform guess over the vocabulary.
    assert lines[-1]["mean"] < np.log(50257)
