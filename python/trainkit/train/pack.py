"""A pack's driver: the K runs of a pack trained at once on one Ray cluster, each as its own run.

`run_pack(pack)` is what `python -m trainkit.jobs.pack` (the pack RayJob's constant entrypoint) runs:

  1. each member's spec is validated on its own (`member_plans`, pure): a bad one fails alone;
  2. every member with a valid spec starts as its own Ray task (`train_member`), which runs the member exactly as
     a RayJob of its own would (`run_spec`: preflight, owner.json with the member's identity, Ray Train on the
     member's share of the pack's pods, checkpoints, progress, logs and eval under the member's output);
  3. as each member ends, its outcome (Succeeded, or Failed with the cause) is written to ITS output
     (`artifacts.OUTCOME`): the operator derives each packed run's phase from it, never from the pack's shared
     RayJob, so one member's failure neither stops the others nor marks them failed.

A member that already has an outcome is not run again (KubeRay retrying the pack's RayJob on a new cluster
reruns only the members the old cluster never finished). The pack's exit code is 0 when every member succeeded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from trainkit import artifacts, storage
from trainkit.spec.load import SpecError, parse_spec
from trainkit.spec.models import TrainingRunSpec
from trainkit.spec.packing import TrainingPack
from trainkit.storage import StorageOptions
from trainkit.train.launch import RunIdentity, output_owner


@dataclass(frozen=True)
class MemberPlan:
    """One member as the pack's driver sees it: its identity and valid spec, or why the spec is invalid."""

    identity: RunIdentity
    spec: TrainingRunSpec | None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.identity.name or "?"


def member_plans(pack: TrainingPack) -> list[MemberPlan]:
    """Each member's spec validated on its own (pure)."""
    plans = []
    for member in pack.spec.runs:
        who = RunIdentity(member.uid or None, member.namespace, member.name)
        try:
            spec, _ = parse_spec(member.spec, source=f"pack {pack.metadata.name}: run {member.name}")
        except SpecError as e:
            plans.append(MemberPlan(who, None, str(e)))
            continue
        plans.append(MemberPlan(who, spec))
    return plans


def failure_message(e: BaseException) -> str:
    """A member's failure on one line, the way `python -m trainkit.jobs.train` reports its own."""
    from trainkit.train.launch import PreflightError

    if isinstance(e, PreflightError):
        return f"preflight: {e}"
    return f"training failed: {type(e).__name__}: {e}"


def train_member(spec_doc: dict, identity: RunIdentity, share: dict[str, float], max_failures: int) -> dict:
    """One member, run as its own RayJob would run it (the body of its Ray task). Never raises for the
    member's own failures: it returns {state, message, step, progress, eval, validation} (the driver records it)."""
    from trainkit.train.launch import run_spec

    spec = TrainingRunSpec.model_validate(spec_doc)
    try:
        result = run_spec(
            spec,
            name=identity.name or "trainkit-run",
            max_failures=max_failures,
            connect=lambda: None,  # the task runs inside the pack's Ray cluster
            worker_resources=share,
            identity=identity,
        )
    except Exception as e:  # noqa: BLE001 - a member's failure is its outcome, never the pack's
        return {"state": "Failed", "message": failure_message(e)}
    step = artifacts.step_of(result.final_checkpoint) if result.final_checkpoint else None
    eval_error = dict(result.eval or {}).get("error")  # run_eval_hook reports a failed eval so
    message = "trained" if eval_error is None else f"trained; the final eval failed: {str(eval_error)[:1000]}"
    options = StorageOptions.from_spec(spec.storage)
    progress = artifacts.read_progress(spec.output.uri, options)
    summary = result.eval if eval_error is None else None
    held_out = artifacts.read_validation(spec.output.uri, options)
    return {
        "state": "Succeeded",
        "message": message,
        "step": step,
        "progress": progress,
        "eval": summary,
        "validation": held_out[-1] if held_out else None,
    }


def record_outcome(plan: MemberPlan, outcome: artifacts.OutcomeDoc) -> str | None:
    """Write the member's outcome.json under its output, claiming the prefix first when the member never got
    that far (a preflight failure); None when written, else why not (the prefix is another run's)."""
    assert plan.spec is not None  # only members with an output are recorded
    options = StorageOptions.from_spec(plan.spec.storage)
    uri = plan.spec.output.uri
    problem = artifacts.claim_output(uri, output_owner(plan.spec, plan.identity), options)
    if problem is not None:
        return problem
    storage.write_json(artifacts.run_file(uri, artifacts.OUTCOME), dict(outcome), options)
    return None


