"""Reading what the trainer and the evaluator wrote under a run's output URI, for the status.

The records and their readers are `trainkit.artifacts`'; this shell adds the operator's rules for
storage it does not trust (a tenant picks the objects, and which allowed endpoint they live on):

- credentials: THAT run's key (from its Secret, read by the caller through kube.py), never the
  operator's: the operator has none, and the guarded reader never looks at the AWS_* environment;
- every read is guarded (trainkit.storage.ReadGuard): a byte cap per response, a deadline per request
  and one for the whole reconcile's reads, no redirects, only the endpoint's own host, no link-local or
  metadata addresses, no local paths;
- the reads run OFF kopf's handler threads, in a small pool with at most one reconcile's reads per
  namespace at a time: a silent endpoint holds one slot of its own tenant, never the handlers or
  another tenant's reads. The handler waits at most the deadline (and a little) and moves on.

A record that is absent, bad, too large or cannot be read now comes back as None, with the reason in
`problems` (the StorageReadable condition); the status then keeps what it showed before, so a
storage hiccup never erases progress.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from trainkit import artifacts, storage
from trainkit.artifacts import EvalSummaryDoc, OutcomeDoc, ProgressDoc, ValidationLine
from trainkit.spec.data import INDEX_FILE, PROGRESS_FILE, TrainingDataSpec, index_training_tokens
from trainkit.spec.models import TrainingRunSpec

from trainkit_operator.config import OperatorConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
# The handler waits this much longer than the reads' own deadline: they end themselves by then.
DEADLINE_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class Observed:
    """What one reconcile read from object storage (None: not there, or not readable now)."""

    progress: ProgressDoc | None = None
    checkpoint: dict[str, object] | None = None  # {step, uri} of the newest complete checkpoint
    eval_summary: EvalSummaryDoc | None = None
    outcome: OutcomeDoc | None = None  # a packed run's outcome.json (read only for packed runs)
    validation: ValidationLine | None = None  # the last line of validation.jsonl (held-out loss per source)
    # Why something could not be read this time (empty: all read, or absent); None: nothing was attempted.
    problems: tuple[str, ...] | None = None
    # Nothing was read because this tenant's earlier reads still run: transient, so a final (terminal)
    # status must not be built on it; the reconcile retries shortly instead.
    deferred: bool = False


def read_guard(config: OperatorConfig) -> storage.ReadGuard:
    return storage.ReadGuard(
        max_response_bytes=config.read_max_bytes,
        request_deadline=config.read_timeout,
        connect_timeout=min(3.0, config.read_timeout),
    )


def options_for(
    spec: TrainingRunSpec | TrainingDataSpec, config: OperatorConfig, credentials: storage.Credentials | None = None
) -> storage.StorageOptions:
    """How the operator reads a run's (or a TrainingData's) storage: its endpoint (spec or chart default), its
    key, guarded."""
    return storage.StorageOptions(
        endpoint=spec.storage.endpoint or config.default_storage_endpoint,
        region=spec.storage.region,
        credentials=credentials,
        guard=read_guard(config),
    )


def _describe(what: str, e: BaseException) -> str:
    if isinstance(e, (storage.ObjectTooLarge, storage.StorageRefused, storage.ReadDeadlineExceeded)):
        return str(e)[:500]
    # The URI and the error class only; never credentials (botocore never echoes them).
    return f"could not read {what}: {type(e).__name__}"


def _unless_unreachable(what: str, read: Callable[[], T], problems: list[str]) -> T | None:
    try:
        return read()
    except Exception as e:  # noqa: BLE001 - storage trouble must not stop the reconcile
        problems.append(_describe(what, e))
        log.warning("skipping %s", problems[-1])
        return None


def checkpoint_ref(output_uri: str, step: int | None) -> dict[str, object] | None:
    return None if step is None else {"step": step, "uri": artifacts.checkpoint_uri(output_uri, step) + "/"}


def ended_observation(output_uri: str, ended: OutcomeDoc) -> Observed:
    """A packed run that ended: its outcome carries its final progress, checkpoint step and eval (one read)."""
    return Observed(
        progress=ended.get("progress"),
        checkpoint=checkpoint_ref(output_uri, ended.get("step")),
        eval_summary=ended.get("eval"),
        validation=ended.get("validation"),
        outcome=ended,
        problems=(),
    )


def _own_outcome(output_uri: str, options: storage.StorageOptions, owner: str, problems: list[str]):
    """The run's outcome.json when it is this run's (`owner`); an outcome another owner wrote is not."""
    found = _unless_unreachable(
        artifacts.run_file(output_uri, artifacts.OUTCOME), lambda: artifacts.read_outcome(output_uri, options), problems
    )
    return found if found is not None and found.get("owner") == owner else None


def observe_outputs(output_uri: str, options: storage.StorageOptions, outcome_owner: str | None = None) -> Observed:
    """Read the run's records (in the calling thread); guarded when `options.guard` is set. `outcome_owner`: a
    packed run's owner id; its outcome.json is read FIRST (the driver writes it after the run's last records)
    and, once there, is all that is read."""
    problems: list[str] = []
    ended = None
    if outcome_owner is not None:
        ended = _own_outcome(output_uri, options, outcome_owner, problems)
        if ended is not None and "progress" in ended:
            return ended_observation(output_uri, ended)
    progress = _unless_unreachable(
        artifacts.run_file(output_uri, artifacts.PROGRESS),
        lambda: artifacts.read_progress(output_uri, options),
        problems,
    )
    step = _unless_unreachable(
        artifacts.checkpoints_uri(output_uri),
        lambda: artifacts.latest_complete_checkpoint(output_uri, options),
        problems,
    )
    eval_summary = _unless_unreachable(
        artifacts.eval_root(output_uri), lambda: artifacts.read_latest_eval_summary(output_uri, options), problems
    )
    lines = _unless_unreachable(
        artifacts.run_file(output_uri, artifacts.VALIDATION),
        lambda: artifacts.read_validation(output_uri, options),
        problems,
    )
    return Observed(
        progress=progress,
        checkpoint=checkpoint_ref(output_uri, step),
        eval_summary=eval_summary,
        validation=lines[-1] if lines else None,
        outcome=ended,
        problems=tuple(problems),
    )


class OutcomeCache:
    """Packed runs' outcomes read so far, by (owner id, output URI). An outcome never changes once written (a
    retried pack skips the runs that have one), so each is read once per operator process; bounded."""

    def __init__(self, size: int = 50_000):
        self._docs: OrderedDict[tuple[str, str], OutcomeDoc] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> OutcomeDoc | None:
        with self._lock:
            return self._docs.get(key)

    def put(self, key: tuple[str, str], doc: OutcomeDoc) -> None:
        with self._lock:
            self._docs[key] = doc
            while len(self._docs) > self._size:
                self._docs.popitem(last=False)


OUTCOMES = OutcomeCache()


def observe_pack_end(own: tuple[str, str], members: list[tuple[str, str]], options: storage.StorageOptions) -> Observed:
    """When a pack's RayJob has ended: the outcome of every member not read yet (`members`: (owner, output URI)
    of the runs that share this run's storage), in one go, into OUTCOMES; then this run's observation. So a
    pack of 64 ends with 64 reads in one turn of the namespace's read slot, not 64 turns."""
    problems: list[str] = []
    for owner, uri in members:
        if OUTCOMES.get((owner, uri)) is None and (doc := _own_outcome(uri, options, owner, problems)) is not None:
            OUTCOMES.put((owner, uri), doc)
    mine = OUTCOMES.get(own)
    if mine is not None and "progress" in mine:
        return ended_observation(own[1], mine)
    seen = observe_outputs(own[1], options, own[0])  # no outcome: the run's own last records
    return replace(seen, problems=tuple(problems) + (seen.problems or ()))


