"""The token shard format `trainkit-tokens-v1`: raw little-endian token arrays plus `index.json`.

A prepared source is a folder (or S3 prefix) holding `shards/*.bin` and `index.json`. The index is
written last, so a source exists iff its index does; readers never list the folder. Each shard entry
records its token count, byte size and CRC-32, and the CRC-32 of each `chunkBytes` chunk (`chunkCrc32`),
so a truncated or corrupted shard is caught on read with the shard's URI (and, for a ranged read, the
byte offsets of the bad chunk) in the error, before any of its tokens reach training. Indexes written
before the chunk checksums still load: whole-shard reads are checked against the shard's CRC-32, ranged
reads of them only by length and token range.

`validation` lists the held-out split (`validation/*.bin`, the same shard format): documents chosen by a
hash of their text at prepare time, never in `shards`, read only for validation loss. An index without
it (written before the split existed) has no held-out data.
"""

from __future__ import annotations

import base64
import builtins
import binascii
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from trainkit import storage
from trainkit.storage import StorageOptions

# The file names of a prepared source are defined with the TrainingData spec (the operator reads them too).
from trainkit.spec.data import INDEX_FILE, SHARD_FORMAT

SHARDS_DIR = "shards"  # training shards
VALIDATION_DIR = "validation"  # held-out shards: never trained on


class DataError(ValueError):
    """Prepared data is missing, damaged or does not fit the run; the message names the file."""


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


# The chunk of the per-chunk checksums `trainkit prepare` writes. A ranged read is widened to chunk edges
# (at most one chunk more on each side) and every chunk it covers is checked. 64 KiB: a 32 MiB shard has
# 512 checksums (2.7 kB of base64 in index.json), and a spilled single-row read costs one chunk.
CHUNK_BYTES = 1 << 16


def encode_shard(tokens: np.ndarray, dtype: np.dtype) -> tuple[bytes, int]:
    data = np.ascontiguousarray(tokens, dtype=dtype).tobytes()
    return data, zlib.crc32(data)


def chunk_checksums(data: bytes, chunk_bytes: int) -> np.ndarray:
    """CRC-32 of each `chunk_bytes` chunk of `data` (the last one may be shorter), as uint32."""
    view = memoryview(data)
    return np.array([zlib.crc32(view[a : a + chunk_bytes]) for a in range(0, len(data), chunk_bytes)], dtype="<u4")


def shard_record(
    file: str, tokens: np.ndarray, dtype: np.dtype, documents: int, chunk_bytes: int = CHUNK_BYTES
) -> tuple[bytes, dict]:
    """A shard's bytes and its index.json entry (the one writer of entries: `prepare` and the benchmarks).
    `chunk_bytes` must be the index's `chunkBytes` (index_document's `chunk_bytes`)."""
    data, crc = encode_shard(tokens, dtype)
    packed = chunk_checksums(data, chunk_bytes).tobytes()
    entry = {
        "file": file,
        "tokens": int(len(tokens)),
        "documents": int(documents),
        "bytes": len(data),
        "crc32": crc,
        "chunkCrc32": base64.b64encode(packed).decode("ascii"),
    }
    return data, entry


@dataclass(frozen=True)
class ShardEntry:
    file: str  # relative to the source URI
    tokens: int
    documents: int
    bytes: int
    crc32: int
    chunk_crc32: builtins.bytes = (
        b""  # (`bytes` is a field here) little-endian uint32 per chunk of the index's chunk_bytes; b"": not recorded
    )

    def chunk_crcs(self) -> np.ndarray:
        return np.frombuffer(self.chunk_crc32, dtype="<u4")


