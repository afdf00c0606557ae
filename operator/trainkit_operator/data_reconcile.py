"""A TrainingData's ONE idempotent reconcile (decisions in `data_decide`; `wiring` says when it runs),
and the resolution of a run's `dataset:` sources against the TrainingData objects they name.

`wiring` runs it on the object's own events, a timer (progress of the prepare job, index.json appearing)
and changes of its labelled prepare RayJob. No deletion handler and no finalizer: deleting a TrainingData
garbage-collects its RayJob and ConfigMap (ownerReferences) and leaves the shards where they are.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from trainkit import artifacts, storage
from trainkit.spec.data import INDEX_FILE, PROGRESS_FILE, TrainingDataSpec, resolved_uri
from trainkit.spec.load import issues_from

from trainkit_operator.config import OperatorConfig
from trainkit_operator.data_builders import data_rayjob_name
from trainkit_operator.data_decide import data_cluster_error, decide_data, previous_data_status
from trainkit_operator.kube import Kube

log = logging.getLogger("trainkit_operator.data")


def parse_data_spec(raw: Any) -> tuple[TrainingDataSpec | None, str | None]:
    try:
        spec = TrainingDataSpec.model_validate(raw or {})
    except ValidationError as e:
        text = "; ".join(f"spec.{i.path}: {i.message}" if i.path else i.message for i in issues_from(e))
        return None, text[:4000]
    return spec, data_cluster_error(spec)


def _read_optional_json(uri: str, options: storage.StorageOptions) -> dict | None:
    """A small JSON record, or None when absent or unreadable now (the status then keeps what it had)."""
    try:
        doc = storage.read_json(uri, options)
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 - storage trouble must not stop the reconcile
        log.warning("could not read %s: %s", uri, type(e).__name__)
        return None
    return doc if isinstance(doc, dict) else None


def reconcile_data(
    kube: Kube, data: dict, config: OperatorConfig, now: str | None = None
) -> tuple[str, str, str] | None:
    """Read, decide, create what is due, write the status if it changed; the Event of a phase change, if any."""
    now = now or artifacts.now_iso()
    meta = data["metadata"]
    ns, name = meta.get("namespace") or "default", meta["name"]
    prev = previous_data_status(data)
    if prev is not None and prev.phase in ("Ready", "Failed"):
        return None
    spec, spec_error = parse_data_spec(data.get("spec"))
    rayjob = index = progress = None
    if spec is not None and spec_error is None:
        options = storage.StorageOptions(
            endpoint=spec.storage.endpoint or config.default_storage_endpoint, region=spec.storage.region
        )
        uri = resolved_uri(spec)
        index = _read_optional_json(storage.join(uri, INDEX_FILE), options)
        rayjob = kube.get_rayjob(ns, data_rayjob_name(name))
        if rayjob is not None:
            progress = _read_optional_json(storage.join(uri, PROGRESS_FILE), options)
    decision = decide_data(data, spec, spec_error, rayjob, index, progress, config, now)
    if decision.action == "create":
        assert decision.configmap is not None and decision.rayjob is not None
        if decision.network_policy is not None:
            kube.create_network_policy(ns, decision.network_policy)  # before the pods exist
        for create, body in ((kube.create_configmap, decision.configmap), (kube.create_rayjob, decision.rayjob)):
            try:
                create(ns, body)
            except Exception as e:
                if getattr(e, "status", None) != 409:  # made by an earlier reconcile: deterministic names
                    raise
    status = decision.status.model_dump(by_alias=True, mode="json")
    if (data.get("status") or {}) == status:
        return None
    kube.patch_data_status(ns, name, meta.get("resourceVersion"), status)
    phase = decision.status.phase
    if prev is not None and prev.phase == phase:
        return None
    return ("Warning" if phase == "Failed" else "Normal", f"Data{phase}", decision.status.message[:1000])


def resolve_run_datasets(kube: Kube, ns: str, spec, run_status: dict | None):
    """(spec with dataset sources resolved when all are Ready, {source: TrainingData name}, Resolution | None)."""
    from trainkit_operator.data_decide import apply_resolution, recorded_resolution, resolve_sources

    named = {s.name: s.dataset for s in spec.data.sources if s.dataset}
    if not named:
        return spec, named, None
    resolution = recorded_resolution(named, (run_status or {}).get("datasets"))
    if resolution is None:
        resolution = resolve_sources(named, {n: kube.get_data(ns, n) for n in sorted(set(named.values()))})
    if resolution.waiting or resolution.failed:
        return spec, named, resolution
    return apply_resolution(spec, resolution), named, resolution
