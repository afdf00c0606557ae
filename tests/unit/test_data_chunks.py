"""Per-chunk checksums of the shard format (shards.py, pure parts): written by `shard_record`, parsed and
checked by `parse_index`, ranged reads widened to chunk edges by `fetch_spans` and checked by `verify_range`."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest

from trainkit.data import load_tokenizer
from trainkit.data.shards import DataError, fetch_spans, index_document, parse_index, shard_record, verify_range

CHUNK = 100


def index_of(shards: list[tuple[str, np.ndarray]], chunk_bytes: int = CHUNK, with_chunks: bool = True):
    entries, blobs = [], {}
    for name, tokens in shards:
        data, entry = shard_record(name, tokens, np.dtype("<u2"), 1, chunk_bytes=chunk_bytes)
        if not with_chunks:  # as written before chunk checksums existed
            entry.pop("chunkCrc32")
        entries.append(entry)
        blobs[name] = data
    doc = index_document(
        dtype=np.dtype("<u2"),
        tokenizer=load_tokenizer("gpt2"),
        shards=entries,
        source_files=[],
        shard_tokens=1000,
        chunk_bytes=chunk_bytes,
    )
    if not with_chunks:
        doc.pop("chunkBytes")
    return doc, blobs


def tokens(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 50257, n).astype(np.uint16)


def test_shard_record_lists_the_crc32_of_every_chunk_and_parses_back():
    doc, blobs = index_of([("shards/a.bin", tokens(499))])  # 998 bytes: 9 chunks of 100 and one of 98
    index = parse_index(doc, "mem://src")
    data = blobs["shards/a.bin"]
    assert index.chunk_bytes == CHUNK and doc["chunkBytes"] == CHUNK
    expected = [zlib.crc32(data[a : a + CHUNK]) for a in range(0, 998, CHUNK)]
    assert len(expected) == 10
    assert index.shards[0].chunk_crcs().tolist() == expected
    assert index.shards[0].crc32 == zlib.crc32(data)


def test_an_index_without_chunk_checksums_still_parses():
    doc, _ = index_of([("shards/a.bin", tokens(50))], with_chunks=False)
    index = parse_index(doc, "mem://src")
    assert index.chunk_bytes == 0 and index.shards[0].chunk_crc32 == b""


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["shards"][0].update(chunkCrc32="!!!"), r"shards/a.bin: chunkCrc32 is not base64"),
        (lambda d: d["shards"][0].update(chunkCrc32=7), r"shards/a.bin: chunkCrc32 is not base64 \(a int\)"),
        (
            lambda d: d["shards"][0].update(chunkCrc32=base64.b64encode(b"\0" * 12).decode()),
            r"shards/a.bin: chunkCrc32 holds 3 checksums, its 400 bytes make 4 chunks of 100",
        ),
        (lambda d: d.pop("chunkBytes"), r"shard shards/a.bin lists chunkCrc32 but the index has no chunkBytes"),
        (lambda d: d.update(chunkBytes=-5), r"chunkBytes is -5"),
    ],
)
def test_malformed_chunk_checksums_are_refused_naming_the_field(change, message):
    doc, _ = index_of([("shards/a.bin", tokens(200))])
    change(doc)
    with pytest.raises(DataError, match=r"mem://src/index.json: .*" + message):
        parse_index(doc, "mem://src")


def test_ranged_reads_are_widened_to_chunk_edges_and_joined():
    doc, _ = index_of([("shards/a.bin", tokens(499)), ("shards/b.bin", tokens(300, 1))])
    index = parse_index(doc, "mem://src")
    # a.bin is 998 bytes: 150-250 widens to 100-300; 260-290 falls in it; 950-960 ends at the shard's end.
    assert fetch_spans(index, [(0, 150, 250), (0, 260, 290), (0, 950, 960)]) == [(0, 100, 300), (0, 900, 998)]
    assert fetch_spans(index, [(0, 150, 250), (0, 300, 301)]) == [(0, 100, 400)]  # touching: one request
    assert fetch_spans(index, [(1, 0, 600)]) == [(1, 0, 600)]  # a whole shard stays whole
    old = parse_index(index_of([("shards/a.bin", tokens(499))], with_chunks=False)[0], "mem://src")
    assert fetch_spans(old, [(0, 150, 250)]) == [(0, 150, 250)]  # nothing to widen to


def test_a_corrupt_byte_in_a_range_names_the_shard_and_the_chunk_offsets():
    doc, blobs = index_of([("shards/a.bin", tokens(499))])
    index = parse_index(doc, "mem://src")
    data = bytearray(blobs["shards/a.bin"])
    verify_range(index, 0, 200, bytes(data[200:500]))  # intact: no error
    data[347] ^= 0x10
    with pytest.raises(
        DataError, match=r"^mem://src/shards/a.bin: bytes 300-400 \(chunk 3\) do not match their CRC-32"
    ):
        verify_range(index, 0, 200, bytes(data[200:500]))
    with pytest.raises(DataError, match=r"mem://src/shards/a.bin: CRC-32 mismatch"):  # whole shard: its own CRC
        verify_range(index, 0, 0, bytes(data))
    verify_range(index, 0, 400, bytes(data[400:998]))  # chunks after the bad one are fine
