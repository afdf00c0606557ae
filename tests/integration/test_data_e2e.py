"""End to end on real parts: demo English text -> parquet on a moto S3 server -> `trainkit prepare` on a
local Ray -> token shards -> the mixed stream read back, decoded, matching the documents and weights."""

from __future__ import annotations

import uuid

import boto3
import numpy as np
import pytest

from trainkit import storage
from trainkit.data import MixtureLoader, MixtureSource, SourceExhausted, load_tokenizer
from trainkit.cli import main
from trainkit.data.demo import demo_sources
from trainkit.data.prepare import run_prepare
from trainkit.data.schedule import integer_weights
from trainkit.spec import parse_spec

WEIGHTS = {"manuals": 0.5, "web": 0.3, "edu": 0.2}
SEQ = 128


@pytest.fixture(scope="module")
def prepared(s3_endpoint, ray_session):
    bucket = f"tk-data-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    # The command a user runs writes the parquet; the same call gives the documents to compare with.
    assert main(["demo-data", f"s3://{bucket}/text", "--max-chars", "150000"]) == 0
    sources = demo_sources(max_chars=150_000, log=lambda _: None)
    logs: dict[str, list[str]] = {}
    for source in sources:
        logs[source.name] = []
        run_prepare(
            f"s3://{bucket}/text/{source.name}",
            f"s3://{bucket}/tokens/{source.name}",
            shard_tokens=16_384,
            log=logs[source.name].append,
        )
    return {"bucket": bucket, "sources": {s.name: s for s in sources}, "logs": logs}


def loader(prepared, **kw) -> MixtureLoader:
    tok = load_tokenizer("gpt2")
    args = dict(
        seq_length=SEQ,
        global_batch=24,
        micro_batch=4,
        fingerprint=tok.fingerprint,
        vocab_size=50257,
        when_exhausted="repeat",
        seed=7,
    )
    args.update(kw)
    return MixtureLoader(
        [MixtureSource(n, f"s3://{prepared['bucket']}/tokens/{n}", w) for n, w in WEIGHTS.items()], **args
    )


def test_index_counts_every_document_and_token(prepared):
    tok = load_tokenizer("gpt2")
    for name, source in prepared["sources"].items():
        index = storage.read_json(f"s3://{prepared['bucket']}/tokens/{name}/index.json")
        # Every document once: in the training shards or in the held-out validation split.
        assert index["totalDocuments"] + index["validation"]["documents"] == len(source.documents)
        assert index["totalTokens"] + index["validation"]["tokens"] == sum(
            len(ids) + 1 for ids in tok.encode_batch(source.documents)
        )
        assert index["tokenizer"]["fingerprint"] == tok.fingerprint and index["dtype"] == "uint16"
        assert len(index["shards"]) >= 2 and all(s["tokens"] <= 16_384 for s in index["shards"])
        assert [f["uri"].rsplit("/", 1)[1] for f in index["sourceFiles"]] == [
            "train-00000-of-00002.parquet",
            "train-00001-of-00002.parquet",
        ]
        assert any("tokenized" in line for line in prepared["logs"][name])  # progress was shown


def test_mixed_stream_decodes_to_the_source_documents_in_the_weights(prepared):
    tok = load_tokenizer("gpt2")
    names = list(WEIGHTS)
    with loader(prepared, when_exhausted="fail") as stream:
        sources, tokens = stream.read_global(600)
    w = np.asarray(integer_weights(list(WEIGHTS.values())), float)
    w /= w.sum()
    n = np.arange(1, len(sources) + 1)
    for j in range(3):
        assert np.abs(np.cumsum(sources == j) - n * w[j]).max() < 1.0
    docs = {name: [d.encode() for d in s.documents] for name, s in prepared["sources"].items()}
    whole_documents = 0
    for j, row in zip(sources, tokens):
        cuts = np.flatnonzero(row == tok.eos_id)
        pieces = np.split(row, cuts)
        # Each piece between separators is (part of) one document of the source it was scheduled from;
        # compared as bytes, because a sequence may begin or end inside a multi-byte character.
        for i, piece in enumerate(pieces):
            text = tok.decode_bytes(piece[1:] if i else piece)
            if not text:
                continue
            whole = 0 < i < len(pieces) - 1
            whole_documents += whole
            assert any((text == d) if whole else (text in d) for d in docs[names[j]]), (names[j], text[:80])
    assert whole_documents > 0


