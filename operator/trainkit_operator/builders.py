"""Pure builders of the child objects of a TrainingRun: the spec ConfigMap and the KubeRay RayJob.

No I/O, no clock, no randomness: the same (run, spec, config) always gives the same objects, so the
reconcile can compare, create and re-create idempotently, and unit tests need no cluster.

Security rules enforced here (and tested):
- the spec reaches the trainer as a file mounted from the ConfigMap; the entrypoint is a constant;
- storage credentials are `secretKeyRef`s to the Secret the run names; no key, value or token is ever
  copied into the RayJob, the ConfigMap, labels or annotations;
- every container runs as non-root, without privilege escalation, with all capabilities dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel

from trainkit.spec.models import TRAINING_RUN_API_VERSION, EnvVar, TrainingRunSpec, reserved_env_name

from trainkit_operator.config import OperatorConfig

RAYJOB_API_VERSION = "ray.io/v1"
RUN_LABEL = "trainkit.dev/run"
SWEEP_LABEL = "trainkit.dev/sweep"  # on a sweep's runs and on its packs' RayJobs
MANAGED_BY = "trainkit-operator"
SPEC_HASH_ANNOTATION = "trainkit.dev/spec-hash"
# Present exactly while the RayJob is suspended because the run's spec says so. The operator only ever
# sets `suspend: false` on a RayJob that carries it: a suspension it did not make (Kueue's webhook with
# manageJobsWithoutQueueName suspends RayJobs that name no queue) is never undone, so the two never fight.
SUSPENDED_BY_ANNOTATION = "trainkit.dev/suspended-by"
SUSPENDED_BY_SPEC = "spec.scheduling.suspend"

SPEC_KEY = "spec.json"
SPEC_DIR = "/etc/trainkit"
SPEC_PATH = f"{SPEC_DIR}/{SPEC_KEY}"
# A constant: nothing from the spec is ever interpolated into the command line.
ENTRYPOINT = f"python -m trainkit.jobs.train --spec {SPEC_PATH}"

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# What KubeRay's Volcano batch-scheduler plugin reads (ray-operator/controllers/ray/batchscheduler/volcano/):
# the queue and the PodGroup's priority class. It gang-schedules every RayCluster once KubeRay runs with
# `batchScheduler.name: volcano`; it reads neither `ray.io/scheduler-name` (dropped in KubeRay v1.6) nor
# `ray.io/gang-scheduling-enabled`, so we emit neither.
VOLCANO_QUEUE_LABEL = "volcano.sh/queue-name"
RAY_PRIORITY_LABEL = "ray.io/priority-class-name"

CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# What MLflow's client reads for a tracking server's basic or bearer auth; each optional in the Secret.
MLFLOW_CREDENTIAL_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# Ray settings for every Ray container unless the run's resources.env sets them. Ray >= 2.5x drains a node on
# SIGTERM for up to 30 s (for Serve replicas); a training cluster has none, and when KubeRay deletes it (suspend,
# Kueue preemption, a retry, the job's end) the head gets the same SIGTERM, so the drain can only wait out its
# timeout and hold the GPUs that long.
RAY_POD_ENV_DEFAULTS = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}

NON_ROOT_UID = 1000

HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"
WORKER_GROUP = "gpu-workers"


def configmap_name(run_name: str, digest: str) -> str:
    """The spec ConfigMap of one version of a run's spec: named by its content's hash, so a changed spec is a
    new ConfigMap and none is ever updated (they are immutable)."""
    return f"{run_name}-spec-{digest}"


def rayjob_name(run_name: str) -> str:
    return run_name


def spec_file_document(obj: dict, kind: str, spec: BaseModel) -> dict:
    """The document a job reads from its mounted spec file: the object's kind, name and validated spec."""
    meta = obj["metadata"]
    return {
        "apiVersion": TRAINING_RUN_API_VERSION,
        "kind": kind,
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace") or "default"},
        "spec": spec.model_dump(by_alias=True, mode="json", exclude_none=True),
    }


