"""`trainkit bench safety`: the bad-input campaign, with counts.

Three groups, each case judged by what a user or tenant would see:
- hostile specs (generated from a seed, reproducible): wrong types, bounds, non-finite and denormal numbers,
  unicode and control characters, huge and deeply nested values, unknown fields, YAML bombs and broken YAML,
  each read as `trainkit validate` reads it, in-process (and a sample through the real CLI in a subprocess). Good: exit
  0 (valid) or 1 with a message that names the file, output bounded, within the time limit; bad: an uncaught
  exception, a traceback, an unbounded message.
- damaged artifacts: progress.json, checkpoint.json, eval summary.json, metrics.jsonl and a shard index.json
  truncated, corrupt, oversized, non-finite, with path traversal, wrong types or deep nesting, each read
  through the one reader `trainkit.artifacts` / `trainkit.data.shards` gives every consumer. Good: the value,
  None (skipped with a warning) or a typed error naming the object; bad: any other exception.
- hostile storage (`hostile_s3`: silent, slow, 5xx, redirect, huge): the operator's guarded reads (its
  default `ReadGuard`) of each record. Good: a storage error, within the guard's time bound, nothing followed
  to another host; bad: anything else.

There is no peer: this is a count of outcomes, and it exits 1 if any case is bad.
"""

from __future__ import annotations

import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BASE: dict[str, Any] = {
    "apiVersion": "trainkit.dev/v1alpha1",
    "kind": "TrainingRun",
    "metadata": {"name": "safety"},
    "spec": {
        "model": {"preset": "tiny"},
        "data": {
            "seqLength": 32,
            "totalTokens": 4096,
            "sources": [
                {"name": "web", "uri": "s3://bucket/web", "weight": 0.5},
                {"name": "edu", "uri": "s3://bucket/edu", "weight": 0.5},
            ],
        },
        "training": {"microBatchSize": 2, "globalBatchSize": 4, "learningRate": {"peak": 0.001}},
        "checkpoint": {"everySteps": 4},
        "output": {"uri": "s3://bucket/out/"},
    },
}

HUGE = "x" * 2_000_000


def _nested(depth: int) -> Any:
    node: Any = 1
    for _ in range(depth):
        node = {"a": node}
    return node


