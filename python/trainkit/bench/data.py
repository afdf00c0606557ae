"""Data loading: tokens/s, mixture error and per-rank traffic of our stream vs its peers, same data, same S3 server.

Self-contained: starts a moto S3 server on loopback, builds the three demo sources (real English text),
prepares them with `trainkit prepare` on a local Ray, then stores the very same token sequences in each
peer's own format on the same server and reads a 50/30/20 mixture of seqLength+1-token sequences with:

  trainkit   MixtureLoader (exact schedule, lanes, ranged windows; read_global = one process, all lanes)
  raw-s3fs   whole shards (the trainkit copy's files) with s3fs cat_file + numpy, proportions per batch
  hf         Hugging Face `datasets`: streaming parquet + interleave_datasets(probabilities=...)
  litdata    litdata optimize() + TokensLoader chunks, CombinedStreamingDataset(weights=...), plain iteration

The readers run in --repeats interleaved rounds (each reader once per round); each is timed from opening
to the last sequence, after its first batch (steady), and by this process's CPU seconds; ratios are the
median over rounds of trainkit / reader within a round. The mixture error is the worst
|count_j(n) - n w_j| over every prefix n and source j, in sequences. Then every reader is run once as each
rank of --world ranks and the bytes it fetched are set against the bytes it handed out.
MosaicML streaming is not among them (see MOSAIC_ABSENT: it cannot be installed next to our stack).
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
    p.add_argument("--sequences", type=int, default=30_000, help="sequences each reader reads")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peers", default="raw,hf,litdata", help="comma-separated: raw, hf, litdata")
    p.add_argument("--world", type=int, default=8, help="world size for the per-rank traffic table (1: skip it)")
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


def measure(fn: Callable[[FirstBatch], tuple[int, np.ndarray]]) -> dict:
    """One run of a reader; fn returns (tokens read, source id per sequence). Wall seconds from opening to
    the last sequence, the first batch's latency, the steady speed after it, and this process's CPU
    seconds (the S3 server is another process), so per-CPU-second figures are less hostage to other load."""
    first = FirstBatch()
    start, cpu = time.perf_counter(), time.process_time()
    tokens, sources = fn(first)
    end, cpu = time.perf_counter(), time.process_time() - cpu
    return {
        "tokens": tokens,
        "sources": sources,
        "seconds": end - start,
        "cpu_seconds": cpu,
        "first_batch_seconds": first.at - start,
        "steady_tokens_per_s": (tokens - first.tokens) / max(end - first.at, 1e-9),
    }


def interleaved(readers: dict[str, Callable[[FirstBatch], tuple[int, np.ndarray]]], repeats: int) -> dict:
    """Every reader once per round, `repeats` rounds (trainkit, raw, hf, litdata, trainkit, raw, ...), so that
    load coming and going on a shared machine falls on all of them; medians over the rounds, and the median
    over rounds of each round's ratio trainkit / reader (readers next to each other in time)."""
    runs: dict[str, list[dict]] = {name: [] for name in readers}
    for _ in range(repeats):
        for name, fn in readers.items():
            runs[name].append(measure(fn))
    out = {}
    for name, rs in runs.items():
        last = rs[-1]
        out[name] = {
            "tokens": last["tokens"],
            "sequences": len(last["sources"]),
            "mixture_error": mixture_error(last["sources"], list(WEIGHTS.values())),
            "seconds": statistics.median(r["seconds"] for r in rs),
            "tokens_per_s": statistics.median(r["tokens"] / r["seconds"] for r in rs),
            "steady_tokens_per_s": statistics.median(r["steady_tokens_per_s"] for r in rs),
            "first_batch_seconds": statistics.median(r["first_batch_seconds"] for r in rs),
            "tokens_per_cpu_s": statistics.median(r["tokens"] / max(r["cpu_seconds"], 1e-9) for r in rs),
        }
    ours = runs["trainkit"]
    for name, rs in runs.items():
        if name != "trainkit":
            out[name]["trainkit_over_this"] = {
                key: statistics.median(figure(o) / figure(r) for o, r in zip(ours, rs))
                for key, figure in (
                    ("open_to_end", lambda r: r["tokens"] / r["seconds"]),
                    ("steady", lambda r: r["steady_tokens_per_s"]),
                    ("per_cpu_second", lambda r: r["tokens"] / max(r["cpu_seconds"], 1e-9)),
                )
            }
    return out