def document_json(doc: dict) -> str:
    """A spec file's text: JSON, read back as JSON (trainkit.spec.load.read_documents)."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


SPEC_HASH = re.compile(r"[0-9a-f]{16}")  # what document_hash gives (and configmap_name puts in a name)


def document_hash(doc: dict) -> str:
    return hashlib.sha256(document_json(doc).encode()).hexdigest()[:16]


def spec_document(run: dict, spec: TrainingRunSpec) -> dict:
    """The TrainingRun document the trainer reads (`trainkit.spec.load_run` accepts it as JSON)."""
    return spec_file_document(run, "TrainingRun", spec)


def spec_json(run: dict, spec: TrainingRunSpec) -> str:
    return document_json(spec_document(run, spec))


def spec_hash(run: dict, spec: TrainingRunSpec) -> str:
    return document_hash(spec_document(run, spec))


def owner_reference_to(obj: dict, kind: str) -> dict:
    """The controller reference a child carries (garbage-collected with its owner)."""
    meta = obj["metadata"]
    if not meta.get("uid"):
        raise ValueError(f"{kind} {meta.get('name')!r} has no uid: read it back from the API server first")
    return {
        "apiVersion": obj.get("apiVersion") or TRAINING_RUN_API_VERSION,
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owner_reference(run: dict) -> dict:
    return owner_reference_to(run, "TrainingRun")


def owned_labels(label: str, name: str, component: str, config: OperatorConfig | None = None) -> dict[str, str]:
    """The labels of every child: the platform's extra labels, then the owner's name under `label`."""
    labels = dict(config.extra_labels) if config else {}
    labels.update(
        {
            label: name,
            "app.kubernetes.io/name": "trainkit",
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }
    )
    return labels


def common_labels(run: dict, config: OperatorConfig | None = None) -> dict[str, str]:
    return owned_labels(RUN_LABEL, run["metadata"]["name"], "training-run", config)


def child_metadata(owner: dict, kind: str, name: str, labels: dict[str, str], annotations: dict[str, str]) -> dict:
    return {
        "name": name,
        "namespace": owner["metadata"].get("namespace") or "default",
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [owner_reference_to(owner, kind)],
    }


def spec_configmap(owner: dict, kind: str, name: str, labels: dict[str, str], doc: dict) -> dict:
    """The ConfigMap that carries a job's spec file (`SPEC_KEY`), annotated with the spec's hash. Immutable:
    `name` carries the hash (configmap_name), a changed spec gets a new ConfigMap, and the operator needs no
    update or patch on ConfigMaps; the old ones go with their owner (garbage collection)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(owner, kind, name, labels, {SPEC_HASH_ANNOTATION: document_hash(doc)}),
        "immutable": True,
        "data": {SPEC_KEY: document_json(doc)},
    }


def build_configmap(run: dict, spec: TrainingRunSpec, config: OperatorConfig | None = None) -> dict:
    name = configmap_name(run["metadata"]["name"], spec_hash(run, spec))
    return spec_configmap(run, "TrainingRun", name, common_labels(run, config), spec_document(run, spec))


# ------------------------------------------------------------------------------------- helpers
def quantity(value: float) -> str:
    """A CPU count as a Kubernetes quantity: 8 -> '8', 0.5 -> '500m'."""
    if float(value).is_integer():
        return str(int(value))
    return f"{int(round(value * 1000))}m"


def container_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "fsGroup": NON_ROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def storage_env_entries(endpoint: str | None, region: str | None, secret: str | None) -> list[dict]:
    """Env for object storage: endpoint and region as values, credentials ONLY as secretKeyRefs."""
    env: list[dict] = []
    if endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": endpoint})
    if region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": region})
    if secret:
        for key in CREDENTIAL_KEYS:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": False}}})
    return env


def storage_env(run: dict, spec: TrainingRunSpec, config: OperatorConfig) -> list[dict]:
    endpoint = spec.storage.endpoint or config.default_storage_endpoint
    return storage_env_entries(endpoint, spec.storage.region, credentials_secret(spec, config))


