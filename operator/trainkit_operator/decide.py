"""Pure decisions of the reconcile: what to do with the children, and the status to show.

Nothing here talks to the API server, the object store or the clock (`now` is an argument):
- `plan_actions(...)`  -> Decision: create the ConfigMap + RayJob, update allowed mutable fields,
                          refuse immutable changes (never half-applied), or do nothing (terminal runs).
- `derive_phase(...)`  -> the ONE phase shown to users, from KubeRay's dual status (kuberay#2314).
- `summarize(run, seen, now, parsed, decision)` -> the whole TrainingRunStatus: phase, KubeRay's enums verbatim, conditions
                          (always all of them), progress, last checkpoint, eval summary, artifacts.

Terminal phases are sticky: once a run is Succeeded or Failed the operator never creates, updates or
re-creates a child again (kubeflow/trainer#3779), and the status is not rewritten. The one exception
(`trainkit.spec.status.final_status`, shared with TrainingData) is a run that failed before any child
existed, with InvalidSpec or because a TrainingData it names Failed: fixing the spec, creating the missing
Secret or fixing the data lets it start, because nothing ever ran.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeGuard

from trainkit import artifacts
from trainkit.spec.data import REASON_NO_PROGRESS, TrainingDataSpec
from trainkit.spec.models import TrainingRunSpec
from trainkit.spec.status import (
    KNOWN_JOB_DEPLOYMENT_STATUSES,
    KNOWN_JOB_STATUSES,
    REASON_INVALID_SPEC,
    TERMINAL_PHASES,
    Artifacts,
    CheckpointRef,
    Condition,
    EvalSummary,
    Progress,
    TrainingRunStatus,
    ValidationSummary,
    final_status,
    previous_status_of,
)
from trainkit.storage import endpoint_refusal, is_remote

from trainkit_operator.builders import (
    KUEUE_QUEUE_LABEL,
    SPEC_HASH,
    SPEC_HASH_ANNOTATION,
    SPEC_KEY,
    build_configmap,
    build_rayjob,
    build_run_network_policy,
    CREDENTIAL_KEYS,
    configmap_name,
    mutable_patch,
    spec_hash,
)
from trainkit_operator.config import OperatorConfig, normalized_endpoint
from trainkit_operator.packs import PackView, pack_belongs_to_run, packed_phase

# Conditions always present (an absent condition is not "False"): trainkit.spec.status's plus ours.
CONDITION_TYPES = ("SpecValid", "SpecApplied", "Admitted", "Running", "Succeeded", "Failed", "MetricsFinite")

# Spec fields that may change after the RayJob exists; anything else is refused as a whole.
# Not priorityClassName: KubeRay disregards rayClusterSpec changes once the cluster exists (only a retry's new
# cluster would pick it up) and Kueue fixes a Workload's priority when it creates it, so the edit would show
# as applied and change nothing.
MUTABLE_SPEC_FIELDS = frozenset(
    {
        "spec.scheduling.suspend",
        "spec.scheduling.backoffLimit",
        "spec.scheduling.activeDeadlineSeconds",
    }
)

REASON_NON_FINITE_LOSS = "NonFiniteLoss"
# summary.json is written by the evaluator, which runs the tenant's task code: bound what reaches the status.
MAX_STATUS_TASKS = 64
MAX_TASK_NAME = 128
KUBERAY_TERMINAL_JOB = ("STOPPED", "SUCCEEDED", "FAILED")
KUBERAY_TERMINAL_DEPLOYMENT = ("Complete", "Failed", "ValidationFailed")


# ------------------------------------------------------------------------------------ helpers
def previous_status(run: dict) -> TrainingRunStatus | None:
    return previous_status_of(run, TrainingRunStatus)


def is_sticky_terminal(status: TrainingRunStatus | None) -> TypeGuard[TrainingRunStatus]:
    """Succeeded/Failed are final, except a failure before anything was created (see module doc)."""
    return status is not None and final_status(status.phase, status.reason, status.ray_job_name)


def kueue_queue(rayjob: dict) -> str | None:
    """The Kueue queue a RayJob was labelled with (None: not Kueue-managed)."""
    return ((rayjob.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL)


def cluster_spec_error(spec: TrainingRunSpec) -> str | None:
    """Why a spec that is valid for `trainkit train` on one machine cannot run on the cluster, or None.

    Every URI must be object storage: a local path (relative or absolute) would name a different,
    unshared folder in each Ray pod, and the operator could never read progress or eval results there.
    """
    where = [("spec.output.uri", spec.output.uri)]
    where += [(f"{field}.uri", src.uri) for field, src in spec.data.shard_fields("spec.data") if src.uri]
    local = [f"{field} {uri!r}" for field, uri in where if not is_remote(uri)]
    if not local:
        return None
    return (
        "a TrainingRun on the cluster needs object-storage URIs (s3://bucket/...), no pod shares a local path: "
        + ", ".join(local)
    )


def _not_allowed(field: str, values: list[str], allowed: tuple[str, ...] | None, what: str) -> list[str]:
    if allowed is None:
        return []
    listed = ", ".join(allowed) or "none"
    return [f"{field}: {what} {v!r} is not allowed here (allowed: {listed})" for v in values if v not in allowed]


def placement_spec_error(spec: TrainingRunSpec, config: OperatorConfig) -> str | None:
    """Why the platform's placement and priority policy refuses the run, or None. A priority class can
    preempt other teams' pods, a toleration or nodeSelector can put pods on nodes kept for others (the
    control plane included), a Volcano queue is another team's quota, and a run without a Kueue queue
    bypasses quota where the platform requires one."""
    r, s = spec.resources, spec.scheduling
    problems: list[str] = []
    if config.require_queue_name and not s.queue_name:
        problems.append("spec.scheduling.queueName: required here (every run goes through Kueue)")
    problems += _not_allowed(
        "spec.scheduling.priorityClassName",
        [s.priority_class_name] if s.priority_class_name else [],
        config.allowed_priority_classes,
        "priority class",
    )
    problems += _not_allowed(
        "spec.scheduling.volcanoQueue",
        [s.volcano_queue] if s.volcano_queue else [],
        config.allowed_volcano_queues,
        "queue",
    )
    problems += _not_allowed(
        "spec.resources.nodeSelector", sorted(r.node_selector or {}), config.allowed_node_selector_keys, "key"
    )
    if config.allowed_toleration_keys is not None:
        for i, t in enumerate(r.tolerations):
            if not t.key:  # an empty key with operator Exists tolerates every taint
                problems.append(f"spec.resources.tolerations[{i}]: a toleration without a key tolerates every taint")
    keys = [t.key for t in r.tolerations if t.key]
    problems += _not_allowed("spec.resources.tolerations", keys, config.allowed_toleration_keys, "key")
    return "; ".join(problems) or None


def storage_spec_error(spec: TrainingRunSpec | TrainingDataSpec, config: OperatorConfig) -> str | None:
    """Why the operator refuses a run's (or a TrainingData's) storage block, or None. The endpoint is where the operator itself
    reads the run's artifacts from: only the chart's endpoint or one in its allow-list, never a metadata
    or link-local address; and the run's key must come from a Secret in its namespace unless the chart
    chose workload identity (no shared key, no operator key)."""
    endpoint = spec.storage.endpoint
    if endpoint:
        if why := endpoint_refusal(endpoint):
            return f"spec.storage.endpoint: refused: {why}"
        allowed = {normalized_endpoint(e) for e in config.allowed_endpoints}
        if config.default_storage_endpoint:
            allowed.add(normalized_endpoint(config.default_storage_endpoint))
        if normalized_endpoint(endpoint) not in allowed:
            listed = ", ".join(sorted(allowed)) or "none: runs must leave it unset"
            return (
                f"spec.storage.endpoint: {endpoint[:200]!r} is not an endpoint this operator allows "
                f"(the chart's storage.endpoint and storage.allowedEndpoints: {listed})"
            )
    if (
        config.credentials_mode == "secretPerNamespace"
        and not spec.storage.credentials_secret
        and not config.default_credentials_secret
    ):
        return (
            "spec.storage.credentialsSecret: not set, and the operator has no default Secret name (chart "
            "storage.credentialsSecret); name the Secret in this namespace that holds this team's storage key"
        )
    return None


def operator_refusal(spec: TrainingRunSpec, config: OperatorConfig) -> str | None:
    """Why this operator refuses to run the spec on the cluster (URIs, storage, placement policy), or None."""
    return cluster_spec_error(spec) or storage_spec_error(spec, config) or placement_spec_error(spec, config)


def spec_diff(old: Any, new: Any, path: str = "spec") -> list[str]:
    """Dotted paths where two spec dumps differ; lists compare as a whole (sources, env, ...)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                out += spec_diff(old.get(key), new.get(key), f"{path}.{key}")
        return out
    return [] if old == new else [path]