# ------------------------------------------------------------------------------------- set-up
def prepare_sources(bucket: str, max_chars: int, log) -> None:
    import ray

    from trainkit.data.demo import demo_sources, write_parquet_source
    from trainkit.data.prepare import ensure_ray, run_prepare

    started = ensure_ray(2)
    try:
        for source in demo_sources(max_chars, log=log):
            write_parquet_source(source, f"s3://{bucket}/text")
            run_prepare(
                f"s3://{bucket}/text/{source.name}",
                f"s3://{bucket}/tokens/{source.name}",
                shard_tokens=1 << 20,
                log=lambda _: None,
            )
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
    from trainkit.data.shards import index_document, shard_record
    from trainkit.data.tokenizer import load_tokenizer

    shards = []
    for k, start in enumerate(range(0, len(seqs), per_shard)):
        data, entry = shard_record(
            f"shards/bench-{k:05d}.bin", seqs[start : start + per_shard].reshape(-1), np.dtype("<u2"), documents=0
        )
        storage.write_bytes(f"s3://{bucket}/bench/trainkit/{name}/{entry['file']}", data)
        shards.append(entry)
    storage.write_json(
        f"s3://{bucket}/bench/trainkit/{name}/index.json",
        index_document(
            dtype=np.dtype("<u2"),
            tokenizer=load_tokenizer("gpt2"),
            shards=shards,
            source_files=[],
            shard_tokens=per_shard * seqs.shape[1],
        ),
    )


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


def _litdata_rows(block: np.ndarray):
    """optimize()'s fn: one block of sequences in, its sequences out (TokensLoader stores them flat)."""
    yield from block


def write_litdata_copy(bucket: str, name: str, seqs: np.ndarray, workdir: str) -> None:
    """litdata's recommended path for pre-training tokens: `optimize()` with a `TokensLoader` into chunks
    (here 32 MB, as in its examples), then upload; read back with `StreamingDataset(item_loader=
    TokensLoader(block_size=...))` under a `CombinedStreamingDataset`."""
    from litdata import optimize
    from litdata.streaming.item_loader import TokensLoader

    from trainkit import storage

    local = os.path.join(workdir, "lit", name)
    blocks = [seqs[i : i + 1024].astype(np.uint16) for i in range(0, len(seqs), 1024)]
    optimize(
        fn=_litdata_rows,
        inputs=blocks,
        output_dir=local,
        chunk_bytes="32MB",
        item_loader=TokensLoader(),
        num_workers=1,
        mode="overwrite",
    )
    storage.upload_dir(local, f"s3://{bucket}/bench/lit/{name}")
    shutil.rmtree(local)


# ------------------------------------------------------------------------------------ readers
def open_trainkit(bucket: str, seq_length: int, batch: int, rank: int = 0, world: int = 1):
    from trainkit.data import MixtureLoader, MixtureSource, load_tokenizer

    return MixtureLoader(
        [MixtureSource(n, f"s3://{bucket}/bench/trainkit/{n}", w) for n, w in WEIGHTS.items()],
        seq_length=seq_length,
        global_batch=batch,
        micro_batch=batch // world,
        rank=rank,
        world_size=world,
        fingerprint=load_tokenizer("gpt2").fingerprint,
        vocab_size=50257,
        when_exhausted="fail",
    )


