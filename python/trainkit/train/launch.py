"""The driver side of a run: checks before training, then Ray Train's TorchTrainer over `loop.train_worker`.

`run_spec` is the one way to run a spec, used by the RayJob entrypoint (`python -m trainkit.jobs.train`),
`trainkit run` and `trainkit sweep --local` alike. Every
check that can fail without a GPU fails here, before any worker starts, with the spec field named:
memory fit (resources.memoryPerWorker), token shards (data.sources[i].uri), output URI (output.uri).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from trainkit import artifacts, storage
from trainkit.spec.models import TrainingRunSpec
from trainkit.spec.plan import Plan, derive_plan
from trainkit.storage import StorageOptions
from trainkit.spec.memory import check_fits
from trainkit.train import logship, tracking
from trainkit.train.logship import LogPolicy


class PreflightError(ValueError):
    """The run cannot start; the message names the spec field (and file) to fix."""


@dataclass(frozen=True)
class TrainedRun:
    output_uri: str
    total_steps: int
    final_checkpoint: str | None
    eval: artifacts.EvalSummaryDoc | None = None


def spec_as_json(spec: TrainingRunSpec) -> dict:
    """The bare spec as JSON-ready data (what spec.json holds and what the workers receive)."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def check_shards(spec: TrainingRunSpec, plan: Plan, options: StorageOptions) -> None:
    """Every source has an index.json (the commit marker of `trainkit prepare`), then the data plane's
    own checks (tokenizer fingerprint, sizes against whenExhausted) by opening the loader once."""
    from trainkit.data.shards import INDEX_FILE  # the shard layout's owner (loaded only when a run starts)

    missing = []
    for field, src in spec.data.shard_fields("spec.data"):
        if src.uri is None:
            missing.append(
                f"{field}.dataset ({src.name}): TrainingData {src.dataset!r} is resolved by the "
                "operator; to train without it, give the source's uri (its shards)"
            )
            continue
        uri = storage.join(src.uri, INDEX_FILE)
        try:
            ok = storage.exists(uri, options)
        except (storage.StorageError, OSError) as e:
            raise PreflightError(f"{field}.uri ({src.name}): cannot read {uri}: {e}") from None
        if not ok:
            missing.append(
                f"{field}.uri ({src.name}): no token shards at {src.uri} "
                f"({INDEX_FILE} not found; run `trainkit prepare` for this source)"
            )
    if missing:
        raise PreflightError("\n".join(missing))
    from trainkit.data import MixtureLoader

    try:
        MixtureLoader.from_spec(spec, plan, rank=0, world_size=spec.resources.workers, options=options).close()
    except (ValueError, OSError) as e:
        raise PreflightError(f"spec.data.sources: {e}") from None


def _digest(document: dict) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunIdentity:
    """Which TrainingRun a process trains: the owner of the output prefix (owner.json). A RayJob's pods get it
    from the environment the operator sets; a pack's driver passes each packed run's own."""

    uid: str | None = None
    namespace: str | None = None
    name: str | None = None

    @classmethod
    def from_env(cls) -> "RunIdentity":
        env = os.environ
        return cls(env.get("TRAINKIT_RUN_UID"), env.get("TRAINKIT_RUN_NAMESPACE"), env.get("TRAINKIT_RUN_NAME"))


def output_owner(spec: TrainingRunSpec, identity: RunIdentity | None = None) -> artifacts.OwnerRecord:
    """The owner record this run claims its output prefix with (identity: default from the environment)."""
    who = identity or RunIdentity.from_env()
    document = spec_as_json(spec)
    # A local run is identified by what it trains: resuming with other resources, scheduling or evals is the
    # same run (fewer workers continue the exact stream); another model, data or training block is not.
    trained = _digest({k: v for k, v in document.items() if k not in ("resources", "scheduling", "eval", "tracking")})
    return artifacts.OwnerRecord(
        owner=artifacts.owner_of_run(who.uid, who.namespace, who.name, trained),
        spec_hash=_digest(document),
        created_at=artifacts.now_iso(),
    )


def check_output(spec: TrainingRunSpec, options: StorageOptions, identity: RunIdentity | None = None) -> None:
    """Write spec.json to the output URI: proves it is reachable and writable, and records the run."""
    uri = artifacts.run_file(spec.output.uri, artifacts.SPEC)
    mine = output_owner(spec, identity)
    try:
        problem = artifacts.claim_output(spec.output.uri, mine, options)
    except Exception as e:  # noqa: BLE001 - any failure here means the output is unusable
        raise PreflightError(f"spec.output.uri {spec.output.uri} is not writable: {type(e).__name__}: {e}") from None
    if problem is not None:
        raise PreflightError(problem)
    try:
        storage.write_bytes(uri, json.dumps(spec_as_json(spec), indent=2, sort_keys=True).encode() + b"\n", options)
    except Exception as e:  # noqa: BLE001 - any failure here means the output is unusable
        raise PreflightError(f"spec.output.uri {spec.output.uri} is not writable: {type(e).__name__}: {e}") from None


