"""OperatorConfig: everything the operator takes from its Deployment's environment, read once at start.

No credentials live here, and the operator has no S3 key of its own: it reads a run's progress.json,
checkpoint manifests and eval summaries with THAT run's credentials (the Secret the run names, or the
namespace's default Secret name), through a guarded reader (trainkit.storage.ReadGuard) whose limits
are set here. With no Secret for a run (workload identity), the operator does not read its storage.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping

ENV_PREFIX = "TRAINKIT_"
DEFAULT_TRAINER_IMAGE = "ghcr.io/trainkit/trainkit-trainer:0.1.0"
# How long KubeRay keeps a finished run's Ray pods (RayJob ttlSecondsAfterFinished): long enough to read
# `kubectl logs` of a failed run, short enough that idle GPU workers are not held for long.
DEFAULT_RAY_TTL_SECONDS_AFTER_FINISHED = 600


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {raw}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return int(_float(env, name, default))


def _seconds(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number of seconds >= 0 (0 is meaningful: "at once")."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number of seconds") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {raw}")
    return value


CREDENTIALS_MODES = ("secretPerNamespace", "workloadIdentity")


def normalized_endpoint(endpoint: str) -> str:
    """An endpoint URL as compared with the allow-list: scheme and host lower-cased, no trailing slash."""
    scheme, sep, rest = endpoint.strip().partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}{sep}{host.lower()}{slash}{path}".rstrip("/")


TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


def _json(env: Mapping[str, str], name: str, kind: type):
    raw = env.get(name, "").strip()
    if not raw or raw == "null":
        return kind()
    try:
        value = json.loads(raw)
    except ValueError:
        raise ValueError(f"{name} is not JSON") from None
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be a JSON {'object' if kind is dict else 'list'}")
    return value


def _node_selector(env: Mapping[str, str], name: str) -> dict[str, str]:
    value = _json(env, name, dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{name}: node selector keys and values must be strings")
    return value


def _tolerations(env: Mapping[str, str], name: str) -> tuple[dict, ...]:
    value = _json(env, name, list)
    for t in value:
        if not isinstance(t, dict) or not set(t) <= TOLERATION_KEYS:
            raise ValueError(f"{name}: each toleration is an object with keys among {sorted(TOLERATION_KEYS)}")
    return tuple(value)


# KubeRay's validation (ray-operator/controllers/ray/utils/validation.go, v1.7.0): authOptions.mode token
# needs rayVersion >= 2.52.0.
MIN_RAY_FOR_TOKEN_AUTH = (2, 52, 0)


def version_tuple(version: str) -> tuple[int, ...]:
    """'2.60.0' -> (2, 60, 0); anything unparsable sorts lowest."""
    try:
        return tuple(int(x) for x in version.split(".")[:3])
    except ValueError:
        return (0,)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def _labels(env: Mapping[str, str], name: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in _list(env, name):
        if "=" not in item:
            raise ValueError(f"{name}: '{item}' is not key=value")
        k, v = item.split("=", 1)
        labels[k.strip()] = v.strip()
    return labels


def _label_pair(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """One `key=value` label (unset or empty: None)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    key, sep, value = raw.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{name}: {raw[:100]!r} is not key=value")
    return key.strip(), value.strip()


