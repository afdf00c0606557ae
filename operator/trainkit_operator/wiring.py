"""The operator's one registration module: kopf settings and every handler, for runs, sweeps and data.

Each kind has ONE idempotent reconcile in its own module (`run_reconcile`, `sweep_reconcile`,
`data_reconcile`: read -> pure decision -> apply); this module only says WHEN it runs and how its
failures are treated. Every kind is reconciled on create/update/resume, on a timer (progress, missed
events) and when one of its labelled children changes (KubeRay moving a RayJob, a sweep's run
finishing), so a transition shows without waiting for the timer.

Concurrency: kopf may run a timer and an event handler for the same object at once, so each
reconcile holds that object's lock and re-reads it fresh. Any failure becomes a kopf.TemporaryError
with exponential backoff (transient API errors soon, others later), never a crash of the operator.
"""

from __future__ import annotations

import logging
import threading
import time
import typing
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import kopf

from trainkit.spec.data import DataPhase
from trainkit.spec.status import TERMINAL_PHASES, Phase
from trainkit.spec.sweep_status import SweepPhase

from trainkit_operator import builders
from trainkit_operator.config import OperatorConfig
from trainkit_operator.data_builders import DATA_LABEL
from trainkit_operator.data_reconcile import reconcile_data
from trainkit_operator.kube import (
    DATAS,
    GROUP,
    PLURAL,
    SWEEPS,
    VERSION,
    Kube,
    backoff_delay,
    describe_api_error,
    is_transient,
    lock_for,
)
from trainkit_operator.metrics import NO_STATUS, OperatorMetrics
from trainkit_operator.decide import KUBERAY_TERMINAL_DEPLOYMENT
from trainkit_operator.packs import PACK_LABEL
from trainkit_operator.run_reconcile import Outcome, ReadsDeferred, reconcile
from trainkit_operator.sweep_reconcile import reconcile_sweep


ANNOTATION_PREFIX = "operator.trainkit.dev"
# How long a pack's handler keeps finishing its runs after the pack ended (see settle_pack).
PACK_SETTLE_SECONDS = 60.0
# How long a change of one of a sweep's runs waits for more before the sweep reconciles (see reconcile_sweep_named).
SWEEP_DEBOUNCE_SECONDS = 5.0

# Libraries whose DEBUG logs print request headers (SigV4 Authorization carries the access key id,
# the Kubernetes client the bearer token): capped at WARNING whatever --verbose says.
QUIET_LOGGERS = ("botocore", "boto3", "aiobotocore", "s3fs", "urllib3", "kubernetes", "fsspec", "celpy")

log = logging.getLogger("trainkit_operator")

T = TypeVar("T")


def configure_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Handler progress and the diff-base live in annotations: the strict status schema would prune
    # kopf's status.kopf and handlers would re-run forever (kopf#321, #574).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"  # unused: no deletion handlers
    # Watches go quiet without timeouts (kopf#585, #1276).
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_client_timeout
    settings.watching.connect_timeout = config.watch_connect_timeout
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 120
    # Events: kopf's own posting; the component name shows in `kubectl describe`.
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING  # handler logs do not become Events; ours are explicit
    settings.posting.reporting_component = "trainkit-operator"
    settings.posting.event_name_prefix = "trainkit-"
    # Sync handlers run in this many threads (each holds one API connection).
    settings.execution.max_workers = config.max_workers
    if config.peering_name:
        settings.peering.name = config.peering_name
        settings.peering.standalone = False
    else:
        settings.peering.standalone = True


# The kinds as the metrics name them (trainkit_resources{kind}), with every phase each can show.
RUN_KIND, SWEEP_KIND, DATA_KIND = "TrainingRun", "TrainingSweep", "TrainingData"
KIND_PHASES = {
    RUN_KIND: (NO_STATUS, *typing.get_args(Phase)),
    SWEEP_KIND: (NO_STATUS, *typing.get_args(SweepPhase)),
    DATA_KIND: (NO_STATUS, *typing.get_args(DataPhase)),
}


def new_metrics() -> OperatorMetrics:
    return OperatorMetrics(KIND_PHASES)


def guarded(memo: Any, key: tuple[str, ...], kind: str, what: str, attempt: Callable[[], T], retry: int) -> T:
    """`attempt()` under the object's lock, timed; any failure becomes a kopf retry with backoff."""
    metrics: OperatorMetrics = memo.metrics
    with lock_for(memo, key):
        started = time.perf_counter()
        try:
            return attempt()
        except ReadsDeferred as e:
            raise kopf.TemporaryError(str(e), delay=backoff_delay(retry, base=0.5, cap=15.0)) from None
        except kopf.TemporaryError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure becomes a kopf retry with backoff, never a crash
            metrics.reconcile_failures.labels(kind).inc()
            delay = backoff_delay(retry) if is_transient(e) else backoff_delay(retry, base=5.0)
            raise kopf.TemporaryError(f"{what} failed ({describe_api_error(e)}); retrying", delay=delay) from None
        finally:
            metrics.reconcile_seconds.labels(kind).observe(time.perf_counter() - started)


