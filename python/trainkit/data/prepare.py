"""`trainkit prepare`: text (parquet with a `text` column, or jsonl[.gz|.zst]) -> token shards + index.json.

A Ray Data job: one work unit per input file, mapped over the cluster. A unit streams its file in
record batches, tokenizes with the run's tokenizer, appends EOS after every document, and writes
shards of exactly `shard_tokens` tokens (its last shard holds the rest), then a small marker
`parts/<unit>.json`. A deterministic fraction of the documents (chosen by a hash of each document's
text, `held_out`) is never written to the training shards: it goes to `validation/` shards of its own,
listed under `validation` in index.json, for the runs' held-out validation loss. Shards are written atomically and markers after their shards, so a re-run skips
every unit whose marker matches (same input size, tokenizer and shard size) and never trusts a half
written one. The driver writes `index.json` last: until then the output is not a source.

Several inputs may feed one source (a TrainingData's `inputs`); an optional `DocumentFilter` (minimum
length, a language column's value, exact-hash dedup within a file) drops documents before tokenizing,
and is part of every marker, so a changed filter re-tokenizes. While it runs the driver keeps
`prepare-progress.json` (files done, tokens, documents; the error when it fails) next to the shards:
the operator shows it in the TrainingData's status.

Inputs may be local, s3:// or hf://datasets/ORG/NAME[@revision][/path] (trainkit.storage reads the hub; the
revision is pinned to its commit when the prepare starts). The inputs are listed and every parquet footer read
before Ray starts, so a bad input fails in seconds. Memory per unit is bounded (BATCH_ROWS, TOKENIZE_CHARS, one
shard buffer), not proportional to the input.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from trainkit import storage
from trainkit.data.shards import (
    INDEX_FILE,
    SHARDS_DIR,
    VALIDATION_DIR,
    dtype_for_vocab,
    index_document,
    shard_record,
)
from trainkit.spec.data import PROGRESS_FILE
from trainkit.data.tokenizer import Tokenizer, load_tokenizer
from trainkit.storage import StorageOptions

DEFAULT_SHARD_TOKENS = 1 << 24  # 32 MiB of uint16: one S3 GET per shard, few shards per source
# 2% of documents held out: ~20M tokens of a 1B-token source, far more than a run's validation budget
# needs, and the small demo sources still get a few thousand held-out tokens each.
DEFAULT_HOLDOUT_FRACTION = 0.02
MAX_HOLDOUT_FRACTION = 0.5
HOLDOUT_RULE = "blake2b-64(utf-8 text) / 2^64 < fraction"
TEXT_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")
MARKER_VERSION = 2  # 2: held-out validation documents in validation/ shards
DEFAULT_TEXT_COLUMN = "text"
# Memory per work unit is bounded by these, not by the input's size: rows per parquet/jsonl batch (a parquet
# row group is read whole, so the writer's row-group size bounds it too), characters per tokenizer call (~40
# bytes of Python lists per token while a chunk is converted), and one shard of pending tokens.
BATCH_ROWS = 512
TOKENIZE_CHARS = 1 << 21


class PrepareError(ValueError):
    """The input cannot be prepared; the message names the file or field."""


@dataclass(frozen=True)
class DocumentFilter:
    """Which documents are kept. Pure; `key()` goes into every marker."""

    min_length: int = 0  # characters
    language_field: str | None = None
    language: str | None = None
    dedup: bool = False  # exact text hash, within one input file (units run in parallel)

    def key_args(self) -> dict:
        return {
            "min_length": self.min_length,
            "language_field": self.language_field,
            "language": self.language,
            "dedup": self.dedup,
        }

    def key(self) -> dict:
        return {
            "minLength": self.min_length,
            "languageField": self.language_field,
            "language": self.language,
            "dedup": self.dedup,
        }

    def keep(self, texts: list[str], languages: list | None, seen: set[bytes]) -> list[str]:
        kept = []
        for i, text in enumerate(texts):
            if len(text) < self.min_length:
                continue
            if self.language_field is not None and (languages is None or languages[i] != self.language):
                continue
            if self.dedup:
                digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                if digest in seen:
                    continue
                seen.add(digest)
            kept.append(text)
        return kept


NO_FILTER = DocumentFilter()


@dataclass(frozen=True)
class Unit:
    input_uri: str
    unit_id: str  # stable name for this input's shards and marker
    input_bytes: int


# ------------------------------------------------------------------------------- pure decisions
def select_inputs(files: list[str], root: str) -> list[str]:
    """Text files under `root`: the Hugging Face layout `data/train-*.parquet` when present, else every
    parquet/jsonl file. Sorted, so the shard order does not depend on listing order."""
    rel = {f: f[len(root.rstrip("/")) :].lstrip("/") for f in files}
    texts = [f for f in files if f.endswith(TEXT_SUFFIXES) and not PurePosixPath(rel[f]).name.startswith(".")]
    train = [f for f in texts if re.fullmatch(r"(.*/)?data/train-[^/]*\.parquet", rel[f])]
    return sorted(train or texts)


def unit_id_for(input_uri: str, root: str) -> str:
    rel = input_uri[len(root.rstrip("/")) :].lstrip("/") or PurePosixPath(input_uri).name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", PurePosixPath(rel).name.split(".")[0])[:60]
    return f"{stem}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"


def held_out(text: str, fraction: float) -> bool:
    """Whether a document belongs to the held-out validation split: a function of its text alone, so the
    split is the same on every re-run and worker, and an exact duplicate of a held-out document is
    held out too (it cannot leak into training through a second copy)."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
    return h < fraction * 2**64


