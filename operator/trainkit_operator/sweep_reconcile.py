"""A TrainingSweep's ONE idempotent reconcile (decisions in `sweeps`; `wiring` says when it runs).

Names of runs are deterministic, so a 409 on create means an earlier incarnation already made it:
never a duplicate, whatever restarts happen. A sweep that samples from the natural prior needs its
sources' token counts once (index.json, read with the template's own key, guarded like a run's reads);
the status keeps them, so they are never read again for that sweep.
"""

from __future__ import annotations

from pydantic import ValidationError

from trainkit_operator import builders, decide, observe
from trainkit_operator.config import OperatorConfig
from trainkit_operator.data_reconcile import resolve_run_datasets
from trainkit_operator.kube import Kube
from trainkit_operator.sweeps import decide_sweep, needs_prior_tokens, parse_sweep, recorded_prior_tokens


def reconcile_sweep(kube: Kube, sweep: dict, config: OperatorConfig | None = None) -> tuple[str, str, str] | None:
    """Read the sweep's runs, decide, create what is due, write the status if it changed.
    Returns the Event of a phase change (type, reason, message), if any."""
    meta = sweep["metadata"]
    ns = meta.get("namespace") or "default"
    tokens, problem = prior_tokens(kube, ns, sweep, config or OperatorConfig())
    decision = decide_sweep(sweep, kube.list_sweep_runs(ns, meta["name"]), tokens, problem)
    for run in decision.create:
        kube.create_run(ns, run)
    status = decision.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    before = sweep.get("status") or {}
    if before == status:
        return None
    kube.patch_sweep_status(ns, meta["name"], meta.get("resourceVersion"), status)
    if status.get("phase") == before.get("phase"):
        return None
    return (
        "Normal" if status["phase"] != "Failed" else "Warning",
        f"Sweep{status['phase']}",
        status.get("message", ""),
    )


def prior_tokens(kube: Kube, ns: str, sweep: dict, config: OperatorConfig) -> tuple[dict[str, int] | None, str | None]:
    """The sources' token counts when the sweep's prior needs them and its status has none yet: (counts,
    None), or (None, why not). Sources naming a TrainingData are read at its shards once it is Ready."""
    try:
        parsed = parse_sweep(sweep)
    except ValidationError:
        return None, None  # decide_sweep reports the invalid spec
    if not needs_prior_tokens(parsed) or recorded_prior_tokens(sweep) is not None:
        return None, None
    template, _, resolution = resolve_run_datasets(kube, ns, parsed.spec.template, None)
    if resolution is not None and (resolution.waiting or resolution.failed):
        return None, resolution.failed or resolution.waiting
    refused = decide.storage_spec_error(template, config)  # the endpoint allow-list a run's reads keep
    if refused is not None:
        return None, f"template: {refused}"
    secret = builders.credentials_secret(template, config)
    if secret is None:
        return None, "the template names no storage.credentialsSecret: the operator holds no key to read index.json"
    try:
        credentials = kube.read_storage_credentials(ns, secret)
    except ValueError as e:
        return None, str(e)
    except Exception as e:
        if getattr(e, "status", None) != 403:
            raise
        return None, f"the operator may not read Secret {secret!r} in namespace {ns!r} (403 Forbidden)"
    if credentials is None:
        return None, f"Secret {secret!r} does not exist in namespace {ns!r}"
    options = observe.options_for(template, config, credentials)
    uris = {s.name: s.uri for s in template.data.sources if s.uri}
    done = observe.read_pool(config).call(
        ns, lambda: observe.read_index_tokens(uris, options), config.reads_deadline, what="the sources' index.json"
    )
    if done.problem is not None or done.value is None:
        return None, done.problem
    counts, problems = done.value
    if problems:
        return None, "; ".join(problems)
    return counts, None
