"""Packed runs (a TrainingSweep's `spec.packing`): K TrainingRuns trained at once by ONE RayJob, pure.

Who owns what:
- the sweep owns each pack's RayJob `<sweep>-pNNN`, its ConfigMap `<sweep>-pNNN-spec` (the pack document,
  `trainkit.spec.packing.TrainingPack`) and its NetworkPolicy, all `ownerReferences` to the sweep: a pack
  outlives any one of its runs, so no run can own it;
- each packed TrainingRun is still the sweep's own run (one row, one `kubectl get tr` line), labelled
  `trainkit.dev/pack: <pack>`; it creates no children. Its `status.rayJobName` names the pack's RayJob, whose
  jobStatus/jobDeploymentStatus it mirrors, and its phase is `packed_phase`: the pack's RayJob says Pending,
  Queued, Suspended or Running, but only the run's OWN outcome (`outcome.json`, written by the pack's driver under
  the run's output) says Succeeded or Failed. The pack's RayJob ending never marks a good run failed; a run whose
  pack ended without an outcome for it (its driver task never finished) is Failed, saying so.

Everything here is a function of its arguments (no I/O): the sweep reconcile applies the pack objects, the run
reconcile reads the pack's RayJob and the run's outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trainkit.artifacts import OutcomeDoc, owner_of_run
from trainkit.spec.memory import GiB, parse_quantity
from trainkit.spec.models import OutputSpec, StorageSpec, TrainingRunSpec
from trainkit.spec.packing import PackMember, TrainingPack, pack_document, pack_members, pack_name, packed_share
from trainkit.spec.search import ROUND_LABEL
from trainkit.spec.status import TERMINAL_PHASES

from trainkit_operator.builders import (
    HEAD_CONTAINER,
    SPEC_HASH,
    SPEC_HASH_ANNOTATION,
    SPEC_KEY,
    SPEC_PATH,
    SUSPENDED_BY_ANNOTATION,
    SUSPENDED_BY_SPEC,
    SWEEP_LABEL,
    WORKER_CONTAINER,
    WORKER_GROUP,
    build_network_policy,
    child_metadata,
    configmap_name,
    credentials_secret,
    document_hash,
    node_selector,
    owned_labels,
    ray_cluster_spec,
    ray_pod_template,
    rayjob_object,
    requests_and_limits,
    scheduling_labels,
    spec_configmap,
    spec_env,
    storage_env_entries,
    submitter_template,
    tolerations,
)
from trainkit_operator.config import OperatorConfig

PACK_LABEL = "trainkit.dev/pack"
# A packed run whose pack ended while its own outcome could not be read yet: the reconcile retries soon.
REASON_READING_OUTCOME = "ReadingOutcome"
SWEEP_KIND = "TrainingSweep"
# A constant, like a run's: the pack document is the mounted spec file, never a command-line argument.
PACK_ENTRYPOINT = f"python -m trainkit.jobs.pack --spec {SPEC_PATH}"
# Each member's driver task and its Ray Train controller are processes on the head (~0.5 GiB each, measured:
# docs/operator.md, "Packed runs"): the head grows by this much per member.
HEAD_MEMORY_PER_MEMBER = 1 * GiB
HEAD_CPUS_PER_MEMBER = 0.25


def packs_of_plan(sweep_name: str, proxies: list[dict], runs_per_cluster: int) -> dict[str, list[str]]:
    """pack name -> the names of its runs, from the proxy runs planned so far (trainkit.spec.search.plan_sweep,
    in index order). Each search round's runs are packed on their own, numbered on from the round before: a
    round is planned whole and only after the one before has finished, so a pack never changes once made."""
    rounds: dict[str, list[str]] = {}
    for m in proxies:
        rounds.setdefault(m["metadata"].get("labels", {}).get(ROUND_LABEL, "0"), []).append(m["metadata"]["name"])
    packs: dict[str, list[str]] = {}
    for names in rounds.values():
        for members in pack_members(len(names), runs_per_cluster):
            packs[pack_name(sweep_name, len(packs))] = [names[i] for i in members]
    return packs


def pack_of_run(run: dict) -> str | None:
    """The pack a TrainingRun is labelled into (None: it runs on a RayJob of its own)."""
    return ((run.get("metadata") or {}).get("labels") or {}).get(PACK_LABEL)


def packing_spec_error(spec: TrainingRunSpec, config: OperatorConfig) -> str | None:
    """Why a run cannot be packed on this operator, or None: a packed run's end is read from its own
    outcome.json with its own key, so the operator must hold one (not workload identity)."""
    if credentials_secret(spec, config) is None:
        return (
            "spec.storage.credentialsSecret: a packed run (TrainingSweep spec.packing) needs a credentials Secret: "
            "the operator reads each packed run's own outcome with it (workload identity gives it no key)"
        )
    return None


def run_owner(run: dict) -> str:
    """The owner id the pack's driver records in this run's owner.json and outcome.json."""
    meta = run["metadata"]
    return owner_of_run(meta.get("uid"), meta.get("namespace") or "default", meta["name"], "")


def members_sharing_storage(pack_configmap: dict | None, spec: TrainingRunSpec) -> list[tuple[str, str]]:
    """(owner id, output URI) of the pack's members whose storage block is this run's: the only ones this run's
    key may read for (a member edited to other storage before its pack was made reads its own). [] when the
    ConfigMap is missing or not a pack document."""
    try:
        doc = TrainingPack.model_validate(json.loads(((pack_configmap or {}).get("data") or {})[SPEC_KEY]))
    except (KeyError, TypeError, ValueError):
        return []
    out = []
    for m in doc.spec.runs:
        try:
            theirs = StorageSpec.model_validate(m.spec.get("storage") or {})
            uri = OutputSpec.model_validate(m.spec.get("output") or {}).uri
        except ValueError:
            continue
        if theirs == spec.storage:
            out.append((owner_of_run(m.uid or None, m.namespace, m.name, ""), uri))
    return out


def controlling_sweep_uid(obj: dict) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == SWEEP_KIND:
            return str(ref.get("uid"))
    return None


def pack_belongs_to_run(pack_rayjob: dict, run: dict) -> bool:
    """The pack RayJob is controlled by the very sweep (uid) that controls the run: a run cannot point its
    label at another sweep's pack (or a RayJob of the same name made by anything else)."""
    uid = controlling_sweep_uid(run)
    return uid is not None and controlling_sweep_uid(pack_rayjob) == uid