def test_same_seed_same_bytes_other_seed_other_order(prepared):
    with loader(prepared) as a, loader(prepared) as b, loader(prepared, seed=8) as c:
        first, second, other = a.read_global(96)[1], b.read_global(96)[1], c.read_global(96)[1]
    assert first.tobytes() == second.tobytes()
    assert first.tobytes() != other.tobytes()


def test_resume_with_another_world_size_gives_the_uninterrupted_batches(prepared):
    def global_batch(loaders):  # in stream order: each rank's rows at their slots of the global batch
        rows = np.concatenate([np.concatenate([mb.numpy() for mb in ld.next_step()]) for ld in loaders])
        return rows[np.argsort(np.concatenate([ld.last_slots for ld in loaders]))]

    with loader(prepared) as single:
        uninterrupted = [global_batch([single]) for _ in range(8)]
    two = [loader(prepared, rank=r, world_size=2) for r in range(2)]
    before = [global_batch(two) for _ in range(3)]
    state = two[0].state_dict()
    assert state["sequences_consumed"] == 3 * 24 and state["seed"] == 7
    assert two[0].source_sequences() == two[1].source_sequences()
    for ld in two:
        ld.close()
    three = [loader(prepared, rank=r, world_size=3) for r in range(3)]
    for ld in three:
        ld.load_state_dict(state)
        batches = ld.next_step()
        assert len(batches) == 2 and all(mb.shape == (4, SEQ + 1) for mb in batches)
        ld.load_state_dict(state)
    after = [global_batch(three) for _ in range(5)]
    for ld in three:
        ld.close()
    for expected, got in zip(uninterrupted, before + after):
        assert np.array_equal(expected, got)


def test_from_spec_refuses_a_plan_that_needs_more_than_the_shards(prepared):
    bucket = prepared["bucket"]

    def spec(total_tokens, when):
        return parse_spec(
            {
                "model": {"preset": "tiny"},
                "tokenizer": "gpt2",
                "data": {
                    "seqLength": SEQ,
                    "totalTokens": total_tokens,
                    "whenExhausted": when,
                    "sources": [
                        {"name": n, "uri": f"s3://{bucket}/tokens/{n}", "weight": w} for n, w in WEIGHTS.items()
                    ],
                },
                "training": {"microBatchSize": 4, "globalBatchSize": 24},
                "resources": {"workers": 1},
                "output": {"uri": f"s3://{bucket}/runs/x"},
            }
        )

    small, small_plan = spec(24 * SEQ * 10, "fail")
    with MixtureLoader.from_spec(small, small_plan, rank=0, world_size=1) as ok:
        assert [mb.shape for mb in ok.next_step()] == [(4, SEQ + 1)] * 6
    big, big_plan = spec(24 * SEQ * 400, "fail")
    with pytest.raises(SourceExhausted, match="source 'manuals' needs 4,800 sequences but its shards hold"):
        MixtureLoader.from_spec(big, big_plan, rank=0, world_size=1)
    repeat, repeat_plan = spec(24 * SEQ * 400, "repeat")
    with MixtureLoader.from_spec(repeat, repeat_plan, rank=0, world_size=1) as ld:
        ld.load_state_dict({"sequences_consumed": 24 * 390, "seed": 0})
        assert len(ld.next_step()) == 6  # well past one epoch of every source


def test_rerun_skips_finished_files_and_redoes_a_half_done_one(prepared):
    bucket = prepared["bucket"]
    out = f"s3://{bucket}/tokens/edu"
    before = storage.read_json(f"{out}/index.json")
    # A crash after the first file's shards but before its marker and the index: only that file is redone.
    parts = [u for u in storage.find(f"{out}/parts")]
    storage.remove(parts[0])
    storage.remove(f"{out}/index.json")
    log: list[str] = []
    run_prepare(f"s3://{bucket}/text/edu", out, shard_tokens=16_384, log=log.append)
    assert sum("(already done)" in line for line in log) == 1 and sum("(tokenized)" in line for line in log) == 1
    assert storage.read_json(f"{out}/index.json") == before


def test_prefetch_holds_a_bounded_number_of_windows(prepared):
    with loader(prepared) as ld:
        for _ in range(40):  # ~8 passes over the small demo sources: every lane read many times
            ld.next_step()
            assert ld._windows.held() <= 2 * len(ld.own_lanes) * 3  # this window and the next, per lane
        assert set(ld.source_sequences()) == set(WEIGHTS) and sum(ld.source_sequences().values()) == 40 * 24
