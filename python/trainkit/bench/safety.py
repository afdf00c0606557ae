"""`trainkit bench safety`: the bad-input campaign, with counts.

Three groups, each case judged by what a user or tenant would see:
- hostile specs (generated from a seed, reproducible): wrong types, bounds, non-finite and denormal numbers,
  unicode and control characters, huge and deeply nested values, unknown fields, YAML bombs and broken YAML,
  each read as `trainkit validate` reads it, in a forked child of this process with per-case caps on CPU time
  (RLIMIT_CPU: a loop is killed; CPU, not wall time, so a loaded machine does not fail a case), wall time (a case
  blocked without using CPU) and memory (an address-space limit; the case's own peak RSS is measured too), and a
  sample through the real CLI in a subprocess. Good: exit 0 (valid) or 1 with a message that names the file,
  output bounded, within the caps; bad: an uncaught exception, a traceback, an unbounded message, a cap reached.
- damaged artifacts: progress.json, checkpoint.json, eval summary.json, metrics.jsonl and a shard index.json
  truncated, corrupt, oversized, non-finite, with path traversal, wrong types or deep nesting, each read
  through the one reader `trainkit.artifacts` / `trainkit.data.shards` gives every consumer. Good: the value,
  None (skipped with a warning) or a typed error naming the object; bad: any other exception.
- hostile storage (`hostile_s3` on 127.0.0.1: silent, slow, 5xx, redirect, huge): every read the operator makes
  of a run (GET of progress.json and summary.json, the checkpoints and eval listings, the newest complete
  checkpoint) through the guarded reader (its default `ReadGuard`). Good: a StorageError, within the guard's
  deadline, nothing followed to another host; bad: anything else.

There is no peer: this is a count of outcomes, and it exits 1 if any case is bad.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import gc
import json
import math
import os
import random
import re
import resource
import select
import signal
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
    peak_mib: float = 0.0  # the largest peak RSS growth of one case (isolated groups only)
    cpu: float = 0.0  # the most CPU seconds one case used (isolated groups only)

    def add(self, outcome: str, took: float, bad: str | None = None, peak_mib: float = 0.0, cpu: float = 0.0) -> None:
        self.cases += 1
        self.outcomes[outcome] += 1
        self.slowest = max(self.slowest, took)
        self.peak_mib = max(self.peak_mib, peak_mib)
        self.cpu = max(self.cpu, cpu)
        if bad:
            self.bad.append(bad)


MAX_MESSAGE_CHARS = 100_000  # SpecError lists at most 50 issues of at most 1000 characters, plus the file name
# Per-case caps of the spec group: `trainkit validate` must answer any file within these (the 1 MiB size
# limit, the alias and node caps and the nesting check keep real cases far below them).
SPEC_CPU_SECONDS = 5.0
SPEC_WALL_SECONDS = 60.0
SPEC_MEMORY_MIB = 256
CAPS = f"{SPEC_CPU_SECONDS:g} s CPU, {SPEC_WALL_SECONDS:g} s wall, {SPEC_MEMORY_MIB} MiB"


@dataclass(frozen=True)
class Capped:
    """What one case did in its forked child: its value, or why it was stopped."""

    value: Any = None
    took: float = 0.0
    peak_mib: float = 0.0  # the child's peak RSS above its RSS when it started (or its private memory, if more)
    cpu: float = 0.0  # the child's CPU seconds (user + system)
    stopped: str | None = None  # "cpu cap", "time cap", "memory cap" or "died (signal N)"


def _status_kib(field_name: str, where: str = "/proc/self/status") -> int:
    found = re.search(rf"^{field_name}:\s+(\d+) kB", Path(where).read_text(), re.M)
    return int(found.group(1)) if found else 0


def _private_kib() -> int:
    """Memory this process does not share (its copies of the parent's pages included): what a forked case
    used even where its pages were already resident before the fork, so that RSS did not grow."""
    rollup = "/proc/self/smaps_rollup"
    if not Path(rollup).exists():
        return 0
    return _status_kib("Private_Clean", rollup) + _status_kib("Private_Dirty", rollup)


def run_capped(
    case: Callable[[], Any], cpu_seconds: float, memory_mib: int, seconds: float = SPEC_WALL_SECONDS
) -> Capped:
    """Run `case()` (returning JSON-able data) in a forked child limited to `cpu_seconds` of CPU (the kernel
    kills it past them) and `memory_mib` MiB of address space above what it starts with, killed after `seconds`
    of wall time. Forking keeps the parent's imports: a case costs milliseconds, and one that hangs or balloons
    cannot take the campaign (or its memory figure) with it."""
    read_end, write_end = os.pipe()
    started = time.monotonic()
    gc.freeze()  # the child's collector then leaves the parent's objects alone (no copy-on-write of the heap)
    pid = os.fork()
    if pid != 0:
        gc.unfreeze()
    else:  # the child: never returns
        code = 0
        try:
            os.close(read_end)
            rss0, private0 = _status_kib("VmRSS"), _private_kib()
            cap = _status_kib("VmSize") * 1024 + (memory_mib << 20)
            resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
            cpu_cap = max(1, math.ceil(cpu_seconds))  # SIGXCPU at the soft limit, SIGKILL a second later
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_cap, cpu_cap + 1))
            try:
                doc = {"value": case()}
            except MemoryError:
                doc = {"stopped": "memory cap"}
            # RSS growth misses a case that wrote pages the fork shared (copy-on-write keeps RSS as it was):
            # its private memory now is a floor for the peak
            doc["peak_mib"] = max(_status_kib("VmHWM") - rss0, _private_kib() - private0, 0) / 1024
            usage = resource.getrusage(resource.RUSAGE_SELF)
            doc["cpu"] = usage.ru_utime + usage.ru_stime
            with os.fdopen(write_end, "wb") as out:
                out.write(json.dumps(doc).encode())
        except BaseException:  # noqa: BLE001 - the parent sees the missing answer
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    stopped: str | None = None
    with os.fdopen(read_end, "rb", buffering=0) as answer:
        while True:
            left = started + seconds - time.monotonic()
            if left <= 0 or not select.select([answer], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                stopped = "time cap"
                break
            chunk = answer.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    took = time.monotonic() - started
    if stopped is None and not chunks:
        signalled = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        # past RLIMIT_CPU the kernel sends SIGXCPU, then SIGKILL at the hard limit
        stopped = "cpu cap" if signalled in (signal.SIGXCPU, signal.SIGKILL) else f"died (signal {signalled})"
    if stopped is not None:
        return Capped(took=took, stopped=stopped)
    doc = json.loads(b"".join(chunks))
    return Capped(value=doc.get("value"), took=took, peak_mib=doc["peak_mib"], cpu=doc["cpu"],
                  stopped=doc.get("stopped"))  # fmt: skip


def spec_outcome(path: Path, label: str) -> tuple[str, str | None]:
    """(outcome, why it is bad or None) of what `trainkit validate FILE` does with the file (it reads through
    `load_resources` and prints each SpecError issue rendered with the file name); the real CLI is `judge_cli`."""
    from trainkit.spec.load import SpecError, load_resources

    try:
        load_resources(path, allow_none=True)
        text, code = "", 0
    except SpecError as e:
        text, code = "\n".join(issue.render(str(path)) for issue in e.issues), 1
    except MemoryError:
        raise  # the memory cap: run_capped reports it
    except BaseException as e:  # noqa: BLE001 - exactly what the campaign looks for
        return "uncaught exception", f"{label}: {type(e).__name__}: {str(e)[:200]}"
    if len(text) > MAX_MESSAGE_CHARS:
        return "unbounded message", f"{label}: {len(text)} characters printed"
    if code == 0:
        return "valid", None
    if str(path) in text:
        return "clear error", None
    return "unclear error", f"{label}: {text[:200]!r}"


def warm_spec_reader(root: Path) -> None:
    """Read a valid spec once in this process: the reader's lazy set-up (imports, pydantic's validators) is then
    inherited by every forked case instead of repeated in each (~0.3 s and ~16 MiB a case otherwise)."""
    path = root / "warm-up.yaml"
    path.write_text(json.dumps(BASE))
    spec_outcome(path, "warm-up")
    path.unlink()


def judge_spec(path: Path, label: str, tally: Tally) -> None:
    """`spec_outcome` in a capped child: past SPEC_CPU_SECONDS, SPEC_WALL_SECONDS or SPEC_MEMORY_MIB the case is
    bad, whatever it did. Call `warm_spec_reader` once first."""
    ran = run_capped(lambda: spec_outcome(path, label), SPEC_CPU_SECONDS, SPEC_MEMORY_MIB)
    if ran.stopped is not None:
        tally.add(f"over {ran.stopped}" if "cap" in ran.stopped else "uncaught exception", ran.took,
                  f"{label}: {ran.stopped} ({CAPS})", ran.peak_mib)  # fmt: skip
        return
    outcome, bad = ran.value
    tally.add(outcome, ran.took, bad, ran.peak_mib, ran.cpu)


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
def _within_deadline(
    outcome: str, took: float, bad: str | None, guard: Any, where: str
) -> tuple[str, float, str | None]:
    """(outcome, seconds, why bad or None) of one guarded read that took `took` s: past its operation's deadline
    and STORAGE_GRACE_SECONDS, a good outcome is a bad one."""
    bound = guard.operation_deadline + STORAGE_GRACE_SECONDS
    if bad is None and took > bound:
        return "past its deadline", took, f"{where}: {took:.1f} s > {bound:.1f} s"
    return outcome, took, bad


def judge_storage(record: str, read: Callable[[Any], Any], guard: Any, hostile: Any) -> tuple[str, float, str | None]:
    """(outcome, seconds, why bad or None) of one read of `hostile` (a running HostileS3) through the guarded
    reader."""
    from trainkit import storage

    behaviour = hostile.state.behaviour
    options = storage.StorageOptions(
        endpoint=hostile.endpoint, credentials=storage.Credentials("AKIASAFETYBENCH00001", "secret"), guard=guard
    )
    started = time.monotonic()
    try:
        read(options)
        outcome, bad = "no error", f"{behaviour} {record}: no error from a hostile server"
    except storage.StorageError:
        outcome, bad = "storage error", None
    except BaseException as e:  # noqa: BLE001 - exactly what the campaign looks for
        outcome, bad = "uncaught exception", f"{behaviour} {record}: {type(e).__name__}: {e!s:.200}"
    return _within_deadline(outcome, time.monotonic() - started, bad, guard, f"{behaviour} {record}")


# A guarded operation ends at its deadline; this much more covers closing the socket, the first client's setup
# (botocore loads its models once) and a loaded machine. Without a deadline a silent server holds a read 60 s.
STORAGE_GRACE_SECONDS = 5.0


def storage_reads() -> dict[str, Callable[[Any], Any]]:
    """Every read the operator makes of a run's output (trainkit_operator.observe), each alone."""
    from trainkit import artifacts, storage

    out = "s3://tenant/runs/r1"
    return {
        "progress.json": lambda o: storage.read_bytes(artifacts.run_file(out, artifacts.PROGRESS), o),
        "summary.json": lambda o: storage.read_bytes(f"{artifacts.eval_dir(out, 10)}/{artifacts.EVAL_SUMMARY}", o),
        "checkpoint listing": lambda o: artifacts.list_files(artifacts.checkpoints_uri(out), o),
        "eval listing": lambda o: artifacts.read_latest_eval_summary(out, o),
        "newest checkpoint": lambda o: artifacts.latest_complete_checkpoint(out, o),
    }


