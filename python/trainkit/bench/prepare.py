"""Prepare throughput: tokens/s per CPU core of our prepare vs datasets.map and litdata's optimize, same parquet.

Self-contained and offline. The input is real English text: the three demo sources (`trainkit demo-data`) in one
parquet file with a `text` column (1x), and the same documents ten times over in another (10x); both written with
--row-group rows per row group, as the seed's hub files are. Then, in this order:

1. The tokenizer: our GPT-2 BPE (tiktoken, built from GPT-2's vocab.json + merges.txt) against Hugging Face
   tokenizers' GPT2TokenizerFast from the same two files: every document must give identical ids, or the bench
   stops before timing anything; then each one's encode-only tokens per CPU-second on one thread.
2. Each peer, alone, in a fresh child process, on the 1x file; every one must produce the same number of tokens
   (GPT-2 ids plus one EOS per document):
     trainkit        `prepare_unit`, the Ray task `trainkit prepare` runs per input file (one process, one thread)
     trainkit-ray    `run_prepare` end to end on a local Ray of one CPU (timed from submission; Ray is up and its
                     worker warm: one tiny prepare ran first)
     datasets-map    `load_dataset("parquet")` + `.map(batched=True)` with GPT2TokenizerFast, as the datasets docs
                     show it (one process; its arrow cache in a temporary folder)
     datasets-tiktoken  the same `.map(batched=True)` calling our tiktoken encoder: the pipeline without the
                     tokenizer's difference
     litdata         `optimize(fn, inputs=[file], item_loader=TokensLoader(), num_workers=1)` with a tokenize fn
                     that streams record batches and encodes each document with GPT2TokenizerFast (+ EOS), as
                     litdata's pre-training example does
   Per core = tokens / CPU seconds (user + system) the child spent on the work, its threads, the processes it
   waited for and its live descendants included (for trainkit-ray: Ray's GCS, raylet and worker): steadier than
   wall time on a shared machine.
   Each child times only the work: its imports and its tokenizer are loaded first (litdata's worker process
   loads them inside optimize(), which is part of what optimize costs).
3. Memory: `trainkit` on the 1x and the 10x file: the child's peak RSS during the work (VmHWM, reset when the work
   starts; litdata's worker process is not counted in its figure). Our bound is one shard buffer (--shard-tokens
   x 2 bytes) + one tokenizer chunk (TOKENIZE_CHARS characters) + one parquet row group, not the input.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PEERS = ("trainkit", "trainkit-ray", "datasets-map", "datasets-tiktoken", "litdata")
BASELINE = "datasets-map"
GOAL = 3.0


def add_arguments(p) -> None:
    p.add_argument("--max-chars", type=int, default=2_000_000, help="characters of demo text per source (1x)")
    p.add_argument("--row-group", type=int, default=1000, help="rows per parquet row group")
    p.add_argument("--shard-tokens", type=int, default=1 << 20, help="our shard size (memory bound: 2 bytes each)")
    p.add_argument("--peers", default=",".join(PEERS[1:]), help=f"comma-separated, of: {', '.join(PEERS[1:])}")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------- the input
def write_inputs(workdir: Path, max_chars: int, row_group: int) -> tuple[Path, Path, list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trainkit.data.demo import demo_sources

    docs = [d for source in demo_sources(max_chars, log=lambda _: None) for d in source.documents]
    one, ten = workdir / "x1" / "train-00000-of-00001.parquet", workdir / "x10" / "train-00000-of-00001.parquet"
    for path, copies in ((one, 1), (ten, 10)):
        path.parent.mkdir(parents=True)
        with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as writer:
            for _ in range(copies):  # one copy at a time: the bench itself stays small
                writer.write_table(pa.table({"text": docs}), row_group_size=row_group)
    return one, ten, docs


# --------------------------------------------------------------------------------- the tokenizers
def compare_tokenizers(docs: list[str]) -> dict:
    """Identical ids on every document (raises otherwise), and each one's encode tokens per CPU-second."""
    from trainkit.data.tokenizer import load_tokenizer

    ours = load_tokenizer("gpt2")
    hf = ours.hf_tokenizer()
    figures: dict = {}
    ids: dict[str, list[list[int]]] = {}
    for name, encode in (
        ("tiktoken", lambda: ours.encode_batch(docs)),
        ("hf-tokenizers", lambda: hf(docs)["input_ids"]),
    ):
        cpu = time.process_time()
        ids[name] = encode()
        seconds = time.process_time() - cpu
        tokens = sum(len(x) for x in ids[name])
        figures[name] = {"tokens": tokens, "cpu_seconds": seconds, "tokens_per_cpu_second": tokens / seconds}
    differ = [i for i, (a, b) in enumerate(zip(ids["tiktoken"], ids["hf-tokenizers"])) if a != b]
    if differ or len(ids["tiktoken"]) != len(ids["hf-tokenizers"]):
        raise RuntimeError(f"tiktoken and HF tokenizers disagree on {len(differ)} of {len(docs)} documents")
    figures["identical_documents"] = len(docs)
    return figures


