"""Bad data gets a clear error naming the file or field, a non-zero exit, and nothing that looks finished."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainkit import storage
from trainkit.cli import main
from trainkit.data import DataError, MixtureLoader, MixtureSource, load_tokenizer
from trainkit.data.prepare import PrepareError, run_prepare
from trainkit.data.shards import CHUNK_BYTES, encode_shard, index_document
from trainkit.storage import StorageError, StorageOptions

DOCS = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "Object storage keeps every shard of a prepared source under one prefix. " * 15,
    "A mixture run reads several sources in stated proportions, the same way after every restart. " * 12,
]


def put_parquet(uri: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(uri, buf.getvalue())


def prepared_source(bucket: str, name: str, docs=DOCS) -> str:
    put_parquet(f"{bucket}/{name}-text/data/train-00000-of-00001.parquet", pa.table({"text": docs}))
    run_prepare(f"{bucket}/{name}-text", f"{bucket}/{name}", shard_tokens=256, log=lambda _: None)
    return f"{bucket}/{name}"


def open_loader(uri: str, fingerprint: str | None = None, vocab_size: int = 50257) -> MixtureLoader:
    return MixtureLoader(
        [MixtureSource("only", uri, 1.0)],
        seq_length=32,
        global_batch=2,
        micro_batch=1,
        fingerprint=fingerprint or load_tokenizer("gpt2").fingerprint,
        vocab_size=vocab_size,
        when_exhausted="repeat",
    )


def nothing_finished(output: str) -> bool:
    return not storage.exists(f"{output}/index.json")


def test_parquet_without_a_text_column_names_the_file_and_columns(s3_bucket, ray_session, capsys):
    src = f"{s3_bucket}/in/data/train-00000-of-00001.parquet"
    put_parquet(src, pa.table({"content": ["a document"], "url": ["http://x"]}))
    assert main(["prepare", f"{s3_bucket}/in", f"{s3_bucket}/out"]) == 1
    err = capsys.readouterr().err
    assert src in err and "no 'text' column (columns: content, url)" in err
    assert nothing_finished(f"{s3_bucket}/out")


def test_empty_source_is_refused(s3_bucket, ray_session):
    put_parquet(f"{s3_bucket}/empty/data/train-00000-of-00001.parquet", pa.table({"text": pa.array([], pa.string())}))
    with pytest.raises(PrepareError, match=f"input {s3_bucket}/empty: the text files hold no documents"):
        run_prepare(f"{s3_bucket}/empty", f"{s3_bucket}/out", log=lambda _: None)
    assert nothing_finished(f"{s3_bucket}/out")
    storage.write_bytes(f"{s3_bucket}/notext/README.md", b"no data here")
    with pytest.raises(PrepareError, match=r"no text files \(expected data/train-\*.parquet"):
        run_prepare(f"{s3_bucket}/notext", f"{s3_bucket}/out2", log=lambda _: None)


def test_missing_bucket_is_named(s3_bucket, ray_session):
    with pytest.raises(PrepareError, match="input s3://no-such-bucket-tk/text: not found"):
        run_prepare("s3://no-such-bucket-tk/text", f"{s3_bucket}/out", log=lambda _: None)
    put_parquet(f"{s3_bucket}/in/data/train-00000-of-00001.parquet", pa.table({"text": DOCS}))
    with pytest.raises(PrepareError, match="output s3://no-such-bucket-tk/out: bucket does not exist"):
        run_prepare(f"{s3_bucket}/in", "s3://no-such-bucket-tk/out", log=lambda _: None)
    with pytest.raises(DataError, match="s3://no-such-bucket-tk/tokens/index.json: not found; run `trainkit prepare`"):
        open_loader("s3://no-such-bucket-tk/tokens")


def test_jsonl_without_text_field_names_the_line(tmp_path, ray_session):
    import gzip

    (tmp_path / "in").mkdir()
    with gzip.open(tmp_path / "in" / "part-0.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": DOCS[0]}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(PrepareError, match=r"part-0.jsonl.gz: line 2: no 'text' field"):
        run_prepare(str(tmp_path / "in"), str(tmp_path / "out"), log=lambda _: None)
    assert not (tmp_path / "out" / "index.json").exists()


def test_jsonl_zst_and_parquet_give_the_same_tokens(tmp_path, ray_session):
    import zstandard

    (tmp_path / "j").mkdir()
    lines = "".join(json.dumps({"text": d}) + "\n" for d in DOCS).encode()
    (tmp_path / "j" / "docs.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    put_parquet(str(tmp_path / "p" / "data" / "train-00000-of-00001.parquet"), pa.table({"text": DOCS}))
    a = run_prepare(str(tmp_path / "j"), str(tmp_path / "jo"), shard_tokens=256, log=lambda _: None)
    b = run_prepare(str(tmp_path / "p"), str(tmp_path / "po"), shard_tokens=256, log=lambda _: None)
    assert a["totalDocuments"] == 3 and [s["crc32"] for s in a["shards"]] == [s["crc32"] for s in b["shards"]]
    # Every shard also lists the CRC-32 of each chunk (what ranged reads are checked against).
    assert a["chunkBytes"] == CHUNK_BYTES and all(s["chunkCrc32"] for s in a["shards"] + a["validation"]["shards"])
    assert [s["chunkCrc32"] for s in a["shards"]] == [s["chunkCrc32"] for s in b["shards"]]


def test_truncated_and_corrupted_shards_are_caught_naming_the_shard(s3_bucket, ray_session):
    uri = prepared_source(s3_bucket, "src")
    index = storage.read_json(f"{uri}/index.json")
    shard = f"{uri}/{index['shards'][0]['file']}"
    good = storage.read_bytes(shard)
    storage.write_bytes(shard, good[:-10])
    with (
        open_loader(uri) as ld,
        pytest.raises(DataError, match=rf"{shard}: \d+ bytes, index.json lists \d+ \(truncated"),
    ):
        ld.read_global(ld.orders[0].sequences)  # every shard once
    flipped = bytearray(good)
    flipped[100] ^= 0x01
    storage.write_bytes(shard, bytes(flipped))
    with open_loader(uri) as ld, pytest.raises(DataError, match=rf"{shard}: CRC-32 mismatch"):
        ld.read_global(ld.orders[0].sequences)


def test_wrong_tokenizer_fingerprint_is_refused(s3_bucket, ray_session):
    uri = prepared_source(s3_bucket, "src")
    with pytest.raises(
        DataError, match=r"source 'only' \(.*/src/index.json\) was tokenized with gpt2 .*re-run `trainkit prepare`"
    ):
        open_loader(uri, fingerprint="sha256:" + "0" * 64)


def test_token_ids_beyond_the_vocabulary_are_refused(s3_bucket):
    tok = load_tokenizer("gpt2")
    tokens = np.array(tok.encode(DOCS[0]) * 2 + [60_000], dtype=np.uint16)
    data, crc = encode_shard(tokens, np.dtype("<u2"))
    storage.write_bytes(f"{s3_bucket}/bad/shards/s-00000.bin", data)
    storage.write_json(
        f"{s3_bucket}/bad/index.json",
        index_document(
            dtype=np.dtype("<u2"),
            tokenizer=tok,
            shard_tokens=len(tokens),
            source_files=[],
            shards=[
                {"file": "shards/s-00000.bin", "tokens": len(tokens), "documents": 1, "bytes": len(data), "crc32": crc}
            ],
        ),
    )
    with (
        open_loader(f"{s3_bucket}/bad") as ld,
        pytest.raises(DataError, match=r"s-00000.bin: token id 60000 >= vocab size 50257"),
    ):
        ld.next_step()


def test_unreachable_endpoint_fails_after_bounded_retries(tmp_path, ray_session):
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"s3://some-bucket/text.*(EndpointConnectionError|Could not connect)"):
        run_prepare(
            "s3://some-bucket/text",
            str(tmp_path / "out"),
            options=StorageOptions(endpoint="http://127.0.0.1:9"),
            log=lambda _: None,
        )
    assert time.monotonic() - started < 90
    assert not (tmp_path / "out" / "index.json").exists()
