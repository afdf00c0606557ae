"""Pure builders of a TrainingData's children: the spec ConfigMap and the prepare RayJob.

Same rules as the training RayJob (`builders`), by reusing its security helpers: the TrainingData
reaches the job as a file mounted from the ConfigMap and the entrypoint is a constant; storage
credentials and the Hugging Face token are `secretKeyRef`s only; every container is non-root with no
privilege escalation and all capabilities dropped; no service-account token is mounted. The RayJob is
named `data-NAME` (never the name of a run's RayJob) and labelled with the TrainingData's name.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from trainkit.spec.data import HF_TOKEN_KEY, TrainingDataSpec
from trainkit.spec.models import TRAINING_RUN_API_VERSION

from trainkit_operator.builders import (
    CREDENTIAL_KEYS,
    MANAGED_BY,
    RAYJOB_API_VERSION,
    SPEC_DIR,
    SPEC_HASH_ANNOTATION,
    SPEC_KEY,
    SPEC_PATH,
    container_security_context,
    pod_security_context,
    quantity,
)
from trainkit_operator.config import OperatorConfig

DATA_LABEL = "trainkit.dev/data"
DATA_KIND = "TrainingData"
# A constant: nothing from the spec is ever interpolated into the command line.
PREPARE_ENTRYPOINT = f"python -m trainkit.jobs.prepare --spec {SPEC_PATH}"
PREPARE_HEAD_CONTAINER = "ray-head"
PREPARE_WORKER_CONTAINER = "ray-worker"
PREPARE_WORKER_GROUP = "tokenize"


def data_rayjob_name(data_name: str) -> str:
    return f"data-{data_name}"


def data_configmap_name(data_name: str) -> str:
    return f"data-{data_name}-spec"


def data_spec_json(data: dict, spec: TrainingDataSpec) -> str:
    meta = data["metadata"]
    doc = {
        "apiVersion": TRAINING_RUN_API_VERSION,
        "kind": DATA_KIND,
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace") or "default"},
        "spec": spec.model_dump(by_alias=True, mode="json", exclude_none=True),
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def data_spec_hash(data: dict, spec: TrainingDataSpec) -> str:
    return hashlib.sha256(data_spec_json(data, spec).encode()).hexdigest()[:16]


def data_owner_reference(data: dict) -> dict:
    meta = data["metadata"]
    if not meta.get("uid"):
        raise ValueError(f"TrainingData {meta.get('name')!r} has no uid: read it back from the API server first")
    return {
        "apiVersion": data.get("apiVersion") or TRAINING_RUN_API_VERSION,
        "kind": DATA_KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def data_labels(data: dict, config: OperatorConfig | None = None) -> dict[str, str]:
    labels = dict(config.extra_labels) if config else {}
    labels.update(
        {
            DATA_LABEL: data["metadata"]["name"],
            "app.kubernetes.io/name": "trainkit",
            "app.kubernetes.io/component": "training-data",
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }
    )
    return labels


def build_data_configmap(data: dict, spec: TrainingDataSpec, config: OperatorConfig | None = None) -> dict:
    meta = data["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": data_configmap_name(meta["name"]),
            "namespace": meta.get("namespace") or "default",
            "labels": data_labels(data, config),
            "annotations": {SPEC_HASH_ANNOTATION: data_spec_hash(data, spec)},
            "ownerReferences": [data_owner_reference(data)],
        },
        "data": {SPEC_KEY: data_spec_json(data, spec)},
    }


def data_credentials_secret(spec: TrainingDataSpec, config: OperatorConfig) -> str | None:
    return spec.storage.credentials_secret or config.default_credentials_secret


def data_env(data: dict, spec: TrainingDataSpec, config: OperatorConfig) -> list[dict]:
    """Endpoint and region as values; storage credentials and the hub token ONLY as secretKeyRefs."""
    env: list[dict] = [{"name": "TRAINKIT_SPEC", "value": SPEC_PATH}]
    endpoint = spec.storage.endpoint or config.default_storage_endpoint
    if endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": endpoint})
    if spec.storage.region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": spec.storage.region})
    secret = data_credentials_secret(spec, config)
    if secret:
        for key in CREDENTIAL_KEYS:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": False}}})
    if spec.hf_token_secret:
        env.append(
            {
                "name": HF_TOKEN_KEY,
                "valueFrom": {"secretKeyRef": {"name": spec.hf_token_secret, "key": HF_TOKEN_KEY, "optional": False}},
            }
        )
    return env


def _prepare_pod(data: dict, spec: TrainingDataSpec, config: OperatorConfig, container: str, cpus: float, memory: str):
    res = {"cpu": quantity(cpus), "memory": memory}
    pod: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "containers": [
            {
                "name": container,
                "image": spec.resources.image or config.trainer_image,
                "imagePullPolicy": config.image_pull_policy,
                "resources": {"requests": dict(res), "limits": dict(res)},
                "env": data_env(data, spec, config),
                "volumeMounts": [{"name": "trainkit-spec", "mountPath": SPEC_DIR, "readOnly": True}],
                "securityContext": container_security_context(),
            }
        ],
        "volumes": [
            {
                "name": "trainkit-spec",
                "configMap": {
                    "name": data_configmap_name(data["metadata"]["name"]),
                    "items": [{"key": SPEC_KEY, "path": SPEC_KEY}],
                },
            }
        ],
        "automountServiceAccountToken": False,  # Ray pods never talk to the Kubernetes API
    }
    if config.service_account:
        pod["serviceAccountName"] = config.service_account
    return {"metadata": {"labels": data_labels(data, config)}, "spec": pod}


def build_data_rayjob(data: dict, spec: TrainingDataSpec, config: OperatorConfig) -> dict:
    """The prepare RayJob: a CPU-only Ray cluster; the head runs the driver, `tokenize` workers the units."""
    meta = data["metadata"]
    r = spec.resources
    submitter = {
        "metadata": {"labels": data_labels(data, config)},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": pod_security_context(),
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "ray-job-submitter",
                    "image": r.image or config.trainer_image,
                    "imagePullPolicy": config.image_pull_policy,
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "256Mi"},
                        "limits": {"cpu": "1", "memory": "1Gi"},
                    },
                    "securityContext": container_security_context(),
                }
            ],
        },
    }
    return {
        "apiVersion": RAYJOB_API_VERSION,
        "kind": "RayJob",
        "metadata": {
            "name": data_rayjob_name(meta["name"]),
            "namespace": meta.get("namespace") or "default",
            "labels": data_labels(data, config),
            "annotations": {SPEC_HASH_ANNOTATION: data_spec_hash(data, spec)},
            "ownerReferences": [data_owner_reference(data)],
        },
        "spec": {
            "entrypoint": PREPARE_ENTRYPOINT,
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": config.ray_ttl_seconds_after_finished,
            # A unit's failure is in prepare-progress.json; a re-run would fail the same way.
            "backoffLimit": 0,
            "submitterPodTemplate": submitter,
            "rayClusterSpec": {
                "rayVersion": config.ray_version,
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": _prepare_pod(data, spec, config, PREPARE_HEAD_CONTAINER, r.head_cpus, r.head_memory),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": PREPARE_WORKER_GROUP,
                        "replicas": r.workers,
                        "minReplicas": r.workers,
                        "maxReplicas": r.workers,
                        "rayStartParams": {},
                        "template": _prepare_pod(
                            data, spec, config, PREPARE_WORKER_CONTAINER, r.cpus_per_worker, r.memory_per_worker
                        ),
                    }
                ],
            },
        },
    }
