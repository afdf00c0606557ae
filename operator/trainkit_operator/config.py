"""OperatorConfig: everything the operator takes from its Deployment's environment, read once at start.

No credentials live here: the operator's own S3 credentials (to read progress.json and eval summaries)
are the standard AWS_* variables that its Deployment fills from a Secret; botocore reads them itself.
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "OperatorConfig":
        env = os.environ if env is None else env
        p = ENV_PREFIX
        extra: dict[str, str] = {}
        for item in _list(env, p + "EXTRA_LABELS"):
            if "=" not in item:
                raise ValueError(f"{p}EXTRA_LABELS: '{item}' is not key=value")
            k, v = item.split("=", 1)
            extra[k.strip()] = v.strip()
        cfg = cls(
            trainer_image=env.get(p + "TRAINER_IMAGE") or cls.trainer_image,
            image_pull_policy=env.get(p + "IMAGE_PULL_POLICY") or cls.image_pull_policy,
            namespaces=_list(env, p + "NAMESPACES"),
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
        )
        if cfg.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(
                f"{p}IMAGE_PULL_POLICY must be Always, IfNotPresent or Never, got {cfg.image_pull_policy!r}"
            )
        if cfg.watch_client_timeout <= cfg.watch_server_timeout:
            raise ValueError(f"{p}WATCH_CLIENT_TIMEOUT must exceed {p}WATCH_SERVER_TIMEOUT")
        return cfg