# ------------------------------------------------------------------------------------ pack objects
def pack_labels(sweep: dict, pack: str, config: OperatorConfig | None = None) -> dict[str, str]:
    labels = owned_labels(PACK_LABEL, pack, "training-pack", config)
    labels[SWEEP_LABEL] = sweep["metadata"]["name"]
    return labels


def pack_member(run: dict, spec: TrainingRunSpec) -> PackMember:
    meta = run["metadata"]
    return PackMember(
        name=meta["name"],
        namespace=meta.get("namespace") or "default",
        uid=meta.get("uid") or "",
        spec=spec.model_dump(by_alias=True, mode="json", exclude_none=True),
    )


def build_pack_configmap(
    sweep: dict, pack: str, members: list[PackMember], template: TrainingRunSpec, runs_per_cluster: int, config
) -> dict:
    r = template.resources
    share = packed_share(r.cpus_per_worker, r.gpus_per_worker, runs_per_cluster)
    doc = pack_document(pack, sweep["metadata"].get("namespace") or "default", members, share)
    name = configmap_name(pack, document_hash(doc))  # immutable, named by its content like a run's
    return spec_configmap(sweep, SWEEP_KIND, name, pack_labels(sweep, pack, config), doc)


def pack_configmap_name(pack: str, pack_rayjob: dict | None) -> str | None:
    """The ConfigMap the pack's RayJob mounts (its spec-hash annotation names it), or None without the RayJob."""
    annotations = ((pack_rayjob or {}).get("metadata") or {}).get("annotations") or {}
    digest = annotations.get(SPEC_HASH_ANNOTATION)
    return configmap_name(pack, digest) if isinstance(digest, str) and SPEC_HASH.fullmatch(digest) else None