@dataclass(frozen=True)
class PreparedObserved:
    """What one TrainingData reconcile read at the data's content-addressed URI (None: not there / unreadable)."""

    index: dict | None = None
    progress: dict | None = None
    problems: tuple[str, ...] | None = None
    deferred: bool = False


def _json_object_or_none(uri: str, options: storage.StorageOptions) -> dict | None:
    try:
        doc = storage.read_json(uri, options)
    except FileNotFoundError:
        return None
    return doc if isinstance(doc, dict) else None


def observe_prepared(uri: str, options: storage.StorageOptions) -> PreparedObserved:
    """index.json (the commit marker: Ready when valid) and prepare-progress.json under `uri`, guarded when
    `options.guard` is set; an absent one is None, an unreadable one None with the reason in `problems`."""
    problems: list[str] = []
    index_uri, progress_uri = storage.join(uri, INDEX_FILE), storage.join(uri, PROGRESS_FILE)
    index = _unless_unreachable(index_uri, lambda: _json_object_or_none(index_uri, options), problems)
    progress = _unless_unreachable(progress_uri, lambda: _json_object_or_none(progress_uri, options), problems)
    return PreparedObserved(index=index, progress=progress, problems=tuple(problems))


class ReadPool:
    """The threads that read tenants' storage: bounded, and fair (one reconcile's reads per tenant at once)."""

    def __init__(self, workers: int):
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="storage-read")
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def observe(
        self,
        tenant: str,
        output_uri: str,
        options: storage.StorageOptions,
        deadline: float,
        outcome_owner: str | None = None,
    ) -> Observed:
        """The run's records, read in the pool within `deadline` seconds; past it (or while this tenant's
        previous reads still run) nothing is read this time and `problems` says why."""
        return self.read(tenant, output_uri, lambda: observe_outputs(output_uri, options, outcome_owner), deadline)

    def observe_prepared(
        self, tenant: str, uri: str, options: storage.StorageOptions, deadline: float
    ) -> PreparedObserved:
        """A TrainingData's index.json and prepare-progress.json, read in the pool like a run's records."""
        done = self.call(tenant, lambda: observe_prepared(uri, options), deadline, what=uri)
        if done.problem is not None or done.value is None:
            return PreparedObserved(problems=(done.problem or "",), deferred=done.deferred)
        return done.value

    def read(self, tenant: str, what: str, reads: Callable[[], Observed], deadline: float) -> Observed:
        """`reads()` in the pool (see `call`), nothing read and `problems` saying why when it could not run."""
        done = self.call(tenant, reads, deadline, what=what)
        if done.problem is not None:
            return Observed(problems=(done.problem,), deferred=done.deferred)
        assert done.value is not None
        return done.value

    def call(self, tenant: str, read: Callable[[], T], deadline: float, what: str) -> "PoolRead[T]":
        """`read()` in the pool under the reads deadline, at most one per tenant at a time; never raises
        for storage trouble: the result says why nothing came back."""
        with self._lock:
            if tenant in self._busy:
                return PoolRead(
                    problem=f"the storage reads of an earlier reconcile in namespace {tenant!r} are still running",
                    deferred=True,
                )
            self._busy.add(tenant)

        def run() -> T:
            try:
                with storage.reads_deadline(deadline):
                    return read()
            finally:
                with self._lock:
                    self._busy.discard(tenant)

        try:
            future = self._executor.submit(run)
        except BaseException:
            with self._lock:
                self._busy.discard(tenant)
            raise
        try:
            return PoolRead(value=future.result(timeout=deadline + DEADLINE_GRACE_SECONDS))
        except concurrent.futures.TimeoutError:
            log.warning("storage reads for %s took longer than %.0f s; keeping the last status", what, deadline)
            return PoolRead(problem=f"reading {what} took longer than the {deadline:g} s deadline")


