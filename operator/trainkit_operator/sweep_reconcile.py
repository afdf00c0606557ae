"""A TrainingSweep's ONE idempotent reconcile (decisions in `sweeps`; `wiring` says when it runs).

Names of runs and packs are deterministic, so a 409 on create means an earlier incarnation already made it:
never a duplicate, whatever restarts happen. A sweep that samples from the natural prior needs its
sources' token counts once (index.json, read with the template's own key, guarded like a run's reads);
the status keeps them, so they are never read again for that sweep.
"""

from __future__ import annotations

import logging
from functools import partial

from pydantic import ValidationError

from trainkit import artifacts, storage
from trainkit.spec.sweep_status import FullLeaderboard, TrainingSweepStatus

from trainkit_operator import builders, decide, observe
from trainkit_operator.config import OperatorConfig
from trainkit_operator.data_reconcile import resolve_run_datasets
from trainkit_operator.kube import Kube
from trainkit_operator.sweeps import (
    SweepDecision,
    decide_packs,
    decide_sweep,
    leaderboard_write_due,
    needs_prior_tokens,
    parse_sweep,
    recorded_prior_tokens,
    refused_sweep,
)

log = logging.getLogger(__name__)


def reconcile_sweep(kube: Kube, sweep: dict, config: OperatorConfig | None = None) -> tuple[str, str, str] | None:
    """Read the sweep's runs, decide, create what is due (runs, then the packs whose runs all exist), keep the
    whole leaderboard in object storage, write the status if it changed.
    Returns the Event of a phase change (type, reason, message), if any."""
    config = config or OperatorConfig()
    meta = sweep["metadata"]
    ns = meta.get("namespace") or "default"
    runs = kube.list_sweep_runs(ns, meta["name"])
    tokens, tokens_problem = prior_tokens(kube, ns, sweep, config)
    decision = decide_sweep(sweep, runs, tokens, tokens_problem)
    if decision.create and decide.namespace_check_needed(config, None):
        # runs are created only in a namespace that opted in (each would be refused there anyway)
        if refusal := decide.namespace_opt_in_error(ns, kube.namespace_labels(ns), config):
            decision = refused_sweep(sweep, refusal)
    for run in decision.create:
        kube.create_run(ns, run)
    status = decision.status
    if decision.parsed is not None and decision.parsed.spec.packing is not None:
        if decision.create:
            runs = kube.list_sweep_runs(ns, meta["name"])  # the new runs' uids: each pack names its runs'
        problem = create_packs(kube, ns, sweep, decision, runs, config)
        if problem is not None:
            status.message = f"{status.message}; packs not created: {problem}"
    status.full_leaderboard = keep_full_leaderboard(kube, ns, sweep, decision, config)
    written = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    before = sweep.get("status") or {}
    if before == written:
        return None
    kube.patch_sweep_status(ns, meta["name"], meta.get("resourceVersion"), written)
    if written.get("phase") == before.get("phase"):
        return None
    return (
        "Normal" if written["phase"] != "Failed" else "Warning",
        f"Sweep{written['phase']}",
        written.get("message", ""),
    )


def create_packs(
    kube: Kube, ns: str, sweep: dict, decision: SweepDecision, runs: list[dict], config: OperatorConfig
) -> str | None:
    """Create the packs that are due (ConfigMap, NetworkPolicy, then RayJob); why none may be, or None."""
    assert decision.parsed is not None
    template = decision.parsed.spec.template
    refusal = decide.operator_refusal(template, config)
    pack_rayjobs = kube.list_pack_rayjobs(ns, sweep["metadata"]["name"])
    packs = decide_packs(sweep, decision.parsed, decision.packs, runs, pack_rayjobs, config, refusal)
    if packs.problem is not None or not packs.create:
        return packs.problem
    secret = builders.credentials_secret(template, config)
    if secret is not None and (why := decide.secret_spec_error(secret, ns, kube.secret_state(ns, secret))):
        return why
    for pack in packs.create:
        kube.create_ignoring_conflict(partial(kube.create_configmap, ns, pack.configmap))
        if pack.network_policy is not None:
            kube.create_network_policy(ns, pack.network_policy)
        kube.create_ignoring_conflict(partial(kube.create_rayjob, ns, pack.rayjob))
    return None


def keep_full_leaderboard(
    kube: Kube, ns: str, sweep: dict, decision: SweepDecision, config: OperatorConfig
) -> FullLeaderboard | None:
    """Write every run's row to `<sweep output>/leaderboard.json` when it changed (at most every
    LEADERBOARD_WRITE_INTERVAL_SECONDS until the sweep ends), with the sweep's own key (its template's Secret;
    the operator has none of its own). Returns what the status shows about it."""
    board, parsed = decision.leaderboard, decision.parsed
    if board is None or parsed is None:
        return None
    previous = previous_full_leaderboard(sweep)
    now = artifacts.now_iso()
    final = decision.status.phase in ("Succeeded", "Failed")
    if not leaderboard_write_due(previous, board["digest"], now, final):
        return previous
    template = parsed.spec.template
    uri = artifacts.sweep_leaderboard_uri(template.output.uri)
    secret = builders.credentials_secret(template, config)
    kept = previous or FullLeaderboard()
    if secret is None or not storage.is_remote(uri):
        return kept.model_copy(update={"message": "not written: the operator holds no key for this sweep's storage"})
    try:
        credentials = kube.read_storage_credentials(ns, secret)
        if credentials is None:
            raise ValueError(f"Secret {secret!r} does not exist in namespace {ns!r}")
        options = observe.options_for(template, config, credentials)
        with storage.reads_deadline(config.reads_deadline):
            storage.write_json(uri, board, options)
    except Exception as e:  # noqa: BLE001 - the status says so and the next reconcile tries again
        log.warning("sweep %s/%s: leaderboard not written: %s", ns, sweep["metadata"]["name"], type(e).__name__)
        return kept.model_copy(update={"message": f"not written ({type(e).__name__}); retried at the next change"})
    return FullLeaderboard(uri=uri, rows=len(board["rows"]), digest=board["digest"], written_at=now)


def previous_full_leaderboard(sweep: dict) -> FullLeaderboard | None:
    try:
        return TrainingSweepStatus.model_validate(sweep.get("status") or {}).full_leaderboard
    except ValueError:
        return None


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
