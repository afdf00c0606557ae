"""Sweep throughput: proxy runs per hour, K packed per Ray cluster vs one Ray cluster each, same proxies, one run.

  one cluster each  every proxy as its own RayJob runs it: `python -m trainkit.jobs.train --spec proxy.json`,
                    a process that starts its own Ray cluster (head, worker, Ray Train), trains, and stops it;
                    one after another, each with the whole "pod" (every CPU of this machine) to itself, as a
                    RayJob per proxy gets its pod.
  packed            K proxies per Ray cluster, as a TrainingSweep with `packing.runsPerCluster: K` runs them:
                    `python -m trainkit.jobs.pack --spec pack.json`, a process that starts ONE Ray cluster and
                    trains its K proxies at once, each on 1/K of the pod (trainkit.spec.packing.packed_share).

Both train the very same proxies (same specs, seeds, data: their metrics' stream digests are compared) from the
demo sources (real English text) prepared once into --data. Interleaved: the peers alternate pack by pack, so a
change of load on a shared machine hits both. Figures: proxies per hour of each, their ratio, Ray clusters started
(on Kubernetes: RayJobs, and Kueue admissions). Pod scheduling and image pulls are not part of it: on a cluster
each Ray cluster also waits for its pods, which only widens the gap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_EACH = "one cluster each"
PACKED = "packed"


def add_arguments(p) -> None:
    p.add_argument("--proxies", type=int, default=8, help="proxy runs (default 8)")
    p.add_argument("--pack", type=int, default=4, help="K: proxies per Ray cluster when packed (default 4)")
    p.add_argument("--steps", type=int, default=20, help="training steps of each proxy (default 20)")
    p.add_argument("--data", default=".trainkit/bench-train", help="folder for the prepared demo sources (reused)")
    p.add_argument("--work", default=None, help="folder for the proxies' outputs (default: a new temporary one)")
    p.add_argument("--json", default=None, help="also write the figures to this file")


def proxy_spec(uris: dict[str, str], weights: tuple[float, ...], steps: int, output: str, cpus: float) -> dict:
    """A tiny proxy (the `tiny` preset, 8 x 128 tokens a step): what a RegMix-style sweep runs hundreds of."""
    return {
        "model": {"preset": "tiny"},
        "data": {
            "seqLength": 128,
            "totalTokens": steps * 8 * 128,
            "whenExhausted": "repeat",
            "sources": [{"name": n, "uri": u, "weight": w} for (n, u), w in zip(uris.items(), weights)],
        },
        "training": {
            "microBatchSize": 8,
            "globalBatchSize": 8,
            "precision": "fp32",
            "seed": 0,
            "logEverySteps": max(1, steps // 2),
            "learningRate": {"peak": 3e-3, "final": 3e-4, "warmupSteps": 2},
        },
        "checkpoint": {"everySteps": steps, "keep": 1},
        "eval": {"validationTokens": 0},
        "resources": {"workers": 1, "gpusPerWorker": 0, "cpusPerWorker": cpus, "memoryPerWorker": "4Gi"},
        "output": {"uri": output},
    }


def mixtures(n: int) -> list[tuple[float, ...]]:
    import numpy as np

    rng = np.random.default_rng(0)
    return [tuple(round(float(w), 4) for w in row) for row in rng.dirichlet([1.0, 1.0, 1.0], n)]


def sweep_figures(
    seconds: dict[str, float], proxies: int, steps: int, runs_per_cluster: int, packs: int, same: bool
) -> dict:
    """The bench's figures from the two peers' wall times (pure)."""
    per_hour = {peer: 3600 * proxies / s for peer, s in seconds.items()}
    return {
        "proxies": proxies,
        "steps": steps,
        "runs_per_cluster": runs_per_cluster,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "proxies_per_hour": {k: round(v, 1) for k, v in per_hour.items()},
        "ratio_packed_vs_one_each": round(per_hour[PACKED] / per_hour[ONE_EACH], 2),
        "ray_clusters": {ONE_EACH: proxies, PACKED: packs},
        "same_training_data": same,
        "cpus": os.cpu_count(),
        "load_average_end": round(os.getloadavg()[0], 1),
    }


def print_figures(figures: dict) -> None:
    print(f"{'peer':<18}{'seconds':>9}{'proxies/hour':>14}{'Ray clusters (RayJobs, Kueue admissions)':>44}")
    for peer, s in figures["seconds"].items():
        print(f"{peer:<18}{s:>9.1f}{figures['proxies_per_hour'][peer]:>14.1f}{figures['ray_clusters'][peer]:>44}")
    print(
        f"packed / one cluster each: {figures['ratio_packed_vs_one_each']}x the proxies per hour; the same "
        f"sequences trained by both: {'yes' if figures['same_training_data'] else 'NO'} (stream digests); "
        f"load average at the end {figures['load_average_end']} on {figures['cpus']} CPUs"
    )


def _timed(cmd: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "ab") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}); see {log}")
    return time.perf_counter() - started


def run(args) -> int:
    from trainkit import artifacts
    from trainkit.bench.train import ensure_data
    from trainkit.spec.packing import PackMember, pack_document, pack_members, packed_share

    if args.proxies < 1 or args.pack < 2:
        print("--proxies must be >= 1 and --pack >= 2", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    uris = ensure_data(args.data)
    work = Path(args.work or tempfile.mkdtemp(prefix="trainkit-bench-sweep-")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    cpus = float(os.cpu_count() or 1)
    weights = mixtures(args.proxies)
    packs = pack_members(args.proxies, args.pack)
    log = work / "bench.log"
    print(
        f"sweep bench: {args.proxies} tiny proxies x {args.steps} steps; packed {args.pack} per Ray cluster vs one "
        f"Ray cluster each; this machine: {os.cpu_count()} CPUs (the 'pod'), load average {os.getloadavg()[0]:.1f}"
    )
    seconds = {ONE_EACH: 0.0, PACKED: 0.0}
    for p, members in enumerate(packs):
        # One cluster each: the pack's proxies one after another, each its own process and Ray cluster.
        for i in members:
            spec = {"spec": proxy_spec(uris, weights[i], args.steps, str(work / "single" / f"proxy-{i:03d}"), cpus)}
            path = work / f"single-{i:03d}.json"
            path.write_text(json.dumps({"apiVersion": "trainkit.dev/v1alpha1", "kind": "TrainingRun",
                                        "metadata": {"name": f"proxy-{i:03d}"}, **spec}))  # fmt: skip
            seconds[ONE_EACH] += _timed([sys.executable, "-m", "trainkit.jobs.train", "--spec", str(path)], log)
        # Packed: the same proxies in one Ray cluster, at once.
        docs = [
            PackMember(
                name=f"proxy-{i:03d}",
                spec=proxy_spec(uris, weights[i], args.steps, str(work / "packed" / f"proxy-{i:03d}"), cpus),
            )
            for i in members
        ]
        path = work / f"pack-{p:03d}.json"
        path.write_text(json.dumps(pack_document(f"bench-p{p:03d}", "default", docs, packed_share(cpus, 0, args.pack))))
        seconds[PACKED] += _timed([sys.executable, "-m", "trainkit.jobs.pack", "--spec", str(path)], log)
        print(
            f"  pack {p + 1}/{len(packs)}: one cluster each {seconds[ONE_EACH]:.0f} s, packed {seconds[PACKED]:.0f} s so far"
        )

    same = all(
        artifacts.read_metrics(str(work / "single" / f"proxy-{i:03d}"))[-1]["streamDigest"]
        == artifacts.read_metrics(str(work / "packed" / f"proxy-{i:03d}"))[-1]["streamDigest"]
        for i in range(args.proxies)
    )
    figures = sweep_figures(seconds, args.proxies, args.steps, args.pack, len(packs), same)
    print_figures(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if same else 1
