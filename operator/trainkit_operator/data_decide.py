"""Pure decisions for TrainingData (no API server, object store or clock: `now` is an argument).

- `decide_data(...)`     -> DataDecision: create the prepare ConfigMap + RayJob or nothing, and the status.
- `resolve_sources(...)` -> a TrainingRun's `dataset:` sources resolved to their TrainingData's shard URI,
                            or why the run must wait (not Ready yet) or fail (the data Failed / is missing).

Content addressing makes "Ready" a fact about storage: a valid index.json at the spec's resolved URI
(`<output.uri>/<content hash>/`) is Ready, whoever wrote it; so a second TrainingData for the same
content is Ready at once and never starts a RayJob. Ready and Failed are terminal (the spec is
immutable, enforced by a CEL transition rule), by the runs' rule (`trainkit.spec.status.final_status`):
a TrainingData that failed before its RayJob existed (InvalidSpec: a missing Secret or key, a Secret the
chart's RBAC does not let the operator read) is re-evaluated, so creating the Secret starts the prepare.
Deleting a TrainingData leaves its shards in place.

While it is Preparing, the status says why the prepare's Ray cluster does not start (its pods' reasons or
KubeRay's Warning Events, as for runs: `decide.starting_problem`), and a `Progressing` condition turns False
when the progress counts have not changed for `spec.progressDeadlineSeconds` (like a Deployment's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from trainkit.spec.data import (
    DATA_CONDITION_TYPES,
    REASON_NO_PROGRESS,
    SHARD_FORMAT,
    DataProgress,
    TrainingDataSpec,
    TrainingDataStatus,
    content_hash,
)
from trainkit.spec.data import resolved_uri as data_uri
from trainkit.spec.status import (
    REASON_DATA_FAILED,
    REASON_INVALID_SPEC,
    Condition,
    final_status,
    previous_status_of,
)
from trainkit.storage import is_remote

from trainkit_operator.config import OperatorConfig
from trainkit_operator.data_builders import (
    build_data_configmap,
    build_data_network_policy,
    build_data_rayjob,
    data_rayjob_name,
)

DATA_TERMINAL = ("Ready", "Failed")
StorageState = Literal["read", "unreadable", "none"]


@dataclass
class DataDecision:
    action: str  # "create" (ConfigMap + RayJob) or "none"
    status: TrainingDataStatus
    configmap: dict | None = None
    network_policy: dict | None = None
    rayjob: dict | None = None


def previous_data_status(data: Mapping) -> TrainingDataStatus | None:
    return previous_status_of(data, TrainingDataStatus)


def data_cluster_error(spec: TrainingDataSpec) -> str | None:
    """Why a valid spec cannot be prepared on the cluster: every pod must see the same inputs and output."""
    local = []
    if not is_remote(spec.output.uri):
        local.append(f"spec.output.uri {spec.output.uri!r}")
    for i, uri in enumerate(spec.inputs):
        if "://" not in uri or uri.startswith("file://"):
            local.append(f"spec.inputs[{i}] {uri!r}")
    if not local:
        return None
    return "a TrainingData on the cluster needs s3://, gs:// or hf:// URIs (no pod shares a local path): " + ", ".join(
        local
    )


def index_problem(index: Mapping | None, spec: TrainingDataSpec) -> str | None:
    """Why the index.json read at the resolved URI does not make this data Ready (None: it does)."""
    if index is None:
        return "no index.json yet"
    if index.get("format") != SHARD_FORMAT:
        return f"index.json has format {index.get('format')!r}, expected {SHARD_FORMAT!r}"
    tok = index.get("tokenizer") or {}
    if tok.get("name") != spec.tokenizer:
        return f"index.json was made with tokenizer {tok.get('name')!r}, not {spec.tokenizer!r}"
    if not index.get("shards") or not int(index.get("totalTokens") or 0):
        return "index.json lists no tokens"
    return None


Progressing = tuple[bool, str, str]  # the Progressing condition: (status, reason, message)


def _conditions(
    prev: TrainingDataStatus | None,
    phase: str,
    reason: str,
    message: str,
    now: str,
    gen,
    progressing: Progressing | None,
):
    """Every condition type, each time: SpecValid, Progressing (False outside Preparing), Ready, Failed."""
    old = {c.type: c for c in (prev.conditions if prev else [])}
    valid = reason != REASON_INVALID_SPEC
    rows: dict[str, Progressing] = {
        "SpecValid": (valid, "Valid" if valid else reason, "the spec is valid" if valid else message),
        "Progressing": progressing or (False, phase, ""),
        "Ready": (phase == "Ready", reason, message) if phase == "Ready" else (False, phase, ""),
        "Failed": (phase == "Failed", reason, message) if phase == "Failed" else (False, phase, ""),
    }
    out = []
    for type_ in DATA_CONDITION_TYPES:
        truth, why, text = rows[type_]
        value = "True" if truth else "False"
        before = old.get(type_)
        ltt = before.last_transition_time if before is not None and before.status == value else now
        out.append(
            Condition(
                type=type_,
                status=value,
                reason=why,
                message=text,
                last_transition_time=ltt,
                observed_generation=gen,
            )
        )
    return out


def seconds_between(earlier: str, later: str) -> float:
    """Seconds from one RFC 3339 time to another (0 when either cannot be read: never a false alarm)."""
    try:
        return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()
    except (TypeError, ValueError):
        return 0.0


def _progress(doc: Mapping | None) -> DataProgress | None:
    if not doc:
        return None
    try:
        return DataProgress.model_validate(
            {k: doc.get(k, 0) for k in ("filesDone", "filesTotal", "tokens", "documents")}
        )
    except Exception:  # noqa: BLE001 - a malformed progress file shows as no progress
        return None


def decide_data(
    data: Mapping,
    spec: TrainingDataSpec | None,
    spec_error: str | None,
    rayjob: Mapping | None,
    index: Mapping | None,
    progress: Mapping | None,
    config: OperatorConfig,
    now: str,
    storage_state: StorageState = "read",
    storage_problem: str = "",
    starting: tuple[str, str] | None = None,
) -> DataDecision:
    """`storage_state`: "read" (index/progress are what storage holds; None = absent), "unreadable" (the reads
    failed or were deferred this time: nothing terminal is decided on them) or "none" (no key to read with:
    workload identity; Ready comes from the prepare RayJob's success alone). `starting`: (reason, message) why
    the prepare RayJob's Ray cluster does not start (`decide.starting_problem`), None when nothing is wrong."""
    prev = previous_data_status(data)
    gen = (data.get("metadata") or {}).get("generation")

    def status(
        phase: str, reason: str, message: str, progressing: Progressing | None = None, **fields: Any
    ) -> TrainingDataStatus:
        base = {
            "content_hash": content_hash(spec) if spec is not None else None,
            "uri": data_uri(spec) if spec is not None else None,
            "ray_job_name": (rayjob or {}).get("metadata", {}).get("name"),
            "progress": (prev.progress if prev else DataProgress()),
        }
        base.update(fields)
        return TrainingDataStatus(
            phase=phase,
            reason=reason,
            message=message[:4096],
            observed_generation=gen,
            conditions=_conditions(prev, phase, reason, message[:4096], now, gen, progressing),
            **base,
        )

    if prev is not None and final_status(prev.phase, prev.reason, prev.ray_job_name, DATA_TERMINAL):
        return DataDecision("none", prev)
    if spec is None or spec_error is not None:
        return DataDecision("none", status("Failed", REASON_INVALID_SPEC, spec_error or "invalid spec"))
    if storage_state == "read" and index_problem(index, spec) is None:
        assert index is not None
        files = index.get("sourceFiles") or []
        return DataDecision(
            "none",
            status(
                "Ready",
                "Prepared",
                f"{int(index['totalTokens']):,} tokens in {len(index['shards'])} shard(s) at {data_uri(spec)}",
                fingerprint=(index.get("tokenizer") or {}).get("fingerprint"),
                total_tokens=int(index["totalTokens"]),
                total_documents=int(index.get("totalDocuments") or 0),
                shards=len(index["shards"]),
                progress=DataProgress(
                    files_done=len(files),
                    files_total=len(files),
                    tokens=int(index["totalTokens"]),
                    documents=int(index.get("totalDocuments") or 0),
                ),
            ),
        )
    if rayjob is None and storage_state == "unreadable":
        # The shards may be there already (content addressing): look before starting a prepare.
        return DataDecision(
            "none", status("Pending", "StorageUnreadable", f"waiting to read {data_uri(spec)}: {storage_problem}")
        )
    if rayjob is None:
        name = data_rayjob_name(data["metadata"]["name"])
        return DataDecision(
            "create",
            status(
                "Preparing",
                "RayJobCreated",
                f"tokenizing {len(spec.inputs)} input(s) into {data_uri(spec)} (RayJob {name})",
                (True, "RayJobCreated", f"RayJob {name} created"),
                ray_job_name=name,
                last_progress_time=now,
            ),
            configmap=build_data_configmap(dict(data), spec, config),
            network_policy=build_data_network_policy(dict(data), config) if config.network_policy else None,
            rayjob=build_data_rayjob(dict(data), spec, config),
        )
    st = rayjob.get("status") or {}
    job, deployment = st.get("jobStatus") or "", st.get("jobDeploymentStatus") or ""
    seen = _progress(progress)
    error = (progress or {}).get("error")
    ended = job in ("FAILED", "STOPPED") or deployment in ("Failed", "ValidationFailed")
    if ended and storage_state == "unreadable":
        # Failed is final: it waits for the read of prepare-progress.json, which holds the prepare's own error.
        return DataDecision(
            "none",
            status(
                "Preparing",
                "StorageUnreadable",
                f"the prepare RayJob ended {job or deployment}; waiting to read its error: {storage_problem}",
                (False, "JobFailed", f"RayJob {rayjob['metadata']['name']} ended {job or deployment}"),
            ),
        )
    if ended:
        why = error or st.get("message") or f"prepare RayJob ended {job or deployment}"
        return DataDecision(
            "none", status("Failed", "PrepareFailed", f"prepare failed: {why}", progress=seen or DataProgress())
        )
    if (job == "SUCCEEDED" or deployment == "Complete") and storage_state == "none":
        return DataDecision(
            "none",
            status(
                "Ready",
                "Prepared",
                f"prepared at {data_uri(spec)} by RayJob {rayjob['metadata']['name']} (the operator holds no "
                "storage key in workload-identity mode, so the index's totals are not shown)",
            ),
        )
    if (job == "SUCCEEDED" or deployment == "Complete") and storage_state == "unreadable":
        return DataDecision(
            "none",
            status(
                "Preparing",
                "StorageUnreadable",
                f"prepared; waiting to read its index.json: {storage_problem}",
                (True, "JobSucceeded", f"RayJob {rayjob['metadata']['name']} succeeded"),
            ),
        )
    if job == "SUCCEEDED" or deployment == "Complete":
        # Finished, but no valid index: never shown as Ready (nothing half-written is a source).
        why = error or index_problem(index, spec)
        return DataDecision(
            "none", status("Failed", "PrepareFailed", f"prepare finished without a usable index: {why}")
        )
    u = underway(prev, rayjob, seen, spec, now, storage_state, starting)
    return DataDecision(
        "none",
        status(
            "Preparing", u.reason, u.message, u.progressing, progress=u.progress, last_progress_time=u.last_progress
        ),
    )


@dataclass(frozen=True)
class Underway:
    reason: str
    message: str
    progressing: Progressing
    progress: DataProgress
    last_progress: str


def underway(
    prev: TrainingDataStatus | None,
    rayjob: Mapping,
    seen: DataProgress | None,
    spec: TrainingDataSpec,
    now: str,
    storage_state: StorageState,
    starting: tuple[str, str] | None,
) -> Underway:
    """A prepare under way: its counts, why its cluster does not start, and whether it progresses."""
    st = rayjob.get("status") or {}
    state = st.get("jobStatus") or st.get("jobDeploymentStatus") or "created"
    name = rayjob["metadata"]["name"]
    counts = seen or (prev.progress if prev else DataProgress())
    files = f"{counts.files_done}/{counts.files_total} files, {counts.tokens:,} tokens"
    # The clock restarts whenever the counts change; it starts when the RayJob is created (or first seen).
    last = (prev.last_progress_time if prev else None) or now
    if seen is not None and prev is not None and seen != prev.progress:
        last = now
    reason, message = "Preparing", f"RayJob {name}: {state}" + (f" ({files})" if seen else "")
    if starting is not None:
        reason, message = starting
    progressing: Progressing = (True, "Preparing", f"last progress at {last} ({files})")
    idle = seconds_between(last, now)
    shown = next((c for c in prev.conditions if c.type == "Progressing"), None) if prev else None
    if storage_state != "read" and prev is not None and prev.phase == "Preparing" and shown is not None:
        # Only counts read this time can show a stall or its end: unreadable storage (or no key, workload identity)
        # keeps what the condition showed, as a failed read never erases a run's progress.
        progressing = (shown.status == "True", shown.reason, shown.message)
        if shown.reason == REASON_NO_PROGRESS and starting is None:
            reason, message = REASON_NO_PROGRESS, shown.message
    elif storage_state == "read" and idle > spec.progress_deadline_seconds:
        # No running count of seconds in it: the message (and the status) stays the same while nothing happens.
        why = (
            f"no progress since {last}, longer than spec.progressDeadlineSeconds ({spec.progress_deadline_seconds}):"
            f" {files}; RayJob {name}: {state}" + (f"; {starting[1]}" if starting else "")
        )
        progressing = (False, REASON_NO_PROGRESS, why)
        if starting is None:
            reason, message = REASON_NO_PROGRESS, why
    return Underway(reason, message, progressing, counts, last)


# ------------------------------------------------------------------- runs naming a dataset
@dataclass(frozen=True)
class Resolution:
    uris: dict[str, str]  # source name -> resolved shard URI
    fingerprints: dict[str, str]
    waiting: str | None = None  # why the run waits (Pending)
    failed: str | None = None  # why the run fails


def resolve_sources(datasets: Mapping[str, str], found: Mapping[str, Mapping | None]) -> Resolution:
    """`datasets`: source name -> TrainingData name; `found`: TrainingData name -> object (None: absent)."""
    uris: dict[str, str] = {}
    prints: dict[str, str] = {}
    waiting: list[str] = []
    failed: list[str] = []
    for source, name in sorted(datasets.items()):
        obj = found.get(name)
        st = (obj or {}).get("status") or {}
        phase = st.get("phase")
        if obj is None:
            waiting.append(f"source {source}: TrainingData {name!r} does not exist (yet)")
        elif phase == "Failed":
            failed.append(f"source {source}: TrainingData {name!r} Failed: {st.get('message', '')}")
        elif phase == "Ready" and st.get("uri"):
            uris[source] = st["uri"]
            if st.get("fingerprint"):
                prints[source] = st["fingerprint"]
        else:
            waiting.append(f"source {source}: TrainingData {name!r} is {phase or 'Pending'}")
    return Resolution(
        uris,
        prints,
        waiting="; ".join(waiting) if waiting else None,
        failed="; ".join(failed) if failed else None,
    )


def recorded_resolution(datasets: Mapping[str, str], recorded: Mapping | None) -> Resolution | None:
    """The resolution a run's status already holds, when it covers every named source: a run keeps the
    URIs it started with, whatever later happens to its TrainingData."""
    if not recorded or any(source not in recorded for source in datasets):
        return None
    try:
        uris = {s: str(recorded[s]["uri"]) for s in datasets}
    except (KeyError, TypeError):
        return None
    prints = {s: str(recorded[s]["fingerprint"]) for s in datasets if (recorded[s] or {}).get("fingerprint")}
    return Resolution(uris, prints)


def apply_resolution(spec, resolution: Resolution):
    """The run's spec with each `dataset:` source's and validation target's uri and fingerprint filled in
    (what spec.json carries). Names are unique across the two lists, so one resolution covers both."""

    def resolved(refs):
        return [
            s.model_copy(update={"uri": resolution.uris[s.name], "fingerprint": resolution.fingerprints.get(s.name)})
            if s.dataset and s.name in resolution.uris
            else s
            for s in refs
        ]

    data = spec.data.model_copy(
        update={"sources": resolved(spec.data.sources), "validation_targets": resolved(spec.data.validation_targets)}
    )
    return spec.model_copy(update={"data": data})


def with_data_status(status, datasets: Mapping[str, str], resolution: Resolution, now: str):
    """The run's status with its datasets recorded, a DataReady condition, and the wait or failure shown."""
    from trainkit.spec.status import DatasetRef

    refs = {
        s: DatasetRef(dataset=datasets[s], uri=u, fingerprint=resolution.fingerprints.get(s))
        for s, u in resolution.uris.items()
    }
    ready = resolution.waiting is None and resolution.failed is None
    old = next((c for c in status.conditions if c.type == "DataReady"), None)
    value = "True" if ready else "False"
    reason = "Ready" if ready else (REASON_DATA_FAILED if resolution.failed else "WaitingForData")
    message = (
        resolution.failed
        or resolution.waiting
        or "every dataset is Ready: " + ", ".join(f"{s}={u}" for s, u in sorted(resolution.uris.items()))
    )
    cond = Condition(
        type="DataReady",
        status=value,
        reason=reason,
        message=message[:32768],
        last_transition_time=old.last_transition_time if old is not None and old.status == value else now,
        observed_generation=status.observed_generation,
    )
    update: dict[str, Any] = {
        "conditions": [c for c in status.conditions if c.type != "DataReady"] + [cond],
        "datasets": refs or None,
    }
    if resolution.failed:
        update.update(reason=REASON_DATA_FAILED, message=resolution.failed)
    elif resolution.waiting and status.phase == "Pending":
        update.update(reason="WaitingForData", message=resolution.waiting)
    return status.model_copy(update=update)