def run_storage_group(guard: Any, tally: Tally) -> None:
    """Every behaviour of `hostile_s3` (each its own server on 127.0.0.1) against every read of `storage_reads`;
    redirects point at an honest server under another name (localhost), which must see no request."""
    from trainkit.bench.hostile_s3 import BEHAVIOURS, Hostile, HostileS3

    with HostileS3(Hostile()) as elsewhere:
        for behaviour in BEHAVIOURS:
            with HostileS3(Hostile(behaviour=behaviour)) as hostile:
                hostile.state.redirect_to = elsewhere.endpoint.replace("127.0.0.1", "localhost")
                # The reads of one behaviour run at once, as the operator's read pool runs tenants' reads: each
                # must still end within its own deadline.
                reads = storage_reads()
                with concurrent.futures.ThreadPoolExecutor(max_workers=len(reads)) as pool:
                    results = list(
                        pool.map(lambda item: judge_storage(item[0], item[1], guard, hostile), reads.items())
                    )
                followed = bool(elsewhere.state.requests)  # then every read of this behaviour counts as bad
                elsewhere.state.requests.clear()
                for record, (outcome, took, bad) in zip(reads, results):
                    if followed:
                        outcome, bad = "followed a redirect", f"{behaviour} {record}: a request reached another host"
                    tally.add(outcome, took, bad)