@dataclass(frozen=True)
class PoolRead(Generic[T]):
    value: T | None = None
    problem: str | None = None  # why nothing was read (None: `value` is the read's result)
    deferred: bool = False  # this tenant's earlier reads still run: try again shortly


def read_index_tokens(source_uris: dict[str, str], options: storage.StorageOptions) -> tuple[dict[str, int], list[str]]:
    """Each source's training tokens from its index.json (`trainkit.spec.data.index_training_tokens`), for a
    sweep's natural prior; (counts, problems), a source with a problem left out of the counts."""
    counts: dict[str, int] = {}
    problems: list[str] = []
    for name, uri in source_uris.items():
        where = storage.join(uri, INDEX_FILE)
        before = len(problems)
        doc = _unless_unreachable(where, functools.partial(storage.read_json, where, options), problems)
        if len(problems) > before:
            continue
        tokens = index_training_tokens(doc)
        if tokens is None:
            problems.append(f"{where}: not a trainkit shard index with tokens")
        else:
            counts[name] = tokens
    return counts, problems


_POOLS: dict[int, ReadPool] = {}
_POOLS_LOCK = threading.Lock()


def read_pool(config: OperatorConfig) -> ReadPool:
    """The process's read pool (one per size: the operator has one config; tests may use several)."""
    with _POOLS_LOCK:
        if config.read_workers not in _POOLS:
            _POOLS[config.read_workers] = ReadPool(config.read_workers)
        return _POOLS[config.read_workers]