def _allow_list(env: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    """Unset: None (no restriction); set, even to "": the allow-list."""
    return _list(env, name) if name in env else None


def _port(env: Mapping[str, str], name: str) -> int | None:
    """A TCP port 1-65535, or None when unset or empty (off)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{name} must be a port number 1-65535, got {raw!r}")
    return int(raw)


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in env.get(name, "").split(",") if x.strip())


@dataclass(frozen=True)
class OperatorConfig:
    # Trainer image used when a run does not name one (spec.resources.image): the image the chart
    # (trainer.image) and jobs/*.yaml name, so an operator started without the chart runs the same one.
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    image_pull_policy: str = "IfNotPresent"
    # Namespaces to watch; empty = cluster-wide.
    namespaces: tuple[str, ...] = ()
    # Watching the whole cluster (the chart sets it there): only namespaces carrying this label (key, value)
    # opted in to trainkit; a run, TrainingData or sweep elsewhere is refused (Failed) before anything is
    # created, and the chart's ValidatingAdmissionPolicy refuses the operator's creates there too. None: every
    # watched namespace (a namespaced install lists its namespaces; an operator started without the chart).
    tenant_namespace_label: tuple[str, str] | None = None
    # The reconcile timer: how often every run is re-read (progress, eval) without an event.
    timer_interval: float = 30.0
    # The first tick: create/resume handlers have just reconciled, so waiting one interval saves a
    # redundant full reconcile of every run right after it appears (or after a restart).
    timer_initial_delay: float = 30.0
    # Object storage defaults for runs that do not set spec.storage.
    default_storage_endpoint: str | None = None
    default_credentials_secret: str | None = None
    # Ray version stamped into rayClusterSpec.rayVersion (must match the trainer image).
    ray_version: str = "2.60.0"
    # Kopf watch timeouts (nolar/kopf#585, #1276: watches go quiet without them).
    watch_server_timeout: float = 300.0
    watch_client_timeout: float = 330.0
    watch_connect_timeout: float = 30.0
    # Worker threads for the (synchronous) Kubernetes client calls of handlers.
    max_workers: int = 16
    # Identity for peering (one active operator); None = standalone.
    peering_name: str | None = None
    # Service account the Ray pods run as (None: the namespace's default).
    service_account: str | None = None
    # Free-form extra labels on children (e.g. for cost attribution); never secrets.
    extra_labels: dict[str, str] = field(default_factory=dict)
    # The GPU node pool's defaults, for runs that set no spec.resources.nodeSelector / tolerations.
    default_node_selector: dict[str, str] = field(default_factory=dict)
    default_tolerations: tuple[dict, ...] = ()
    # RayJob ttlSecondsAfterFinished: seconds the Ray pods outlive the job (0: deleted at once, logs with them).
    ray_ttl_seconds_after_finished: int = DEFAULT_RAY_TTL_SECONDS_AFTER_FINISHED
    # secretPerNamespace: every run's storage key is a Secret in its own namespace (the one it names, else
    # default_credentials_secret); a run with neither is refused. workloadIdentity: runs may name no
    # Secret (their pods use the ServiceAccount's IRSA / GKE identity) and the operator then does not
    # read their storage (status shows the RayJob's state only).
    credentials_mode: str = "secretPerNamespace"
    # Endpoints a run may name in spec.storage.endpoint, besides default_storage_endpoint.
    allowed_endpoints: tuple[str, ...] = ()
    # The Hugging Face hub the prepare pods read hf:// inputs from (their HF_ENDPOINT): a mirror or an in-house
    # hub; None: huggingface_hub's default (https://huggingface.co). The platform's choice, never a tenant's.
    hf_endpoint: str | None = None
    # The guarded reads of a run's artifacts: bytes per object, seconds per request, per reconcile,
    # and the threads doing them (off kopf's handler threads, at most one reconcile's reads per namespace).
    read_max_bytes: int = 1 << 20
    read_timeout: float = 5.0
    reads_deadline: float = 20.0
    read_workers: int = 4
    # Placement and priority policy (None: unrestricted, as for an operator started without the chart; a
    # tuple, even empty, is an allow-list; the chart always sets them): which priorityClassName, toleration
    # keys, nodeSelector keys and Volcano queues a run may name, and whether it must name a Kueue queue.
    allowed_priority_classes: tuple[str, ...] | None = None
    allowed_toleration_keys: tuple[str, ...] | None = None
    allowed_node_selector_keys: tuple[str, ...] | None = None
    allowed_volcano_queues: tuple[str, ...] | None = None
    require_queue_name: bool = False
    # Ray token authentication (rayClusterSpec.authOptions.mode: token): KubeRay >= 1.5.1 then makes a
    # Secret with a random token per cluster and gives it to every Ray container, the submitter and its own
    # dashboard client; without it anyone who reaches a head's port 8265 runs code with the run's
    # credentials. KubeRay 1.4's CRD has no authOptions (it would be pruned): set False there.
    ray_token_auth: bool = True
    # A NetworkPolicy per run (and per prepare job): its Ray pods admit traffic only from pods of the same
    # run and from the KubeRay operator's pods (dashboard port), so other tenants cannot reach a head.
    network_policy: bool = True
    kuberay_namespace: str = "kuberay-system"
    kuberay_pod_labels: dict[str, str] = field(default_factory=lambda: {"app.kubernetes.io/name": "kuberay-operator"})
    # Prometheus metrics (trainkit_operator.metrics) on metrics_host:metrics_port/metrics; None: not served
    # (an operator started without the chart), 0: any free port (tests). The chart serves them on the pod's
    # addresses (0.0.0.0), port operator.metrics.port.
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "OperatorConfig":
        env = os.environ if env is None else env
        p = ENV_PREFIX
        extra = _labels(env, p + "EXTRA_LABELS")
        cfg = cls(
            trainer_image=env.get(p + "TRAINER_IMAGE") or cls.trainer_image,
            image_pull_policy=env.get(p + "IMAGE_PULL_POLICY") or cls.image_pull_policy,
            namespaces=_list(env, p + "NAMESPACES"),
            tenant_namespace_label=_label_pair(env, p + "TENANT_NAMESPACE_LABEL"),
            timer_interval=_float(env, p + "TIMER_INTERVAL", cls.timer_interval),
            timer_initial_delay=_float(
                env, p + "TIMER_INITIAL_DELAY", _float(env, p + "TIMER_INTERVAL", cls.timer_initial_delay)
            ),
            default_storage_endpoint=env.get(p + "STORAGE_ENDPOINT") or None,
            default_credentials_secret=env.get(p + "CREDENTIALS_SECRET") or None,
            ray_version=env.get(p + "RAY_VERSION") or cls.ray_version,
            watch_server_timeout=_float(env, p + "WATCH_SERVER_TIMEOUT", cls.watch_server_timeout),
            watch_client_timeout=_float(env, p + "WATCH_CLIENT_TIMEOUT", cls.watch_client_timeout),
            watch_connect_timeout=_float(env, p + "WATCH_CONNECT_TIMEOUT", cls.watch_connect_timeout),
            max_workers=_int(env, p + "MAX_WORKERS", cls.max_workers),
            peering_name=env.get(p + "PEERING") or None,
            service_account=env.get(p + "RAY_SERVICE_ACCOUNT") or None,
            extra_labels=extra,
            default_node_selector=_node_selector(env, p + "NODE_SELECTOR"),
            default_tolerations=_tolerations(env, p + "TOLERATIONS"),
            ray_ttl_seconds_after_finished=_seconds(
                env, p + "RAY_TTL_SECONDS_AFTER_FINISHED", cls.ray_ttl_seconds_after_finished
            ),
            credentials_mode=env.get(p + "CREDENTIALS_MODE") or cls.credentials_mode,
            allowed_endpoints=tuple(normalized_endpoint(e) for e in _list(env, p + "ALLOWED_ENDPOINTS")),
            hf_endpoint=env.get(p + "HF_ENDPOINT") or None,
            read_max_bytes=_int(env, p + "READ_MAX_BYTES", cls.read_max_bytes),
            read_timeout=_float(env, p + "READ_TIMEOUT", cls.read_timeout),
            reads_deadline=_float(env, p + "READS_DEADLINE", cls.reads_deadline),
            read_workers=_int(env, p + "READ_WORKERS", cls.read_workers),
            allowed_priority_classes=_allow_list(env, p + "ALLOWED_PRIORITY_CLASSES"),
            allowed_toleration_keys=_allow_list(env, p + "ALLOWED_TOLERATION_KEYS"),
            allowed_node_selector_keys=_allow_list(env, p + "ALLOWED_NODE_SELECTOR_KEYS"),
            allowed_volcano_queues=_allow_list(env, p + "ALLOWED_VOLCANO_QUEUES"),
            require_queue_name=_bool(env, p + "REQUIRE_QUEUE_NAME", cls.require_queue_name),
            ray_token_auth=_bool(env, p + "RAY_TOKEN_AUTH", cls.ray_token_auth),
            network_policy=_bool(env, p + "NETWORK_POLICY", cls.network_policy),
            kuberay_namespace=env.get(p + "KUBERAY_NAMESPACE") or cls.kuberay_namespace,
            kuberay_pod_labels=_labels(env, p + "KUBERAY_POD_LABELS") or {"app.kubernetes.io/name": "kuberay-operator"},
            metrics_port=_port(env, p + "METRICS_PORT"),
            metrics_host=env.get(p + "METRICS_HOST") or cls.metrics_host,
        )
        if cfg.credentials_mode not in CREDENTIALS_MODES:
            raise ValueError(
                f"{p}CREDENTIALS_MODE must be one of {', '.join(CREDENTIALS_MODES)}, got {cfg.credentials_mode!r}"
            )
        for endpoint in cfg.allowed_endpoints:
            if not endpoint.startswith(("http://", "https://")):
                raise ValueError(f"{p}ALLOWED_ENDPOINTS: {endpoint!r} is not an http(s):// URL")
        if cfg.hf_endpoint is not None and not cfg.hf_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"{p}HF_ENDPOINT: {cfg.hf_endpoint!r} is not an http(s):// URL")
        if cfg.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(
                f"{p}IMAGE_PULL_POLICY must be Always, IfNotPresent or Never, got {cfg.image_pull_policy!r}"
            )
        if cfg.ray_token_auth and version_tuple(cfg.ray_version) < MIN_RAY_FOR_TOKEN_AUTH:
            raise ValueError(
                f"{p}RAY_TOKEN_AUTH needs Ray >= 2.52.0 (KubeRay refuses authOptions below it), but "
                f"{p}RAY_VERSION is {cfg.ray_version!r}; upgrade the trainer image or set {p}RAY_TOKEN_AUTH=false"
            )
        if cfg.watch_client_timeout <= cfg.watch_server_timeout:
            raise ValueError(f"{p}WATCH_CLIENT_TIMEOUT must exceed {p}WATCH_SERVER_TIMEOUT")
        return cfg