def run_pack(
    pack: TrainingPack,
    *,
    max_failures: int,
    base_dir: str | None = None,
    connect=None,
    log=print,
) -> dict[str, artifacts.OutcomeDoc]:
    """Train every member of the pack at once (see the module doc); returns each member's outcome by name.
    `connect` joins Ray (default: the job's cluster, or a local one); `base_dir` resolves local paths."""
    import os

    import ray

    from trainkit.train.launch import connect_ray, resolve_local_paths

    plans = [
        MemberPlan(p.identity, resolve_local_paths(p.spec, base_dir or os.getcwd()), None) if p.spec else p
        for p in member_plans(pack)
    ]
    outcomes: dict[str, artifacts.OutcomeDoc] = {}
    for p in plans:
        if p.spec is None:
            # Without a valid spec there is no output to write to: the operator shows the pack's end instead.
            owner = artifacts.owner_of_run(p.identity.uid, p.identity.namespace, p.identity.name, "")
            outcomes[p.name] = artifacts.outcome_doc(
                "Failed", f"invalid spec: {p.error}", None, artifacts.now_iso(), owner
            )
            log(f"[pack] {p.name}: invalid spec, not started: {p.error}")
    (connect or connect_ray)()
    # The member's task only waits for Ray Train (its workers hold the member's share of the pods): 0 CPUs.
    task = ray.remote(num_cpus=0, max_retries=0)(train_member)
    share = pack.spec.worker_share
    running = {}
    for p in plans:
        if p.spec is None:
            continue
        done = artifacts.read_outcome(p.spec.output.uri, StorageOptions.from_spec(p.spec.storage))
        if done is not None and done.get("owner") == output_owner(p.spec, p.identity).owner:
            outcomes[p.name] = done
            log(f"[pack] {p.name}: already {done['state']} (an earlier attempt of this pack), not run again")
            continue
        spec_doc = p.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        ref = task.options(name=f"trainkit-pack-member-{p.name}", runtime_env=storage_location_env()).remote(
            spec_doc, p.identity, share, max_failures
        )
        running[ref] = p
        log(f"[pack] {p.name}: started -> {p.spec.output.uri}")
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            p = running.pop(ref)
            assert p.spec is not None  # only members with a valid spec were started
            try:
                result = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the member's process died (OOM kill, lost node)
                result = {"state": "Failed", "message": f"the run's driver task died: {type(e).__name__}: {e}"[:4000]}
            outcome = artifacts.outcome_doc(
                result["state"],
                result["message"],
                result.get("step"),
                artifacts.now_iso(),
                output_owner(p.spec, p.identity).owner,
                progress=result.get("progress"),
                eval_summary=result.get("eval"),
                validation=result.get("validation"),
            )
            outcomes[p.name] = outcome
            try:
                problem = record_outcome(p, outcome)
            except Exception as e:  # noqa: BLE001 - the outcome is lost, not the other members
                problem = f"could not write {artifacts.OUTCOME}: {type(e).__name__}: {e}"
            log(f"[pack] {p.name}: {outcome['state']}: {outcome['message']}")
            if problem is not None:
                log(f"[pack] {p.name}: outcome not recorded: {problem}")
    return outcomes


# Where storage is, as the driver sees it, handed to each member's task (a Ray worker started before the driver's
# environment was set would not know). Never the keys: a runtime environment is stored in Ray's GCS.
STORAGE_LOCATION_ENV = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


def storage_location_env() -> dict:
    import os

    env = {k: os.environ[k] for k in STORAGE_LOCATION_ENV if os.environ.get(k)}
    return {"env_vars": env} if env else {}


def pack_exit_code(outcomes: dict[str, artifacts.OutcomeDoc]) -> int:
    return 0 if outcomes and all(o["state"] == "Succeeded" for o in outcomes.values()) else 1


def print_summary(outcomes: dict[str, artifacts.OutcomeDoc], out=sys.stdout) -> None:
    ok = sum(o["state"] == "Succeeded" for o in outcomes.values())
    print(f"[pack] {ok} of {len(outcomes)} runs succeeded", file=out)