HOSTILE_VALUES: list[tuple[str, Any]] = [
    ("null", None),
    ("empty string", ""),
    ("negative", -1),
    ("zero", 0),
    ("int64 overflow", 2**63),
    ("huge int", 10**400),
    ("float max", 1e308),
    ("denormal", 5e-324),
    ("nan", math.nan),
    ("inf", math.inf),
    ("-inf", -math.inf),
    ("bool", True),
    ("list", [1, 2]),
    ("object", {"k": "v"}),
    ("huge string", HUGE),
    ("unicode", "\u202e\u0000\U0001f4a5$\\badmacro$<script>"),
    ("nested 300", _nested(300)),
    ("long list", list(range(200_000))),
    ("path traversal", "../../../../etc/passwd"),
    ("metadata endpoint", "http://169.254.169.254/latest/meta-data/"),
    ("file uri", "file:///etc/shadow"),
    ("number string", "1e9"),
]


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    import copy

    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def _dump(doc: Any, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return json.dumps(doc)  # JSON (Python's json writes NaN/Infinity, which YAML-as-JSON readers must refuse)
    return yaml.safe_dump(doc, sort_keys=False)


RAW_CASES: list[tuple[str, str]] = [
    ("alias bomb", "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(f"{c}: &{c} [{(',').join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "spec: *i\n"),
    ("recursive alias", "spec: &a [*a]\n"),
    ("binary", "\x00\x01\x02\xff\xfe" * 100),
    ("truncated", json.dumps(BASE)[:150]),
    ("tabs", "apiVersion: trainkit.dev/v1alpha1\n\tkind: TrainingRun\n"),
    ("many documents", "---\n".join(["kind: TrainingRun\nmetadata: {name: x}\n"] * 500)),
    ("oversized file", "# " + "y" * (2 << 20) + "\n"),
    ("deep flow", "spec: " + "[" * 5000 + "]" * 5000 + "\n"),
    ("python tag", "spec: !!python/object/apply:os.system ['echo owned']\n"),
    ("empty", ""),
    ("scalar", "just a string\n"),
]  # fmt: skip


def hostile_specs(seed: int, count: int) -> Iterator[tuple[str, str]]:
    """(label, file text): `count` mutations of BASE plus every raw case, reproducible from `seed`."""
    rng = random.Random(seed)
    paths = list(_paths(BASE))
    for label, text in RAW_CASES:
        yield label, text
    for _ in range(count):
        path = rng.choice(paths)
        if rng.random() < 0.15:  # an unknown field beside a known one
            parent = path[:-1] if path else ()
            name, value = "unknownField", rng.choice(HOSTILE_VALUES)[1]
            where = BASE
            for k in parent:
                where = where[k]
            if isinstance(where, dict):
                yield (
                    f"unknown field at {'.'.join(map(str, parent)) or '<root>'}",
                    _dump(_set(BASE, (*parent, name), value), rng),
                )
                continue
        label, value = rng.choice(HOSTILE_VALUES)
        yield f"{label} at {'.'.join(map(str, path)) or '<root>'}", _dump(_set(BASE, path, value), rng)


# ------------------------------------------------------------------------------------------ judging
@dataclass
class Tally:
    cases: int = 0
    outcomes: Counter = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    slowest: float = 0.0

    def add(self, outcome: str, took: float, bad: str | None = None) -> None:
        self.cases += 1
        self.outcomes[outcome] += 1
        self.slowest = max(self.slowest, took)
        if bad:
            self.bad.append(bad)


MAX_MESSAGE_CHARS = 100_000  # SpecError lists at most 50 issues of at most 1000 characters, plus the file name
SPEC_SECONDS = 5.0


def judge_spec(path: Path, label: str, tally: Tally) -> None:
    """What `trainkit validate FILE` does with the file (it reads through `load_resources` and prints each
    SpecError issue rendered with the file name); the real CLI is `judge_cli`."""
    from trainkit.spec.load import SpecError, load_resources

    started = time.monotonic()
    try:
        load_resources(path, allow_none=True)
        text, code = "", 0
    except SpecError as e:
        text, code = "\n".join(issue.render(str(path)) for issue in e.issues), 1
    except BaseException as e:  # noqa: BLE001 - exactly what the campaign looks for
        tally.add("uncaught exception", time.monotonic() - started, f"{label}: {type(e).__name__}: {str(e)[:200]}")
        return
    took = time.monotonic() - started
    if len(text) > MAX_MESSAGE_CHARS:
        tally.add("unbounded message", took, f"{label}: {len(text)} characters printed")
    elif took > SPEC_SECONDS:
        tally.add("too slow", took, f"{label}: {took:.1f} s")
    elif code == 0:
        tally.add("valid", took)
    elif str(path) in text:
        tally.add("clear error", took)
    else:
        tally.add("unclear error", took, f"{label}: {text[:200]!r}")


def judge_cli(path: Path, label: str, tally: Tally) -> None:
    started = time.monotonic()
    got = subprocess.run(
        [sys.executable, "-m", "trainkit", "validate", str(path)], capture_output=True, text=True, timeout=120
    )
    took = time.monotonic() - started
    if "Traceback" in got.stdout + got.stderr:
        tally.add("traceback", took, f"CLI {label}: traceback")
    elif got.returncode not in (0, 1):
        tally.add("unclear error", took, f"CLI {label}: exit {got.returncode}")
    else:
        tally.add("clear error" if got.returncode else "valid", took)


# --------------------------------------------------------------------------------- damaged artifacts
def _damages(good: bytes) -> list[tuple[str, bytes]]:
    try:
        doc = json.loads(good)
    except ValueError:  # metrics.jsonl: one document per line
        doc = None
    out = [
        ("empty", b""),
        ("truncated", good[: max(1, len(good) // 2)]),
        ("corrupt bytes", bytes(b ^ 0x5A for b in good)),
        ("not utf-8", b"\xff\xfe" + good),
        ("oversized", b'{"pad": "' + b"z" * (8 << 20) + b'"}'),
        ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
        ("a list", b"[1, 2, 3]"),
        ("a string", b'"hello"'),
        ("null", b"null"),
        ("NaN", good.replace(b"1", b"NaN", 1) if doc is not None else b"NaN"),
        ("Infinity", b'{"step": Infinity, "loss": -Infinity}'),
    ]
    if isinstance(doc, dict):
        for key in list(doc)[:4]:
            for label, value in (("wrong type", "seven"), ("negative", -5), ("huge", 10**30), ("object", {"x": 1})):
                out.append((f"{key}: {label}", json.dumps({**doc, key: value}).encode()))
    return out


def artifact_cases(root: Path) -> Iterator[tuple[str, str, str, bytes, Callable[[], Any]]]:
    """(record, damage, where, bytes, read) for every record kind: the read goes through the one reader."""
    from trainkit import artifacts
    from trainkit.data import shards
    from trainkit.spec.data import INDEX_FILE

    out = str(root / "run")
    ckpt = artifacts.checkpoint_uri(out, 10)
    goods: dict[str, tuple[str, bytes, Callable[[], Any]]] = {
        "progress.json": (
            artifacts.run_file(out, artifacts.PROGRESS),
            json.dumps({"step": 10, "totalSteps": 20, "loss": 3.1, "tokens": 1280}).encode(),
            lambda: artifacts.read_progress(out),
        ),
        "checkpoint.json": (
            f"{ckpt}/{artifacts.MANIFEST}",
            json.dumps({"step": 10, "files": {"model.safetensors": 4, "../../../../etc/cron.d/x": 1}}).encode(),
            lambda: artifacts.latest_complete_checkpoint(out),
        ),
        "summary.json": (
            f"{artifacts.eval_dir(out, 10)}/{artifacts.EVAL_SUMMARY}",
            json.dumps({"step": 10, "tasks": {"piqa": 61.2}, "average": 61.2}).encode(),
            lambda: artifacts.read_latest_eval_summary(out),
        ),
        "metrics.jsonl": (
            artifacts.run_file(out, artifacts.METRICS),
            b'{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.9}\n',
            lambda: artifacts.read_metrics(out),
        ),
        "index.json": (
            str(root / "shards" / INDEX_FILE),
            json.dumps({"version": 1, "tokenizer": "gpt2", "shards": [{"path": "../x.bin", "tokens": 10}]}).encode(),
            lambda: shards.read_index(str(root / "shards")),
        ),
    }
    for record, (uri, good, read) in goods.items():
        for damage, data in [("as written", good), *_damages(good)]:
            yield record, damage, uri, data, read


def judge_artifact(record: str, damage: str, uri: str, data: bytes, read: Callable[[], Any], tally: Tally) -> None:
    import logging

    from trainkit import artifacts, storage
    from trainkit.data.shards import DataError

    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    Path(uri).write_bytes(data)
    started = time.monotonic()
    try:
        logging.disable(logging.WARNING)  # the readers warn about what they skip; the tally counts it
        got = read()
    except (artifacts.ArtifactError, DataError, storage.StorageError, FileNotFoundError) as e:
        named = Path(uri).name in str(e) or uri in str(e) or "index" in str(e)
        tally.add("clear error" if named else "unclear error", time.monotonic() - started,
                  None if named else f"{record} {damage}: {str(e)[:200]}")  # fmt: skip
        return
    except BaseException as e:  # noqa: BLE001 - exactly what the campaign looks for
        tally.add(
            "uncaught exception", time.monotonic() - started, f"{record} {damage}: {type(e).__name__}: {e!s:.200}"
        )
        return
    finally:
        logging.disable(logging.NOTSET)
        Path(uri).unlink(missing_ok=True)
    took = time.monotonic() - started
    tally.add("read" if got not in (None, []) else "ignored (skipped)", took)


# ---------------------------------------------------------------------------------- hostile storage
def judge_storage(behaviour: str, record: str, read: Callable[[Any], Any], guard: Any, tally: Tally) -> float:
    from trainkit import storage
    from trainkit.bench.hostile_s3 import Hostile, HostileS3

    honest = Hostile()
    with HostileS3(honest) as elsewhere, HostileS3(Hostile(behaviour=behaviour)) as srv:
        srv.state.redirect_to = elsewhere.endpoint.replace("127.0.0.1", "localhost")
        options = storage.StorageOptions(
            endpoint=srv.endpoint, credentials=storage.Credentials("AKIASAFETYBENCH00001", "secret"), guard=guard
        )
        started = time.monotonic()
        try:
            read(options)
            outcome, bad = "no error", f"{behaviour} {record}: no error from a hostile server"
        except storage.StorageError:
            outcome, bad = "storage error", None
        except BaseException as e:  # noqa: BLE001 - exactly what the campaign looks for
            outcome, bad = "uncaught exception", f"{behaviour} {record}: {type(e).__name__}: {e!s:.200}"
        took = time.monotonic() - started
        if elsewhere.state.requests:
            outcome, bad = "followed a redirect", f"{behaviour} {record}: a request reached another host"
    bound = guard.attempts * (guard.connect_timeout + guard.request_deadline) + 2.0
    if bad is None and took > bound:
        outcome, bad = "past its deadline", f"{behaviour} {record}: {took:.1f} s > {bound:.1f} s"
    tally.add(outcome, took, bad)
    return took


def storage_reads() -> dict[str, Callable[[Any], Any]]:
    from trainkit import artifacts, storage

    out = "s3://tenant/runs/r1"
    return {
        "progress.json": lambda o: storage.read_bytes(artifacts.run_file(out, artifacts.PROGRESS), o),
        "summary.json": lambda o: storage.read_bytes(f"{artifacts.eval_dir(out, 10)}/{artifacts.EVAL_SUMMARY}", o),
        "checkpoint listing": lambda o: artifacts.list_files(artifacts.checkpoints_uri(out), o),
    }


# ------------------------------------------------------------------------------------------- command
def add_arguments(p) -> None:
    p.add_argument("--specs", type=int, default=400, help="generated hostile specs (default 400)")
    p.add_argument("--cli-sample", type=int, default=12, help="of them, run through the real CLI too")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--no-storage", action="store_true", help="skip the hostile-storage group (it takes ~1 min)")
    p.add_argument("--json", default=None, help="also write the counts to this file")
    p.set_defaults(func=run)


def _print(title: str, tally: Tally) -> None:
    print(f"\n{title}: {tally.cases} cases, slowest {tally.slowest:.2f} s")
    for outcome, n in sorted(tally.outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {outcome:<22} {n:>5}")
    for line in tally.bad[:20]:
        print(f"  BAD {line}")


def run_campaign(specs: int, cli_sample: int, seed: int, with_storage: bool) -> dict[str, Tally]:
    from trainkit import storage

    tallies = {"specs": Tally(), "cli": Tally(), "artifacts": Tally(), "storage": Tally()}
    with tempfile.TemporaryDirectory(prefix="tk-safety-") as tmp:
        root = Path(tmp)
        cases = list(hostile_specs(seed, specs))
        for i, (label, text) in enumerate(cases):
            path = root / f"spec-{i:04d}.yaml"
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            judge_spec(path, label, tallies["specs"])
            if i % max(1, len(cases) // max(1, cli_sample)) == 0 and tallies["cli"].cases < cli_sample:
                judge_cli(path, label, tallies["cli"])
            path.unlink()
        for record, damage, uri, data, read in artifact_cases(root):
            judge_artifact(record, damage, uri, data, read, tallies["artifacts"])
    if with_storage:
        guard = storage.ReadGuard()
        for behaviour in ("silent", "slow", "5xx", "redirect", "huge"):
            for record, read_with in storage_reads().items():
                judge_storage(behaviour, record, read_with, guard, tallies["storage"])
    return tallies


BAD_OUTCOMES = frozenset(
    {"uncaught exception", "traceback", "unbounded message", "too slow", "unclear error", "no error",
     "followed a redirect", "past its deadline"}
)  # fmt: skip


def run(args) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    tallies = run_campaign(args.specs, args.cli_sample, args.seed, not args.no_storage)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"trainkit bench safety (seed {args.seed}): {time.monotonic() - started:.0f} s, "
          f"peak RSS {peak_mib:.0f} MiB (was {before / 1024:.0f} MiB before)")  # fmt: skip
    _print("hostile specs through `trainkit validate` (in-process)", tallies["specs"])
    _print("a sample through the CLI (subprocess)", tallies["cli"])
    _print("damaged artifacts through trainkit.artifacts / shards readers", tallies["artifacts"])
    if not args.no_storage:
        _print("hostile storage through the operator's guarded reads", tallies["storage"])
    bad = sum(n for t in tallies.values() for o, n in t.outcomes.items() if o in BAD_OUTCOMES)
    print(f"\n{sum(t.cases for t in tallies.values())} cases, {bad} bad")
    if args.json:
        doc = {k: {"cases": t.cases, "outcomes": dict(t.outcomes), "bad": t.bad, "slowest": t.slowest}
               for k, t in tallies.items()}  # fmt: skip
        Path(args.json).write_text(json.dumps({**doc, "peak_rss_mib": peak_mib}, indent=1))
    return 1 if bad else 0