# ------------------------------------------------------- hostile storage: the user's own reads (trainer, CLI)
TRAINER_STORAGE_OUT = "s3://tenant/runs/r1"
TRAINER_SHARDS = "s3://tenant/shards/web"
BENCH_KEY = ("AKIASAFETYBENCH00002", "secret")  # a fake key of the user's own: the hostile servers take any


def own_guard(timeout: float) -> Any:
    """The CLI's and the trainer's guard (`own_read_guard`) with a short request deadline and a 1 MiB cap, as
    TRAINKIT_READ_TIMEOUT / TRAINKIT_READ_MAX_BYTES set them (so the campaign stays quick)."""
    from dataclasses import replace

    from trainkit import storage

    return replace(storage.own_read_guard(), connect_timeout=timeout, request_deadline=timeout,
                   max_response_bytes=1 << 20)  # fmt: skip


def trainer_reads() -> dict[str, Callable[[Any], Any]]:
    """The trainer's control reads of its own storage, each alone: preflight (a source's index.json there?,
    the index itself), the output claim (owner.json's conditional create, then reading it), and a resume (the
    checkpoint listing and manifests)."""
    from trainkit import artifacts, storage
    from trainkit.data import shards

    mine = artifacts.OwnerRecord(owner="local:safety", spec_hash="safety")
    return {
        "index.json exists": lambda o: storage.exists(storage.join(TRAINER_SHARDS, shards.INDEX_FILE), o),
        "index.json": lambda o: shards.read_index(TRAINER_SHARDS, o),
        "owner.json claim": lambda o: artifacts.claim_output(TRAINER_STORAGE_OUT, mine, o),
        "resume listing": lambda o: artifacts.latest_complete_checkpoint(TRAINER_STORAGE_OUT, o),
    }


