"""Pure builders of a TrainingData's children: the spec ConfigMap and the prepare RayJob.

The same skeleton as the training RayJob, built by the same functions of `builders`: the TrainingData
reaches the job as a file mounted from the ConfigMap and the entrypoint is a constant; storage
credentials and the Hugging Face token are `secretKeyRef`s only; every container is non-root with no
privilege escalation and all capabilities dropped; no service-account token is mounted. The RayJob is
named `data-NAME` (never the name of a run's RayJob) and labelled with the TrainingData's name.
"""

from __future__ import annotations

from trainkit.spec.data import HF_TOKEN_KEY, TrainingDataSpec
from trainkit.storage import HUB_ENDPOINT_ENV

from trainkit_operator.builders import (
    SPEC_HASH_ANNOTATION,
    SPEC_PATH,
    build_network_policy,
    child_metadata,
    configmap_name,
    document_hash,
    owned_labels,
    ray_cluster_spec,
    ray_pod_template,
    rayjob_object,
    requests_and_limits,
    spec_configmap,
    spec_file_document,
    storage_env_entries,
    submitter_template,
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


def data_configmap_name(data_name: str, digest: str) -> str:
    return configmap_name(f"data-{data_name}", digest)


def data_spec_document(data: dict, spec: TrainingDataSpec) -> dict:
    return spec_file_document(data, DATA_KIND, spec)


def data_spec_hash(data: dict, spec: TrainingDataSpec) -> str:
    return document_hash(data_spec_document(data, spec))


def data_labels(data: dict, config: OperatorConfig | None = None) -> dict[str, str]:
    return owned_labels(DATA_LABEL, data["metadata"]["name"], "training-data", config)


def build_data_configmap(data: dict, spec: TrainingDataSpec, config: OperatorConfig | None = None) -> dict:
    name = data_configmap_name(data["metadata"]["name"], data_spec_hash(data, spec))
    return spec_configmap(data, DATA_KIND, name, data_labels(data, config), data_spec_document(data, spec))


def build_data_network_policy(data: dict, config: OperatorConfig) -> dict:
    return build_network_policy(data, DATA_KIND, DATA_LABEL, data_rayjob_name(data["metadata"]["name"]), config)


def data_credentials_secret(spec: TrainingDataSpec, config: OperatorConfig) -> str | None:
    return spec.storage.credentials_secret or config.default_credentials_secret


def data_env(data: dict, spec: TrainingDataSpec, config: OperatorConfig) -> list[dict]:
    """Endpoints and region as values; storage credentials and the hub token ONLY as secretKeyRefs."""
    env: list[dict] = [{"name": "TRAINKIT_SPEC", "value": SPEC_PATH}]
    endpoint = spec.storage.endpoint or config.default_storage_endpoint
    env += storage_env_entries(endpoint, spec.storage.region, data_credentials_secret(spec, config))
    if config.hf_endpoint:
        env.append({"name": HUB_ENDPOINT_ENV, "value": config.hf_endpoint})
    if spec.hf_token_secret:
        env.append(
            {
                "name": HF_TOKEN_KEY,
                "valueFrom": {"secretKeyRef": {"name": spec.hf_token_secret, "key": HF_TOKEN_KEY, "optional": False}},
            }
        )
    return env


def _prepare_pod(data: dict, spec: TrainingDataSpec, config: OperatorConfig, container: str, cpus: float, memory: str):
    return ray_pod_template(
        data_labels(data, config),
        config,
        container=container,
        image=spec.resources.image or config.trainer_image,
        resources=requests_and_limits(cpus, memory),
        env=data_env(data, spec, config),
        configmap=data_configmap_name(data["metadata"]["name"], data_spec_hash(data, spec)),
        shared_memory=False,  # tokenizing needs no /dev/shm beyond the default
    )


def build_data_rayjob(data: dict, spec: TrainingDataSpec, config: OperatorConfig) -> dict:
    """The prepare RayJob: a CPU-only Ray cluster; the head runs the driver, `tokenize` workers the units."""
    r = spec.resources
    labels = data_labels(data, config)
    fields = {
        # A unit's failure is in prepare-progress.json; a re-run would fail the same way.
        "backoffLimit": 0,
        "submitterPodTemplate": submitter_template(labels, config, r.image or config.trainer_image),
    }
    cluster = ray_cluster_spec(
        config,
        _prepare_pod(data, spec, config, PREPARE_HEAD_CONTAINER, r.head_cpus, r.head_memory),
        PREPARE_WORKER_GROUP,
        r.workers,
        _prepare_pod(data, spec, config, PREPARE_WORKER_CONTAINER, r.cpus_per_worker, r.memory_per_worker),
    )
    annotations = {SPEC_HASH_ANNOTATION: data_spec_hash(data, spec)}
    metadata = child_metadata(data, DATA_KIND, data_rayjob_name(data["metadata"]["name"]), labels, annotations)
    return rayjob_object(metadata, PREPARE_ENTRYPOINT, config, fields, cluster)