def check_holdout_fraction(fraction: float) -> None:
    if not (0 <= fraction <= MAX_HOLDOUT_FRACTION):
        raise PrepareError(f"holdout fraction must be in [0, {MAX_HOLDOUT_FRACTION}], got {fraction}")


def marker_matches(
    marker: dict,
    unit: Unit,
    fingerprint: str,
    shard_tokens: int,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    text_column: str = DEFAULT_TEXT_COLUMN,
    doc_filter: DocumentFilter = NO_FILTER,
) -> bool:
    return (
        marker.get("version") == MARKER_VERSION
        and marker.get("holdoutFraction") == holdout_fraction
        and marker.get("input") == unit.input_uri
        and marker.get("inputBytes") == unit.input_bytes
        and marker.get("fingerprint") == fingerprint
        and marker.get("shardTokens") == shard_tokens
        and marker.get("textColumn", DEFAULT_TEXT_COLUMN) == text_column
        and marker.get("filter", NO_FILTER.key()) == doc_filter.key()
    )


def chunks_by_chars(texts: list[str], max_chars: int) -> Iterator[list[str]]:
    """Consecutive runs of documents holding at most `max_chars` characters (a longer document alone), so the
    token lists of one tokenizer call stay bounded however long the documents are (PDF pages, whole books)."""
    chunk: list[str] = []
    chars = 0
    for text in texts:
        if chunk and chars + len(text) > max_chars:
            yield chunk
            chunk, chars = [], 0
        chunk.append(text)
        chars += len(text)
    if chunk:
        yield chunk


# ---------------------------------------------------------------------------------- reading text
def missing_column(uri: str, names: list[str], wanted: list[str]) -> str | None:
    """The message for a parquet file without a wanted column, or None."""
    for name in wanted:
        if name not in names:
            return f"{uri}: no '{name}' column (columns: {', '.join(names) or 'none'})"
    return None


