"""The token shard format `trainkit-tokens-v1`: raw little-endian token arrays plus `index.json`.

A prepared source is a folder (or S3 prefix) holding `shards/*.bin` and `index.json`. The index is
written last, so a source exists iff its index does; readers never list the folder. Each shard entry
records its token count, byte size and CRC-32, so a truncated or corrupted shard is caught on read with
the shard's URI in the error, before any of its tokens reach training.

`validation` lists the held-out split (`validation/*.bin`, the same shard format): documents chosen by a
hash of their text at prepare time, never in `shards`, read only for validation loss. An index without
it (written before the split existed) has no held-out data.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

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


def encode_shard(tokens: np.ndarray, dtype: np.dtype) -> tuple[bytes, int]:
    data = np.ascontiguousarray(tokens, dtype=dtype).tobytes()
    return data, zlib.crc32(data)


@dataclass(frozen=True)
class ShardEntry:
    file: str  # relative to the source URI
    tokens: int
    documents: int
    bytes: int
    crc32: int


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
) -> dict:
    """index.json's content. `validation`: {fraction, rule, shards} of the held-out split."""
    held = validation or {"fraction": 0.0, "rule": "", "shards": []}
    return {
        "format": SHARD_FORMAT,
        "dtype": np.dtype(dtype).name,
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

        def entries(listed) -> tuple[ShardEntry, ...]:
            return tuple(
                ShardEntry(
                    file=storage.safe_relpath(s["file"], f"{where}: field 'shards[].file'"),
                    tokens=int(s["tokens"]),
                    documents=int(s["documents"]),
                    bytes=int(s["bytes"]),
                    crc32=int(s["crc32"]),
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
        )
    except (KeyError, TypeError) as e:
        raise DataError(f"{where}: missing or malformed field {str(e)[:200]}") from e
    except storage.UnsafePath as e:
        raise DataError(str(e)) from None


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
        data = storage.read_bytes(uri, options)
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


def read_pieces(
    index: ShardIndex, pieces: list[Piece], width: int, vocab_size: int, options: StorageOptions | None = None
) -> list[np.ndarray]:
    """Token rows [n, width] of each piece, read as byte ranges (concurrently on S3, one request per
    merged piece) and verified: byte count, token ids < vocab, and the CRC-32 where a piece is a whole
    shard. Ranged reads of part of a shard cannot be checked against the shard's CRC-32."""
    merged = merge_pieces(pieces)
    spans = [piece_bytes(index, p, width) for p in merged]
    fs, _ = storage.filesystem(index.uri, options)
    paths = [storage.filesystem(index.shard_uri(p.shard), options)[1] for p in merged]
    try:
        blobs = storage.retry(
            lambda: fs.cat_ranges(paths, [a for a, _ in spans], [b for _, b in spans], on_error="raise"),
            f"reading {len(merged)} ranges of {index.uri}",
        )
    except FileNotFoundError as e:
        missing = next((index.shard_uri(p.shard) for p, path in zip(merged, paths) if not fs.exists(path)), index.uri)
        raise DataError(f"{missing}: listed in index.json but missing") from e
    except storage.StorageError as e:
        for p, path in zip(merged, paths):  # a range past the end of a shortened object: say which
            entry = index.shards[p.shard]
            if (size := fs.size(path)) != entry.bytes:
                raise DataError(
                    f"{index.shard_uri(p.shard)}: {size} bytes, index.json lists {entry.bytes} "
                    "(truncated or replaced shard)"
                ) from e
        raise
    rows: dict[Piece, np.ndarray] = {}
    item = width * index.dtype.itemsize
    for p, (start, end), blob in zip(merged, spans, blobs):
        entry, uri = index.shards[p.shard], index.shard_uri(p.shard)
        if len(blob) != end - start:
            size = fs.size(storage.filesystem(uri, options)[1])
            raise DataError(f"{uri}: {size} bytes, index.json lists {entry.bytes} (truncated or replaced shard)")
        if start == 0 and end == entry.bytes:
            tokens = decode_shard(blob, index, p.shard, vocab_size)
        else:
            tokens = np.frombuffer(blob, dtype=index.dtype)
            if len(tokens) and int(tokens.max()) >= vocab_size:
                raise DataError(f"{uri}: token id {int(tokens.max())} >= vocab size {vocab_size}")
        n = p.stop - p.first
        rows[p] = tokens[: n * width].reshape(n, width)
        assert len(blob) >= n * item
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