def build_pack_network_policy(sweep: dict, pack: str, config: OperatorConfig) -> dict:
    return build_network_policy(sweep, SWEEP_KIND, PACK_LABEL, pack, config, member=pack)


def pack_env(template: TrainingRunSpec, config: OperatorConfig) -> list[dict]:
    """The pack's pods' env: where the pack document is, storage (credentials only as secretKeyRefs), the
    template's env. No run identity: each member's comes from the pack document."""
    env = [{"name": "TRAINKIT_SPEC", "value": SPEC_PATH}]
    endpoint = template.storage.endpoint or config.default_storage_endpoint
    env += storage_env_entries(endpoint, template.storage.region, credentials_secret(template, config))
    return env + spec_env(template)


def _pack_pod(
    sweep: dict,
    pack: str,
    template: TrainingRunSpec,
    config: OperatorConfig,
    container: str,
    resources: dict,
    gpu: bool,
    spec_hash: str,
) -> dict:
    return ray_pod_template(
        pack_labels(sweep, pack, config),
        config,
        container=container,
        image=template.resources.image or config.trainer_image,
        resources=resources,
        env=pack_env(template, config),
        configmap=configmap_name(pack, spec_hash),
        node_selector=node_selector(template, config) if gpu else None,
        tolerations=tolerations(template, config) if gpu else None,
        pull_secrets=template.resources.image_pull_secrets,
        priority_class=template.scheduling.priority_class_name,
    )


def pack_head_resources(template: TrainingRunSpec, members: int) -> dict:
    """The template's head plus room for each member's driver task and Ray Train controller."""
    r = template.resources
    memory = parse_quantity(r.head_memory) + members * HEAD_MEMORY_PER_MEMBER
    return requests_and_limits(r.head_cpus + members * HEAD_CPUS_PER_MEMBER, f"{-(-memory // (1 << 20))}Mi")


def build_pack_rayjob(
    sweep: dict, pack: str, template: TrainingRunSpec, members: int, config: OperatorConfig, spec_hash: str
) -> dict:
    """One Ray cluster for the pack: the template's worker pods (each member trains with 1/K of each), a head
    sized for K members, the pack's constant entrypoint. Scheduling (Kueue queue, priority, Volcano,
    suspend, backoffLimit, deadline) is the template's: the pack is admitted once, as a whole."""
    r, s = template.resources, template.scheduling
    labels = pack_labels(sweep, pack, config)
    labels.update(scheduling_labels(template))
    annotations = {SPEC_HASH_ANNOTATION: spec_hash}
    if s.suspend:
        annotations[SUSPENDED_BY_ANNOTATION] = SUSPENDED_BY_SPEC
    image = r.image or config.trainer_image
    fields: dict[str, Any] = {
        "backoffLimit": s.backoff_limit,
        "suspend": s.suspend,
        "submitterPodTemplate": submitter_template(
            pack_labels(sweep, pack, config), config, image, r.image_pull_secrets, s.priority_class_name
        ),
    }
    if s.active_deadline_seconds is not None:
        fields["activeDeadlineSeconds"] = s.active_deadline_seconds
    worker_res = requests_and_limits(r.cpus_per_worker, r.memory_per_worker, r.gpus_per_worker)
    cluster = ray_cluster_spec(
        config,
        _pack_pod(
            sweep, pack, template, config, HEAD_CONTAINER, pack_head_resources(template, members), False, spec_hash
        ),
        WORKER_GROUP,
        r.workers,
        _pack_pod(sweep, pack, template, config, WORKER_CONTAINER, worker_res, True, spec_hash),
    )
    metadata = child_metadata(sweep, SWEEP_KIND, pack, labels, annotations)
    return rayjob_object(metadata, PACK_ENTRYPOINT, config, fields, cluster)


