"""RUN arguments of `trainkit logs` and `kubectl trainkit`: a run's output URI, or the name of a TrainingRun
in the current kube context, whose status (status.artifacts.output, else spec.output.uri) says where it writes."""

from __future__ import annotations

import os

from trainkit.spec.models import API_GROUP, API_VERSION


class RunRefError(ValueError):
    """The RUN argument names nothing readable; the message says which and why."""


def looks_like_uri(ref: str) -> bool:
    """An output URI (s3://, file://) or an existing local folder, rather than a TrainingRun name (pure but for the stat)."""
    return "://" in ref or os.sep in ref or os.path.isdir(ref)


def output_uri_of_run_object(obj: dict, where: str) -> str:
    """The output URI a TrainingRun object points at (pure)."""
    status = obj.get("status") or {}
    uri = (status.get("artifacts") or {}).get("output") or ((obj.get("spec") or {}).get("output") or {}).get("uri")
    if not isinstance(uri, str) or not uri:
        raise RunRefError(f"{where}: neither status.artifacts.output nor spec.output.uri is set")
    return uri


def current_namespace() -> str:
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts()
    except (config.ConfigException, OSError) as e:
        raise RunRefError(f"no kube context to find TrainingRuns in: {e}") from None
    return (active or {}).get("context", {}).get("namespace") or "default"


def get_training_run(name: str, namespace: str | None = None) -> dict:
    """The TrainingRun `name` from the API server of the current kube context."""
    from kubernetes import client, config

    ns = namespace or current_namespace()
    try:
        api = client.CustomObjectsApi(config.new_client_from_config())
    except (config.ConfigException, OSError) as e:
        raise RunRefError(f"no kube context to find TrainingRun {name} in: {e}") from None
    try:
        return api.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, "trainingruns", name)
    except client.ApiException as e:
        if e.status == 404:
            raise RunRefError(f"TrainingRun {ns}/{name}: not found") from None
        raise RunRefError(f"TrainingRun {ns}/{name}: the API server answered {e.status} {e.reason}") from None
    except OSError as e:  # urllib3's connection errors are OSErrors
        raise RunRefError(f"TrainingRun {ns}/{name}: cannot reach the API server: {type(e).__name__}") from None


def resolve_output_uri(ref: str, namespace: str | None = None) -> str:
    if looks_like_uri(ref):
        return ref
    ns = namespace or current_namespace()
    return output_uri_of_run_object(get_training_run(ref, ns), f"TrainingRun {ns}/{ref}")