def dump_spec(spec: TrainingRunSpec) -> dict:
    return spec.model_dump(by_alias=True, mode="json", exclude_none=True)


def applied_spec(configmap: dict | None) -> dict | None:
    """The spec the running RayJob was built from (the ConfigMap's spec.json), or None."""
    if not configmap:
        return None
    try:
        return json.loads((configmap.get("data") or {})[SPEC_KEY])["spec"]
    except (KeyError, TypeError, ValueError):
        return None


def applied_configmap_name(run: dict, spec: TrainingRunSpec, rayjob: dict | None) -> str:
    """The spec ConfigMap the reconcile compares with: the one of the spec last applied to this run's RayJob
    (its spec-hash annotation; the RayJob keeps mounting the one it was created with), or, before this run
    has a RayJob, the one of the spec as it is now."""
    if rayjob is not None and owned_by(rayjob, run):
        applied = ((rayjob.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
        if isinstance(applied, str) and SPEC_HASH.fullmatch(applied):
            return configmap_name(run["metadata"]["name"], applied)
    return configmap_name(run["metadata"]["name"], spec_hash(run, spec))


def owned_by(obj: dict, run: dict) -> bool:
    uid = run["metadata"].get("uid")
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def previous_incarnation(obj: dict, run: dict) -> str | None:
    """The uid of an earlier TrainingRun of the same name that controls `obj`, or None.

    Names are unique per namespace, so such an owner was deleted: on a real cluster its children linger
    until the garbage collector (asynchronous) and KubeRay's finalizer are done with them. They are never
    adopted: the new run waits for them to go, then creates its own."""
    uid = run["metadata"].get("uid")
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("kind") == "TrainingRun"
            and ref.get("name") == run["metadata"].get("name")
            and ref.get("uid") != uid
        ):
            return str(ref.get("uid"))
    return None


def _waiting_message(kind: str, name: str, old_uid: str) -> str:
    return (
        f"{kind} {name} still belongs to a previous TrainingRun of this name (uid {old_uid}), deleted but not yet "
        "garbage-collected (KubeRay's finalizer stops its Ray job first); this run creates its own once it is gone"
    )


# ------------------------------------------------------------------------------------ actions
@dataclass(frozen=True)
class Decision:
    """What the reconcile must do to the children; the handler carries it out in this order:
    create `configmap` (spec ConfigMaps are immutable and named by their content: a changed spec is a new
    one, never an update), create `network_policy` (before the pods exist), create `rayjob`, apply `patch`."""

    action: Literal["none", "create", "update", "refuse", "invalid", "conflict", "wait", "lost"]
    configmap: dict | None = None
    network_policy: dict | None = None
    rayjob: dict | None = None
    patch: list[dict] = field(default_factory=list)
    refused: tuple[str, ...] = ()
    message: str = ""


def plan_actions(
    run: dict,
    spec: TrainingRunSpec | None,
    spec_error: str | None,
    rayjob: dict | None,
    configmap: dict | None,
    config: OperatorConfig,
) -> Decision:
    status = previous_status(run)
    if is_sticky_terminal(status):
        return Decision("none", message=f"run is {status.phase}: terminal, children are left alone")
    if spec_error is not None or spec is None:
        if rayjob is not None and owned_by(rayjob, run):
            # An edit made the spec invalid while the RayJob runs: refuse the edit, never fail the live run.
            return Decision(
                "refuse",
                refused=("spec",),
                message=(
                    f"the edited spec is invalid ({spec_error or 'spec missing'}); nothing of this edit was applied, "
                    "the run continues with the spec it started with"
                ),
            )
        return Decision("invalid", message=spec_error or "spec missing")

    desired_cm = build_configmap(run, spec, config)
    desired_rj = build_rayjob(run, spec, config)

    if rayjob is None:
        if status is not None and status.ray_job_name and status.job_deployment_status:
            # We saw it running once; re-creating would resurrect a finished or deleted job.
            return Decision(
                "lost", message=f"RayJob {status.ray_job_name} was deleted while the run was {status.phase}"
            )
        if configmap is not None and not owned_by(configmap, run):
            old_uid = previous_incarnation(configmap, run)
            if old_uid:
                return Decision("wait", message=_waiting_message("ConfigMap", desired_cm["metadata"]["name"], old_uid))
            return Decision(
                "conflict", message=f"ConfigMap {desired_cm['metadata']['name']} exists and is not owned by this run"
            )
        return Decision(
            "create",
            configmap=desired_cm if configmap is None else None,  # one of this run with this name has this spec
            network_policy=build_run_network_policy(run, config) if config.network_policy else None,
            rayjob=desired_rj,
        )

    if not owned_by(rayjob, run):
        old_uid = previous_incarnation(rayjob, run)
        if old_uid:
            return Decision("wait", message=_waiting_message("RayJob", rayjob["metadata"]["name"], old_uid))
        return Decision("conflict", message=f"RayJob {rayjob['metadata']['name']} exists and is not owned by this run")

    kueue = kueue_queue(rayjob) is not None
    old = applied_spec(configmap)
    if old is None:
        # The ConfigMap is gone (or unreadable). Re-create it only if the spec is the one the RayJob was built from.
        rj_hash = ((rayjob.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
        if rj_hash == spec_hash(run, spec):
            return Decision(
                "update", configmap=desired_cm, patch=mutable_patch(desired_rj, rayjob, kueue_managed=kueue)
            )
        return Decision(
            "refuse",
            refused=("spec",),
            message="the spec changed and the spec the RayJob was started with is no longer readable",
        )

    changed = spec_diff(old, dump_spec(spec))
    immutable = [p for p in changed if p not in MUTABLE_SPEC_FIELDS]
    if kueue and "spec.scheduling.suspend" in changed:
        immutable.append("spec.scheduling.suspend")
    if immutable:
        why = []
        if any(p != "spec.scheduling.suspend" for p in immutable):
            why.append("only " + ", ".join(sorted(MUTABLE_SPEC_FIELDS)) + " may change after the RayJob exists")
        if "spec.scheduling.suspend" in immutable and kueue:
            why.append(f"suspend is Kueue's for a run in queue {kueue_queue(rayjob)!r}: stop it through Kueue")
        return Decision(
            "refuse",
            refused=tuple(sorted(set(immutable))),
            message="refused changes to "
            + ", ".join(sorted(set(immutable)))
            + " ("
            + "; ".join(why)
            + "); nothing of this edit was applied, the run continues with the spec it started with",
        )
    ops = mutable_patch(desired_rj, rayjob, kueue_managed=kueue)
    # A mutable edit: the new spec gets its own ConfigMap (the RayJob's spec-hash annotation, in `ops`, then
    # names it); the RayJob keeps mounting the one it was created with.
    new_cm = (
        desired_cm if configmap is None or desired_cm["metadata"]["name"] != configmap["metadata"]["name"] else None
    )
    if ops or new_cm:
        return Decision("update", configmap=new_cm, patch=ops)
    return Decision("none")


def packed_decision(run: dict, pack_rayjob: dict | None, prev: TrainingRunStatus | None) -> Decision:
    """What a packed run (it creates nothing) makes of its pack's RayJob: ours ("none"), another's
    ("conflict": a RayJob of the pack's name its sweep does not control), or gone after we saw it ("lost")."""
    if pack_rayjob is None:
        if prev is not None and prev.ray_job_name and prev.job_deployment_status:
            return Decision("lost", message=f"RayJob {prev.ray_job_name} of this run's pack was deleted")
        return Decision("none")
    if not pack_belongs_to_run(pack_rayjob, run):
        return Decision(
            "conflict",
            message=f"RayJob {pack_rayjob['metadata']['name']} is not the pack of this run's sweep (another "
            "owner); this run waits for its own pack",
        )
    return Decision("none")


# -------------------------------------------------------------------------------------- phase
def derive_phase(
    job_status: str | None,
    deployment_status: str | None,
    *,
    rayjob_suspended: bool = False,
    user_suspend: bool = False,
    kueue_queue_name: str | None = None,
    reason: str | None = None,
    message: str | None = None,
    last_phase: str | None = None,
) -> tuple[str, str, str]:
    """(phase, reason, message) from KubeRay's jobStatus x jobDeploymentStatus.

    jobDeploymentStatus is authoritative for the lifecycle (it is what KubeRay and Kueue act on);
    jobStatus only refines the outcome once the deployment is Complete. A finished jobStatus under a
    live deployment is not declared terminal early, because terminal is sticky.

    A value this operator does not know (KubeRay adds some: ValidationFailed came in v1.5) never ends a
    run and never stops the status from being written: the run keeps `last_phase` (the last known,
    non-terminal phase; Pending when there is none) and the message names the value.
    """
    js = job_status or ""
    jds = deployment_status or ""

    def unknown(what: str, value: str) -> tuple[str, str, str]:
        keep = last_phase if last_phase and last_phase not in TERMINAL_PHASES else "Pending"
        return (
            keep,
            f"Unknown{what}",
            (
                f"KubeRay reports {what[0].lower() + what[1:]} {value!r}, which this operator does not know; "
                f"showing the last known phase {keep} until KubeRay reports a known value"
                + (f" ({message})" if message else "")
            ),
        )

    if jds not in KNOWN_JOB_DEPLOYMENT_STATUSES:
        return unknown("JobDeploymentStatus", jds)
    if js not in KNOWN_JOB_STATUSES and jds in ("Complete", "Running"):
        return unknown("JobStatus", js)
    if jds == "Complete":
        if js == "SUCCEEDED":
            return "Succeeded", "JobSucceeded", message or "the training job succeeded"
        if js == "FAILED":
            return "Failed", reason or "AppFailed", message or "the Ray job failed"
        if js == "STOPPED":
            return "Failed", reason or "JobStopped", message or "the Ray job was stopped"
        return (
            "Failed",
            "InconsistentStatus",
            (
                f"KubeRay reports jobDeploymentStatus Complete with jobStatus {js or 'unset'}; "
                "success is only declared with jobStatus SUCCEEDED"
            ),
        )
    if jds in ("Failed", "ValidationFailed"):
        msg = message or f"KubeRay marked the RayJob {jds}"
        if js and js not in ("FAILED", "STOPPED"):
            msg += f" (jobStatus {js} ignored: the deployment status is authoritative)"
        return "Failed", reason or jds, msg
    if rayjob_suspended or jds in ("Suspended", "Suspending"):
        if user_suspend:
            return "Suspended", "SuspendedByUser", "spec.scheduling.suspend is true"
        if kueue_queue_name:
            return (
                "Queued",
                "WaitingForKueue",
                f"Kueue holds the RayJob suspended until LocalQueue {kueue_queue_name} admits it",
            )
        return (
            "Suspended",
            "SuspendedExternally",
            (
                "the RayJob is suspended, but not by this run's spec (Kueue with manageJobsWithoutQueueName, or "
                "another controller); the operator leaves it suspended"
            ),
        )
    if jds == "Running":
        if js == "RUNNING":
            return "Running", "JobRunning", message or "training"
        if js in KUBERAY_TERMINAL_JOB:
            return "Running", "JobFinishing", f"jobStatus {js}; waiting for KubeRay to finish the deployment"
        return "Pending", "JobPending", message or "the Ray cluster is up; the job is being submitted"
    if jds == "Retrying":
        return "Pending", "Retrying", message or "KubeRay is retrying the job on a new Ray cluster"
    # "", Initializing, Waiting: the only values left (KubeRay never emits "Scheduling"/"Scheduled")
    return "Pending", jds or "Created", message or "waiting for the Ray cluster"


def starting_problem(pods: list[dict] | None, rayjob_events: list[dict] | None) -> tuple[str, str] | None:
    """(reason, message) why a RayJob's Ray cluster does not start, from what `reads_needed` had read: KubeRay's
    Warning Events on a RayJob without status (KubeRay < 1.5 has no ValidationFailed: a RayJob it rejects keeps an
    empty status forever and only gets Warning Events; without them the job would look merely slow), else its
    pods' problems. For runs and prepare jobs alike."""
    warned = rayjob_warnings(rayjob_events)
    if warned:
        return "RayJobRejected", f"KubeRay reports: {warned}"
    why = pod_problems(pods)
    return ("PodsNotReady", why) if why else None


def pod_problems(pods: list[dict] | None) -> str | None:
    """Why Ray pods are not running (image pulls, unschedulable GPUs, missing Secret keys), or None."""
    problems: list[str] = []
    for pod in pods or []:
        name = (pod.get("metadata") or {}).get("name", "?")
        st = pod.get("status") or {}
        for cond in st.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                problems.append(
                    f"{name}: {cond.get('reason') or 'Unschedulable'}: {cond.get('message') or ''}".rstrip(": ")
                )
        for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") and waiting["reason"] not in ("ContainerCreating", "PodInitializing"):
                problems.append(
                    f"{name}/{cs.get('name')}: {waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
                )
    return "; ".join(problems)[:2000] if problems else None


# Kueue's Workload conditions that say why it is not running (kueue apis/kueue/v1beta2 workload_types.go).
KUEUE_WORKLOAD_WAITING = ("QuotaReserved", "Admitted")


def workload_not_admitted(workloads: list[dict] | None) -> str | None:
    """Why Kueue has not admitted the RayJob's Workload ("couldn't assign flavors to pod set gpu-workers:
    untolerated taint ..."), from its QuotaReserved/Admitted conditions and an Evicted one; or None."""
    why: list[str] = []
    for wl in workloads or []:
        conds = {c.get("type"): c for c in (wl.get("status") or {}).get("conditions") or []}
        evicted = conds.get("Evicted")
        if evicted and evicted.get("status") == "True":
            why.append(f"evicted ({evicted.get('reason') or 'Evicted'}): {evicted.get('message') or ''}".rstrip(": "))
        for type_ in KUEUE_WORKLOAD_WAITING:
            c = conds.get(type_)
            if c and c.get("status") == "False" and c.get("message"):
                why.append(c["message"])
                break
    return "; ".join(dict.fromkeys(why))[:2000] if why else None


def workload_eviction(workloads: list[dict] | None) -> tuple[str, str] | None:
    """(reason, message) of a Workload's Evicted=True condition: Kueue took the admission back (kueue
    jobframework/reconciler.go "handle eviction" then suspends the job); or None."""
    for wl in workloads or []:
        for c in (wl.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Evicted" and c.get("status") == "True":
                return c.get("reason") or "Evicted", c.get("message") or ""
    return None


HELD_AFTER_START = ("Preempted", "Evicted")


def had_started(prev: TrainingRunStatus | None) -> bool:
    """The run trained before (it ran, reported progress or left a checkpoint), or was already shown held after
    that: Kueue holding it now took back an admission, it is not a first wait in the queue."""
    if prev is None:
        return False
    return (
        prev.phase == "Running"
        or (prev.phase == "Queued" and prev.reason in HELD_AFTER_START)
        or prev.last_checkpoint is not None
        or bool(prev.progress and prev.progress.step)
    )


def resume_point(checkpoint: CheckpointRef | None) -> str:
    if checkpoint is None:
        return "starts over (no checkpoint yet)"
    return f"resumes from checkpoint step {checkpoint.step} ({checkpoint.uri})"


def held_after_start(
    eviction: tuple[str, str] | None, queue: str | None, checkpoint: CheckpointRef | None
) -> tuple[str, str]:
    """(reason, message) of a run Kueue suspended after it had started: Preempted (or Evicted, for Kueue's other
    eviction reasons), Kueue's own words when its Workload says them, and where training goes on from."""
    kueue_reason, kueue_message = eviction or ("", "")
    reason = "Preempted" if kueue_reason in ("", "Preempted") else "Evicted"
    why = f" ({kueue_reason}: {kueue_message})" if eviction else ""
    return reason, (
        f"Kueue took the RayJob's admission back{why} and suspended it; KubeRay deleted its Ray cluster. "
        f"When LocalQueue {queue} admits it again, a new Ray cluster {resume_point(checkpoint)}"
    )


def rayjob_warnings(events: list[dict] | None) -> str | None:
    """KubeRay's Warning Events on the RayJob, newest last (KubeRay 1.4 reports a rejected RayJob only so)."""
    warnings = [e for e in events or [] if e.get("type") == "Warning" and e.get("message")]
    warnings.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp") or "")
    texts = [f"{e.get('reason') or 'Warning'}: {e['message']}" for e in warnings[-3:]]
    return "; ".join(dict.fromkeys(texts))[:2000] if texts else None


# ------------------------------------------------------------------------------------- status
def _condition(
    prev: dict[str, Condition], type_: str, status: bool, reason: str, message: str, now: str, generation: int | None
) -> Condition:
    value = "True" if status else "False"
    old = prev.get(type_)
    ltt = old.last_transition_time if old is not None and old.status == value else now
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message[:32768],
        last_transition_time=ltt,
        observed_generation=generation,
    )


def finite(v: object) -> float | None:
    """A JSON number as a float when it is finite, else None: NaN and +-Infinity (which Python's json reads
    from progress.json / summary.json) cannot be carried by JSON, and the API server rejects a patch with them."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except OverflowError:  # an int beyond a double
        return None
    return f if math.isfinite(f) else None


def non_finite_loss(raw: Mapping[str, Any] | None) -> str | None:
    """What is wrong with progress.json's loss when it is a non-finite number (NaN, Infinity), else None."""
    if not raw:
        return None
    loss = raw.get("loss")
    if isinstance(loss, float) and not math.isfinite(loss):
        return (
            f"progress.json reports loss {loss} at step {str(raw.get('step'))[:32]}: training diverged; "
            "the status shows the loss as null"
        )
    return None


def _count(v: Any) -> int:
    """A non-negative count an int64 can hold (the API server stores integers as int64)."""
    return max(0, min(int(v or 0), 2**63 - 1))


def progress_from(raw: Mapping[str, Any] | None, total_steps: int | None) -> Progress | None:
    if not raw:
        return None
    try:
        step = _count(raw.get("step"))
        total = _count(raw.get("totalSteps") or total_steps)
        percent = round(min(100.0, 100.0 * step / total), 2) if total > 0 else 0.0

        def num(key: str) -> float | None:
            return finite(raw.get(key))

        eta = num("etaSeconds")
        return Progress(
            step=step,
            total_steps=max(0, total),
            percent=percent,
            tokens=_count(raw.get("tokens")),
            loss=num("loss"),
            tokens_per_second=num("tokensPerSecond"),
            mfu=num("mfu"),
            eta_seconds=None if eta is None else max(0.0, eta),
            updated_at=raw.get("updatedAt"),
        )
    except (TypeError, ValueError, OverflowError):
        return None


def eval_from(raw: Mapping[str, Any] | None, output_uri: str | None) -> EvalSummary | None:
    if not raw:
        return None
    try:
        step = int(raw["step"])
        scores = raw.get("tasks") or {}
        tasks = {
            str(k)[:MAX_TASK_NAME]: f
            for k, v in list(scores.items() if isinstance(scores, dict) else [])[:MAX_STATUS_TASKS]
            if (f := finite(v)) is not None
        }
        avg = finite(raw.get("average"))
        average = avg if avg is not None else (sum(tasks.values()) / len(tasks) if tasks else None)
        report = artifacts.eval_report_uri(output_uri, step) if output_uri else None
        return EvalSummary(
            step=step, average=None if average is None else round(average, 4), tasks=tasks, report_uri=report
        )
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def validation_from(raw: Mapping[str, Any] | None) -> ValidationSummary | None:
    """The status's held-out losses from validation.jsonl's last line: finite numbers only, bounded."""
    if not raw:
        return None
    try:
        sources = raw.get("sources") or {}
        losses = {
            str(k)[:MAX_TASK_NAME]: round(f, 6)
            for k, v in list(sources.items() if isinstance(sources, dict) else [])[:MAX_STATUS_TASKS]
            if isinstance(v, Mapping) and (f := finite(v.get("loss"))) is not None
        }
        mean = finite(raw.get("mean"))
        return ValidationSummary(step=int(raw["step"]), mean=None if mean is None else round(mean, 6), sources=losses)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def artifacts_for(output_uri: str) -> Artifacts:
    return Artifacts(
        output=output_uri,
        checkpoints=artifacts.checkpoints_uri(output_uri) + "/",
        eval=artifacts.eval_root(output_uri) + "/",
        logs=artifacts.logs_uri(output_uri) + "/",
    )


# present; missing (404); forbidden (403: the chart's RBAC names the Secrets the operator may get); lacks-keys (a key
# the pods take by secretKeyRef is absent or empty: the kubelet would refuse them, CreateContainerConfigError).
SecretState = Literal["present", "missing", "forbidden", "lacks-keys"]
STORAGE_SECRET_FIELD = "spec.storage.credentialsSecret"


def secret_check_needed(secret: str | None, rayjob: dict | None) -> TypeGuard[str]:
    """The Secret matters before the RayJob exists; afterwards a vanished Secret shows as the pods'
    CreateContainerConfigError (surfaced while Initializing). Saves a GET per timer tick."""
    return bool(secret) and rayjob is None


def namespace_check_needed(config: OperatorConfig, rayjob: dict | None) -> bool:
    """Whether the namespace's opt-in is checked now: only where the chart asks for it (watching the whole
    cluster), and before the children exist, as the Secret's (one GET per creation, not per timer tick)."""
    return config.tenant_namespace_label is not None and rayjob is None


def namespace_opt_in_error(
    ns: str, labels: Mapping[str, str] | Literal["missing", "forbidden"], config: OperatorConfig
) -> str | None:
    """Why the operator creates nothing in namespace `ns`, or None: watching the whole cluster, it serves only
    the namespaces a cluster administrator labelled `tenant_namespace_label` (never kube-system by accident);
    the chart's ValidatingAdmissionPolicy refuses its creates elsewhere too."""
    if config.tenant_namespace_label is None:
        return None
    key, value = config.tenant_namespace_label
    if labels == "forbidden":
        return (
            f"the operator may not read namespace {ns!r} (403 Forbidden) to see whether it opted in to trainkit; "
            "the chart grants it get on namespaces (watch.tenantNamespaceLabel)"
        )
    if labels != "missing" and labels.get(key) == value:
        return None
    return (
        f"namespace {ns!r} has not opted in to trainkit: the operator serves only namespaces labelled "
        f"{key}={value} (a cluster administrator runs `kubectl label namespace {ns} {key}={value}`); nothing was created"
    )


def secret_spec_error(
    secret: str,
    ns: str,
    state: SecretState,
    field: str = STORAGE_SECRET_FIELD,
    keys: tuple[str, ...] = CREDENTIAL_KEYS,
) -> str | None:
    """The spec error for a Secret that the spec's `field` names and whose `keys` the Ray pods take by
    secretKeyRef, when it cannot be used (None when it can): the one rule for a run's storage Secret and a
    TrainingData's storage and hub token Secrets."""
    wanted = f"{'keys' if len(keys) > 1 else 'key'} {' and '.join(keys)}"
    if state == "forbidden":  # a spec error, not a retry: the chart decides which Secrets are readable
        return (
            f"{field}: the operator may not read Secret {secret!r} in namespace "
            f"{ns!r} (403 Forbidden); name a Secret the chart allows, or add it to the chart's "
            "rbac.secretNames (or set rbac.allSecretNames)"
        )
    if state == "missing":
        return f"{field}: Secret {secret!r} does not exist in namespace {ns!r}; create it with {wanted}"
    if state == "lacks-keys":
        return (
            f"{field}: Secret {secret!r} in namespace {ns!r} has no {wanted} (or it is empty); the Ray pods "
            "take it by secretKeyRef and cannot start without it"
        )
    return None


@dataclass(frozen=True)
class Reads:
    """What the reconcile reads after applying its decision, chosen from the RayJob it holds."""

    storage: bool = False  # progress, checkpoint, eval summary: the job has started
    pods_of_cluster: str | None = None  # why a cluster is slow to start (image pulls, missing Secrets)
    rayjob_events: bool = False  # KubeRay < 1.5 reports a RayJob it rejects only as Warning Events
    workloads_of: str | None = None  # the uid of a RayJob Kueue holds: its Workload says why not admitted


STARTED_JOB_STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "STOPPED")
STARTED_DEPLOYMENT_STATUSES = ("Running", "Complete", "Failed")


def reads_needed(rayjob: dict | None, spec_valid: bool) -> Reads:
    """Only what the status can use this time: each extra read is one API call per run per tick."""
    if rayjob is None or not spec_valid:
        return Reads()
    st = rayjob.get("status") or {}
    jds = st.get("jobDeploymentStatus")
    started = st.get("jobStatus") in STARTED_JOB_STATUSES or jds in STARTED_DEPLOYMENT_STATUSES
    starting = not started and jds in ("Initializing", "Retrying") and bool(st.get("rayClusterName"))
    held = bool((rayjob.get("spec") or {}).get("suspend")) and kueue_queue(rayjob)
    uid = (rayjob.get("metadata") or {}).get("uid")
    return Reads(
        storage=started,
        pods_of_cluster=st["rayClusterName"] if starting else None,
        rayjob_events=not started and not jds,
        workloads_of=uid if held and uid else None,
    )


@dataclass(frozen=True)
class Observation:
    """What one reconcile saw. None means "not read this time": the status keeps what it showed
    (a failed S3 read never erases progress).

    `progress` is progress.json, `eval_summary` the highest eval/step-*/summary.json, `checkpoint`
    {step, uri} of the newest complete checkpoint; `pods`, `workloads` and `rayjob_events` are read
    only when `reads_needed` asks for them. `storage_problems` is why storage reads failed this time
    (() when they all went through, None when none were attempted).
    """

    rayjob: dict | None = None
    progress: Mapping[str, Any] | None = None
    eval_summary: Mapping[str, Any] | None = None
    validation: Mapping[str, Any] | None = None
    checkpoint: dict | None = None
    pods: list[dict] | None = None
    workloads: list[dict] | None = None
    rayjob_events: list[dict] | None = None
    storage_problems: tuple[str, ...] | None = None
    # A packed run (its `rayjob` is its pack's, shared): the pack and the run's own outcome (packs.packed_phase).
    pack: PackView | None = None


@dataclass(frozen=True)
class SpecView:
    """The run's spec as parsed this time: the valid spec and its step count, or why it is invalid."""

    spec: TrainingRunSpec | None = None
    total_steps: int | None = None
    error: str | None = None


def summarize(
    run: dict, seen: Observation, now: str, parsed: SpecView = SpecView(), decision: Decision | None = None
) -> TrainingRunStatus:
    """The TrainingRun status from what was observed and decided. Pure: same inputs, same status.
    A StorageReadable condition is shown once a storage read has failed."""
    rayjob, progress, eval_summary, checkpoint = seen.rayjob, seen.progress, seen.eval_summary, seen.checkpoint
    spec, total_steps, spec_error = parsed.spec, parsed.total_steps, parsed.error
    pods, workloads, rayjob_events, storage_problems = (
        seen.pods,
        seen.workloads,
        seen.rayjob_events,
        seen.storage_problems,
    )
    prev = previous_status(run)
    if is_sticky_terminal(prev):
        return prev
    if decision is not None and decision.action in ("conflict", "wait"):
        rayjob = None  # someone else's RayJob: never shown or recorded as this run's (its loss is not ours)
    meta = run.get("metadata") or {}
    generation = meta.get("generation")
    prev_conds = {c.type: c for c in (prev.conditions if prev else [])}
    out_uri = spec.output.uri if spec is not None else (prev.artifacts.output if prev and prev.artifacts else None)

    rj_status = (rayjob or {}).get("status") or {}
    js = rj_status.get("jobStatus") or None
    jds = rj_status.get("jobDeploymentStatus") or None
    spec_applied = (True, "Applied", "the RayJob matches the spec")

    if spec_error is not None:
        phase, reason, message = "Failed", REASON_INVALID_SPEC, spec_error
    elif decision is not None and decision.action == "lost":
        phase, reason, message = "Failed", "RayJobDeleted", decision.message
    elif decision is not None and decision.action == "conflict":
        phase, reason, message = "Pending", "NameConflict", decision.message
    elif decision is not None and decision.action == "wait":
        phase, reason, message = "Pending", "WaitingForPreviousRayJob", decision.message
    elif rayjob is None:
        phase, reason, message = "Pending", "Creating", "creating the RayJob"
    else:
        rj_spec = rayjob.get("spec") or {}
        phase, reason, message = derive_phase(
            js,
            jds,
            rayjob_suspended=bool(rj_spec.get("suspend")),
            user_suspend=bool(spec and spec.scheduling.suspend),
            kueue_queue_name=kueue_queue(rayjob),
            reason=rj_status.get("reason") or None,
            message=rj_status.get("message") or None,
            last_phase=prev.phase if prev else None,
        )
        failed_attempts = int(rj_status.get("failed") or 0)
        if phase == "Pending" and jds in (None, "Initializing") and failed_attempts:
            # KubeRay's Retrying -> New resets reason and message: say it is a retry, and from where.
            limit = int(rj_spec.get("backoffLimit") or 0)
            reason, message = (
                "Retrying",
                f"KubeRay retries the job on a new Ray cluster (attempt {failed_attempts + 1} of {limit + 1}); "
                f"training {resume_point(prev.last_checkpoint if prev else None)}",
            )
        if phase == "Pending" and jds in (None, "Initializing", "Retrying"):
            problem = starting_problem(pods, rayjob_events if jds is None else None)
            if problem:
                reason, message = problem
        if phase == "Queued":
            eviction = workload_eviction(workloads)
            if eviction is not None or had_started(prev):
                # Storage is not read while held: the checkpoint shown is the last one seen running.
                reason, message = held_after_start(
                    eviction, kueue_queue(rayjob), prev.last_checkpoint if prev else None
                )
            else:
                not_admitted = workload_not_admitted(workloads)
                if not_admitted:
                    reason, message = "NotAdmitted", f"{message}; Kueue: {not_admitted}"
    if seen.pack is not None and spec_error is None and not (decision is not None and decision.action == "conflict"):
        phase, reason, message = packed_phase((phase, reason, message), seen.pack, pack_exists=rayjob is not None)
    if decision is not None and decision.action == "refuse":
        spec_applied = (False, "ImmutableFieldChanged", decision.message)
    elif decision is None and prev_conds.get("SpecApplied") is not None and prev_conds["SpecApplied"].status == "False":
        c = prev_conds["SpecApplied"]
        spec_applied = (False, c.reason, c.message)

    prog = progress_from(progress, total_steps) or (prev.progress if prev else None)
    bad_loss = non_finite_loss(progress)
    old_finite = prev_conds.get("MetricsFinite")
    if bad_loss is not None:
        metrics_finite = (False, REASON_NON_FINITE_LOSS, bad_loss)
    elif progress is None and old_finite is not None:  # not read this time: keep what was shown
        metrics_finite = (old_finite.status == "True", old_finite.reason, old_finite.message)
    else:
        metrics_finite = (True, "Finite", "the reported loss is a finite number")
    if prog is None and total_steps:
        prog = Progress(total_steps=total_steps)
    ev = eval_from(eval_summary, out_uri) or (prev.eval if prev else None)
    held_out = validation_from(seen.validation) or (prev.validation if prev else None)
    ckpt = (CheckpointRef(step=int(checkpoint["step"]), uri=checkpoint["uri"]) if checkpoint else None) or (
        prev.last_checkpoint if prev else None
    )

    admitted = rayjob is not None and phase not in ("Queued", "Suspended") and spec_error is None
    if spec_error is not None:
        adm_reason = REASON_INVALID_SPEC
    elif rayjob is None:
        adm_reason = "NotCreated"
    elif phase in ("Queued", "Suspended"):
        adm_reason = reason
    else:
        adm_reason = "Admitted"
    conds = [
        _condition(
            prev_conds,
            "SpecValid",
            spec_error is None,
            "Valid" if spec_error is None else REASON_INVALID_SPEC,
            spec_error or "the spec is valid",
            now,
            generation,
        ),
        _condition(prev_conds, "SpecApplied", spec_applied[0], spec_applied[1], spec_applied[2], now, generation),
        _condition(prev_conds, "Admitted", admitted, adm_reason, "" if admitted else message, now, generation),
        *(
            _condition(
                prev_conds,
                kind,
                phase == kind,
                reason if phase == kind else phase,
                message if phase == kind else "",
                now,
                generation,
            )
            for kind in ("Running", "Succeeded", "Failed")  # one condition per phase, true in that phase only
        ),
        _condition(prev_conds, "MetricsFinite", *metrics_finite, now, generation),
    ]
    if storage_problems:
        text = "; ".join(dict.fromkeys(storage_problems))[:2000]
        conds.append(_condition(prev_conds, "StorageReadable", False, "ReadFailed", text, now, generation))
    elif storage_problems is not None and "StorageReadable" in prev_conds:
        msg = "the run's artifacts were read"
        conds.append(_condition(prev_conds, "StorageReadable", True, "Read", msg, now, generation))
    elif "StorageReadable" in prev_conds:
        conds.append(prev_conds["StorageReadable"])

    # The run's start: KubeRay resets the RayJob's startTime for every attempt (a retry, a resume after suspend).
    start = (prev.start_time if prev else None) or rj_status.get("startTime")
    completion = None
    if phase in TERMINAL_PHASES:
        completion = rj_status.get("endTime") or now
    return TrainingRunStatus(
        phase=phase,
        reason=reason,
        message=message,
        job_status=js
        if rayjob is not None
        else (prev.job_status if prev and decision and decision.action == "lost" else None),
        job_deployment_status=jds
        if rayjob is not None
        else (prev.job_deployment_status if prev and decision and decision.action == "lost" else None),
        ray_job_name=(rayjob or {}).get("metadata", {}).get("name")
        or (prev.ray_job_name if prev and decision and decision.action == "lost" else None),
        observed_generation=generation,
        conditions=conds,
        progress=prog,
        last_checkpoint=ckpt,
        eval=ev,
        validation=held_out,
        artifacts=artifacts_for(out_uri) if out_uri else None,
        start_time=start,
        completion_time=completion,
    )


def status_patch(status: TrainingRunStatus) -> dict:
    """The status as the JSON the API server stores (camelCase, unset fields as null to clear them). Any
    non-finite number left is written as null: JSON cannot carry it and the API server would refuse the patch
    (the reconcile would retry forever and the run never end)."""
    return _finite_json(status.model_dump(by_alias=True, mode="json"))


def _finite_json(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite_json(x) for x in v]
    return v


WARNING_REASONS = ("PodsNotReady", "NameConflict", "RayJobRejected", "NotAdmitted", REASON_NO_PROGRESS)
WAITING_PHASES = ("Failed", "Pending", "Queued")


class PhaseStatus(Protocol):
    """What an Event is decided from: a TrainingRun's or a TrainingData's status."""

    @property
    def phase(self) -> str: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...
    @property
    def conditions(self) -> list[Condition]: ...


def transition_event(prev: PhaseStatus | None, new: PhaseStatus) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Kubernetes Event for a phase change, a new reason while waiting, a
    reason turning to or from a warning one in any phase (a prepare job's pods stuck while it is Preparing),
    or a newly refused edit."""
    old_phase = prev.phase if prev else None
    old_reason = prev.reason if prev else None
    if old_phase != new.phase or (
        prev is not None
        and old_reason != new.reason
        and (new.phase in WAITING_PHASES or new.reason in WARNING_REASONS or old_reason in WARNING_REASONS)
    ):
        kind = "Warning" if new.phase == "Failed" or new.reason in WARNING_REASONS else "Normal"
        return kind, new.reason or new.phase, f"{old_phase or 'New'} -> {new.phase}: {new.message or ''}".strip()[:1000]
    old_applied = next((c for c in (prev.conditions if prev else []) if c.type == "SpecApplied"), None)
    new_applied = next((c for c in new.conditions if c.type == "SpecApplied"), None)
    if (
        new_applied
        and new_applied.status == "False"
        and (old_applied is None or old_applied.status != "False" or old_applied.message != new_applied.message)
    ):
        return "Warning", new_applied.reason, new_applied.message[:1000]
    return None


def run_events(prev: TrainingRunStatus | None, new: TrainingRunStatus) -> tuple[tuple[str, str, str], ...]:
    """Every Event a status change posts: the phase change or refusal (`transition_event`), its message ending
    with where the logs are once the run has ended, and a new eval result with its report."""
    events: list[tuple[str, str, str]] = []
    changed = transition_event(prev, new)
    if changed is not None:
        kind, reason, message = changed
        if new.phase in TERMINAL_PHASES and new.artifacts is not None and new.artifacts.logs:
            suffix = f" (logs: {new.artifacts.logs})"
            message = message[: 1000 - len(suffix)] + suffix
        events.append((kind, reason, message))
    result = eval_event(prev.eval if prev else None, new.eval)
    if result is not None:
        events.append(result)
    return tuple(events)


def eval_event(old: EvalSummary | None, new: EvalSummary | None) -> tuple[str, str, str] | None:
    """(Normal, EvalResult, "eval of step N: average A; task s, ...; report URI") for an eval step not shown before."""
    if new is None or (old is not None and old.step == new.step):
        return None
    average = "n/a" if new.average is None else f"{new.average:g}"
    tasks = ", ".join(f"{task} {score:g}" for task, score in sorted(new.tasks.items())[:12])
    report = f"; report: {new.report_uri}" if new.report_uri else ""
    return "Normal", "EvalResult", f"eval of step {new.step}: average {average}; {tasks or 'no tasks'}{report}"[:1000]