def read_trainkit(bucket: str, seq_length: int, batch: int, total: int, first: FirstBatch) -> tuple[int, np.ndarray]:
    sources, tokens = [], 0
    with open_trainkit(bucket, seq_length, batch) as loader:
        for _ in range(total // batch):
            src, seqs = loader.read_global(batch)
            sources.append(src)
            tokens += seqs.size
            first.mark(tokens)
    return tokens, np.concatenate(sources)


def directory_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def traffic_at(world: int, peers: list[str], bucket: str, endpoint: str, args, total: int, workdir: str) -> dict:
    """Per rank of `world`: bytes fetched from the object store and bytes of sequences handed out,
    each reader run once as every rank in turn (each rank's share of `total`)."""
    width = args.seq_length + 1
    out: dict[str, dict] = {}
    fetched, consumed = [], []
    for r in range(world):
        with open_trainkit(bucket, args.seq_length, args.batch, r, world) as ld:
            for _ in range(total // args.batch):
                ld.next_step()
            fetched.append(ld.traffic.bytes_fetched)
            consumed.append(ld.traffic.bytes_consumed)
    out["trainkit"] = {"fetched": fetched, "consumed": consumed, "how": "measured (loader counters)"}
    if "raw" in peers:
        fetched, consumed = [], []
        for r in range(world):
            tokens, _, got = read_raw(
                bucket, endpoint, width, args.batch // world, total // world, FirstBatch(), r, world
            )
            fetched.append(got)
            consumed.append(tokens * 2)
        out["raw-s3fs"] = {"fetched": fetched, "consumed": consumed, "how": "measured (bytes of the GETs)"}
    if "litdata" in peers:
        fetched, consumed = [], []
        for r in range(world):
            cache = os.path.join(workdir, f"cache-rank{r}")
            tokens, _ = read_litdata(bucket, endpoint, width, total // world, cache, FirstBatch(), r, world)
            fetched.append(directory_bytes(cache))
            consumed.append(tokens * 2)
            shutil.rmtree(cache, ignore_errors=True)
        os.environ.pop("WORLD_SIZE", None)
        os.environ.pop("GLOBAL_RANK", None)
        out["litdata"] = {"fetched": fetched, "consumed": consumed, "how": "measured (chunks in each rank's cache)"}
    if "hf" in peers:
        from trainkit import storage

        # datasets.distributed.split_dataset_by_node on a streaming dataset: files are split over the ranks
        # when their count divides by W, else every rank reads every file and keeps 1 example in W.
        files = {
            n: [u for u in storage.find(f"s3://{bucket}/bench/hf/{n}/data") if u.endswith(".parquet")] for n in WEIGHTS
        }
        sizes = {n: sum(storage.size(u) for u in us) for n, us in files.items()}
        per_rank = sum(sizes[n] // world if len(files[n]) % world == 0 else sizes[n] for n in WEIGHTS)
        share = total // world * width * 2
        out["hf-datasets"] = {
            "fetched": [per_rank] * world,
            "consumed": [share] * world,
            "how": "its documented split_dataset_by_node rule, parquet bytes (2 x raw size)",
        }
    return out


def print_traffic(world: int, traffic: dict) -> None:
    print(f"\nper-rank traffic at W = {world} (bytes fetched per rank / bytes consumed per rank):")
    print(f"{'reader':<12} {'fetched/rank':>13} {'consumed/rank':>14} {'ratio':>7}  how")
    for name, t in traffic.items():
        f, c = max(t["fetched"]), max(t["consumed"])
        print(f"{name:<12} {f / 1e6:>11.2f}MB {c / 1e6:>12.2f}MB {f / max(c, 1):>7.2f}  {t['how']}")


def trainkit_shards(bucket: str, name: str) -> list[str]:
    from trainkit import storage

    return sorted(u for u in storage.find(f"s3://{bucket}/bench/trainkit/{name}/shards") if u.endswith(".bin"))


def read_raw(
    bucket: str, endpoint: str, width: int, batch: int, total: int, first: FirstBatch, rank: int = 0, world: int = 1
) -> tuple[int, np.ndarray, int]:
    """Whole shards with s3fs + numpy, no mixture control beyond the proportions per batch: each batch
    takes round(batch w_j) sequences of source j, source after source, handed out as one [batch, width]
    array, as every reader here hands out what a training step consumes. Rank r of W reads the shards
    i with i % W == r of every source (the usual static sharding)."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    names = list(WEIGHTS)
    streams = []
    fetched = 0

    def rows_of(name: str):
        nonlocal fetched
        shards = trainkit_shards(bucket, name)
        # Its own shards first; a rank that runs dry goes on with the others' (more traffic, said so).
        for uri in shards[rank::world] + [u for i, u in enumerate(shards) if i % world != rank]:
            data = fs.cat_file(uri[len("s3://") :])
            fetched += len(data)
            yield np.frombuffer(data, dtype="<u2").reshape(-1, width)

    streams = [rows_of(n) for n in names]
    pending = [np.empty((0, width), np.uint16) for _ in names]
    per_batch = np.floor(np.asarray(list(WEIGHTS.values())) * batch + 0.5).astype(int)
    per_batch[0] += batch - per_batch.sum()
    sources: list[np.ndarray] = []
    tokens = 0
    while sum(len(chunk) for chunk in sources) < total:
        parts = []
        for j, want in enumerate(per_batch):
            while len(pending[j]) < want:
                pending[j] = np.concatenate([pending[j], next(streams[j])])
            rows, pending[j] = pending[j][:want], pending[j][want:]
            parts.append(rows)
            sources.append(np.full(want, j, np.int8))
        tokens += np.concatenate(parts).size  # the batch
        first.mark(tokens)
    return tokens, np.concatenate(sources)[:total], fetched


def read_hf(bucket: str, endpoint: str, batch: int, total: int, first: FirstBatch) -> tuple[int, np.ndarray]:
    from datasets import interleave_datasets, load_dataset

    opts = {"endpoint_url": endpoint}
    parts = [
        load_dataset(
            "parquet",
            data_files=f"s3://{bucket}/bench/hf/{n}/data/*.parquet",
            split="train",
            streaming=True,
            storage_options=opts,
        )
        for n in WEIGHTS
    ]
    mixed = interleave_datasets(
        parts, probabilities=list(WEIGHTS.values()), seed=0, stopping_strategy="first_exhausted"
    )
    sources, tokens = [], 0
    for rows in mixed.with_format("arrow").iter(batch_size=batch):
        ids = rows.column("input_ids")
        tokens += len(ids.combine_chunks().values) if hasattr(ids, "combine_chunks") else len(ids.values)
        sources.append(rows.column("source").to_numpy())
        first.mark(tokens)
        if sum(map(len, sources)) >= total:
            break
    return tokens, np.concatenate(sources)[:total]


def read_litdata(
    bucket: str, endpoint: str, width: int, total: int, cache: str, first: FirstBatch, rank: int = 0, world: int = 1
) -> tuple[int, np.ndarray]:
    from litdata import CombinedStreamingDataset, StreamingDataset
    from litdata.streaming import downloader
    from litdata.streaming.item_loader import TokensLoader

    # litdata's obstore path refuses plain-http endpoints unless told: the moto server is http on loopback.
    downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"
    shutil.rmtree(cache, ignore_errors=True)
    # litdata reads its rank from torch.distributed, else from these variables (utilities/env.py).
    os.environ["WORLD_SIZE"], os.environ["GLOBAL_RANK"] = str(world), str(rank)

    def tagged(j: int, name: str):
        class Source(StreamingDataset):
            def __getitem__(self, index):
                return j, super().__getitem__(index)

        return Source(
            f"s3://{bucket}/bench/lit/{name}",
            item_loader=TokensLoader(block_size=width),
            shuffle=True,
            seed=0,
            cache_dir=os.path.join(cache, name),
            storage_options={"endpoint_url": endpoint},
        )

    mixed = CombinedStreamingDataset(
        [tagged(j, n) for j, n in enumerate(WEIGHTS)], weights=list(WEIGHTS.values()), seed=0, iterate_over_all=False
    )
    sources, tokens = [], 0
    for j, item in mixed:
        sources.append(j)
        tokens += len(item)
        first.mark(tokens)
        if len(sources) >= total:
            break
    return tokens, np.asarray(sources)


# ------------------------------------------------------------------------------------------ run
MOSAIC_ABSENT = (
    "mosaicml-streaming: not measured in this run: its 0.13 release needs numpy<2.2 and transformers<5, which "
    "conflict with trainkit's own stack, so it cannot be imported here; it would need a virtual environment of "
    "its own, which this benchmark does not build"
)


def start_moto_server():
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
        print(
            f"reading {total:,} sequences of {width} tokens ({total * width / 1e6:.1f}M tokens), median of {args.repeats}",
            flush=True,
        )
        readers: dict[str, Callable[[FirstBatch], tuple[int, np.ndarray]]] = {
            "trainkit": lambda first: read_trainkit(bucket, args.seq_length, args.batch, total, first)
        }
        if "raw" in peers:
            readers["raw-s3fs"] = lambda first: read_raw(bucket, endpoint, width, args.batch, total, first)[:2]
        if "hf" in peers:
            readers["hf-datasets"] = lambda first: read_hf(bucket, endpoint, args.batch, total, first)
        if "litdata" in peers:
            readers["litdata"] = lambda first: read_litdata(
                bucket, endpoint, width, total, os.path.join(workdir, "cache"), first
            )
        results = interleaved(readers, args.repeats)
        traffic = traffic_at(args.world, peers, bucket, endpoint, args, total, workdir) if args.world > 1 else {}
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    ours = results["trainkit"]
    print(
        f"\n{'reader':<12} {'tokens/s':>10} {'steady':>10} {'tok/CPU-s':>10} {'1st batch':>10} {'seconds':>8} "
        f"{'sequences':>10} {'mixture error':>14}"
    )
    for name, r in results.items():
        print(
            f"{name:<12} {r['tokens_per_s'] / 1e6:>9.1f}M {r['steady_tokens_per_s'] / 1e6:>9.1f}M "
            f"{r['tokens_per_cpu_s'] / 1e6:>9.1f}M {r['first_batch_seconds']:>9.2f}s {r['seconds']:>8.2f} "
            f"{r['sequences']:>10,} {r['mixture_error']:>10.2f} seq"
        )
    print(
        f"medians of {args.repeats} interleaved rounds; tokens/s: opening to last sequence; steady: after the first "
        "batch; tok/CPU-s: tokens per CPU-second of this process (the S3 server runs apart)"
    )
    print("trainkit / reader, median over rounds of the ratio within each round (goal >= 1 against raw and litdata):")
    for name, r in results.items():
        if name != "trainkit":
            x = r["trainkit_over_this"]
            print(
                f"  / {name:<12} open-to-end {x['open_to_end']:.2f}x   steady {x['steady']:.2f}x   "
                f"per CPU-second {x['per_cpu_second']:.2f}x"
            )
    print(MOSAIC_ABSENT)
    print(f"trainkit mixture error: {ours['mixture_error']:.2f} sequences (goal <= 1)")
    if traffic:
        print_traffic(args.world, traffic)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "endpoint": "moto on loopback",
                    "sequence_tokens": width,
                    "results": results,
                    "traffic": {"world_size": args.world, "readers": traffic},
                },
                f,
                indent=2,
            )
    return 0