def credentials_secret(spec: TrainingRunSpec, config: OperatorConfig) -> str | None:
    """The Secret the Ray pods take storage credentials from (None: the pods' own identity, e.g. IRSA)."""
    return spec.storage.credentials_secret or config.default_credentials_secret


def container_env(run: dict, spec: TrainingRunSpec, config: OperatorConfig) -> list[dict]:
    meta = run["metadata"]
    env = [
        {"name": "TRAINKIT_RUN_NAME", "value": meta["name"]},
        {"name": "TRAINKIT_RUN_NAMESPACE", "value": meta.get("namespace") or "default"},
        {"name": "TRAINKIT_SPEC", "value": SPEC_PATH},
        # the owner of the run's output prefix (owner.json): a re-created run of the same name is another owner
        {"name": "TRAINKIT_RUN_UID", "value": meta.get("uid") or ""},
    ]
    return env + storage_env(run, spec, config) + spec_env(spec)


def spec_env(spec: TrainingRunSpec) -> list[dict]:
    """What a spec adds to its Ray pods' env (a run's, or a pack's template): MLflow credentials by secretKeyRef,
    the Ray pod defaults it does not set itself, and its own env. The spec refuses the names the operator sets
    (trainkit.spec.models.reserved_env_name); filtered again here, so no spec, however it got past validation,
    shadows them."""
    own = [user_env_entry(e) for e in spec.resources.env if not reserved_env_name(e.name)]
    defaults = [{"name": k, "value": v} for k, v in RAY_POD_ENV_DEFAULTS.items() if k not in {e["name"] for e in own}]
    return mlflow_env(spec) + defaults + own


def user_env_entry(e: EnvVar) -> dict:
    """A spec env var as a container's: a plain value, or a `secretKeyRef` to a Secret in the run's namespace (how
    credentials come in: the kubelet resolves it, the value is in no spec, RayJob or ConfigMap)."""
    if e.secret_key_ref is not None:
        ref = e.secret_key_ref
        return {"name": e.name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key, "optional": False}}}
    return {"name": e.name, "value": e.value}


def mlflow_env(spec: TrainingRunSpec) -> list[dict]:
    """MLflow credentials ONLY as secretKeyRefs to spec.tracking.mlflow.credentialsSecret (each key optional:
    a Secret holds a username and password, or a token)."""
    m = spec.tracking.mlflow
    if m is None or not m.credentials_secret:
        return []
    return [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": m.credentials_secret, "key": key, "optional": True}}}
        for key in MLFLOW_CREDENTIAL_KEYS
    ]


def tolerations(spec: TrainingRunSpec, config: OperatorConfig | None = None) -> list[dict]:
    """The run's tolerations, else the node pool's defaults from the operator's config."""
    own = [t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in spec.resources.tolerations]
    if own or config is None:
        return own
    return [dict(t) for t in config.default_tolerations]


def node_selector(spec: TrainingRunSpec, config: OperatorConfig) -> dict[str, str]:
    """The run's GPU node selector, else the node pool's default."""
    return dict(spec.resources.node_selector or config.default_node_selector)


def requests_and_limits(cpus: float, memory: str, gpus: int = 0) -> dict:
    """Requests equal to limits (Guaranteed QoS: Ray's object store and NCCL must not be squeezed)."""
    res = {"cpu": quantity(cpus), "memory": memory}
    if gpus:
        res["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(res), "limits": dict(res)}


def ray_pod_template(
    labels: dict[str, str],
    config: OperatorConfig,
    *,
    container: str,
    image: str,
    resources: dict,
    env: list[dict],
    configmap: str,
    shared_memory: bool = True,
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict] | None = None,
    pull_secrets: list[str] | None = None,
    priority_class: str | None = None,
) -> dict:
    """A Ray head or worker pod: non-root, the spec file mounted read-only, no service-account token."""
    mounts = [{"name": "trainkit-spec", "mountPath": SPEC_DIR, "readOnly": True}]
    volumes: list[dict] = [
        {"name": "trainkit-spec", "configMap": {"name": configmap, "items": [{"key": SPEC_KEY, "path": SPEC_KEY}]}}
    ]
    if shared_memory:  # NCCL and the DataLoader need more /dev/shm than the container default (64 MiB)
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    pod: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "containers": [
            {
                "name": container,
                "image": image,
                "imagePullPolicy": config.image_pull_policy,
                "resources": resources,
                "env": env,
                "volumeMounts": mounts,
                "securityContext": container_security_context(),
            }
        ],
        "volumes": volumes,
        # Ray pods never talk to the Kubernetes API: no token mounted.
        "automountServiceAccountToken": False,
    }
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod["tolerations"] = tolerations
    if pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    if priority_class:
        pod["priorityClassName"] = priority_class
    if config.service_account:
        pod["serviceAccountName"] = config.service_account
    return {"metadata": {"labels": labels}, "spec": pod}


