"""Data loading: tokens/s and realised mixture error of our stream vs HF datasets and litdata, same data, same S3 server.

Self-contained: starts a moto S3 server on loopback, builds the three demo sources (real English text),
prepares them with `trainkit prepare` on a local Ray, then stores the very same token sequences in each
peer's own format on the same server and reads a 50/30/20 mixture of seqLength+1-token sequences with:

  trainkit   MixtureLoader (exact schedule, whole-shard prefetch)
  hf         Hugging Face `datasets`: streaming parquet + interleave_datasets(probabilities=...)
  litdata    litdata CombinedStreamingDataset(weights=...) over TokensLoader datasets

Each reader is timed from opening to the last sequence (median of --repeats runs); the mixture error is
the worst |count_j(n) - n w_j| over every prefix n and source j, in sequences.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from typing import Callable

import numpy as np

WEIGHTS = {"manuals": 0.5, "web": 0.3, "edu": 0.2}


def add_arguments(p) -> None:
    p.add_argument("--max-chars", type=int, default=3_000_000, help="characters of demo text per source")
    p.add_argument("--seq-length", type=int, default=1024)
    p.add_argument("--batch", type=int, default=120, help="sequences per read (the seed's global batch)")
    p.add_argument("--sequences", type=int, default=24_000, help="sequences each reader reads")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peers", default="hf,litdata", help="comma-separated: hf, litdata")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    p.set_defaults(func=run)


def mixture_error(sources: np.ndarray, weights: list[float]) -> float:
    w = np.asarray(weights, dtype=np.float64) / sum(weights)
    n = np.arange(1, len(sources) + 1)
    return float(max(np.abs(np.cumsum(sources == j) - n * w[j]).max() for j in range(len(weights))))


class FirstBatch:
    """Readers call `mark(tokens)` once their first batch is in hand: steady-state speed excludes opening."""

    def __init__(self):
        self.at, self.tokens = None, 0

    def mark(self, tokens: int) -> None:
        if self.at is None:
            self.at, self.tokens = time.perf_counter(), tokens


def timed(fn: Callable[[FirstBatch], tuple[int, np.ndarray]], repeats: int) -> dict:
    """Run a reader `repeats` times; fn returns (tokens read, source id per sequence). Two speeds: from
    opening to the last sequence, and steady state after the first batch (median of each)."""
    seconds, steady, opening, tokens, sources = [], [], [], 0, None
    for _ in range(repeats):
        first = FirstBatch()
        start = time.perf_counter()
        tokens, sources = fn(first)
        end = time.perf_counter()
        seconds.append(end - start)
        opening.append(first.at - start)
        steady.append((tokens - first.tokens) / max(end - first.at, 1e-9))
    s = statistics.median(seconds)
    return {"tokens": tokens, "seconds": s, "tokens_per_s": tokens / s, "steady_tokens_per_s": statistics.median(steady),
            "first_batch_seconds": statistics.median(opening),
            "mixture_error": mixture_error(sources, list(WEIGHTS.values())), "sequences": len(sources)}


# ------------------------------------------------------------------------------------- set-up
def prepare_sources(bucket: str, max_chars: int, log) -> None:
    import ray

    from trainkit.data.demo import demo_sources, write_parquet_source
    from trainkit.data.prepare import ensure_ray, run_prepare

    started = ensure_ray(2)
    try:
        for source in demo_sources(max_chars, log=log):
            write_parquet_source(source, f"s3://{bucket}/text")
            run_prepare(f"s3://{bucket}/text/{source.name}", f"s3://{bucket}/tokens/{source.name}",
                        shard_tokens=1 << 20, log=lambda _: None)
    finally:
        if started:
            ray.shutdown()


def source_sequences(bucket: str, name: str, width: int) -> np.ndarray:
    """All complete sequences of a prepared source, in shard order."""
    from trainkit.data.shards import read_index, read_shard

    index = read_index(f"s3://{bucket}/tokens/{name}")
    rows = []
    for i in range(len(index.shards)):
        tokens = read_shard(index, i, 50257)
        n = len(tokens) // width
        rows.append(tokens[: n * width].reshape(n, width))
    return np.concatenate(rows)


def write_trainkit_copy(bucket: str, name: str, seqs: np.ndarray, per_shard: int) -> None:
    """The (tiled) sequences as trainkit shards of whole sequences, index.json last."""
    from trainkit import storage
    from trainkit.data.shards import encode_shard, index_document
    from trainkit.data.tokenizer import load_tokenizer

    shards = []
    for k, start in enumerate(range(0, len(seqs), per_shard)):
        chunk = seqs[start:start + per_shard].reshape(-1)
        data, crc = encode_shard(chunk, np.dtype("<u2"))
        file = f"shards/bench-{k:05d}.bin"
        storage.write_bytes(f"s3://{bucket}/bench/trainkit/{name}/{file}", data)
        shards.append({"file": file, "tokens": int(chunk.size), "documents": 0, "bytes": len(data), "crc32": crc})
    storage.write_json(f"s3://{bucket}/bench/trainkit/{name}/index.json", index_document(
        dtype=np.dtype("<u2"), tokenizer=load_tokenizer("gpt2"), shards=shards, source_files=[],
        shard_tokens=per_shard * seqs.shape[1]))


def write_hf_copy(bucket: str, name: str, seqs: np.ndarray, j: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trainkit import storage

    offsets = pa.array(np.arange(0, seqs.size + 1, seqs.shape[1], dtype=np.int32))
    ids = pa.ListArray.from_arrays(offsets, pa.array(seqs.reshape(-1).astype(np.int32)))
    table = pa.table({"input_ids": ids, "source": pa.array(np.full(len(seqs), j, np.int8))})
    for k, start in enumerate(range(0, len(seqs), 8192)):
        buf = io.BytesIO()
        pq.write_table(table.slice(start, 8192), buf, row_group_size=1024)
        storage.write_bytes(f"s3://{bucket}/bench/hf/{name}/data/train-{k:05d}.parquet", buf.getvalue())


def write_litdata_copy(bucket: str, name: str, seqs: np.ndarray, workdir: str) -> None:
    from litdata.streaming.item_loader import TokensLoader
    from litdata.streaming.writer import BinaryWriter

    from trainkit import storage

    local = os.path.join(workdir, "lit", name)
    writer = BinaryWriter(local, chunk_bytes="32MB", item_loader=TokensLoader())
    for i, row in enumerate(seqs):
        writer[i] = row.astype(np.uint16)
    writer.done()
    writer.merge()
    storage.upload_dir(local, f"s3://{bucket}/bench/lit/{name}")
    shutil.rmtree(local)


# ------------------------------------------------------------------------------------ readers
def read_trainkit(bucket: str, seq_length: int, batch: int, total: int, first: FirstBatch) -> tuple[int, np.ndarray]:
    from trainkit.data import MixtureLoader, MixtureSource, load_tokenizer

    tok = load_tokenizer("gpt2")
    sources, tokens = [], 0
    with MixtureLoader(
        [MixtureSource(n, f"s3://{bucket}/bench/trainkit/{n}", w) for n, w in WEIGHTS.items()], seq_length=seq_length,
        global_batch=batch, micro_batch=batch, fingerprint=tok.fingerprint, vocab_size=50257, when_exhausted="fail",
    ) as loader:
        for _ in range(total // batch):
            src, seqs = loader.read_global(batch)
            sources.append(src)
            tokens += seqs.size
            first.mark(tokens)
    return tokens, np.concatenate(sources)


def read_hf(bucket: str, endpoint: str, batch: int, total: int, first: FirstBatch) -> tuple[int, np.ndarray]:
    from datasets import interleave_datasets, load_dataset

    opts = {"endpoint_url": endpoint}
    parts = [
        load_dataset("parquet", data_files=f"s3://{bucket}/bench/hf/{n}/data/*.parquet", split="train", streaming=True, storage_options=opts)
        for n in WEIGHTS
    ]
    mixed = interleave_datasets(parts, probabilities=list(WEIGHTS.values()), seed=0, stopping_strategy="first_exhausted")
    sources, tokens = [], 0
    for rows in mixed.with_format("arrow").iter(batch_size=batch):
        ids = rows.column("input_ids")
        tokens += len(ids.combine_chunks().values) if hasattr(ids, "combine_chunks") else len(ids.values)
        sources.append(rows.column("source").to_numpy())
        first.mark(tokens)
        if sum(map(len, sources)) >= total:
            break
    return tokens, np.concatenate(sources)[:total]


def read_litdata(bucket: str, endpoint: str, width: int, total: int, cache: str, first: FirstBatch) -> tuple[int, np.ndarray]:
    from litdata import CombinedStreamingDataset, StreamingDataset
    from litdata.streaming import downloader
    from litdata.streaming.item_loader import TokensLoader

    # litdata's obstore path refuses plain-http endpoints unless told: the moto server is http on loopback.
    downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"
    shutil.rmtree(cache, ignore_errors=True)

    def tagged(j: int, name: str):
        class Source(StreamingDataset):
            def __getitem__(self, index):
                return j, super().__getitem__(index)

        return Source(f"s3://{bucket}/bench/lit/{name}", item_loader=TokensLoader(block_size=width), shuffle=True, seed=0,
                      cache_dir=os.path.join(cache, name), storage_options={"endpoint_url": endpoint})

    mixed = CombinedStreamingDataset([tagged(j, n) for j, n in enumerate(WEIGHTS)], weights=list(WEIGHTS.values()),
                                     seed=0, iterate_over_all=False)
    sources, tokens = [], 0
    for j, item in mixed:
        sources.append(j)
        tokens += len(item)
        first.mark(tokens)
        if len(sources) >= total:
            break
    return tokens, np.asarray(sources)


# ------------------------------------------------------------------------------------------ run
def start_moto_server():
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"moto server did not start on {endpoint}")


def run(args) -> int:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")  # moto accepts any key; real ones never needed here
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(tempfile.gettempdir(), "trainkit-tiktoken"))
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import boto3

    peers = [p for p in args.peers.split(",") if p]
    width = args.seq_length + 1
    # The S3 server runs as its own process, as a real object store would: in this process it would
    # compete with every reader for the GIL.
    server, endpoint = start_moto_server()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    workdir = tempfile.mkdtemp(prefix="trainkit-bench-data-")
    try:
        print(f"bench data: preparing 3 demo sources ({args.max_chars:,} chars each) on {endpoint}", flush=True)
        prepare_sources(bucket, args.max_chars, log=print)
        total = args.sequences // args.batch * args.batch
        # Every reader gets the same sequences: each source's prepared sequences, tiled until it holds its
        # share of `total` (demo text is small), stored once per reader format on the same server.
        for j, (name, weight) in enumerate(WEIGHTS.items()):
            seqs = source_sequences(bucket, name, width)
            copies = -(-(int(total * weight) + 2 * args.batch) // len(seqs))
            tiled = np.tile(seqs, (copies, 1))
            print(f"  {name}: {len(seqs):,} sequences x {copies} copies", flush=True)
            # 4,096 sequences (~8 MiB) per shard: a quarter of what `trainkit prepare` writes by default,
            # and smaller than the peers' units (litdata 32 MB chunks, HF 8,192-row parquet files).
            write_trainkit_copy(bucket, name, tiled, per_shard=4096)
            if "hf" in peers:
                write_hf_copy(bucket, name, tiled, j)
            if "litdata" in peers:
                write_litdata_copy(bucket, name, tiled, workdir)
        print(f"reading {total:,} sequences of {width} tokens ({total * width / 1e6:.1f}M tokens), median of {args.repeats}", flush=True)
        results = {"trainkit": timed(lambda first: read_trainkit(bucket, args.seq_length, args.batch, total, first), args.repeats)}
        if "hf" in peers:
            results["hf-datasets"] = timed(lambda first: read_hf(bucket, endpoint, args.batch, total, first), args.repeats)
        if "litdata" in peers:
            results["litdata"] = timed(lambda first: read_litdata(bucket, endpoint, width, total, os.path.join(workdir, "cache"), first), args.repeats)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    ours = results["trainkit"]
    print(f"\n{'reader':<12} {'tokens/s':>10} {'steady':>10} {'1st batch':>10} {'seconds':>8} {'sequences':>10} {'mixture error':>14}")
    for name, r in results.items():
        print(f"{name:<12} {r['tokens_per_s'] / 1e6:>9.1f}M {r['steady_tokens_per_s'] / 1e6:>9.1f}M {r['first_batch_seconds']:>9.2f}s "
              f"{r['seconds']:>8.2f} {r['sequences']:>10,} {r['mixture_error']:>10.2f} seq")
    print("tokens/s: opening to last sequence; steady: after the first batch (both medians)")
    for key, label in (("tokens_per_s", "open-to-end"), ("steady_tokens_per_s", "steady")):
        others = {k: v[key] for k, v in results.items() if k != "trainkit"}
        if "hf-datasets" in others:
            print(f"{label:>11}: trainkit / hf-datasets {ours[key] / others['hf-datasets']:.1f}x (goal >= 10x)", end="")
        if others:
            best = max(others, key=others.get)
            print(f"; trainkit / best other ({best}) {ours[key] / others[best]:.2f}x (goal >= 1x)")
    print(f"trainkit mixture error: {ours['mixture_error']:.2f} sequences (goal <= 1)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"endpoint": "moto on loopback", "sequence_tokens": width, "results": results}, f, indent=2)
    return 0
