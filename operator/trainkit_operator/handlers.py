"""Thin kopf handlers around ONE idempotent reconcile (level-based: read state -> decide -> apply).

`reconcile` is called from the create/update/resume handlers, from a timer (progress, eval, missed
events) and when a labelled RayJob changes (KubeRay's transitions show without waiting for the timer).
All decisions are in `decide` (pure); this module only reads, writes and posts Events.

Concurrency: kopf may run a timer and an event handler for the same run at once, so each run's
reconcile holds a per-run lock, re-reads the run fresh, and writes the status with the run's
resourceVersion (a stale write gets 409 and is retried). Children have deterministic names, so two
creators can never make two RayJobs: the loser gets 409 AlreadyExists and adopts what exists.
Terminal runs are never touched (decide.is_sticky_terminal).

API errors (409, 429, 5xx, connection errors) raise kopf.TemporaryError with exponential backoff;
kopf itself re-establishes dropped watches (watch timeouts are set so a silent stream is noticed).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import kopf

from trainkit import artifacts
from trainkit.spec.load import SpecError, parse_spec
from trainkit.spec.status import TERMINAL_PHASES

from trainkit_operator import builders, decide, observe
from trainkit_operator.config import OperatorConfig
from trainkit_operator.kube import (
    GROUP,
    PLURAL,
    VERSION,
    Kube,
    backoff_delay,
    describe_api_error,
    is_transient,
    lock_for,
)
from trainkit_operator.data_decide import with_data_status
from trainkit_operator.data_handlers import register_data, resolve_run_datasets
from trainkit_operator.sweep_handlers import register_sweeps

ANNOTATION_PREFIX = "operator.trainkit.dev"

log = logging.getLogger("trainkit_operator")


# --------------------------------------------------------------------------------- reconcile
@dataclass
class Outcome:
    status: dict | None  # what was written (None: unchanged or terminal)
    phase: str | None
    event: tuple[str, str, str] | None
    decision: decide.Decision | None


def spec_error_text(e: SpecError) -> str:
    return "; ".join(f"{i.path}: {i.message}" if i.path else i.message for i in e.issues)[:4000]


def reconcile(kube: Kube, run: dict, config: OperatorConfig, now: str | None = None) -> Outcome:
    """Read state, decide (pure), apply; write the status if it changed. Idempotent."""
    now = now or artifacts.now_iso()
    meta = run["metadata"]
    ns, name = meta.get("namespace") or "default", meta["name"]
    prev = decide.previous_status(run)
    if decide.is_sticky_terminal(prev):
        return Outcome(None, prev.phase, None, None)

    spec = plan = None
    spec_error: str | None = None
    data_names: dict[str, str] = {}
    resolution = None
    try:
        spec, plan = parse_spec(run.get("spec") or {}, source=f"TrainingRun {ns}/{name}")
        # Sources naming a TrainingData: resolved once, then fixed in the status (data_handlers).
        spec, data_names, resolution = resolve_run_datasets(kube, ns, spec, run.get("status"))
        spec_error = (
            (resolution.failed if resolution else None)
            or decide.cluster_spec_error(spec)
            or decide.storage_spec_error(spec, config)
        )
    except SpecError as e:
        spec_error = spec_error_text(e)
    waiting_for_data = resolution is not None and resolution.waiting is not None and spec_error is None
    rayjob = configmap = None
    if spec is not None or (prev is not None and prev.ray_job_name):
        rayjob = kube.get_rayjob(ns, builders.rayjob_name(name))
    if spec is not None:
        # The Secret matters before the RayJob exists; afterwards a vanished Secret shows as the pods'
        # CreateContainerConfigError (surfaced while Initializing). Saves a GET per timer tick.
        secret = builders.credentials_secret(spec, config)
        if secret and rayjob is None:
            try:
                exists = kube.secret_exists(ns, secret)
            except Exception as e:
                if getattr(e, "status", None) != 403:
                    raise
                # RBAC lets the operator read only the Secrets the chart names: a spec error, not a retry.
                spec_error = (
                    f"spec.storage.credentialsSecret: the operator may not read Secret {secret!r} in namespace "
                    f"{ns!r} (403 Forbidden); name a Secret the chart allows, or add it to the chart's "
                    "rbac.secretNames (or set rbac.allSecretNames)"
                )
            else:
                if not exists:
                    spec_error = (
                        f"spec.storage.credentialsSecret: Secret {secret!r} does not exist in namespace {ns!r}; "
                        "create it with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    )
        if spec_error is None:
            configmap = kube.get_configmap(ns, builders.configmap_name(name))
    if waiting_for_data and rayjob is None:
        decision = decide.Decision("none", message="waiting for TrainingData")
    else:
        decision = decide.plan_actions(run, spec if spec_error is None else None, spec_error, rayjob, configmap, config)

    if decision.action in ("create", "update"):
        if decision.configmap is not None:
            if configmap is None:
                try:
                    kube.create_configmap(ns, decision.configmap)
                except Exception as e:
                    if getattr(e, "status", None) != 409:
                        raise
                    raise kopf.TemporaryError("ConfigMap appeared concurrently; re-reading", delay=0.5) from None
            elif decision.configmap_replace:
                body = dict(decision.configmap)
                body["metadata"] = {
                    **decision.configmap["metadata"],
                    "resourceVersion": configmap["metadata"].get("resourceVersion"),
                }
                kube.replace_configmap(ns, body["metadata"]["name"], body)
        if decision.action == "create" and decision.rayjob is not None:
            try:
                rayjob = kube.create_rayjob(ns, decision.rayjob) or kube.get_rayjob(ns, builders.rayjob_name(name))
            except Exception as e:
                if getattr(e, "status", None) != 409:
                    raise
                # Created by a concurrent reconcile: adopt it, never a second one. One of a previous run of
                # this name is never adopted: decide again (wait or conflict) with what is there.
                rayjob = kube.get_rayjob(ns, builders.rayjob_name(name))
                if rayjob is not None and not decide.owned_by(rayjob, run):
                    decision = decide.plan_actions(run, spec, None, rayjob, configmap, config)
        if decision.action == "update" and decision.patch:
            rayjob = kube.patch_rayjob(ns, builders.rayjob_name(name), decision.patch) or rayjob

    observed = observe.Observed()
    pods = workloads = rayjob_events = None
    if rayjob is not None and spec is not None and spec_error is None:
        st = rayjob.get("status") or {}
        started = st.get("jobStatus") in ("RUNNING", "SUCCEEDED", "FAILED", "STOPPED") or st.get(
            "jobDeploymentStatus"
        ) in (
            "Running",
            "Complete",
            "Failed",
        )
        if started:
            observed = observe_storage(kube, ns, spec, config)
        elif st.get("jobDeploymentStatus") in ("Initializing", "Retrying") and st.get("rayClusterName"):
            pods = kube.list_pods(ns, f"ray.io/cluster={st['rayClusterName']}")
        elif not st.get("jobDeploymentStatus"):
            # KubeRay 1.4 reports a RayJob it rejects only as Warning Events (decide.rayjob_warnings)
            rayjob_events = kube.list_rayjob_events(ns, builders.rayjob_name(name))
        if (rayjob.get("spec") or {}).get("suspend") and decide.kueue_queue(rayjob) and rayjob["metadata"].get("uid"):
            workloads = kube.list_workloads(ns, rayjob["metadata"]["uid"])  # why Kueue keeps it Queued

    if decision.action == "refuse" and spec_error is not None:
        spec_error = None  # an invalid EDIT of a live run: shown as SpecApplied=False, the run goes on
    status = decide.summarize(
        run,
        rayjob,
        observed.progress,
        observed.eval_summary,
        now,
        spec=spec if spec_error is None else None,
        total_steps=plan.total_steps if plan is not None else None,
        spec_error=spec_error,
        checkpoint=observed.checkpoint,
        pods=pods,
        decision=decision,
        workloads=workloads,
        rayjob_events=rayjob_events,
        storage_problems=observed.problems,
    )
    if resolution is not None:
        status = with_data_status(status, data_names, resolution, now)
    if observed.deferred and status.phase in TERMINAL_PHASES:
        # A terminal status is final (never reconciled again): it must carry the run's last progress and
        # eval summary, so it waits for reads that actually ran.
        raise kopf.TemporaryError("final status waits for this namespace's storage reads", delay=1.0)
    if prev is not None and prev.model_dump() == status.model_dump():
        return Outcome(None, status.phase, None, decision)
    written = decide.status_patch(status)
    kube.patch_run_status(ns, name, meta.get("resourceVersion"), written)
    return Outcome(written, status.phase, decide.transition_event(prev, status), decision)


def observe_storage(kube: Kube, ns: str, spec, config: OperatorConfig) -> observe.Observed:
    """The run's records, read with the run's own key (its Secret, in its namespace) off the handler thread.
    No Secret for the run (workload identity): the operator holds no key for it and reads nothing."""
    secret = builders.credentials_secret(spec, config)
    if secret is None:
        return observe.Observed()
    try:
        credentials = kube.read_storage_credentials(ns, secret)
    except ValueError as e:
        return observe.Observed(problems=(str(e),))
    except Exception as e:
        if getattr(e, "status", None) != 403:
            raise
        return observe.Observed(
            problems=(f"the operator may not read Secret {secret!r} in namespace {ns!r} (403 Forbidden)",)
        )
    if credentials is None:
        return observe.Observed(problems=(f"Secret {secret!r} does not exist in namespace {ns!r}",))
    options = observe.options_for(spec, config, credentials)
    return observe.read_pool(config).observe(ns, spec.output.uri, options, config.reads_deadline)


# ------------------------------------------------------------------------------ kopf wiring
def reconcile_named(memo: Any, ns: str, name: str, retry: int = 0, fallback_body: Any = None) -> Outcome | None:
    """Lock the run, read it fresh, reconcile, post the transition Event. Errors -> TemporaryError."""
    config: OperatorConfig = memo.config
    kube: Kube = memo.kube
    with lock_for(memo, (ns, name)):
        try:
            run = kube.get_run(ns, name)
            if run is None or (run.get("metadata") or {}).get("deletionTimestamp"):
                return None
            outcome = reconcile(kube, run, config)
        except kopf.TemporaryError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure becomes a kopf retry with backoff, never a crash
            if is_transient(e):
                raise kopf.TemporaryError(
                    f"API call failed ({describe_api_error(e)}); retrying", delay=backoff_delay(retry)
                ) from None
            raise kopf.TemporaryError(
                f"reconcile failed ({describe_api_error(e)}); retrying", delay=backoff_delay(retry, base=5.0)
            ) from None
    if outcome.event is not None:
        kind, reason, message = outcome.event
        kopf.event(run, type=kind, reason=reason, message=message)
    return outcome


# Libraries whose DEBUG logs print request headers (SigV4 Authorization carries the access key id,
# the Kubernetes client the bearer token): capped at WARNING whatever --verbose says.
QUIET_LOGGERS = ("botocore", "boto3", "aiobotocore", "s3fs", "urllib3", "kubernetes", "fsspec", "celpy")


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


def register(
    registry: kopf.OperatorRegistry, config: OperatorConfig | None = None, kube: Kube | None = None
) -> kopf.OperatorRegistry:
    """Register every handler into `registry`. `kube` lets a caller supply the API client (tests)."""
    config = config or OperatorConfig.from_env()

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_):
        configure_settings(settings, config)
        memo.config = config
        memo.kube = kube or Kube.from_environment(pool_size=config.max_workers + 4)
        memo.locks = {}
        memo.locks_guard = threading.Lock()

    @kopf.on.cleanup(registry=registry)
    def cleanup(memo: kopf.Memo, **_):
        if kube is None and getattr(memo, "kube", None) is not None:
            memo.kube.close()

    def handle(body, memo, retry: int = 0, **_):
        reconcile_named(memo, body["metadata"].get("namespace") or "default", body["metadata"]["name"], retry)

    kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile-create", registry=registry)(handle)
    kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile-update", registry=registry)(handle)
    kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile-resume", registry=registry)(handle)
    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        id="reconcile-timer",
        interval=config.timer_interval,
        initial_delay=config.timer_initial_delay,
        registry=registry,
    )(handle)

    @kopf.on.event(
        "ray.io", "v1", "rayjobs", labels={builders.RUN_LABEL: kopf.PRESENT}, registry=registry, id="rayjob-changed"
    )
    def rayjob_changed(body, memo, type, **_):
        # KubeRay moved a RayJob: reconcile its owner now instead of at the next timer tick. Only
        # MODIFIED: ADDED is our own create (or, after a restart, covered by resume handlers and timers),
        # DELETED is seen by the owner's timer (a terminal run ignores it, a live one reports it).
        if type != "MODIFIED":
            return
        run_name = body["metadata"]["labels"][builders.RUN_LABEL]
        try:
            reconcile_named(memo, body["metadata"].get("namespace") or "default", run_name)
        except kopf.TemporaryError as e:
            log.info("reconcile of %s after a RayJob change deferred to the timer: %s", run_name, e)

    register_sweeps(registry, timer_interval=config.timer_interval)
    register_data(registry, config)
    return registry