def submitter_template(
    labels: dict[str, str],
    config: OperatorConfig,
    image: str,
    pull_secrets: list[str] | None = None,
    priority_class: str | None = None,
) -> dict:
    """The K8sJobMode submitter (`ray job submit`): KubeRay fills the command; we make it non-root and small."""
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "ray-job-submitter",
                "image": image,
                "imagePullPolicy": config.image_pull_policy,
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                "securityContext": container_security_context(),
            }
        ],
    }
    if pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    if priority_class:
        pod["priorityClassName"] = priority_class
    return {"metadata": {"labels": labels}, "spec": pod}


def ray_cluster_spec(config: OperatorConfig, head: dict, group: str, workers: int, worker: dict) -> dict:
    """One head and one fixed-size worker group (no autoscaling: a training world has a fixed size)."""
    cluster: dict[str, Any] = {"rayVersion": config.ray_version}
    if config.ray_token_auth:
        # KubeRay >= 1.5.1 (ray-operator/controllers/ray/raycluster_controller.go reconcileAuthSecret,
        # common/pod.go SetContainerTokenAuthEnvVars): a Secret named after the cluster with a random
        # `auth_token`, RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (secretKeyRef) in every Ray container and
        # the submitter, and the token on its own dashboard requests. The operator never sees the token.
        cluster["authOptions"] = {"mode": "token"}
    return {
        **cluster,
        "headGroupSpec": {
            # num-cpus/num-gpus 0: no task lands on the head (Ray would otherwise detect the node's CPUs
            # and GPUs); the driver still runs there.
            "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "dashboard-host": "0.0.0.0"},
            "template": head,
        },
        "workerGroupSpecs": [
            {
                "groupName": group,
                "replicas": workers,
                "minReplicas": workers,
                "maxReplicas": workers,
                "rayStartParams": {},
                "template": worker,
            }
        ],
    }


RAY_DASHBOARD_PORT = 8265  # where KubeRay's operator reads job status (utils.DashboardPortName)


def build_network_policy(
    owner: dict, kind: str, label: str, rayjob: str, config: OperatorConfig, member: str | None = None
) -> dict:
    """Ingress to the owner's Ray pods (all carry `label: <member>`, by default `<owner's name>`) only from pods
    of the same owner in its namespace (GCS, raylets, object transfer, NCCL, the submitter) and from the KubeRay
    operator's pods on the dashboard port. A podSelector without namespaceSelector matches only this namespace,
    so another tenant cannot label its way in. Egress is left open: the pods need object storage and the hub."""
    name = member or owner["metadata"]["name"]
    own = {"matchLabels": {label: name}}
    kuberay = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": config.kuberay_namespace}},
        "podSelector": {"matchLabels": dict(config.kuberay_pod_labels)},
    }
    labels = owned_labels(label, name, "ray-network-policy", config)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(owner, kind, network_policy_name(rayjob, owner["metadata"]["uid"]), labels, {}),
        "spec": {
            "podSelector": own,
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": own}]},
                {"from": [kuberay], "ports": [{"protocol": "TCP", "port": RAY_DASHBOARD_PORT}]},
            ],
        },
    }