def _trainer_options(hostile: Any, guard: Any) -> Any:
    from trainkit import storage

    return storage.StorageOptions(endpoint=hostile.endpoint, credentials=storage.Credentials(*BENCH_KEY), guard=guard)


def judge_trainer_storage(
    record: str, read: Callable[[Any], Any], guard: Any, hostile: Any
) -> tuple[str, float, str | None]:
    """(outcome, seconds, why bad or None) of one trainer read of `hostile` with the user's own guard: good is
    a StorageError (or the shard reader's DataError wrapping one) naming the object, within the deadline."""
    from trainkit import storage
    from trainkit.data.shards import DataError

    behaviour = hostile.state.behaviour
    options = _trainer_options(hostile, guard)
    started = time.monotonic()
    try:
        got = read(options)
        if behaviour in ("slow", "huge") and record == "index.json exists" and got is True:
            # a HEAD has no body: a slow or huge server answers it honestly, the GET after it is what fails
            outcome, bad = "answered (HEAD)", None
        else:
            outcome, bad = "no error", f"{behaviour} {record}: no error from a hostile server"
    except (storage.StorageError, DataError) as e:
        named = "s3://tenant/" in str(e)
        outcome, bad = ("storage error", None) if named else ("unclear error", f"{behaviour} {record}: {e!s:.200}")
    except BaseException as e:  # noqa: BLE001 - exactly what the campaign looks for
        outcome, bad = "uncaught exception", f"{behaviour} {record}: {type(e).__name__}: {e!s:.200}"
    return _within_deadline(outcome, time.monotonic() - started, bad, guard, f"{behaviour} {record}")


