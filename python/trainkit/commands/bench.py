"""`trainkit bench TARGET`: performance figures against named peers, measured in the same run."""

from __future__ import annotations

import importlib

# target name -> module exposing add_arguments(parser) and run(args) -> int
BENCH_TARGETS: dict[str, str] = {
    "eval": "trainkit.bench.eval",
    "data": "trainkit.bench.data",
    "train": "trainkit.bench.train",
    "operator": "trainkit_operator.bench",
    "safety": "trainkit.bench.safety",
    "sweep": "trainkit.bench.sweep",
    "mixture": "trainkit.bench.mixture",
}

# Issue 17: prepare throughput (tokens/s per core vs datasets.map and litdata optimize; memory at 1x and 10x).
BENCH_TARGETS["prepare"] = "trainkit.bench.prepare"


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks against named peers (prints figures and ratios)")
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, module_name in BENCH_TARGETS.items():
        module = importlib.import_module(module_name)
        tp = targets.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else None)
        module.add_arguments(tp)
        tp.set_defaults(func=module.run)
