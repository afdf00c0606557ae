"""`trainkit prepare`: text (parquet with a `text` column, or jsonl[.gz|.zst]) -> token shards + index.json.

A Ray Data job: one work unit per input file, mapped over the cluster. A unit streams its file in
record batches, tokenizes with the run's tokenizer, appends EOS after every document, and writes
shards of exactly `shard_tokens` tokens (its last shard holds the rest), then a small marker
`parts/<unit>.json`. Shards are written atomically and markers after their shards, so a re-run skips
every unit whose marker matches (same input size, tokenizer and shard size) and never trusts a half
written one. The driver writes `index.json` last: until then the output is not a source.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from trainkit import storage
from trainkit.data.shards import INDEX_FILE, dtype_for_vocab, encode_shard, index_document
from trainkit.data.tokenizer import load_tokenizer
from trainkit.storage import StorageOptions

DEFAULT_SHARD_TOKENS = 1 << 24  # 32 MiB of uint16: one S3 GET per shard, few shards per source
TEXT_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")
MARKER_VERSION = 1


class PrepareError(ValueError):
    """The input cannot be prepared; the message names the file or field."""


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


def marker_matches(marker: dict, unit: Unit, fingerprint: str, shard_tokens: int) -> bool:
    return (
        marker.get("version") == MARKER_VERSION
        and marker.get("input") == unit.input_uri
        and marker.get("inputBytes") == unit.input_bytes
        and marker.get("fingerprint") == fingerprint
        and marker.get("shardTokens") == shard_tokens
    )


# ---------------------------------------------------------------------------------- reading text
def iter_texts(uri: str, options: StorageOptions | None, batch_rows: int = 2048):
    """Lists of document strings from one parquet or jsonl file; errors name the file and field."""
    if uri.endswith(".parquet"):
        import pyarrow.parquet as pq

        with storage.open_input(uri, options, compression=None) as f:
            try:
                pf = pq.ParquetFile(f)
            except Exception as e:  # pyarrow raises several types for bad files (re-raised as PrepareError)
                raise PrepareError(f"{uri}: not a readable parquet file ({e})") from e
            names = pf.schema_arrow.names
            if "text" not in names:
                raise PrepareError(f"{uri}: no 'text' column (columns: {', '.join(names) or 'none'})")
            for record_batch in pf.iter_batches(batch_size=batch_rows, columns=["text"]):
                column = record_batch.column(0)
                if not (column.type == "string" or column.type == "large_string"):
                    raise PrepareError(f"{uri}: column 'text' has type {column.type}, expected string")
                yield [t for t in column.to_pylist() if t]
        return
    with storage.open_input(uri, options) as f:
        batch: list[str] = []
        for line_no, line in enumerate(_lines(f), 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError) as e:
                raise PrepareError(f"{uri}: line {line_no}: no 'text' field in a JSON object ({e})") from e
            if not isinstance(text, str):
                raise PrepareError(f"{uri}: line {line_no}: 'text' is {type(text).__name__}, expected a string")
            if text:
                batch.append(text)
            if len(batch) >= batch_rows:
                yield batch
                batch = []
        if batch:
            yield batch


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
def prepare_unit(
    unit: Unit, output_uri: str, tokenizer_name: str, shard_tokens: int, options: StorageOptions | None
) -> dict:
    """Tokenize one input file into shards; returns its marker (with `skipped` when already done)."""
    tok = load_tokenizer(tokenizer_name)
    marker_uri = storage.join(output_uri, "parts", unit.unit_id + ".json")
    if storage.exists(marker_uri, options):
        marker = storage.read_json(marker_uri, options)
        if marker_matches(marker, unit, tok.fingerprint, shard_tokens):
            return {**marker, "skipped": True}
    dtype = dtype_for_vocab(tok.vocab_size)
    shards: list[dict] = []
    pending: list[np.ndarray] = []
    pending_tokens = 0
    documents = 0

    def flush(tokens: np.ndarray) -> None:
        name = f"shards/{unit.unit_id}-{len(shards):05d}.bin"
        data, crc = encode_shard(tokens, dtype)
        storage.write_bytes(storage.join(output_uri, name), data, options)
        shards.append(
            {
                "file": name,
                "tokens": int(len(tokens)),
                "documents": int(np.count_nonzero(tokens == tok.eos_id)),
                "bytes": len(data),
                "crc32": crc,
                "input": unit.input_uri,
            }
        )

    for texts in iter_texts(unit.input_uri, options):
        documents += len(texts)
        flat: list[int] = []
        for ids in tok.encode_batch(texts):
            flat.extend(ids)
            flat.append(tok.eos_id)  # EOS after every document: the separator sequences see
        pending.append(np.asarray(flat, dtype=dtype))
        pending_tokens += len(flat)
        while pending_tokens >= shard_tokens:
            joined = np.concatenate(pending)
            flush(joined[:shard_tokens])
            pending, pending_tokens = [joined[shard_tokens:]], len(joined) - shard_tokens
    if pending_tokens:
        flush(np.concatenate(pending))
    marker = {
        "version": MARKER_VERSION,
        "input": unit.input_uri,
        "inputBytes": unit.input_bytes,
        "fingerprint": tok.fingerprint,
        "shardTokens": shard_tokens,
        "documents": documents,
        "tokens": sum(s["tokens"] for s in shards),
        "shards": shards,
    }
    storage.write_json(marker_uri, marker, options)
    return {**marker, "skipped": False}


def _run_unit(
    row: dict, output_uri: str, tokenizer_name: str, shard_tokens: int, endpoint: str | None, region: str | None
) -> dict:
    """Ray Data map function: errors come back as data so the driver can report them cleanly."""
    unit = Unit(row["input_uri"], row["unit_id"], row["input_bytes"])
    try:
        marker = prepare_unit(unit, output_uri, tokenizer_name, shard_tokens, StorageOptions(endpoint, region))
        return {"unit_id": unit.unit_id, "marker": json.dumps(marker), "error": ""}
    except (PrepareError, OSError, ValueError) as e:
        return {"unit_id": unit.unit_id, "marker": "", "error": f"{type(e).__name__}: {e}"}


# ------------------------------------------------------------------------------------- the job
def plan_units(input_uri: str, options: StorageOptions | None) -> list[Unit]:
    try:
        files = storage.find(input_uri, options)
    except FileNotFoundError as e:
        raise PrepareError(f"input {input_uri}: not found (missing bucket, prefix or folder)") from e
    root = input_uri if storage.is_remote(input_uri) else str(storage.local_path(input_uri).absolute())
    inputs = select_inputs(files, root)
    if not inputs:
        raise PrepareError(
            f"input {input_uri}: no text files (expected data/train-*.parquet, *.parquet or *.jsonl[.gz|.zst]; "
            f"found {len(files)} other file(s))"
        )
    return [Unit(f, unit_id_for(f, root), storage.size(f, options)) for f in inputs]


def run_prepare(
    input_uri: str,
    output_uri: str,
    *,
    tokenizer_name: str = "gpt2",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    options: StorageOptions | None = None,
    log=print,
) -> dict:
    """Prepare one source; returns the index document. Needs an initialised Ray (see `ensure_ray`)."""
    import ray

    if shard_tokens < 1:
        raise PrepareError(f"shard tokens must be >= 1, got {shard_tokens}")
    # Ray workers may run in another working directory: local paths must not depend on it.
    input_uri, output_uri = storage.absolute_uri(input_uri), storage.absolute_uri(output_uri)
    options = options or StorageOptions()
    if not storage.bucket_exists(output_uri, options):
        raise PrepareError(f"output {output_uri}: bucket does not exist")
    tok = load_tokenizer(tokenizer_name)
    units = plan_units(input_uri, options)
    index_uri = storage.join(output_uri, INDEX_FILE)
    # A re-run that changes anything must not leave the old index pointing at shards being rewritten.
    storage.remove(index_uri, options)
    log(f"prepare: {len(units)} file(s) from {input_uri} -> {output_uri} ({tok.name}, {shard_tokens:,} tokens/shard)")
    started = time.monotonic()
    items = ray.data.from_items(
        [{"input_uri": u.input_uri, "unit_id": u.unit_id, "input_bytes": u.input_bytes} for u in units]
    )
    ds = items.map(
        _run_unit,  # type: ignore[arg-type]  # Ray's stub omits fn_kwargs from the callable's type
        num_cpus=1,
        fn_kwargs={
            "output_uri": output_uri,
            "tokenizer_name": tokenizer_name,
            "shard_tokens": shard_tokens,
            "endpoint": options.resolved_endpoint(),
            "region": options.region,
        },
    )
    results: dict[str, dict] = {}
    errors: list[str] = []
    for done, row in enumerate(ds.iter_rows(), 1):
        if row["error"]:
            errors.append(row["error"])
            log(f"  [{done}/{len(units)}] FAILED {row['error']}")
            continue
        marker = json.loads(row["marker"])
        results[row["unit_id"]] = marker
        state = "already done" if marker.get("skipped") else "tokenized"
        log(
            f"  [{done}/{len(units)}] {marker['input']}: {marker['documents']:,} docs, {marker['tokens']:,} tokens ({state})"
        )
    if errors:
        raise PrepareError("; ".join(errors))
    shards = [s for u in units for s in results[u.unit_id]["shards"]]
    if not shards:
        raise PrepareError(f"input {input_uri}: the text files hold no documents (empty source)")
    doc = index_document(
        dtype=dtype_for_vocab(tok.vocab_size),
        tokenizer=tok,
        shard_tokens=shard_tokens,
        shards=[{k: s[k] for k in ("file", "tokens", "documents", "bytes", "crc32", "input")} for s in shards],
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
    storage.write_json(index_uri, doc, options)  # last: from now on this is a source
    seconds = time.monotonic() - started
    log(
        f"prepare: wrote {index_uri}: {doc['totalDocuments']:,} documents, {doc['totalTokens']:,} tokens in "
        f"{len(shards)} shard(s), {seconds:.1f} s ({doc['totalTokens'] / max(seconds, 1e-9) / 1e6:.2f}M tokens/s)"
    )
    return doc


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
