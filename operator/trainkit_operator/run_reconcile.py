"""A TrainingRun's ONE idempotent reconcile (level-based: read state -> decide -> apply).

`wiring` calls it from the create/update/resume handlers, from a timer (progress, eval, missed
events) and when a labelled RayJob changes. All decisions are in `decide` (pure): which objects to
read (`decide.reads_needed`), what to create or patch (`plan_actions`) and the status (`summarize`);
this module only reads and writes.

The status is written with the run's resourceVersion (a stale write gets 409 and is retried).
Children have deterministic names, so two creators can never make two RayJobs: the loser gets 409
AlreadyExists and adopts what exists. Terminal runs are never touched (decide.is_sticky_terminal).
"""

from __future__ import annotations

from dataclasses import dataclass

import kopf

from trainkit import artifacts
from trainkit.spec.load import SpecError, parse_spec
from trainkit.spec.status import TERMINAL_PHASES

from trainkit_operator import builders, decide, observe
from trainkit_operator.config import OperatorConfig
from trainkit_operator.data_decide import with_data_status
from trainkit_operator.data_reconcile import resolve_run_datasets
from trainkit_operator.kube import Kube


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
        # Sources naming a TrainingData: resolved once, then fixed in the status (data_reconcile).
        spec, data_names, resolution = resolve_run_datasets(kube, ns, spec, run.get("status"))
        spec_error = (
            (resolution.failed if resolution else None)
            or decide.cluster_spec_error(spec)
            or decide.storage_spec_error(spec, config)
            or decide.placement_spec_error(spec, config)
        )
    except SpecError as e:
        spec_error = spec_error_text(e)
    waiting_for_data = resolution is not None and resolution.waiting is not None and spec_error is None
    rayjob = configmap = None
    if spec is not None or (prev is not None and prev.ray_job_name):
        rayjob = kube.get_rayjob(ns, builders.rayjob_name(name))
    if spec is not None:
        secret = builders.credentials_secret(spec, config)
        if spec_error is None and decide.secret_check_needed(secret, rayjob):
            spec_error = decide.secret_spec_error(secret, ns, secret_state(kube, ns, secret))
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
        if decision.action == "create" and decision.network_policy is not None:
            kube.create_network_policy(ns, decision.network_policy)  # 409: made by an earlier reconcile
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

    reads = decide.reads_needed(rayjob, spec_valid=spec is not None and spec_error is None)
    observed = observe_storage(kube, ns, spec, config) if reads.storage and spec else observe.Observed()
    seen = decide.Observation(
        rayjob=rayjob,
        progress=observed.progress,
        eval_summary=observed.eval_summary,
        validation=observed.validation,
        checkpoint=observed.checkpoint,
        pods=kube.list_pods(ns, f"ray.io/cluster={reads.pods_of_cluster}") if reads.pods_of_cluster else None,
        workloads=kube.list_workloads(ns, reads.workloads_of) if reads.workloads_of else None,
        rayjob_events=kube.list_rayjob_events(ns, builders.rayjob_name(name)) if reads.rayjob_events else None,
        storage_problems=observed.problems,
    )
    if decision.action == "refuse" and spec_error is not None:
        spec_error = None  # an invalid EDIT of a live run: shown as SpecApplied=False, the run goes on
    parsed = decide.SpecView(
        spec=spec if spec_error is None else None,
        total_steps=plan.total_steps if plan is not None else None,
        error=spec_error,
    )
    status = decide.summarize(run, seen, now, parsed, decision)
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


def secret_state(kube: Kube, ns: str, secret: str) -> decide.SecretState:
    try:
        return "present" if kube.secret_exists(ns, secret) else "missing"
    except Exception as e:
        if getattr(e, "status", None) != 403:
            raise
        return "forbidden"  # RBAC lets the operator read only the Secrets the chart names


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
