"""Ranged reads are checked: the loader reads parts of shards (its own lanes' windows, rows spilled from a
neighbour's lanes) from a real S3 server, and every chunk it reads is checked against index.json's
per-chunk CRC-32s, so one flipped byte inside a ranged window stops the stream with the shard and the
byte offsets named, before any row of that chunk is handed out. An index written before chunk checksums
reads the very same rows."""

from __future__ import annotations

import numpy as np
import pytest

from trainkit import storage
from trainkit.data import DataError, MixtureLoader, MixtureSource, load_tokenizer
from trainkit.data.shards import index_document, shard_record

SEQ = 63  # 64-token rows of 128 bytes
CHUNK = 1024  # 8 rows per chunk; `trainkit prepare` writes 64 KiB chunks


def write_source(uri: str, with_chunks: bool = True) -> list[str]:
    """Two shards of GPT-2 tokens of Python's own docs (~40 kB each), index.json last; their URIs."""
    from pydoc_data.topics import topics

    tok = load_tokenizer("gpt2")
    ids = np.array([t for k in sorted(topics)[:60] for t in tok.encode(topics[k]) + [tok.eos_id]], np.uint16)
    entries = []
    for k in range(2):
        part = ids[k * 20_000 : (k + 1) * 20_000 + 17]  # a tail under one row
        data, entry = shard_record(f"shards/{k:03d}.bin", part, np.dtype("<u2"), 1, chunk_bytes=CHUNK)
        if not with_chunks:
            entry.pop("chunkCrc32")
        storage.write_bytes(f"{uri}/{entry['file']}", data)
        entries.append(entry)
    doc = index_document(
        dtype=np.dtype("<u2"), tokenizer=tok, shards=entries, source_files=[], shard_tokens=20_017, chunk_bytes=CHUNK
    )
    if not with_chunks:
        doc.pop("chunkBytes")
    storage.write_json(f"{uri}/index.json", doc)
    return [f"{uri}/{e['file']}" for e in entries]


def read_everything(uri: str, world: int) -> list[list[bytes]]:
    """Every rank of `world` reads one epoch; each rank's rows (its windows are parts of shards: small buffer)."""
    out = []
    for rank in range(world):
        with MixtureLoader(
            [MixtureSource("only", uri, 1.0)],
            seq_length=SEQ,
            global_batch=24,
            micro_batch=24 // world,
            rank=rank,
            world_size=world,
            fingerprint=load_tokenizer("gpt2").fingerprint,
            vocab_size=50257,
            buffer_bytes=32 << 10,
        ) as ld:
            steps = ld.orders[0].sequences // 24
            out.append([row.tobytes() for _ in range(steps) for mb in ld.next_step() for row in mb.numpy()])
            assert ld.traffic.requests > 2 * len(ld.indexes[0].shards)  # ranged reads, not whole shards
    return out


@pytest.mark.parametrize("world", [1, 3])
def test_a_flipped_byte_in_a_ranged_window_names_the_shard_and_offset(s3_bucket, world):
    uri = f"{s3_bucket}/chunked"
    shards = write_source(uri)
    intact = read_everything(uri, world)
    assert sum(map(len, intact)) == 24 * (2 * 20_017 // 64 // 24)

    good = storage.read_bytes(shards[1])
    bad = bytearray(good)
    bad[21_000] ^= 0x04  # inside chunk 20 (bytes 20,480-21,504) of the second shard
    storage.write_bytes(shards[1], bytes(bad))
    with pytest.raises(DataError) as caught:
        read_everything(uri, world)
    assert str(caught.value) == (
        f"{shards[1]}: bytes 20,480-21,504 (chunk 20) do not match their CRC-32 in index.json (corrupted shard)"
    )


def test_an_index_without_chunk_checksums_reads_the_same_rows(s3_bucket):
    write_source(f"{s3_bucket}/new")
    write_source(f"{s3_bucket}/old", with_chunks=False)
    assert read_everything(f"{s3_bucket}/old", 3) == read_everything(f"{s3_bucket}/new", 3)