def preflight(spec: TrainingRunSpec, plan: Plan, options: StorageOptions, identity: RunIdentity | None = None) -> None:
    """Cheapest first; nothing is written unless every check before the output check passed."""
    if spec.training.precision == "fp16" and spec.resources.gpus_per_worker == 0:
        raise PreflightError(
            "spec.training.precision fp16 needs a GPU (resources.gpusPerWorker is 0); use bf16 or fp32 on CPU"
        )
    try:
        check_fits(spec, plan)
    except ValueError as e:
        raise PreflightError(str(e)) from None
    check_shards(spec, plan, options)
    check_output(spec, options, identity)


def fault_env() -> dict[str, str]:
    from trainkit.train.loop import FAULT_ENV

    return {k: os.environ[k] for k in FAULT_ENV if k in os.environ}


def run_training(
    spec: TrainingRunSpec,
    *,
    name: str = "trainkit-run",
    max_failures: int = 0,
    ray_storage: str | None = None,
    checked: bool = False,
    log_policy: LogPolicy | None = None,
    worker_resources: dict[str, float] | None = None,
) -> TrainedRun:
    """Check (unless `checked`: preflight already passed), then train with Ray Train on the connected
    Ray cluster (call `ray.init` first). The driver's stdout/stderr (and each worker's, see
    `loop.train_worker`) go to `<output>/logs/` as the run goes, a failure's traceback included.
    `worker_resources` replaces the Ray resources each worker (and the final eval) asks for: a packed run's
    share of its pack's pods (`trainkit.spec.packing.packed_share`); default: the spec's whole worker."""
    plan = derive_plan(spec)
    options = StorageOptions.from_spec(spec.storage)
    if not checked:
        preflight(spec, plan, options)
    policy = log_policy or LogPolicy()
    with logship.capture(spec.output.uri, artifacts.DRIVER_LOG, options, policy) as driver_log:
        mlflow_run = tracking.start_mlflow_run(spec, spec_as_json(spec))  # None unless spec.tracking.mlflow
        try:
            result = _fit_and_eval(
                spec, plan, options, name, max_failures, ray_storage, policy, mlflow_run, worker_resources
            )
        except BaseException:
            driver_log.write(traceback.format_exc().encode())  # for the log only: the caller reports it its way
            if mlflow_run is not None:
                mlflow_run.finish(succeeded=False)
            raise
        if mlflow_run is not None:
            mlflow_run.log_eval(dict(result.eval) if result.eval else None)
            mlflow_run.finish(succeeded=True)
        return result


def _fit_and_eval(
    spec: TrainingRunSpec,
    plan: Plan,
    options: StorageOptions,
    name: str,
    max_failures: int,
    ray_storage: str | None,
    log_policy: LogPolicy,
    mlflow_run: tracking.MlflowRun | None = None,
    worker_resources: dict[str, float] | None = None,
) -> TrainedRun:
    import ray.train
    from ray.train.torch import TorchTrainer

    from trainkit.train.loop import train_worker

    resources = dict(worker_resources) if worker_resources is not None else whole_worker(spec)
    # Ray's own run state only; our checkpoints live under the output URI (see docs/training.md).
    ray_storage = ray_storage or os.path.join(tempfile.gettempdir(), "trainkit-ray")
    env = fault_env()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "spec": spec_as_json(spec),
            "storage": {"endpoint": options.resolved_endpoint(), "region": options.region},
            "logs": log_policy.as_config(),
            "tracking": {"mlflowRunId": mlflow_run.run_id if mlflow_run is not None else None},
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.resources.workers, use_gpu=resources.get("GPU", 0) > 0, resources_per_worker=resources
        ),
        # mypy resolves ray.train.RunConfig to Train V1's; V2's (the default since Ray 2.51) takes worker_runtime_env.
        run_config=ray.train.RunConfig(  # type: ignore[call-arg]
            name=name,
            storage_path=ray_storage,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            worker_runtime_env={"env_vars": env} if env else None,
        ),
    )
    trainer.fit()
    final = artifacts.latest_complete_checkpoint(spec.output.uri, options)
    result = TrainedRun(
        spec.output.uri,
        plan.total_steps,
        artifacts.checkpoint_uri(spec.output.uri, final) if final is not None else None,
    )
    evaluated = run_eval_hook(spec, result, worker_resources)
    return TrainedRun(result.output_uri, result.total_steps, result.final_checkpoint, eval=evaluated)


