"""The operator's Prometheus metrics (prometheus_client), served over HTTP when the chart asks for it.

    trainkit_resources{kind, namespace, phase}        gauge: TrainingRuns, TrainingSweeps and TrainingData by phase
                                                      (from the watch stream, so terminal runs count too)
    trainkit_reconcile_duration_seconds{kind}         histogram: one reconcile (read -> decide -> apply)
    trainkit_reconcile_failures_total{kind}           reconciles that raised (kopf retries them with backoff)
    trainkit_api_errors_total{verb, code}             the operator's own Kubernetes API calls answered with an
                                                      error status (404 and 409 included: the dashboard filters),
                                                      or that failed to connect (code "connection")
    trainkit_storage_read_failures_total{namespace}   reads of a run's artifacts that failed (StorageReadable=False)
    trainkit_run_queue_wait_seconds                   histogram: a run's creation -> its first Running phase
    trainkit_events_total{kind, type, reason}         Kubernetes Events the operator posted

Every name is defined here once (`METRIC_NAMES`): the chart's Grafana dashboard may use only these and the
trainer's (a test checks). The registry belongs to one operator (several can run in one test process).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RESOURCES = "trainkit_resources"
RECONCILE_SECONDS = "trainkit_reconcile_duration_seconds"
RECONCILE_FAILURES = "trainkit_reconcile_failures_total"
API_ERRORS = "trainkit_api_errors_total"
STORAGE_READ_FAILURES = "trainkit_storage_read_failures_total"
QUEUE_WAIT = "trainkit_run_queue_wait_seconds"
EVENTS = "trainkit_events_total"
# The names a scrape shows (histograms add _bucket/_sum/_count, counters _total and _created).
METRIC_NAMES = (RESOURCES, RECONCILE_SECONDS, RECONCILE_FAILURES, API_ERRORS, STORAGE_READ_FAILURES, QUEUE_WAIT, EVENTS)

# A reconcile is a few API calls and, for a running run, guarded storage reads (deadline 20 s by default).
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Queue waits run from seconds (an idle cluster) to days (a busy Kueue ClusterQueue: kueue#14477).
QUEUE_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 259200)
RUNNING = "Running"
NO_STATUS = "New"  # an object the operator has not written a status for yet


def api_verb(method: str, resource_path: str) -> str:
    """The Kubernetes verb of a request, from the HTTP method and the client's path template (pure):
    a GET naming an object ('{name}' in the template) is a get, on a collection a list."""
    method = method.upper()
    if method == "GET":
        return "get" if "{name}" in resource_path else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())


def error_code(e: BaseException) -> str:
    """The HTTP status an API error carries, or "connection" when no answer came (pure)."""
    status = getattr(e, "status", None)
    return str(status) if isinstance(status, int) and status > 0 else "connection"


def seconds_between(start_iso: str | None, now: datetime.datetime) -> float | None:
    """now - start for an RFC 3339 timestamp (the API server's creationTimestamp), or None (pure)."""
    if not start_iso:
        return None
    try:
        start = datetime.datetime.fromisoformat(start_iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if start.tzinfo is None:
        start = start.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (now - start).total_seconds())


@dataclass
class PhaseBook:
    """The phase of every watched object, kept from the watch stream; answers the resources gauge and
    the queue wait of a run's first Running. Memory: one entry per existing object."""

    phases: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (kind, namespace, name) -> phase
    ran: set[str] = field(default_factory=set)  # uids of runs already seen Running (their wait is counted)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, kind: str, body: Mapping[str, Any], event_type: str | None, now: datetime.datetime) -> float | None:
        """Record one watch event; the run's queue wait (creation -> now) when this is its first Running."""
        meta = body.get("metadata") or {}
        key = (kind, meta.get("namespace") or "default", str(meta.get("name")))
        uid = str(meta.get("uid") or key)
        with self.lock:
            if event_type == "DELETED":
                self.phases.pop(key, None)
                self.ran.discard(uid)
                return None
            phase = str((body.get("status") or {}).get("phase") or NO_STATUS)
            self.phases[key] = phase
            if phase != RUNNING or uid in self.ran:
                return None
            self.ran.add(uid)
            # The initial listing (event_type None) finds runs that were Running before this operator started:
            # their wait began before it could see it, so it is not counted.
            if event_type is None:
                return None
        return seconds_between(meta.get("creationTimestamp"), now)

    def counts(self) -> dict[tuple[str, str, str], int]:
        """(kind, namespace, phase) -> how many objects."""
        out: dict[tuple[str, str, str], int] = {}
        with self.lock:
            for (kind, ns, _), phase in self.phases.items():
                out[(kind, ns, phase)] = out.get((kind, ns, phase), 0) + 1
        return out


class _ResourcesCollector(Collector):
    def __init__(self, book: PhaseBook, phases: Mapping[str, tuple[str, ...]]):
        self.book, self.phases = book, phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            RESOURCES, "trainkit objects by kind, namespace and phase", labels=["kind", "namespace", "phase"]
        )
        counts = self.book.counts()
        # Every known phase of a kind in each namespace that has any: a phase that empties reads 0, not "no data".
        seen = {(kind, ns) for kind, ns, _ in counts}
        for kind, ns in sorted(seen):
            for phase in dict.fromkeys(
                (*self.phases.get(kind, ()), *(p for k, n, p in counts if (k, n) == (kind, ns)))
            ):
                family.add_metric([kind, ns, phase], counts.get((kind, ns, phase), 0))
        yield family