def post(memo: Any, body: dict, event: tuple[str, str, str] | None) -> None:
    if event is not None:
        type_, reason, message = event
        kopf.event(body, type=type_, reason=reason, message=message)
        memo.metrics.event(body.get("kind") or "", type_, reason)


def live(obj: dict | None) -> dict | None:
    """The object, or None when it is gone or being deleted (nothing to reconcile then)."""
    return None if obj is None or (obj.get("metadata") or {}).get("deletionTimestamp") else obj


def reconcile_run_named(memo: Any, ns: str, name: str, retry: int = 0) -> Outcome | None:
    kube: Kube = memo.kube

    def attempt() -> tuple[dict, Any] | None:
        run = live(kube.get_run(ns, name))
        return None if run is None else (run, reconcile(kube, run, memo.config))

    done = guarded(memo, (ns, name), RUN_KIND, "reconcile", attempt, retry)
    if done is None:
        return None
    memo.metrics.storage_failures(ns, len(done[1].storage_problems))
    for event in done[1].events:
        post(memo, done[0], event)
    return done[1]


def reconcile_sweep_named(memo: Any, ns: str, name: str, retry: int = 0, coalesce: bool = False) -> None:
    """`coalesce` (a run of the sweep changed): return at once when another reconcile of the sweep is already
    waiting, because that one reads the runs after this change anyway; the one that waits first lets
    SWEEP_DEBOUNCE_SECONDS of changes gather. So a 512-run sweep whose runs change thousands of times runs a
    sweep reconcile (which lists every run) every few seconds while they change, not once per change."""
    kube: Kube = memo.kube
    waiting = (ns, name)
    if coalesce:
        with memo.locks_guard:
            if waiting in memo.sweeps_waiting:
                return
            memo.sweeps_waiting.add(waiting)
        time.sleep(SWEEP_DEBOUNCE_SECONDS)

    def attempt() -> tuple[dict, Any] | None:
        if coalesce:
            with memo.locks_guard:
                memo.sweeps_waiting.discard(waiting)
        sweep = live(kube.get_sweep(ns, name))
        return None if sweep is None else (sweep, reconcile_sweep(kube, sweep, memo.config))

    done = guarded(memo, ("sweep", ns, name), SWEEP_KIND, "sweep reconcile", attempt, retry)
    if done is not None:
        post(memo, done[0], done[1])


def settle_pack(memo: Any, ns: str, pack: str) -> None:
    """A pack's RayJob changed (or was listed at start-up, ended): reconcile each of its unfinished runs now.
    Once the pack has ended, go on until every run shows its end: the first run's reconcile reads the outcomes
    of the whole pack in one turn of the namespace's read slot and the others find theirs read; a run whose
    turn had to wait (another pack's reads) is tried again a second later, for at most PACK_SETTLE_SECONDS.
    Failures are left to the runs' timers."""
    kube: Kube = memo.kube
    give_up = time.monotonic() + PACK_SETTLE_SECONDS
    while True:
        waiting = [
            r["metadata"]["name"]
            for r in kube.list_runs(ns, f"{PACK_LABEL}={pack}")
            if ((r.get("status") or {}).get("phase")) not in TERMINAL_PHASES
        ]
        for name in waiting:
            try:
                outcome = reconcile_run_named(memo, ns, name)
            except kopf.TemporaryError as e:
                log.info("run %s of pack %s left to its timer: %s", name, pack, e)
                continue
            if outcome is not None and outcome.reads_deferred:
                break  # another pack's reads have the namespace's turn: the rest would wait too
        status = (kube.get_rayjob(ns, pack) or {}).get("status") or {}
        if not waiting or status.get("jobDeploymentStatus") not in KUBERAY_TERMINAL_DEPLOYMENT:
            return
        if time.monotonic() > give_up:
            log.info("pack %s: %d run(s) left to their timers", pack, len(waiting))
            return
        time.sleep(1.0)


def reconcile_data_named(memo: Any, ns: str, name: str, retry: int = 0) -> None:
    kube: Kube = memo.kube

    def attempt() -> tuple[dict, Any] | None:
        data = live(kube.get_data(ns, name))
        return None if data is None else (data, reconcile_data(kube, data, memo.config))

    done = guarded(memo, ("data", ns, name), DATA_KIND, "TrainingData reconcile", attempt, retry)
    if done is not None:
        post(memo, done[0], done[1])


Named = Callable[..., object]  # what it returns is not used here


def on_lifecycle(
    registry: kopf.OperatorRegistry,
    plural: str,
    prefix: str,
    named: Named,
    interval: float,
    updates: bool,
    initial_delay: float | None = None,
) -> None:
    """create (and update), resume and a timer: all call the same reconcile of the object."""

    def handle(body, memo, retry: int = 0, **_):
        named(memo, body["metadata"].get("namespace") or "default", body["metadata"]["name"], retry)

    kopf.on.create(GROUP, VERSION, plural, id=f"{prefix}-create", registry=registry)(handle)
    if updates:
        kopf.on.update(GROUP, VERSION, plural, id=f"{prefix}-update", registry=registry)(handle)
    kopf.on.resume(GROUP, VERSION, plural, id=f"{prefix}-resume", registry=registry)(handle)
    kopf.timer(
        GROUP,
        VERSION,
        plural,
        id=f"{prefix}-timer",
        interval=interval,
        initial_delay=initial_delay,
        registry=registry,
    )(handle)