def whole_worker(spec: TrainingRunSpec) -> dict[str, float]:
    """The Ray resources of one worker of the spec: its pod's CPUs and GPUs."""
    r = spec.resources
    resources: dict[str, float] = {"CPU": r.cpus_per_worker}
    if r.gpus_per_worker:
        resources["GPU"] = r.gpus_per_worker
    return resources


def eval_at_end_requested(spec: TrainingRunSpec) -> bool:
    """The run asks for an eval of its final checkpoint (spec.eval.atEnd, with a suite or tasks)."""
    e = spec.eval
    return e.at_end and not (e.suite == "none" and not e.tasks)


def connect_ray(local_cpus: int | None = None, log_to_driver: bool = True) -> None:
    """The job's cluster when RAY_ADDRESS is set (KubeRay sets it), else a local Ray sized for this machine;
    nothing when this process is connected already."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver)
    else:
        # address="local": a new Ray of our own, even when some `ray start` cluster runs on this machine
        # (ray.init() alone would join it, and refuse num_cpus).
        ray.init(
            address="local",
            num_cpus=local_cpus or os.cpu_count(),
            include_dashboard=False,
            object_store_memory=1 << 30,
            log_to_driver=log_to_driver,
        )


def run_spec(
    spec: TrainingRunSpec,
    *,
    name: str,
    max_failures: int,
    base_dir: str | None = None,
    connect: Callable[[], None] = connect_ray,
    on_start: Callable[[TrainingRunSpec, Plan], None] | None = None,
    worker_resources: dict[str, float] | None = None,
    identity: RunIdentity | None = None,
) -> TrainedRun:
    """Run a spec: local paths made absolute (against `base_dir`, default the working directory), the plan,
    the preflight checks (PreflightError, before Ray starts: bad input fails in seconds with the field named),
    `on_start(spec, plan)`, `connect()` to Ray, then training and the end-of-run eval."""
    spec = resolve_local_paths(spec, base_dir or os.getcwd())
    plan = derive_plan(spec)
    preflight(spec, plan, StorageOptions.from_spec(spec.storage), identity)
    if on_start is not None:
        on_start(spec, plan)
    connect()
    return run_training(spec, name=name, max_failures=max_failures, checked=True, worker_resources=worker_resources)


def run_eval_hook(spec: TrainingRunSpec, result: TrainedRun, worker_resources: dict[str, float] | None = None):
    """End-of-training eval (spec.eval.atEnd with a suite or tasks) as its own Ray task through
    `trainkit.eval.launch_eval_task`, on `worker_resources` when given (a packed run evaluates on its own
    share: a whole GPU would wait for every other run of the pack to finish). An eval failure is reported,
    not turned into a training failure."""
    e = spec.eval
    if not eval_at_end_requested(spec) or result.final_checkpoint is None:
        return None
    import ray

    from trainkit.eval import launch_eval_task

    # The endpoint as the driver resolves it (spec or environment): the task's process may not share our env.
    options = StorageOptions.from_spec(spec.storage)
    options = StorageOptions(endpoint=options.resolved_endpoint(), region=options.region)
    step = artifacts.step_of(result.final_checkpoint)
    try:
        # None: the eval task's own defaults (one CPU, a GPU when the cluster has one).
        cpus = 1.0 if worker_resources is None else worker_resources.get("CPU", 1.0)
        gpus = None if worker_resources is None else worker_resources.get("GPU", 0.0)
        return ray.get(
            launch_eval_task(result.final_checkpoint, e, spec.output.uri, step, options, num_cpus=cpus, num_gpus=gpus)
        )
    except Exception as err:  # noqa: BLE001 - the checkpoint is good; say what failed and go on
        print(f"[trainkit] eval of {result.final_checkpoint} failed: {err}", flush=True)
        return {"error": str(err)}


def resolve_local_paths(spec: TrainingRunSpec, base: str) -> TrainingRunSpec:
    """Relative local paths (output.uri, sources[].uri, a tokenizer folder) made absolute against `base`,
    so Ray workers, whatever their working directory, read and write where the user meant."""

    def absolute(uri: str) -> str:
        return storage.absolute_uri(uri, base)

    doc = spec_as_json(spec)
    doc["output"]["uri"] = absolute(doc["output"]["uri"])
    for src in [*doc["data"]["sources"], *doc["data"].get("validationTargets", [])]:
        if "uri" in src:  # one naming a TrainingData has none until the operator resolves it (check_shards says so)
            src["uri"] = absolute(src["uri"])
    if doc.get("tokenizer", "gpt2") != "gpt2":
        doc["tokenizer"] = absolute(doc["tokenizer"])
    for task in doc.get("eval", {}).get("tasks", []):
        if task.get("path"):
            task["path"] = absolute(task["path"])
    return TrainingRunSpec.model_validate(doc)