class OperatorMetrics:
    """One operator's metrics and, once `serve` is called, the HTTP endpoint Prometheus scrapes."""

    def __init__(self, phases: Mapping[str, tuple[str, ...]] | None = None):
        self.registry = CollectorRegistry()
        self.book = PhaseBook()
        self.registry.register(_ResourcesCollector(self.book, phases or {}))
        self.reconcile_seconds = Histogram(
            RECONCILE_SECONDS, "Seconds one reconcile took", ["kind"], buckets=RECONCILE_BUCKETS, registry=self.registry
        )
        self.reconcile_failures = Counter(
            RECONCILE_FAILURES, "Reconciles that raised (retried with backoff)", ["kind"], registry=self.registry
        )
        self.api_errors = Counter(
            API_ERRORS, "Kubernetes API calls of the operator that failed, by verb and HTTP status", ["verb", "code"],
            registry=self.registry,
        )  # fmt: skip
        self.storage_read_failures = Counter(
            STORAGE_READ_FAILURES, "Reads of a run's artifacts that failed", ["namespace"], registry=self.registry
        )
        self.queue_wait = Histogram(
            QUEUE_WAIT, "Seconds from a run's creation to its first Running phase", buckets=QUEUE_WAIT_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.events = Counter(EVENTS, "Kubernetes Events posted", ["kind", "type", "reason"], registry=self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # ---------------------------------------------------------------------------- what is counted
    def api_error(self, method: str, resource_path: str, e: BaseException) -> None:
        self.api_errors.labels(api_verb(method, resource_path), error_code(e)).inc()

    def saw(self, kind: str, body: Mapping[str, Any], event_type: str | None) -> None:
        wait = self.book.saw(kind, body, event_type, datetime.datetime.now(datetime.timezone.utc))
        if wait is not None:
            self.queue_wait.observe(wait)

    def storage_failures(self, namespace: str, count: int) -> None:
        if count:
            self.storage_read_failures.labels(namespace).inc(count)

    def event(self, kind: str, event_type: str, reason: str) -> None:
        self.events.labels(kind, event_type, reason).inc()

    # ------------------------------------------------------------------------------- the endpoint
    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (0: any free port) in a daemon thread; returns the port."""
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = int(self._server.server_address[1])
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