def network_policy_name(rayjob: str, owner_uid: str) -> str:
    """Named after the RayJob whose pods it guards (run and TrainingData RayJob names never collide) and
    the owner's uid: a re-created run never meets its predecessor's policy, which the garbage collector
    is still deleting (a 409 there would leave the new pods without one)."""
    return f"{rayjob}-ray-{owner_uid[:8]}"


def build_run_network_policy(run: dict, config: OperatorConfig) -> dict:
    return build_network_policy(run, "TrainingRun", RUN_LABEL, rayjob_name(run["metadata"]["name"]), config)


def rayjob_object(metadata: dict, entrypoint: str, config: OperatorConfig, fields: dict, cluster: dict) -> dict:
    """A K8sJobMode RayJob whose cluster is shut down when the job ends (kept `ttlSecondsAfterFinished`)."""
    return {
        "apiVersion": RAYJOB_API_VERSION,
        "kind": "RayJob",
        "metadata": metadata,
        "spec": {
            "entrypoint": entrypoint,
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,  # Kueue's webhook requires it; frees the GPUs at the end
            # ...but keep the finished cluster's pods (and their logs) this long before KubeRay deletes them.
            "ttlSecondsAfterFinished": config.ray_ttl_seconds_after_finished,
            **fields,
            "rayClusterSpec": cluster,
        },
    }


def run_pod_template(
    run: dict, spec: TrainingRunSpec, config: OperatorConfig, *, container: str, resources: dict, gpu_pool: bool
) -> dict:
    # The GPU pool's nodeSelector and tolerations only on pods that belong there: tolerating the taint is
    # what lets a pod land on a GPU node, and the head (CPU only, long-lived) must never take one.
    return ray_pod_template(
        common_labels(run, config),
        config,
        container=container,
        image=spec.resources.image or config.trainer_image,
        resources=resources,
        env=container_env(run, spec, config),
        configmap=configmap_name(run["metadata"]["name"], spec_hash(run, spec)),  # the spec it was created with
        node_selector=node_selector(spec, config) if gpu_pool else None,
        tolerations=tolerations(spec, config) if gpu_pool else None,
        pull_secrets=spec.resources.image_pull_secrets,
        priority_class=spec.scheduling.priority_class_name,
    )


def head_pod_template(run: dict, spec: TrainingRunSpec, config: OperatorConfig) -> dict:
    r = spec.resources
    res = requests_and_limits(r.head_cpus, r.head_memory)
    return run_pod_template(run, spec, config, container=HEAD_CONTAINER, resources=res, gpu_pool=False)


def worker_pod_template(run: dict, spec: TrainingRunSpec, config: OperatorConfig) -> dict:
    r = spec.resources
    res = requests_and_limits(r.cpus_per_worker, r.memory_per_worker, r.gpus_per_worker)
    return run_pod_template(run, spec, config, container=WORKER_CONTAINER, resources=res, gpu_pool=True)


def submitter_pod_template(run: dict, spec: TrainingRunSpec, config: OperatorConfig) -> dict:
    image = spec.resources.image or config.trainer_image
    r, s = spec.resources, spec.scheduling
    return submitter_template(common_labels(run, config), config, image, r.image_pull_secrets, s.priority_class_name)


def scheduling_labels(spec: TrainingRunSpec) -> dict[str, str]:
    s = spec.scheduling
    labels: dict[str, str] = {}
    if s.queue_name:
        labels[KUEUE_QUEUE_LABEL] = s.queue_name
    if s.volcano_queue:
        labels[VOLCANO_QUEUE_LABEL] = s.volcano_queue
        if s.priority_class_name:
            labels[RAY_PRIORITY_LABEL] = s.priority_class_name
    return labels