# --------------------------------------------------------------------------------- the peers (children)
def _cpu_seconds() -> float:
    """CPU seconds of this process, its threads, the processes it waited for, and its live descendants (a local
    Ray's GCS, raylet and workers: their CPU is the prepare's too)."""
    import psutil

    own, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime
    for proc in psutil.Process().children(recursive=True):
        try:
            times = proc.cpu_times()
        except psutil.Error:  # ended meanwhile
            continue
        total += times.user + times.system
    return total


def peer_trainkit(shard_tokens: int) -> Callable[[Path, Path], int]:
    from trainkit.data.prepare import Unit, prepare_unit
    from trainkit.data.tokenizer import load_tokenizer
    from trainkit.storage import StorageOptions

    load_tokenizer("gpt2").encode("warm")  # the encoder is built once per process, not per file

    def prepare(path: Path, out: Path) -> int:
        marker = prepare_unit(
            Unit(str(path), "bench", path.stat().st_size), str(out), "gpt2", shard_tokens, StorageOptions()
        )
        return int(marker["tokens"]) + int(marker["validationTokens"])  # the held-out 2% is tokenized too

    return prepare


def peer_trainkit_ray(shard_tokens: int) -> Callable[[Path, Path], int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trainkit.data.prepare import ensure_ray, run_prepare

    ensure_ray(1)
    # One tiny prepare first: Ray's worker process then has trainkit imported and the tokenizer built, as it has
    # for every file after the first of a real prepare.
    warm = Path(tempfile.mkdtemp(prefix="warm-"))
    pq.write_table(pa.table({"text": ["A short document to start Ray's worker."]}), warm / "warm.parquet")
    run_prepare(str(warm / "warm.parquet"), str(warm / "out"), holdout_fraction=0.0, log=lambda _: None)
    shutil.rmtree(warm, ignore_errors=True)

    def prepare(path: Path, out: Path) -> int:
        index = run_prepare(str(path), str(out), shard_tokens=shard_tokens, log=lambda _: None)
        return int(index["totalTokens"]) + int(index["validation"]["tokens"])

    return prepare


def peer_datasets(encoder: str) -> Callable[[Path, Path], int]:
    from datasets import load_dataset

    from trainkit.data.tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    encode: Callable[[list[str]], list[list[int]]] = tok.encode_batch
    if encoder == "hf":
        hf = tok.hf_tokenizer()

        def encode(texts: list[str]) -> list[list[int]]:
            return hf(texts)["input_ids"]

    encode(["warm"])

    def tokenize(batch: dict) -> dict:
        return {"input_ids": [ids + [tok.eos_id] for ids in encode(batch["text"])]}

    def prepare(path: Path, out: Path) -> int:
        ds = load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(out / "cache"))
        tokenized = ds.map(tokenize, batched=True, remove_columns=["text"])
        return sum(len(ids) for ids in tokenized["input_ids"])

    return prepare


def _litdata_tokenize(path: str):
    """optimize()'s fn, after litdata's pre-training example: stream record batches, encode each document."""
    import pyarrow.parquet as pq
    import torch

    from trainkit.data.tokenizer import load_tokenizer

    tok = load_tokenizer("gpt2")
    hf = tok.hf_tokenizer()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=8192, columns=["text"]):
        for text in batch.column(0).to_pylist():
            yield torch.tensor(hf.encode(text) + [tok.eos_id], dtype=torch.int32)


def peer_litdata(_: int) -> Callable[[Path, Path], int]:
    from litdata import optimize
    from litdata.streaming.item_loader import TokensLoader

    def prepare(path: Path, out: Path) -> int:
        # Its worker process imports and builds the tokenizer itself: part of what optimize() costs per call.
        optimize(
            fn=_litdata_tokenize,
            inputs=[str(path)],
            output_dir=str(out / "lit"),
            chunk_bytes="64MB",
            item_loader=TokensLoader(),
            num_workers=1,
            mode="overwrite",
        )
        index = json.loads((out / "lit" / "index.json").read_text())
        return sum(int(c["dim"]) for c in index["chunks"])

    return prepare


PREPARERS: dict[str, Callable[[int], Callable[[Path, Path], int]]] = {
    "trainkit": peer_trainkit,
    "trainkit-ray": peer_trainkit_ray,
    "datasets-map": lambda _: peer_datasets("hf"),
    "datasets-tiktoken": lambda _: peer_datasets("tiktoken"),
    "litdata": peer_litdata,
}


def _peak_rss_reset() -> None:
    """Start a new peak-RSS count for this process (Linux: writing 5 to clear_refs resets VmHWM)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(peer: str, path: Path, out: Path, shard_tokens: int) -> dict:
    """One peer's work on `path`, timed after its imports and tokenizer are loaded (set-up is not the work)."""
    prepare = PREPARERS[peer](shard_tokens)
    _peak_rss_reset()
    cpu, wall = _cpu_seconds(), time.perf_counter()
    tokens = prepare(path, out)
    wall = time.perf_counter() - wall
    return {
        "tokens": tokens,
        "wall_seconds": wall,
        "cpu_seconds": _cpu_seconds() - cpu,
        "peak_rss_mib": _peak_rss_mib(),
    }