def on_child_change(
    registry: kopf.OperatorRegistry,
    resource: tuple[str, str, str],
    label: str,
    id: str,
    named: Named,
    types: tuple[str, ...],
) -> None:
    """A labelled child changed: reconcile the owner its label names now, instead of at the next tick.
    A failure here is only logged: the owner's timer retries."""

    @kopf.on.event(*resource, labels={label: kopf.PRESENT}, id=id, registry=registry)
    def changed(body, memo, type, **_):
        if type not in types:
            return
        owner = body["metadata"]["labels"][label]
        try:
            named(memo, body["metadata"].get("namespace") or "default", owner)
        except kopf.TemporaryError as e:
            log.info("reconcile of %s after a change of %s deferred to the timer: %s", owner, id, e)


def register(
    registry: kopf.OperatorRegistry,
    config: OperatorConfig | None = None,
    kube: Kube | None = None,
    metrics: OperatorMetrics | None = None,
) -> kopf.OperatorRegistry:
    """Register every handler into `registry`. `kube` lets a caller supply the API client (tests), `metrics`
    the metrics object (tests read the port it serves on from it)."""
    config = config or OperatorConfig.from_env()
    metrics = metrics or new_metrics()

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_):
        configure_settings(settings, config)
        memo.config = config
        memo.metrics = metrics
        memo.kube = kube or Kube.from_environment(pool_size=config.max_workers + 4)
        memo.kube.on_api_error = metrics.api_error
        memo.locks = {}
        memo.locks_guard = threading.Lock()
        if config.metrics_port is not None:
            port = metrics.serve(config.metrics_host, config.metrics_port)
            log.info("serving Prometheus metrics on %s:%d/metrics", config.metrics_host, port)
        memo.sweeps_waiting = set()

    @kopf.on.cleanup(registry=registry)
    def cleanup(memo: kopf.Memo, **_):
        metrics.close()
        if kube is None and getattr(memo, "kube", None) is not None:
            memo.kube.close()

    # The phase of every object, from the watch stream (terminal runs are never reconciled, but still count).
    for plural, kind in ((PLURAL, RUN_KIND), (SWEEPS, SWEEP_KIND), (DATAS, DATA_KIND)):

        def seen(body, type, _kind=kind, **_):
            metrics.saw(_kind, body, type)

        kopf.on.event(GROUP, VERSION, plural, id=f"metrics-{plural}", registry=registry)(seen)

    rayjobs = ("ray.io", "v1", "rayjobs")
    # The runs' first tick waits: create/resume handlers have just reconciled them.
    on_lifecycle(
        registry, PLURAL, "reconcile", reconcile_run_named, config.timer_interval, True, config.timer_initial_delay
    )
    # Only MODIFIED: ADDED is our own create (or, after a restart, covered by resume handlers and timers),
    # DELETED is seen by the owner's timer (a terminal run ignores it, a live one reports it).
    on_child_change(registry, rayjobs, builders.RUN_LABEL, "rayjob-changed", reconcile_run_named, ("MODIFIED",))

    # A pack's RayJob (packed runs of a sweep) moving, or found ended at start-up: its runs reconcile now.
    @kopf.on.event(*rayjobs, labels={PACK_LABEL: kopf.PRESENT}, id="pack-rayjob-changed", registry=registry)
    def pack_changed(body, memo, type, **_):
        ended = ((body.get("status") or {}).get("jobDeploymentStatus")) in KUBERAY_TERMINAL_DEPLOYMENT
        # Not ADDED: that is the sweep's own create; KubeRay's first status write follows at once.
        if type == "MODIFIED" or (type is None and ended):
            settle_pack(memo, body["metadata"].get("namespace") or "default", body["metadata"]["labels"][PACK_LABEL])

    on_lifecycle(registry, SWEEPS, "sweep", reconcile_sweep_named, config.timer_interval, updates=True)
    # A run finishing (or vanishing) frees a slot at once; the initial listing (type None) is covered by resume.
    run_events = ("ADDED", "MODIFIED", "DELETED")
    on_child_change(
        registry,
        (GROUP, VERSION, PLURAL),
        builders.SWEEP_LABEL,
        "sweep-run-changed",
        partial(reconcile_sweep_named, coalesce=True),
        run_events,
    )

    # A TrainingData's spec is immutable once accepted (its content hash names the shards): no update handler.
    on_lifecycle(registry, DATAS, "data", reconcile_data_named, config.timer_interval, updates=False)
    on_child_change(registry, rayjobs, DATA_LABEL, "data-rayjob", reconcile_data_named, ("MODIFIED",))
    return registry