def build_rayjob(run: dict, spec: TrainingRunSpec, config: OperatorConfig) -> dict:
    r, s = spec.resources, spec.scheduling
    labels = common_labels(run, config)
    labels.update(scheduling_labels(spec))
    annotations = {SPEC_HASH_ANNOTATION: spec_hash(run, spec)}
    if s.suspend:
        annotations[SUSPENDED_BY_ANNOTATION] = SUSPENDED_BY_SPEC
    fields: dict[str, Any] = {
        "backoffLimit": s.backoff_limit,
        # Forwarded on create; afterwards Kueue owns it when a queue is named (never fight Kueue).
        "suspend": s.suspend,
        "submitterPodTemplate": submitter_pod_template(run, spec, config),
    }
    if s.active_deadline_seconds is not None:
        fields["activeDeadlineSeconds"] = s.active_deadline_seconds
    cluster = ray_cluster_spec(
        config,
        head_pod_template(run, spec, config),
        WORKER_GROUP,
        r.workers,
        worker_pod_template(run, spec, config),
    )
    metadata = child_metadata(run, "TrainingRun", rayjob_name(run["metadata"]["name"]), labels, annotations)
    return rayjob_object(metadata, ENTRYPOINT, config, fields, cluster)


# --------------------------------------------------------------------- mutable fields of a RayJob
# Paths (JSON pointer) of the RayJob that follow a spec change after creation, and the spec fields
# that drive them. Everything else is fixed once the RayJob exists (see decide.MUTABLE_SPEC_FIELDS).
def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


SUSPEND_POINTER = "/spec/suspend"
SUSPENDED_BY_POINTER = _pointer("metadata", "annotations", SUSPENDED_BY_ANNOTATION)


def mutable_paths(desired: dict, *, kueue_managed: bool) -> dict[str, Any]:
    """JSON-pointer -> desired value for every RayJob field the operator may change after creation.

    A value of None means "absent". `suspend` (with its SUSPENDED_BY annotation) is only ours when no
    Kueue queue is named.
    """
    spec = desired["spec"]
    annotations = desired["metadata"]["annotations"]
    out: dict[str, Any] = {
        "/spec/backoffLimit": spec.get("backoffLimit"),
        "/spec/activeDeadlineSeconds": spec.get("activeDeadlineSeconds"),
    }
    if not kueue_managed:
        out[SUSPEND_POINTER] = spec.get("suspend", False)
        out[SUSPENDED_BY_POINTER] = annotations.get(SUSPENDED_BY_ANNOTATION)
    out[_pointer("metadata", "annotations", SPEC_HASH_ANNOTATION)] = annotations[SPEC_HASH_ANNOTATION]
    return out


def _get_pointer(obj: Any, pointer: str) -> tuple[bool, Any]:
    cur = obj
    for raw in pointer.lstrip("/").split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, list):
            idx = int(part)
            if idx >= len(cur):
                return False, None
            cur = cur[idx]
        elif isinstance(cur, dict):
            if part not in cur:
                return False, None
            cur = cur[part]
        else:
            return False, None
    return True, cur


def mutable_patch(desired: dict, current: dict, *, kueue_managed: bool) -> list[dict]:
    """JSON Patch (RFC 6902) ops that bring `current`'s mutable fields to `desired`'s; [] when equal."""
    ops: list[dict] = []
    paths = mutable_paths(desired, kueue_managed=kueue_managed)
    if SUSPEND_POINTER in paths and not paths[SUSPEND_POINTER] and _get_pointer(current, SUSPEND_POINTER)[1]:
        if _get_pointer(current, SUSPENDED_BY_POINTER)[1] != SUSPENDED_BY_SPEC:
            # Suspended, but not by us (see SUSPENDED_BY_ANNOTATION): leave it to whoever did.
            del paths[SUSPEND_POINTER]
    for pointer, want in paths.items():
        present, have = _get_pointer(current, pointer)
        if want is None:
            if present and have is not None:
                ops.append({"op": "remove", "path": pointer})
            continue
        if present and have == want:
            continue
        parent = pointer.rsplit("/", 1)[0]
        parent_present, parent_value = _get_pointer(current, parent)
        if not parent_present or parent_value is None:
            # e.g. metadata.labels absent: create the map with the one key.
            key = pointer.rsplit("/", 1)[1].replace("~1", "/").replace("~0", "~")
            ops.append({"op": "add", "path": parent, "value": {key: want}})
        else:
            ops.append({"op": "add", "path": pointer, "value": want})
    return ops
