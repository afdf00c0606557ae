"""A TrainingRun's ONE idempotent reconcile (level-based: read state -> decide -> apply).

`wiring` calls it from the create/update/resume handlers, from a timer (progress, eval, missed
events) and when a labelled RayJob changes. All decisions are in `decide` (pure): which objects to
read (`decide.reads_needed`), what to create or patch (`plan_actions`) and the status (`summarize`);
this module only reads and writes.

The status is written with the run's resourceVersion (a stale write gets 409 and is retried).
Children have deterministic names, so two creators can never make two RayJobs: the loser gets 409
AlreadyExists and adopts what exists. Terminal runs are never touched (decide.is_sticky_terminal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import kopf

from trainkit import artifacts
from trainkit.spec.load import SpecError, parse_spec
from trainkit.spec.models import TrainingRunSpec
from trainkit.spec.plan import Plan
from trainkit.spec.status import TERMINAL_PHASES, TrainingRunStatus
from trainkit.storage import StorageOptions

from trainkit_operator import builders, decide, observe, packs
from trainkit_operator.config import OperatorConfig
from trainkit_operator.data_decide import with_data_status
from trainkit_operator.data_reconcile import resolve_run_datasets
from trainkit_operator.kube import Kube


# --------------------------------------------------------------------------------- reconcile
class ReadsDeferred(kopf.TemporaryError):
    """The status must wait for this namespace's storage reads (another reconcile of the namespace holds its
    read slot); the wiring retries with a growing delay, so hundreds of runs ending at once take turns instead
    of retrying every second."""


@dataclass
class Outcome:
    status: dict | None  # what was written (None: unchanged or terminal)
    phase: str | None
    events: tuple[tuple[str, str, str], ...]  # (type, reason, message) to post: phase changes, evals, refusals
    decision: decide.Decision | None
    storage_problems: tuple[str, ...] = ()  # reads of the run's artifacts that failed this time
    reads_deferred: bool = False  # a packed run whose namespace's reads were taking turns: nothing was read


def spec_error_text(e: SpecError) -> str:
    return "; ".join(f"{i.path}: {i.message}" if i.path else i.message for i in e.issues)[:4000]


def reconcile(kube: Kube, run: dict, config: OperatorConfig, now: str | None = None) -> Outcome:
    """Read state, decide (pure), apply; write the status if it changed. Idempotent."""
    now = now or artifacts.now_iso()
    meta = run["metadata"]
    ns, name = meta.get("namespace") or "default", meta["name"]
    prev = decide.previous_status(run)
    if decide.is_sticky_terminal(prev):
        return Outcome(None, prev.phase, (), None)

    spec = plan = None
    spec_error: str | None = None
    data_names: dict[str, str] = {}
    resolution = None
    try:
        spec, plan = parse_spec(run.get("spec") or {}, source=f"TrainingRun {ns}/{name}")
        # Sources naming a TrainingData: resolved once, then fixed in the status (data_reconcile).
        spec, data_names, resolution = resolve_run_datasets(kube, ns, spec, run.get("status"))
        spec_error = (resolution.failed if resolution else None) or decide.operator_refusal(spec, config)
    except SpecError as e:
        spec_error = spec_error_text(e)
    pack = packs.pack_of_run(run)
    if pack is not None:
        if spec is not None and spec_error is None:
            spec_error = packs.packing_spec_error(spec, config)
        return reconcile_packed(kube, run, config, now, prev, ParsedRun(spec, plan, spec_error), pack)
    waiting_for_data = resolution is not None and resolution.waiting is not None and spec_error is None
    rayjob = configmap = None
    if spec is not None or (prev is not None and prev.ray_job_name):
        rayjob = kube.get_rayjob(ns, builders.rayjob_name(name))
    if spec is not None:
        if spec_error is None and decide.namespace_check_needed(config, rayjob):
            spec_error = decide.namespace_opt_in_error(ns, kube.namespace_labels(ns), config)
        if spec_error is None:
            spec_error = storage_secret_error(kube, ns, spec, config, rayjob)
        if spec_error is None:
            configmap = kube.get_configmap(ns, decide.applied_configmap_name(run, spec, rayjob))
    if waiting_for_data and rayjob is None:
        decision = decide.Decision("none", message="waiting for TrainingData")
    else:
        decision = decide.plan_actions(run, spec if spec_error is None else None, spec_error, rayjob, configmap, config)

    if decision.action in ("create", "update"):
        if decision.configmap is not None:
            try:
                kube.create_configmap(ns, decision.configmap)
            except Exception as e:
                if getattr(e, "status", None) != 409:
                    raise
                if decision.action == "create":  # whose it is decides (wait for a previous run's, or conflict)
                    raise kopf.TemporaryError("ConfigMap appeared concurrently; re-reading", delay=0.5) from None
                # An edit of a running run: named by its content, the ConfigMap there already holds this spec.
        if decision.action == "create" and decision.network_policy is not None:
            kube.create_network_policy(ns, decision.network_policy)  # 409: made by an earlier reconcile
        if decision.action == "create" and decision.rayjob is not None:
            try:
                rayjob = kube.create_rayjob(ns, decision.rayjob) or kube.get_rayjob(ns, builders.rayjob_name(name))
            except Exception as e:
                if getattr(e, "status", None) != 409:
                    raise
                # Created by a concurrent reconcile: adopt it, never a second one. One of a previous run of
                # this name is never adopted: decide again (wait or conflict) with what is there.
                rayjob = kube.get_rayjob(ns, builders.rayjob_name(name))
                if rayjob is not None and not decide.owned_by(rayjob, run):
                    decision = decide.plan_actions(run, spec, None, rayjob, configmap, config)
        if decision.action == "update" and decision.patch:
            rayjob = kube.patch_rayjob(ns, builders.rayjob_name(name), decision.patch) or rayjob

    return report(
        kube, run, config, now, prev, ParsedRun(spec, plan, spec_error), rayjob, decision, resolution, data_names
    )


def reconcile_packed(
    kube: Kube,
    run: dict,
    config: OperatorConfig,
    now: str,
    prev: TrainingRunStatus | None,
    parsed_run: ParsedRun,
    pack: str,
) -> Outcome:
    """A packed run creates nothing: its sweep made its pack's RayJob. It reads that RayJob (refusing one its
    own sweep does not control), checks its Secret while the pack is not there yet, and reports
    (packs.packed_phase: the run's own outcome decides how it ended)."""
    ns = run["metadata"].get("namespace") or "default"
    rayjob = kube.get_rayjob(ns, pack)
    spec = parsed_run.spec
    if spec is not None and parsed_run.error is None:
        parsed_run = ParsedRun(spec, parsed_run.plan, storage_secret_error(kube, ns, spec, config, rayjob))
    decision = decide.packed_decision(run, rayjob, prev)
    return report(kube, run, config, now, prev, parsed_run, rayjob, decision, pack=pack)


def storage_secret_error(
    kube: Kube, ns: str, spec: TrainingRunSpec, config: OperatorConfig, rayjob: dict | None
) -> str | None:
    """The spec error of the run's storage Secret, checked only while its RayJob does not exist yet (None: usable,
    or not checked now). One rule for a run and a packed run."""
    secret = builders.credentials_secret(spec, config)
    if not decide.secret_check_needed(secret, rayjob):
        return None
    return decide.secret_spec_error(secret, ns, kube.secret_state(ns, secret))


@dataclass(frozen=True)
class ParsedRun:
    """The run's spec as parsed this time (None when invalid), its plan, and why it is invalid."""

    spec: TrainingRunSpec | None
    plan: Plan | None
    error: str | None


def report(
    kube: Kube,
    run: dict,
    config: OperatorConfig,
    now: str,
    prev: TrainingRunStatus | None,
    parsed_run: ParsedRun,
    rayjob: dict | None,
    decision: decide.Decision,
    resolution=None,
    data_names: dict[str, str] | None = None,
    pack: str | None = None,
) -> Outcome:
    """Read what the status needs (decide.reads_needed; a packed run's own outcome too), summarize, and write
    the status when it changed."""
    meta = run["metadata"]
    ns, name = meta.get("namespace") or "default", meta["name"]
    spec, plan, spec_error = parsed_run.spec, parsed_run.plan, parsed_run.error
    reads = decide.reads_needed(rayjob, spec_valid=spec is not None and spec_error is None)
    # A packed run whose pack's RayJob vanished may still have ended: its outcome is in its own storage.
    read_storage = spec is not None and (reads.storage or (pack is not None and decision.action == "lost"))
    observed = observe.Observed()
    if read_storage and spec is not None:
        if pack is None:
            observed = observe_storage(kube, ns, spec, config)
        else:
            observed = observe_packed(kube, run, spec, config, pack, rayjob, decision)
    seen = decide.Observation(
        rayjob=rayjob,
        progress=observed.progress,
        eval_summary=observed.eval_summary,
        validation=observed.validation,
        checkpoint=observed.checkpoint,
        pods=kube.list_pods(ns, f"ray.io/cluster={reads.pods_of_cluster}") if reads.pods_of_cluster else None,
        workloads=kube.list_workloads(ns, reads.workloads_of) if reads.workloads_of else None,
        # (not for a packed run: its pack's RayJob is shared, its Events are the pack's, on the RayJob itself)
        rayjob_events=kube.list_rayjob_events(ns, rayjob["metadata"]["name"])
        if reads.rayjob_events and rayjob and pack is None
        else None,
        storage_problems=observed.problems,
        pack=None
        if pack is None
        else packs.PackView(pack, observed.outcome, outcome_read=read_storage and observed.problems == ()),
    )
    if decision.action == "refuse" and spec_error is not None:
        spec_error = None  # an invalid EDIT of a live run: shown as SpecApplied=False, the run goes on
    parsed = decide.SpecView(
        spec=spec if spec_error is None else None,
        total_steps=plan.total_steps if plan is not None else None,
        error=spec_error,
    )
    status = decide.summarize(run, seen, now, parsed, decision)
    if resolution is not None:
        status = with_data_status(status, data_names or {}, resolution, now)
    if pack is not None and observed.deferred and prev is not None:
        # Its namespace's reads are taking turns: the status stays as it is, the pack's handler comes back to
        # it a second later (wiring.settle_pack), without a write, an Event or a kopf retry meanwhile.
        return Outcome(None, prev.phase, (), decision, reads_deferred=True)
    if observed.deferred and status.phase in TERMINAL_PHASES:
        # A terminal status is final (never reconciled again): it must carry the run's last progress and
        # eval summary, so it waits for reads that actually ran. (A packed run is never terminal without its
        # outcome read: it shows ReadingOutcome, and its pack's handler tries again: wiring.settle_pack.)
        raise ReadsDeferred("final status waits for this namespace's storage reads", delay=1.0)
    failed_reads = () if observed.deferred else tuple(observed.problems or ())
    if prev is not None and prev.model_dump() == status.model_dump():
        return Outcome(None, status.phase, (), decision, failed_reads)
    written = decide.status_patch(status)
    kube.patch_run_status(ns, name, meta.get("resourceVersion"), written)
    return Outcome(written, status.phase, decide.run_events(prev, status), decision, failed_reads)


def observe_packed(
    kube: Kube,
    run: dict,
    spec: TrainingRunSpec,
    config: OperatorConfig,
    pack: str,
    rayjob: dict | None,
    decision: decide.Decision,
) -> observe.Observed:
    """A packed run's records. Its outcome, once read, is final (observe.OUTCOMES: no read again); once its
    pack's RayJob has ended (or vanished), the outcomes of all the pack's members that share its storage are
    read in one turn of the namespace's read slot (the pack's ConfigMap lists them), so the pack's other runs
    find theirs without reading."""
    ns = run["metadata"].get("namespace") or "default"
    own = (packs.run_owner(run), spec.output.uri)
    done = observe.OUTCOMES.get(own)
    if done is not None and "progress" in done:
        return observe.ended_observation(spec.output.uri, done)
    jds = ((rayjob or {}).get("status") or {}).get("jobDeploymentStatus")
    if decision.action == "lost" or jds in decide.KUBERAY_TERMINAL_DEPLOYMENT:

        def pack_end(options: StorageOptions) -> observe.Observed:
            name = packs.pack_configmap_name(pack, rayjob)
            members = packs.members_sharing_storage(kube.get_configmap(ns, name) if name else None, spec)
            return observe.observe_pack_end(own, members, options)

        return observe_storage(kube, ns, spec, config, pack_end)
    seen = observe_storage(kube, ns, spec, config, lambda options: observe.observe_outputs(own[1], options, own[0]))
    if seen.outcome is not None and "progress" in seen.outcome:
        observe.OUTCOMES.put(own, seen.outcome)
    return seen


def observe_storage(
    kube: Kube,
    ns: str,
    spec: TrainingRunSpec,
    config: OperatorConfig,
    reads: Callable[[StorageOptions], observe.Observed] | None = None,
) -> observe.Observed:
    """The run's records, read with the run's own key (its Secret, in its namespace) off the handler thread
    (`reads(options)`, default observe_outputs), in the namespace's turn of the read pool: a reconcile whose
    turn has not come reads nothing, not even the Secret. No Secret for the run (workload identity): the
    operator holds no key for it and reads nothing."""
    secret = builders.credentials_secret(spec, config)
    if secret is None:
        return observe.Observed()

    def with_the_runs_key() -> observe.Observed:
        try:
            credentials = kube.read_storage_credentials(ns, secret)
        except ValueError as e:
            return observe.Observed(problems=(str(e),))
        except Exception as e:
            if getattr(e, "status", None) != 403:
                raise
            return observe.Observed(
                problems=(f"the operator may not read Secret {secret!r} in namespace {ns!r} (403 Forbidden)",)
            )
        if credentials is None:
            return observe.Observed(problems=(f"Secret {secret!r} does not exist in namespace {ns!r}",))
        options = observe.options_for(spec, config, credentials)
        return observe.observe_outputs(spec.output.uri, options) if reads is None else reads(options)

    return observe.read_pool(config).read(ns, spec.output.uri, with_the_runs_key, config.reads_deadline)