@dataclass(frozen=True)
class PackObjects:
    """What the sweep reconcile creates for one pack, in this order (each 409 means an earlier reconcile did)."""

    name: str
    configmap: dict
    network_policy: dict | None
    rayjob: dict


def build_pack(
    sweep: dict, pack: str, members: list[tuple[dict, TrainingRunSpec]], template: TrainingRunSpec, k: int, config
) -> PackObjects:
    """The pack's objects from its member runs as they exist (uids read back from the API server)."""
    member_docs = [pack_member(run, spec) for run, spec in members]
    configmap = build_pack_configmap(sweep, pack, member_docs, template, k, config)
    spec_hash = configmap["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    return PackObjects(
        name=pack,
        configmap=configmap,
        network_policy=build_pack_network_policy(sweep, pack, config) if config.network_policy else None,
        rayjob=build_pack_rayjob(sweep, pack, template, len(members), config, spec_hash),
    )


# ------------------------------------------------------------------------------ a packed run's phase
@dataclass(frozen=True)
class PackView:
    """What a packed run's reconcile saw: its pack's name, its own outcome.json, and whether the storage read
    went through this time (only then does an absent outcome mean "none")."""

    name: str
    outcome: OutcomeDoc | None = None
    outcome_read: bool = False


def packed_phase(base: tuple[str, str, str], pack: PackView, pack_exists: bool) -> tuple[str, str, str]:
    """(phase, reason, message) of a packed run from `base` (what the pack's RayJob alone says, by
    decide.derive_phase, or the reconcile's own Pending/lost) and the run's own outcome."""
    if pack.outcome is not None:
        state, message = pack.outcome.get("state"), pack.outcome.get("message") or ""
        if state == "Succeeded":
            return "Succeeded", "RunSucceeded", message or "trained"
        return "Failed", "RunFailed", message or "the run failed in its pack"
    phase, reason, message = base
    if not pack_exists and phase not in TERMINAL_PHASES:
        return (
            "Pending",
            "WaitingForPack",
            f"waiting for the RayJob of pack {pack.name} (one RayJob for several runs of the sweep), which the sweep "
            "creates once all its runs exist",
        )
    if phase in TERMINAL_PHASES:
        if not pack.outcome_read:
            # Terminal is sticky: never declare it before this run's own record could be read.
            return "Running", REASON_READING_OUTCOME, f"pack {pack.name} ended ({reason}); reading this run's outcome"
        if pack_exists:
            return (
                "Failed",
                "PackEndedWithoutOutcome",
                f"the RayJob of pack {pack.name} ended ({reason}: {message}) without an outcome for this run; see "
                "the run's logs/ and the pack's driver log",
            )
    return phase, reason, message


# ------------------------------------------------------------------------------ which runs to create
def packed_runs_due(
    packs: dict[str, list[str]],
    manifests: dict[str, dict],
    existing: set[str],
    leftovers: set[str],
    unfinished: int,
    parallelism: int,
) -> list[dict]:
    """The run manifests (by name) to create now, whole packs (`packs_of_plan`) at a time in order, each
    labelled with its pack.

    A pack starts only when all its runs fit under `parallelism` (unfinished runs count one each); a pack
    some of whose runs exist already (an operator restart between two creates) is completed first, whatever
    the slots say, because its RayJob waits for all of them. Creation stops at a pack whose run name is still
    held by a previous sweep's leftover run."""
    free = parallelism - unfinished
    due: list[dict] = []
    for pack, names in packs.items():
        missing = [n for n in names if n not in existing]
        if not missing:
            continue
        if any(n in leftovers for n in missing):
            break
        started = len(missing) < len(names)
        if not started and len(names) > free:
            break
        for name in missing:
            manifest = manifests[name]
            manifest["metadata"]["labels"] = {**manifest["metadata"].get("labels", {}), PACK_LABEL: pack}
            due.append(manifest)
        if not started:
            free -= len(names)
    return due