# Startup of a CLI process (imports; a loaded machine) on top of its reads' deadlines.
CLI_GRACE_SECONDS = 60.0


def cli_commands(root: Path) -> dict[str, list[str]]:
    """Every CLI command that reads a run's storage, as argv after `trainkit`, over the files it needs in `root`:
    report, compare, logs, eval (the checkpoint's manifest), validate --explain (the sources' index.json),
    sweep --local (which runs are done, read before Ray starts) and run (the preflight's index.json)."""
    run = copy.deepcopy(BASE)
    run["spec"]["data"]["sources"] = [{"name": "web", "uri": TRAINER_SHARDS, "weight": 1.0}]
    run["spec"]["output"]["uri"] = TRAINER_STORAGE_OUT
    sweep = {
        "apiVersion": BASE["apiVersion"],
        "kind": "TrainingSweep",
        "metadata": {"name": "safety-sweep"},
        "spec": {"rankBy": "loss", "mixtures": {"explicit": [{"weights": {"web": 1.0}}]},
                 "template": {**run["spec"], "output": {"uri": "s3://tenant/sweeps/s1/"}}},
    }  # fmt: skip
    (root / "run.yaml").write_text(yaml.safe_dump(run))
    (root / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return {
        "report": ["report", TRAINER_STORAGE_OUT],
        "compare": ["compare", TRAINER_STORAGE_OUT, "--output", str(root / "compare")],
        "logs": ["logs", TRAINER_STORAGE_OUT],
        "eval": ["eval", f"{TRAINER_STORAGE_OUT}/checkpoints/step-00000010", "--tasks", "piqa"],
        "validate --explain": ["validate", "--explain", str(root / "run.yaml")],
        "sweep --local": ["sweep", "--local", str(root / "sweep.yaml")],
        "run": ["run", str(root / "run.yaml")],
    }


def cli_env(endpoint: str, timeout: float) -> dict[str, str]:
    """A CLI process of a user whose storage is `endpoint`: their key and endpoint from the environment, the
    read deadline and cap short (TRAINKIT_READ_TIMEOUT, TRAINKIT_READ_MAX_BYTES), nothing from the network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRAINKIT_READ_"))}
    env.update(AWS_ACCESS_KEY_ID=BENCH_KEY[0], AWS_SECRET_ACCESS_KEY=BENCH_KEY[1], AWS_DEFAULT_REGION="us-east-1",
               AWS_ENDPOINT_URL_S3=endpoint, AWS_EC2_METADATA_DISABLED="true", TRAINKIT_READ_TIMEOUT=str(timeout),
               TRAINKIT_READ_MAX_BYTES=str(1 << 20), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               RAY_USAGE_STATS_ENABLED="0", TOKENIZERS_PARALLELISM="false")  # fmt: skip
    return env


def judge_cli_storage(
    command: str, argv: list[str], env: dict[str, str], bound: float, behaviour: str
) -> tuple[str, float, str | None]:
    """(outcome, seconds, why bad or None) of `trainkit ARGV` as a real subprocess against a hostile server.
    Good: exit non-zero with a message naming the object (s3://tenant/...), no traceback, within `bound`; for
    `validate --explain`, which reports a source it cannot read rather than failing (the cluster may see storage
    this machine cannot), exit 0 with "not reachable" and the object named."""
    started = time.monotonic()
    try:
        got = subprocess.run([sys.executable, "-m", "trainkit", *argv], capture_output=True, text=True, env=env,
                             timeout=bound + 30, stdin=subprocess.DEVNULL)  # fmt: skip
    except subprocess.TimeoutExpired:
        return (
            "past its deadline",
            time.monotonic() - started,
            f"{behaviour} {command}: still running after {bound + 30:.0f} s",
        )
    took = time.monotonic() - started
    text = got.stdout + got.stderr
    where = f"{behaviour} {command}"
    if "Traceback" in text:
        return "traceback", took, f"{where}: traceback: {text[-300:]!r}"
    if command == "validate --explain":
        ok = got.returncode == 0 and "not reachable" in text and "s3://tenant/" in text
        outcome, bad = (
            ("reported as not reachable", None)
            if ok
            else ("unclear error", f"{where}: exit {got.returncode}: {text[-300:]!r}")
        )
    elif got.returncode == 0:
        outcome, bad = "no error", f"{where}: exit 0 against a hostile server"
    elif "s3://tenant/" not in got.stderr:
        outcome, bad = "unclear error", f"{where}: exit {got.returncode}: {got.stderr[-300:]!r}"
    else:
        outcome, bad = "storage error", None
    if bad is None and took > bound:
        outcome, bad = "past its deadline", f"{where}: {took:.1f} s > {bound:.1f} s"
    return outcome, took, bad


def run_own_storage_group(
    timeout: float, trainer: Tally, cli: Tally, workers: int = 8, cli_behaviours: tuple[str, ...] | None = None
) -> None:
    """Every behaviour of `hostile_s3` (each its own server, all at once) against the trainer's control reads
    (in this process) and every CLI command of `cli_commands` (subprocesses, `workers` at a time: they mostly
    wait on a silent or slow server, so more than the cores), with the
    user's own guard shortened to `timeout` seconds a request. A command may make two reads before one fails (a
    HEAD a slow server answers, then the GET): its bound is two operation deadlines and CLI_GRACE_SECONDS.
    Redirects point at an honest server under another name, which must see no request. `cli_behaviours`: the
    behaviours the CLI meets (default all; the trainer's reads meet all of them either way)."""
    from trainkit import storage
    from trainkit.bench.hostile_s3 import BEHAVIOURS, Hostile, HostileS3

    guard = own_guard(timeout)
    bound = 2 * guard.operation_deadline + CLI_GRACE_SECONDS
    with contextlib.ExitStack() as servers, tempfile.TemporaryDirectory(prefix="tk-safety-cli-") as tmp:
        commands = cli_commands(Path(tmp))
        pairs = {}
        for behaviour in BEHAVIOURS:
            elsewhere = servers.enter_context(HostileS3(Hostile()))
            hostile = servers.enter_context(HostileS3(Hostile(behaviour=behaviour)))
            hostile.state.redirect_to = elsewhere.endpoint.replace("127.0.0.1", "localhost")
            pairs[behaviour] = (hostile, elsewhere)
        reads = trainer_reads()
        for hostile, _ in pairs.values():  # botocore's client set-up (~1 s, once per endpoint) is not a read's time
            storage._guarded_client(_trainer_options(hostile, guard))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as cli_pool, \
                concurrent.futures.ThreadPoolExecutor(max_workers=len(reads) * len(pairs)) as read_pool:  # fmt: skip
            cli_runs = {
                (b, c): cli_pool.submit(judge_cli_storage, c, argv, cli_env(h.endpoint, timeout), bound, b)
                for b, (h, _) in pairs.items()
                if cli_behaviours is None or b in cli_behaviours
                for c, argv in commands.items()
            }
            trainer_runs = {
                (b, r): read_pool.submit(judge_trainer_storage, r, read, guard, h)
                for b, (h, _) in pairs.items()
                for r, read in reads.items()
            }
            results = [(trainer, k, f.result()) for k, f in trainer_runs.items()]
            results += [(cli, k, f.result()) for k, f in cli_runs.items()]
    for tally, (behaviour, name), (outcome, took, bad) in results:
        if pairs[behaviour][1].state.requests:  # then every read of this behaviour counts as bad
            outcome, bad = "followed a redirect", f"{behaviour} {name}: a request reached another host"
        tally.add(outcome, took, bad)


# ------------------------------------------------------------------------------------------- command
def add_arguments(p) -> None:
    p.add_argument("--specs", type=int, default=400, help="generated hostile specs (default 400)")
    p.add_argument("--cli-sample", type=int, default=12, help="of them, run through the real CLI too")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--no-storage", action="store_true", help="skip the hostile-storage group (it takes ~1 min)")
    p.add_argument(
        "--read-timeout",
        type=float,
        default=1.0,
        help="TRAINKIT_READ_TIMEOUT of the trainer's and the CLI's reads in the storage group (default 1 s)",
    )
    p.add_argument("--json", default=None, help="also write the counts to this file")
    p.set_defaults(func=run)


def _print(title: str, tally: Tally, caps: str = "") -> None:
    peak = (
        f", most CPU of one case {tally.cpu:.2f} s, largest peak RSS of one case {tally.peak_mib:.1f} MiB"
        if caps
        else ""
    )
    print(f"\n{title}: {tally.cases} cases, slowest {tally.slowest:.2f} s{peak}{caps}")
    for outcome, n in sorted(tally.outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {outcome:<22} {n:>5}")
    for line in tally.bad[:20]:
        print(f"  BAD {line}")


def run_campaign(
    specs: int, cli_sample: int, seed: int, with_storage: bool, read_timeout: float = 1.0
) -> dict[str, Tally]:
    from trainkit import storage

    tallies = {"specs": Tally(), "cli": Tally(), "artifacts": Tally(), "storage": Tally(), "trainer storage": Tally(),
               "cli storage": Tally()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tk-safety-") as tmp:
        root = Path(tmp)
        cases = list(hostile_specs(seed, specs))
        warm_spec_reader(root)
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
        run_storage_group(storage.ReadGuard(), tallies["storage"])
        run_own_storage_group(read_timeout, tallies["trainer storage"], tallies["cli storage"])
    return tallies


BAD_OUTCOMES = frozenset(
    {"uncaught exception", "traceback", "unbounded message", "over cpu cap", "over time cap", "over memory cap",
     "unclear error",
     "no error", "followed a redirect", "past its deadline"}
)  # fmt: skip


def run(args) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    tallies = run_campaign(args.specs, args.cli_sample, args.seed, not args.no_storage, args.read_timeout)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"trainkit bench safety (seed {args.seed}): {time.monotonic() - started:.0f} s, "
          f"peak RSS {peak_mib:.0f} MiB (was {before / 1024:.0f} MiB before)")  # fmt: skip
    _print("hostile specs through `trainkit validate` (each in a capped child)", tallies["specs"],
           f" (caps per case: {CAPS})")  # fmt: skip
    _print("a sample through the CLI (subprocess)", tallies["cli"])
    _print("damaged artifacts through trainkit.artifacts / shards readers", tallies["artifacts"])
    if not args.no_storage:
        _print("hostile storage through the operator's guarded reads", tallies["storage"])
        _print(f"hostile storage through the trainer's control reads (own key; {args.read_timeout:g} s a request)",
               tallies["trainer storage"])  # fmt: skip
        _print(f"hostile storage through the CLI (subprocesses, TRAINKIT_READ_TIMEOUT={args.read_timeout:g})",
               tallies["cli storage"])  # fmt: skip
    bad = sum(n for t in tallies.values() for o, n in t.outcomes.items() if o in BAD_OUTCOMES)
    print(f"\n{sum(t.cases for t in tallies.values())} cases, {bad} bad")
    if args.json:
        doc = {k: {"cases": t.cases, "outcomes": dict(t.outcomes), "bad": t.bad, "slowest": t.slowest,
                   "peak_mib": t.peak_mib, "cpu": t.cpu} for k, t in tallies.items()}  # fmt: skip
        Path(args.json).write_text(json.dumps({**doc, "peak_rss_mib": peak_mib}, indent=1))
    return 1 if bad else 0