@dataclass(frozen=True)
class ShardIndex:
    uri: str
    dtype: np.dtype
    tokenizer_name: str
    fingerprint: str
    vocab_size: int
    eos_id: int
    shards: tuple[ShardEntry, ...]
    source_files: tuple[dict, ...]
    validation: tuple[ShardEntry, ...] = ()
    holdout_fraction: float = 0.0
    chunk_bytes: int = 0  # of the shards' chunkCrc32 (0: an index written before chunk checksums)

    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    @property
    def total_documents(self) -> int:
        return sum(s.documents for s in self.shards)

    @property
    def validation_tokens(self) -> int:
        return sum(s.tokens for s in self.validation)

    def validation_index(self) -> "ShardIndex":
        """The held-out split as an index of its own (its shards read like training shards)."""
        from dataclasses import replace

        return replace(self, shards=self.validation, validation=())

    def sequences_per_shard(self, sequence_tokens: int) -> tuple[int, ...]:
        return tuple(s.tokens // sequence_tokens for s in self.shards)

    def shard_uri(self, i: int) -> str:
        return storage.join(self.uri, self.shards[i].file)


def index_document(
    *,
    dtype: np.dtype,
    tokenizer,
    shards: list[dict],
    source_files: list[dict],
    shard_tokens: int,
    validation: dict | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict:
    """index.json's content. `validation`: {fraction, rule, shards} of the held-out split; `chunk_bytes`:
    the chunk of the entries' `chunkCrc32` (shard_record's)."""
    held = validation or {"fraction": 0.0, "rule": "", "shards": []}
    return {
        "format": SHARD_FORMAT,
        "dtype": np.dtype(dtype).name,
        "chunkBytes": chunk_bytes,
        "tokenizer": {
            "name": tokenizer.name,
            "fingerprint": tokenizer.fingerprint,
            "vocabSize": tokenizer.vocab_size,
            "eosId": tokenizer.eos_id,
        },
        "shardTokens": shard_tokens,
        "totalTokens": sum(s["tokens"] for s in shards),
        "totalDocuments": sum(s["documents"] for s in shards),
        "shards": shards,
        "sourceFiles": source_files,
        "validation": {
            **held,
            "tokens": sum(s["tokens"] for s in held["shards"]),
            "documents": sum(s["documents"] for s in held["shards"]),
        },
    }


def parse_index(doc: dict, uri: str) -> ShardIndex:
    where = storage.join(uri, INDEX_FILE)
    try:
        if doc.get("format") != SHARD_FORMAT:
            raise DataError(f"{where}: format is {doc.get('format')!r}, expected {SHARD_FORMAT!r}")
        tok = doc["tokenizer"]
        chunk_bytes = int(doc.get("chunkBytes") or 0)
        if chunk_bytes < 0:
            raise DataError(f"{where}: chunkBytes is {chunk_bytes}, expected a positive number of bytes")

        def entries(listed) -> tuple[ShardEntry, ...]:
            return tuple(
                ShardEntry(
                    file=storage.safe_relpath(s["file"], f"{where}: field 'shards[].file'"),
                    tokens=int(s["tokens"]),
                    documents=int(s["documents"]),
                    bytes=int(s["bytes"]),
                    crc32=int(s["crc32"]),
                    chunk_crc32=chunk_field(s, where, chunk_bytes),
                )
                for s in listed
            )

        shards = entries(doc["shards"])
        held = doc.get("validation") or {}
        validation = entries(held.get("shards") or ())
        dtype = np.dtype(doc["dtype"]).newbyteorder("<")
        for s in shards + validation:
            if s.bytes != s.tokens * dtype.itemsize:
                raise DataError(f"{where}: shard {s.file} lists {s.tokens} tokens but {s.bytes} bytes")
        return ShardIndex(
            uri=uri,
            dtype=dtype,
            tokenizer_name=tok["name"],
            fingerprint=tok["fingerprint"],
            vocab_size=int(tok["vocabSize"]),
            eos_id=int(tok["eosId"]),
            shards=shards,
            source_files=tuple(doc.get("sourceFiles", ())),
            validation=validation,
            holdout_fraction=float(held.get("fraction") or 0.0),
            chunk_bytes=chunk_bytes,
        )
    except (KeyError, TypeError) as e:
        raise DataError(f"{where}: missing or malformed field {str(e)[:200]}") from e
    except storage.UnsafePath as e:
        raise DataError(str(e)) from None


def chunk_field(entry: dict, where: str, chunk_bytes: int) -> bytes:
    """A shard entry's packed chunk checksums (b"" when it has none), checked to cover the shard exactly."""
    listed = entry.get("chunkCrc32")
    if listed is None:
        return b""
    name = entry.get("file")
    try:
        if not isinstance(listed, str):
            raise ValueError(f"a {type(listed).__name__}")
        packed = base64.b64decode(listed, validate=True)
    except (ValueError, binascii.Error) as e:
        raise DataError(f"{where}: shard {name}: chunkCrc32 is not base64 ({str(e)[:100]})") from None
    if chunk_bytes <= 0:
        raise DataError(f"{where}: shard {name} lists chunkCrc32 but the index has no chunkBytes")
    expected = -(-int(entry["bytes"]) // chunk_bytes)
    if len(packed) != 4 * expected:
        raise DataError(
            f"{where}: shard {name}: chunkCrc32 holds {len(packed) // 4} checksums, its {entry['bytes']} bytes "
            f"make {expected} chunks of {chunk_bytes}"
        )
    return packed


def read_index(uri: str, options: StorageOptions | None = None, attempts: int = 4) -> ShardIndex:
    where = storage.join(uri, INDEX_FILE)
    try:
        raw = storage.read_bytes(where, options, attempts=attempts)
    except FileNotFoundError as e:
        raise DataError(
            f"{where}: not found; run `trainkit prepare` for this source (a source exists iff its index.json does)"
        ) from e
    try:
        import json

        doc = json.loads(raw)
    except ValueError as e:
        raise DataError(f"{where}: not valid JSON ({e})") from e
    except RecursionError:
        raise DataError(f"{where}: nested too deeply to be a shard index") from None
    if not isinstance(doc, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(doc).__name__}")
    return parse_index(doc, uri)


def check_compatible(index: ShardIndex, *, fingerprint: str, vocab_size: int, source: str) -> None:
    if index.fingerprint != fingerprint:
        raise DataError(
            f"source '{source}' ({index.uri}/index.json) was tokenized with {index.tokenizer_name} "
            f"({index.fingerprint}); the run's tokenizer is {fingerprint}: re-run `trainkit prepare` with the run's tokenizer"
        )
    if index.vocab_size > vocab_size:
        raise DataError(
            f"source '{source}' ({index.uri}/index.json) has a vocabulary of {index.vocab_size} tokens, "
            f"more than the model's {vocab_size}"
        )


def decode_shard(data: bytes, index: ShardIndex, i: int, vocab_size: int) -> np.ndarray:
    """Verify one shard's bytes against its index entry and return its tokens (read-only view)."""
    entry, uri = index.shards[i], index.shard_uri(i)
    if len(data) != entry.bytes:
        raise DataError(f"{uri}: {len(data)} bytes, index.json lists {entry.bytes} (truncated or replaced shard)")
    if zlib.crc32(data) != entry.crc32:
        raise DataError(f"{uri}: CRC-32 mismatch against index.json (corrupted shard)")
    tokens = np.frombuffer(data, dtype=index.dtype)
    if len(tokens) and int(tokens.max()) >= vocab_size:
        raise DataError(f"{uri}: token id {int(tokens.max())} >= vocab size {vocab_size}")
    return tokens


def read_shard(index: ShardIndex, i: int, vocab_size: int, options: StorageOptions | None = None) -> np.ndarray:
    uri = index.shard_uri(i)
    try:
        data = storage.read_bulk(uri, options)
    except FileNotFoundError as e:
        raise DataError(f"{uri}: listed in index.json but missing") from e
    return decode_shard(data, index, i, vocab_size)


@dataclass(frozen=True)
class Piece:
    """Whole sequences [first, stop) of one shard, `width` tokens each: one contiguous byte range."""

    shard: int
    first: int
    stop: int


def piece_bytes(index: ShardIndex, piece: Piece, width: int) -> tuple[int, int]:
    """[start, end) byte offsets of `piece` in its shard. A piece that ends at the shard's last whole
    sequence also takes the shard's tail (under one sequence), so a piece holding every sequence is the
    whole object and its CRC-32 can be checked."""
    item = width * index.dtype.itemsize
    start, end = piece.first * item, piece.stop * item
    entry = index.shards[piece.shard]
    if piece.stop == entry.tokens // width:
        end = entry.bytes
    return start, end


def merge_pieces(pieces: list[Piece]) -> list[Piece]:
    """Adjacent or overlapping pieces of the same shard as one (fewer requests; whole shards stay whole)."""
    out: list[Piece] = []
    for p in sorted(pieces, key=lambda p: (p.shard, p.first)):
        if out and out[-1].shard == p.shard and p.first <= out[-1].stop:
            out[-1] = Piece(p.shard, out[-1].first, max(out[-1].stop, p.stop))
        else:
            out.append(p)
    return out


class ChunkCache:
    """Verified chunks a reader keeps (bounded, thread-safe): the edge chunks of each ranged read, which the
    next window of the same lane, or the next row read one by one from a neighbour's lane, mostly needs
    again. One cache per source index (keys are shard ids)."""

    def __init__(self, max_chunks: int = 256):
        self._chunks: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._max = max_chunks
        self._lock = threading.Lock()

    def get(self, shard: int, chunk: int) -> bytes | None:
        with self._lock:
            data = self._chunks.get((shard, chunk))
            if data is not None:
                self._chunks.move_to_end((shard, chunk))
            return data

    def put(self, shard: int, chunk: int, data: bytes) -> None:
        with self._lock:
            self._chunks[(shard, chunk)] = data
            self._chunks.move_to_end((shard, chunk))
            while len(self._chunks) > self._max:
                self._chunks.popitem(last=False)


def fetch_spans(index: ShardIndex, spans: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The (shard, start, end) byte ranges to fetch for the wanted ones: widened to chunk edges where the
    shard has chunk checksums, so that every byte handed out is checked (a whole shard stays whole: its
    own CRC-32 covers it), then overlapping or touching ranges of one shard joined (fewer requests)."""
    out: list[tuple[int, int, int]] = []
    for shard, a, b in sorted(spans):
        entry = index.shards[shard]
        if entry.chunk_crc32 and not (a == 0 and b == entry.bytes):
            c = index.chunk_bytes
            a, b = a // c * c, min(entry.bytes, -(-b // c) * c)
        if out and out[-1][0] == shard and a <= out[-1][2]:
            out[-1] = (shard, out[-1][1], max(out[-1][2], b))
        else:
            out.append((shard, a, b))
    return out


def verify_range(index: ShardIndex, shard: int, start: int, blob: bytes) -> None:
    """Check bytes [start, start + len(blob)) of a shard against index.json: the shard's CRC-32 when they are
    the whole shard, else each chunk's (start is then a chunk edge, see fetch_spans). A range of an index
    without chunk checksums is left to the length and token-range checks."""
    entry, uri = index.shards[shard], index.shard_uri(shard)
    if start == 0 and len(blob) == entry.bytes:
        if zlib.crc32(blob) != entry.crc32:
            raise DataError(f"{uri}: CRC-32 mismatch against index.json (corrupted shard)")
        return
    if not entry.chunk_crc32:
        return
    c, crcs, view = index.chunk_bytes, entry.chunk_crcs(), memoryview(blob)
    first = start // c
    for i, at in enumerate(range(0, len(blob), c)):
        chunk = view[at : at + c]
        if zlib.crc32(chunk) != int(crcs[first + i]):
            raise DataError(
                f"{uri}: bytes {start + at:,}-{start + at + len(chunk):,} (chunk {first + i}) do not match their "
                "CRC-32 in index.json (corrupted shard)"
            )


def read_pieces(
    index: ShardIndex,
    pieces: list[Piece],
    width: int,
    vocab_size: int,
    options: StorageOptions | None = None,
    cache: ChunkCache | None = None,
    on_fetch: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Token rows [n, width] of each piece, read as byte ranges (concurrently on S3, one request per
    joined range, see fetch_spans) and verified before they are handed out: byte count, the CRC-32 of
    every chunk read (or of the whole shard), token ids < vocab. Edge chunks found in `cache` are not
    fetched again. `on_fetch(requests, bytes)` is told what went over the network."""
    merged = merge_pieces(pieces)
    spans = [piece_bytes(index, p, width) for p in merged]
    ranges = fetch_spans(index, [(p.shard, a, b) for p, (a, b) in zip(merged, spans)])
    c = index.chunk_bytes
    # Cached edge chunks are cut off each range before it is fetched, and put back after.
    heads: list[list[bytes]] = [[] for _ in ranges]
    tails: list[list[bytes]] = [[] for _ in ranges]
    wanted: list[tuple[int, int, int, int]] = []  # (range index, shard, start, end) still to fetch
    for i, (shard, a, b) in enumerate(ranges):
        if cache is not None and index.shards[shard].chunk_crc32 and not (a == 0 and b == index.shards[shard].bytes):
            while a < b and (got := cache.get(shard, a // c)) is not None:
                heads[i].append(got)
                a += len(got)
            while a < b and (got := cache.get(shard, (b - 1) // c)) is not None:
                tails[i].insert(0, got)
                b = (b - 1) // c * c
        if a < b:
            wanted.append((i, shard, a, b))
    uris = [index.shard_uri(shard) for _, shard, _, _ in wanted]
    try:
        blobs = storage.read_ranges([(uri, a, b) for uri, (_, _, a, b) in zip(uris, wanted)], options)
    except FileNotFoundError as e:
        missing = next((uri for uri in uris if not storage.exists(uri, options)), index.uri)
        raise DataError(f"{missing}: listed in index.json but missing") from e
    except storage.StorageError as e:
        for w, uri in zip(wanted, uris):  # a range past the end of a shortened object: say which
            entry = index.shards[w[1]]
            if (size := storage.size(uri, options)) != entry.bytes:
                raise DataError(
                    f"{uri}: {size} bytes, index.json lists {entry.bytes} (truncated or replaced shard)"
                ) from e
        raise
    if on_fetch is not None:
        on_fetch(len(wanted), sum(len(blob) for blob in blobs))
    fetched: list[bytes | None] = [None] * len(ranges)
    for (i, shard, a, b), blob in zip(wanted, blobs):
        entry, uri = index.shards[shard], index.shard_uri(shard)
        if len(blob) != b - a:
            size = storage.size(uri, options)
            raise DataError(f"{uri}: {size} bytes, index.json lists {entry.bytes} (truncated or replaced shard)")
        verify_range(index, shard, a, blob)
        if cache is not None and entry.chunk_crc32 and not (a == 0 and b == entry.bytes):
            cache.put(shard, a // c, blob[:c])
            cache.put(shard, (b - 1) // c, blob[(b - 1) // c * c - a :])
        fetched[i] = blob
    data = [b"".join([*heads[i], fetched[i] or b"", *tails[i]]) for i in range(len(ranges))]
    for (shard, _, _), blob in zip(ranges, data):  # every byte read, the tail of a shard too
        tokens = np.frombuffer(blob, dtype=index.dtype)
        if len(tokens) and int(tokens.max()) >= vocab_size:
            raise DataError(f"{index.shard_uri(shard)}: token id {int(tokens.max())} >= vocab size {vocab_size}")
    rows: dict[Piece, np.ndarray] = {}
    item = index.dtype.itemsize
    for p, (start, end) in zip(merged, spans):
        k = next(i for i, (shard, a, b) in enumerate(ranges) if shard == p.shard and a <= start and end <= b)
        n = p.stop - p.first
        rows[p] = np.frombuffer(data[k], dtype=index.dtype, count=n * width, offset=start - ranges[k][1]).reshape(
            n, width
        )
        assert end - start >= n * width * item
    out = []
    for p in pieces:
        m = next(m for m in merged if m.shard == p.shard and m.first <= p.first and p.stop <= m.stop)
        out.append(rows[m][p.first - m.first : p.stop - m.first])
    return out


def source_token_counts(sources: list[tuple[str, str]], options: StorageOptions | None = None) -> dict[str, int]:
    """Each source's training tokens (its index.json; the held-out split not counted), by source name: what
    a sweep's natural prior is built from (trainkit.mixture.prior.natural). DataError names a source that
    has no readable index."""
    return {name: read_index(uri, options).total_tokens for name, uri in sources}