def check_parquet_columns(units: list[Unit], options: StorageOptions | None, wanted: list[str]) -> None:
    """Read every parquet input's footer (its schema) before any tokenizing: a file without the text column (or
    the filter's language column) fails the prepare in seconds, naming the file, instead of after hours."""
    import pyarrow.parquet as pq

    for unit in units:
        if not unit.input_uri.endswith(".parquet"):
            continue
        with storage.open_input(unit.input_uri, options, compression=None) as f:
            try:
                names = pq.ParquetFile(f).schema_arrow.names
            except Exception as e:  # pyarrow raises several types for bad files (re-raised as PrepareError)
                raise PrepareError(f"{unit.input_uri}: not a readable parquet file ({e})") from e
        if problem := missing_column(unit.input_uri, names, wanted):
            raise PrepareError(problem)


def iter_texts(uri: str, options: StorageOptions | None, batch_rows: int = BATCH_ROWS, text_column: str = "text"):
    """Lists of document strings from one parquet or jsonl file; errors name the file and field."""
    for texts, _ in iter_documents(uri, options, batch_rows, text_column):
        yield texts


def iter_documents(
    uri: str,
    options: StorageOptions | None,
    batch_rows: int = BATCH_ROWS,
    text_column: str = DEFAULT_TEXT_COLUMN,
    language_field: str | None = None,
):
    """(texts, languages or None) batches from one parquet or jsonl file; empty texts are dropped.
    Errors name the file and the column/field."""
    if uri.endswith(".parquet"):
        import pyarrow.parquet as pq

        with storage.open_input(uri, options, compression=None) as f:
            try:
                pf = pq.ParquetFile(f)
            except Exception as e:  # pyarrow raises several types for bad files (re-raised as PrepareError)
                raise PrepareError(f"{uri}: not a readable parquet file ({e})") from e
            wanted = [text_column] + ([language_field] if language_field else [])
            if problem := missing_column(uri, pf.schema_arrow.names, wanted):
                raise PrepareError(problem)
            # Row group by row group (not iter_batches: its peak memory grows with the number of row groups read,
            # ~+40 MiB for 10x the input here); Python strings for `batch_rows` rows at a time.
            record_batches = (
                batch
                for group in range(pf.num_row_groups)
                for batch in pf.read_row_group(group, columns=wanted).to_batches(max_chunksize=batch_rows)
            )
            for record_batch in record_batches:
                column = record_batch.column(0)
                if not (column.type == "string" or column.type == "large_string"):
                    raise PrepareError(f"{uri}: column '{text_column}' has type {column.type}, expected string")
                texts = column.to_pylist()
                langs = record_batch.column(1).to_pylist() if language_field else None
                keep = [i for i, t in enumerate(texts) if t]
                if len(keep) == len(texts):
                    yield texts, langs
                else:
                    yield [texts[i] for i in keep], ([langs[i] for i in keep] if langs is not None else None)
        return
    with storage.open_input(uri, options) as f:
        batch: list[str] = []
        line_langs: list = []
        for line_no, line in enumerate(_lines(f), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record[text_column]
            except (ValueError, KeyError, TypeError) as e:
                raise PrepareError(
                    f"{uri}: line {line_no}: no '{text_column}' field in a JSON object ({type(e).__name__}: {e})"
                ) from e
            if not isinstance(text, str):
                raise PrepareError(
                    f"{uri}: line {line_no}: '{text_column}' is {type(text).__name__}, expected a string"
                )
            if text:
                batch.append(text)
                if language_field:
                    line_langs.append(record.get(language_field))
            if len(batch) >= batch_rows:
                yield batch, (line_langs if language_field else None)
                batch, line_langs = [], []
        if batch:
            yield batch, (line_langs if language_field else None)


def _lines(f, chunk: int = 8 << 20):
    """Lines of a binary stream; zstd streams cannot readline(), so split chunks ourselves."""
    rest = b""
    while data := f.read(chunk):
        parts = (rest + data).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


# ------------------------------------------------------------------------------- one work unit
class _ShardWriter:
    """Cuts one token stream (training or validation) of a unit into shards of exactly `shard_tokens`, filling one
    preallocated shard buffer: memory is one shard (2 bytes a token) whatever the input's size."""

    def __init__(self, folder: str, unit: Unit, output_uri: str, shard_tokens: int, dtype, eos_id: int, options):
        self.folder, self.unit, self.output_uri, self.shard_tokens = folder, unit, output_uri, shard_tokens
        self.dtype, self.eos_id, self.options = dtype, eos_id, options
        self.shards: list[dict] = []
        self.buffer: np.ndarray | None = None  # allocated on first use (a validation stream may stay empty)
        self.filled = 0

    def add(self, flat: list[int]) -> None:
        if not flat:
            return
        tokens = np.asarray(flat, dtype=self.dtype)
        if self.buffer is None:
            self.buffer = np.empty(self.shard_tokens, dtype=self.dtype)  # pages count only once written
        start = 0
        while start < len(tokens):
            take = min(self.shard_tokens - self.filled, len(tokens) - start)
            self.buffer[self.filled : self.filled + take] = tokens[start : start + take]
            self.filled += take
            start += take
            if self.filled == self.shard_tokens:
                self._flush(self.buffer)
                self.filled = 0

    def close(self) -> list[dict]:
        if self.filled and self.buffer is not None:
            self._flush(self.buffer[: self.filled])
            self.filled = 0
        self.buffer = None
        return self.shards

    def _flush(self, tokens: np.ndarray) -> None:
        name = f"{self.folder}/{self.unit.unit_id}-{len(self.shards):05d}.bin"
        data, entry = shard_record(name, tokens, self.dtype, documents=int(np.count_nonzero(tokens == self.eos_id)))
        storage.write_bytes(storage.join(self.output_uri, name), data, self.options)
        self.shards.append({**entry, "input": self.unit.input_uri})


def prepare_unit(
    unit: Unit,
    output_uri: str,
    tokenizer_name: str,
    shard_tokens: int,
    options: StorageOptions | None,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    text_column: str = DEFAULT_TEXT_COLUMN,
    doc_filter: DocumentFilter = NO_FILTER,
) -> dict:
    """Tokenize one input file into training and validation shards; returns its marker (with `skipped`
    when already done)."""
    tok = load_tokenizer(tokenizer_name)
    marker_uri = storage.join(output_uri, "parts", unit.unit_id + ".json")
    if storage.exists(marker_uri, options):
        marker = storage.read_json(marker_uri, options)
        if marker_matches(marker, unit, tok.fingerprint, shard_tokens, holdout_fraction, text_column, doc_filter):
            return {**marker, "skipped": True}
    dtype = dtype_for_vocab(tok.vocab_size)
    train = _ShardWriter(SHARDS_DIR, unit, output_uri, shard_tokens, dtype, tok.eos_id, options)
    validation = _ShardWriter(VALIDATION_DIR, unit, output_uri, shard_tokens, dtype, tok.eos_id, options)
    documents = held = documents_read = 0
    seen: set[bytes] = set()
    for texts, languages in iter_documents(
        unit.input_uri, options, text_column=text_column, language_field=doc_filter.language_field
    ):
        documents_read += len(texts)
        if doc_filter != NO_FILTER:
            texts = doc_filter.keep(texts, languages, seen)
        documents += len(texts)
        for chunk in chunks_by_chars(texts, TOKENIZE_CHARS):
            flat: list[int] = []
            flat_held: list[int] = []
            for text, ids in zip(chunk, tok.encode_batch(chunk)):
                out = flat_held if held_out(text, holdout_fraction) else flat
                held += out is flat_held
                out.extend(ids)
                out.append(tok.eos_id)  # EOS after every document: the separator sequences see
            train.add(flat)
            validation.add(flat_held)
    shards, validation_shards = train.close(), validation.close()
    marker = {
        "version": MARKER_VERSION,
        "input": unit.input_uri,
        "inputBytes": unit.input_bytes,
        "fingerprint": tok.fingerprint,
        "shardTokens": shard_tokens,
        "holdoutFraction": holdout_fraction,
        "textColumn": text_column,
        "filter": doc_filter.key(),
        "documentsRead": documents_read,
        "documents": documents - held,
        "tokens": sum(s["tokens"] for s in shards),
        "shards": shards,
        "validationDocuments": held,
        "validationTokens": sum(s["tokens"] for s in validation_shards),
        "validationShards": validation_shards,
    }
    storage.write_json(marker_uri, marker, options)
    return {**marker, "skipped": False}


def _run_unit(
    row: dict,
    output_uri: str,
    tokenizer_name: str,
    shard_tokens: int,
    endpoint: str | None,
    region: str | None,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    text_column: str = DEFAULT_TEXT_COLUMN,
    doc_filter: dict | None = None,
) -> dict:
    """Ray Data map function: errors come back as data so the driver can report them cleanly."""
    unit = Unit(row["input_uri"], row["unit_id"], row["input_bytes"])
    try:
        marker = prepare_unit(
            unit,
            output_uri,
            tokenizer_name,
            shard_tokens,
            StorageOptions(endpoint, region),
            holdout_fraction,
            text_column,
            DocumentFilter(**doc_filter) if doc_filter else NO_FILTER,
        )
        return {"unit_id": unit.unit_id, "marker": json.dumps(marker), "error": ""}
    except (PrepareError, storage.HubError) as e:  # their messages name the file and the cause
        return {"unit_id": unit.unit_id, "marker": "", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - any failure of a unit (storage, hub, a bad file) is reported, named
        return {"unit_id": unit.unit_id, "marker": "", "error": f"{unit.input_uri}: {type(e).__name__}: {e}"}


# ------------------------------------------------------------------------------------- the job
def plan_units_of(input_uris: list[str], options: StorageOptions | None) -> list[Unit]:
    """Units of several inputs, in the given order; unit ids stay unique across inputs."""
    units: list[Unit] = []
    for uri in input_uris:
        units += plan_units(uri, options)
    ids = [u.unit_id for u in units]
    if len(set(ids)) != len(ids):
        # Same relative file under two inputs: name each unit by its whole URI instead.
        units = [
            Unit(
                u.input_uri,
                unit_id_for(u.input_uri, u.input_uri.rsplit("/", 1)[0]) + "-" + _short(u.input_uri),
                u.input_bytes,
            )
            for u in units
        ]
    files = [u.input_uri for u in units]
    if len(set(files)) != len(files):
        raise PrepareError("inputs overlap: a file is listed by two inputs")
    return units


def _short(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def plan_units(input_uri: str, options: StorageOptions | None) -> list[Unit]:
    # A hub input is read at the commit its revision names now, by every worker (HubError says what is wrong).
    input_uri = storage.pin_hub_revision(input_uri)
    try:
        files = storage.find(input_uri, options)
    except FileNotFoundError as e:
        raise PrepareError(f"input {input_uri}: not found (missing bucket, prefix or folder)") from e
    remote = storage.is_remote(input_uri) or storage.is_hub(input_uri)
    root = input_uri if remote else str(storage.local_path(input_uri).absolute())
    inputs = select_inputs(files, root)
    if not inputs:
        raise PrepareError(
            f"input {input_uri}: no text files (expected data/train-*.parquet, *.parquet or *.jsonl[.gz|.zst]; "
            f"found {len(files)} other file(s))"
        )
    return [Unit(f, unit_id_for(f, root), storage.size(f, options)) for f in inputs]


def progress_document(done: int, total: int, markers: list[dict], error: str | None = None) -> dict:
    doc: dict = {
        "filesDone": done,
        "filesTotal": total,
        "tokens": sum(int(m["tokens"]) for m in markers),
        "documents": sum(int(m["documents"]) for m in markers),
    }
    if error is not None:
        doc["error"] = error[:4000]
    return doc


def run_prepare(
    input_uri: str | list[str],
    output_uri: str,
    *,
    tokenizer_name: str = "gpt2",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    options: StorageOptions | None = None,
    log=print,
    text_column: str = DEFAULT_TEXT_COLUMN,
    doc_filter: DocumentFilter = NO_FILTER,
    write_progress: bool = False,
    num_cpus: int | None = None,
) -> dict:
    """Prepare one source from one or more inputs; returns the index document. The inputs are listed first, so a
    bad input fails in seconds; then the units run on Ray: the one already initialised, the cluster this runs on
    (RAY_ADDRESS, as in a RayJob) or a local one of `num_cpus` started and stopped here (`ray_for_prepare`).
    With `write_progress`, keeps PROGRESS_FILE (with the error on failure)."""
    if shard_tokens < 1:
        raise PrepareError(f"shard tokens must be >= 1, got {shard_tokens}")
    check_holdout_fraction(holdout_fraction)
    # Ray workers may run in another working directory: local paths must not depend on it.
    inputs = [storage.absolute_uri(u) for u in ([input_uri] if isinstance(input_uri, str) else input_uri)]
    output_uri = storage.absolute_uri(output_uri)
    options = options or StorageOptions()
    if not storage.bucket_exists(output_uri, options):
        raise PrepareError(f"output {output_uri}: bucket does not exist")
    progress_uri = storage.join(output_uri, PROGRESS_FILE)
    try:
        tok = load_tokenizer(tokenizer_name)
        units = plan_units_of(inputs, options)
        check_parquet_columns(units, options, [text_column] + [f for f in [doc_filter.language_field] if f])
        with ray_for_prepare(num_cpus):
            return _prepare(
                inputs,
                units,
                output_uri,
                tok,
                shard_tokens,
                holdout_fraction,
                options,
                log,
                text_column,
                doc_filter,
                progress_uri if write_progress else None,
            )
    except (PrepareError, OSError, ValueError) as e:
        if write_progress:
            storage.write_json(progress_uri, progress_document(0, 0, [], f"{e}"), options)
        raise


def _prepare(
    inputs: list[str],
    units: list[Unit],
    output_uri: str,
    tok: Tokenizer,
    shard_tokens: int,
    holdout_fraction: float,
    options: StorageOptions,
    log: Callable[[str], object],
    text_column: str,
    doc_filter: DocumentFilter,
    progress_uri: str | None,
) -> dict:
    import ray

    input_uri = ", ".join(inputs)
    index_uri = storage.join(output_uri, INDEX_FILE)
    # A re-run that changes anything must not leave the old index pointing at shards being rewritten.
    storage.remove(index_uri, options)
    log(f"prepare: {len(units)} file(s) from {input_uri} -> {output_uri} ({tok.name}, {shard_tokens:,} tokens/shard)")
    started = time.monotonic()
    items = ray.data.from_items(
        [{"input_uri": u.input_uri, "unit_id": u.unit_id, "input_bytes": u.input_bytes} for u in units]
    )
    ds = items.map(
        _run_unit,  # type: ignore[arg-type]  # Ray types fn as one-argument; fn_kwargs gives the rest
        num_cpus=1,
        fn_kwargs={
            "output_uri": output_uri,
            "tokenizer_name": tok.name,
            "shard_tokens": shard_tokens,
            "endpoint": options.resolved_endpoint(),
            "region": options.region,
            "holdout_fraction": holdout_fraction,
            "text_column": text_column,
            "doc_filter": doc_filter.key_args() if doc_filter != NO_FILTER else None,
        },
    )
    results: dict[str, dict] = {}
    errors: list[str] = []
    try:
        for done, row in enumerate(ds.iter_rows(), 1):
            if row["error"]:
                errors.append(row["error"])
                log(f"  [{done}/{len(units)}] FAILED {row['error']}")
                continue
            marker = json.loads(row["marker"])
            results[row["unit_id"]] = marker
            if progress_uri:
                storage.write_json(progress_uri, progress_document(done, len(units), list(results.values())), options)
            state = "already done" if marker.get("skipped") else "tokenized"
            log(
                f"  [{done}/{len(units)}] {marker['input']}: {marker['documents']:,} docs, {marker['tokens']:,} tokens "
                f"+ {marker['validationDocuments']:,} held out ({state})"
            )
    except ray.exceptions.RayError as e:  # a worker lost (OOM, node gone): no marker, nothing presented as done
        raise PrepareError(f"the prepare's Ray tasks failed: {type(e).__name__}: {str(e).splitlines()[0][:500]}") from e
    if errors:
        raise PrepareError("; ".join(errors))
    shards = [s for u in units for s in results[u.unit_id]["shards"]]
    validation_shards = [s for u in units for s in results[u.unit_id]["validationShards"]]
    if not shards and not validation_shards:
        read = sum(int(results[u.unit_id].get("documentsRead", 0)) for u in units)
        if read and doc_filter != NO_FILTER:
            raise PrepareError(
                f"input {input_uri}: the filter dropped every one of {read:,} documents "
                f"(filter: {json.dumps(doc_filter.key(), sort_keys=True)}); nothing to prepare"
            )
        raise PrepareError(f"input {input_uri}: the text files hold no documents (empty source)")
    if not shards:
        raise PrepareError(
            f"input {input_uri}: every document fell in the held-out split (holdout fraction {holdout_fraction}); "
            "nothing is left to train on"
        )
    # chunkCrc32 is missing from the markers of units done by a trainkit before chunk checksums.
    fields = ("file", "tokens", "documents", "bytes", "crc32", "chunkCrc32", "input")
    doc = index_document(
        dtype=dtype_for_vocab(tok.vocab_size),
        tokenizer=tok,
        shard_tokens=shard_tokens,
        shards=[{k: s[k] for k in fields if k in s} for s in shards],
        validation={
            "fraction": holdout_fraction,
            "rule": HOLDOUT_RULE,
            "shards": [{k: s[k] for k in fields if k in s} for s in validation_shards],
        },
        source_files=[
            {
                "uri": u.input_uri,
                "bytes": u.input_bytes,
                "documents": results[u.unit_id]["documents"],
                "tokens": results[u.unit_id]["tokens"],
            }
            for u in units
        ],
    )
    if progress_uri:
        storage.write_json(progress_uri, progress_document(len(units), len(units), list(results.values())), options)
    storage.write_json(index_uri, doc, options)  # last: from now on this is a source
    seconds = time.monotonic() - started
    log(
        f"prepare: wrote {index_uri}: {doc['totalDocuments']:,} documents, {doc['totalTokens']:,} tokens in "
        f"{len(shards)} shard(s), {doc['validation']['tokens']:,} held-out tokens, {seconds:.1f} s ({doc['totalTokens'] / max(seconds, 1e-9) / 1e6:.2f}M tokens/s)"
    )
    return doc


def prepare_errors() -> tuple[type[Exception], ...]:
    """What a prepare can fail with that is the input's or the store's fault: reported, never a traceback."""
    from trainkit.data.shards import DataError
    from trainkit.data.tokenizer import TokenizerError

    return (PrepareError, DataError, TokenizerError, storage.StorageError, FileNotFoundError)


@contextlib.contextmanager
def ray_for_prepare(num_cpus: int | None = None) -> Iterator[None]:
    """Ray for the block (`ensure_ray`), shut down afterwards only if this started it."""
    started = ensure_ray(num_cpus)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def ensure_ray(num_cpus: int | None = None) -> bool:
    """Join the Ray cluster this runs on (RAY_ADDRESS, as in a RayJob) or start a small local one.
    Returns True when it started Ray (the caller shuts it down)."""
    import os

    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(
            address="local", num_cpus=num_cpus, include_dashboard=False, object_store_memory=1 << 30, log_to_driver=True
        )
    try:
        ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
    except AttributeError:
        pass
    return True