def measure(peer: str, path: Path, workdir: Path, shard_tokens: int) -> dict:
    """Run one peer in a fresh process; its figures plus the peak RSS wait4 reports for it."""
    out = Path(tempfile.mkdtemp(prefix=f"{peer}-", dir=workdir))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_CACHE": str(out / "cache")}
    cmd = [sys.executable, "-m", "trainkit.bench.prepare", peer, str(path), str(out), str(shard_tokens)]
    with tempfile.TemporaryFile(mode="w+") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        assert proc.stdout is not None
        stdout = proc.stdout.read()  # until the child exits; then wait4 (not Popen.wait) for its rusage
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"{peer} failed (exit {proc.returncode}):\n{stderr.read()[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    # wait4's ru_maxrss would start from this process's size (a fork's high-water mark survives exec): the
    # child's own VmHWM, reset once its imports are done, is the work's.
    result["child_cpu_seconds_total"] = usage.ru_utime + usage.ru_stime
    shutil.rmtree(out, ignore_errors=True)
    return result


def per_core(r: dict) -> float:
    return r["tokens"] / r["cpu_seconds"]


def run(args) -> int:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(tempfile.gettempdir(), "trainkit-tiktoken"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    peers = ["trainkit"] + [p for p in args.peers.split(",") if p and p != "trainkit"]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        print(f"trainkit bench prepare: error: unknown peer(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="trainkit-bench-prepare-"))
    try:
        one, ten, docs = write_inputs(workdir, args.max_chars, args.row_group)
        print(
            f"bench prepare: {len(docs):,} documents, {sum(map(len, docs)):,} characters of demo text "
            f"({one.stat().st_size / 2**20:.1f} MiB parquet, {args.row_group} rows per row group); 10x: "
            f"{ten.stat().st_size / 2**20:.1f} MiB; {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} (figures only compare within one run)",
            flush=True,
        )
        tokenizers = compare_tokenizers(docs)
        print(
            f"tokenizer: tiktoken and HF tokenizers give identical ids on all {len(docs):,} documents; encode only, "
            f"one thread: tiktoken {tokenizers['tiktoken']['tokens_per_cpu_second'] / 1e6:.2f}M, HF tokenizers "
            f"{tokenizers['hf-tokenizers']['tokens_per_cpu_second'] / 1e6:.2f}M tokens per CPU-second "
            f"({tokenizers['tiktoken']['tokens_per_cpu_second'] / tokenizers['hf-tokenizers']['tokens_per_cpu_second']:.1f}x)",
            flush=True,
        )
        results = {}
        for peer in peers:
            print(f"  {peer} ...", flush=True)
            results[peer] = measure(peer, one, workdir, args.shard_tokens)
        print("  trainkit on the 10x input ...", flush=True)
        ten_x = measure("trainkit", ten, workdir, args.shard_tokens)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    base = results.get(BASELINE)
    print(
        f"\n{'peer':<18} {'tokens':>10} {'wall s':>8} {'CPU s':>8} {'tokens/s/core':>14} {'peak RSS':>10} {'vs ' + BASELINE:>16}"
    )
    for peer, r in results.items():
        cpu = f"{r['cpu_seconds']:.2f}"
        ratio = f"{per_core(r) / per_core(base):.2f}x" if base else "-"
        print(
            f"{peer:<18} {r['tokens']:>10,} {r['wall_seconds']:>8.2f} {cpu:>8} {per_core(r) / 1e6:>13.2f}M "
            f"{r['peak_rss_mib']:>8.0f} MiB {ratio:>16}"
        )
    counts = {r["tokens"] for r in results.values()}
    print("same tokens from every peer" if len(counts) == 1 else f"WARNING: token counts differ: {sorted(counts)}")
    print("tokens/s/core: tokens / CPU seconds of the work (trainkit-ray: Ray's GCS, raylet and worker included)")
    if base:
        speedup = per_core(results["trainkit"]) / per_core(base)
        print(
            f"trainkit / {BASELINE} per core: {speedup:.2f}x (goal >= {GOAL:g}x: {'met' if speedup >= GOAL else 'NOT met'})"
        )
    growth = ten_x["peak_rss_mib"] / results["trainkit"]["peak_rss_mib"]
    print(
        f"memory: trainkit peak RSS {results['trainkit']['peak_rss_mib']:.0f} MiB on 1x, {ten_x['peak_rss_mib']:.0f} MiB "
        f"on 10x ({ten_x['tokens']:,} tokens): {growth:.2f}x for 10x the input (shard buffer "
        f"{args.shard_tokens * 2 / 2**20:.0f} MiB)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"tokenizers": tokenizers, "peers": results, "trainkit_10x": ten_x, "shard_tokens": args.shard_tokens},
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":  # a child: python -m trainkit.bench.prepare PEER INPUT OUT SHARD_TOKENS
    print(json.dumps(child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))))
