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
from trainkit.spec.data import HF_TOKEN_KEY, TrainingDataSpec, resolved_uri
from trainkit.spec.load import issues_from
from trainkit.spec.status import final_status

from trainkit_operator import decide, observe
from trainkit_operator.config import OperatorConfig
from trainkit_operator.data_builders import data_credentials_secret, data_rayjob_name
from trainkit_operator.data_decide import (
    DATA_TERMINAL,
    StorageState,
    data_cluster_error,
    decide_data,
    previous_data_status,
)
from trainkit_operator.kube import Kube

log = logging.getLogger("trainkit_operator.data")


def parse_data_spec(raw: Any) -> tuple[TrainingDataSpec | None, str | None]:
    try:
        spec = TrainingDataSpec.model_validate(raw or {})
    except ValidationError as e:
        text = "; ".join(f"spec.{i.path}: {i.message}" if i.path else i.message for i in issues_from(e))
        return None, text[:4000]
    return spec, data_cluster_error(spec)


def data_credentials(kube: Kube, ns: str, secret: str) -> tuple[storage.Credentials | None, str | None]:
    """The TrainingData's storage key from its Secret, or why it cannot be used (a spec error's text)."""
    try:
        credentials = kube.read_storage_credentials(ns, secret)
    except ValueError as e:  # the Secret lacks the keys or holds no text (the message names it, never a value)
        return None, f"spec.storage.credentialsSecret: {e}"
    except Exception as e:
        if getattr(e, "status", None) != 403:
            raise
        return None, decide.secret_spec_error(secret, ns, "forbidden")
    if credentials is None:
        return None, decide.secret_spec_error(secret, ns, "missing")
    return credentials, None


def hub_token_error(kube: Kube, ns: str, spec: TrainingDataSpec, rayjob: dict | None) -> str | None:
    """Why spec.hfTokenSecret cannot give the prepare pods HF_TOKEN (the runs' Secret rule, `decide`), or None.
    Checked before the RayJob exists; afterwards a Secret or key that vanished shows as the pods'
    CreateContainerConfigError (PodsNotReady)."""
    secret = spec.hf_token_secret
    if not decide.secret_check_needed(secret, rayjob):
        return None
    state = kube.secret_state(ns, secret, keys=(HF_TOKEN_KEY,))
    return decide.secret_spec_error(secret, ns, state, field="spec.hfTokenSecret", keys=(HF_TOKEN_KEY,))


def reconcile_data(
    kube: Kube, data: dict, config: OperatorConfig, now: str | None = None
) -> tuple[str, str, str] | None:
    """Read, decide, create what is due, write the status if it changed; the Event of the change, if any
    (`decide.transition_event`, the runs' rule).

    index.json and prepare-progress.json are read with the TrainingData's OWN key (its Secret, or the chart's
    default Secret name, in its namespace), guarded and deadline-bound in the read pool, as a run's records
    are (observe.py); the operator has no key of its own. With no Secret at all (workload identity) nothing is
    read: the data is Ready when its prepare RayJob succeeds. While the prepare's Ray cluster is starting, its
    pods (or KubeRay's Warning Events) are read as a run's are (`decide.reads_needed`)."""
    now = now or artifacts.now_iso()
    meta = data["metadata"]
    ns, name = meta.get("namespace") or "default", meta["name"]
    prev = previous_data_status(data)
    if prev is not None and final_status(prev.phase, prev.reason, prev.ray_job_name, DATA_TERMINAL):
        return None
    spec, spec_error = parse_data_spec(data.get("spec"))
    if spec is not None and spec_error is None:
        spec_error = decide.storage_spec_error(spec, config)
    rayjob = None
    seen = observe.PreparedObserved()
    storage_state: StorageState = "none"
    if spec is not None and spec_error is None:
        rayjob = kube.get_rayjob(ns, data_rayjob_name(name))
        if decide.namespace_check_needed(config, rayjob):
            spec_error = decide.namespace_opt_in_error(ns, kube.namespace_labels(ns), config)
    if spec is not None and spec_error is None:
        secret = data_credentials_secret(spec, config)
        secret_errors: list[str] = []
        if secret is not None:
            credentials, secret_error = data_credentials(kube, ns, secret)
            if credentials is None:
                if rayjob is None:
                    secret_errors.append(secret_error or "")
                seen, storage_state = observe.PreparedObserved(problems=(secret_error or "",)), "unreadable"
            else:
                options = observe.options_for(spec, config, credentials)
                pool = observe.read_pool(config)
                seen = pool.observe_prepared(ns, resolved_uri(spec), options, config.reads_deadline)
                storage_state = "unreadable" if seen.deferred or seen.problems else "read"
        if hub_error := hub_token_error(kube, ns, spec, rayjob):
            secret_errors.append(hub_error)
        spec_error = "; ".join(secret_errors) or None
    reads = decide.reads_needed(rayjob, spec_valid=spec_error is None)
    pods = kube.list_pods(ns, f"ray.io/cluster={reads.pods_of_cluster}") if reads.pods_of_cluster else None
    events = kube.list_rayjob_events(ns, data_rayjob_name(name)) if reads.rayjob_events else None
    decision = decide_data(
        data,
        spec,
        spec_error,
        rayjob,
        seen.index,
        seen.progress if rayjob is not None else None,
        config,
        now,
        storage_state=storage_state,
        storage_problem="; ".join(seen.problems or ()),
        starting=decide.starting_problem(pods, events),
    )
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
    return decide.transition_event(prev, decision.status)


def resolve_run_datasets(kube: Kube, ns: str, spec, run_status: dict | None):
    """(spec with dataset sources resolved when all are Ready, {source: TrainingData name}, Resolution | None)."""
    from trainkit_operator.data_decide import apply_resolution, recorded_resolution, resolve_sources

    named = {s.name: s.dataset for s in spec.data.held_out_sets() if s.dataset}
    if not named:
        return spec, named, None
    resolution = recorded_resolution(named, (run_status or {}).get("datasets"))
    if resolution is None:
        resolution = resolve_sources(named, {n: kube.get_data(ns, n) for n in sorted(set(named.values()))})
    if resolution.waiting or resolution.failed:
        return spec, named, resolution
    return apply_resolution(spec, resolution), named, resolution
