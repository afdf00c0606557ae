"""What a run reports as it goes, besides its own records (progress.json, metrics.jsonl):

- Ray metrics (`ray.util.metrics` gauges, every rank, tagged run/namespace/rank): Ray's Prometheus export
  serves them on each node's metrics agent, prefixed `ray_` (`ray_trainkit_train_loss`, ...): tokens/s, MFU,
  loss, step time, data wait time and checkpoint time. Only when the process is connected to Ray.
- TensorBoard event files (spec.tracking.tensorboard, on by default; rank 0): written locally by PyTorch's
  SummaryWriter and uploaded to `<output>/tensorboard/` at log steps, at most every `upload_seconds` and at
  the end, off the training thread; no network besides the output storage.
- MLflow (spec.tracking.mlflow; its own client, MlflowClient): the driver finds or creates the run (one per
  output URI, nested under `parentRunName` for a sweep), logs the spec, the mixture weights as params and
  the eval scores; rank 0 logs the training scalars to the same run, off the training thread.

Nothing here may fail or stall training: every sink swallows and reports its own errors once, network
calls run in one background thread per sink with a bounded queue (the oldest item is dropped when full).
The loop calls `StepTracker` (created by `for_worker`) at four points: data loading, each log step, each
checkpoint, and the end.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from trainkit import artifacts, storage
from trainkit.spec.models import MlflowSpec, TrainingRunSpec
from trainkit.storage import StorageOptions

log = logging.getLogger(__name__)
T = TypeVar("T")

# The trainer's Ray metrics: name -> description. Ray's Prometheus export adds RAY_EXPORT_PREFIX.
TRAINER_METRICS = {
    "trainkit_train_tokens_per_second": "Training tokens per second (global batch, wall clock, checkpoints excluded)",
    "trainkit_train_mfu": "Model FLOPs utilisation (0-1) against the accelerator's dense peak; absent on CPU",
    "trainkit_train_loss": "Training loss, mean over the last log window",
    "trainkit_train_step_seconds": "Seconds per optimizer step over the last log window (checkpoints excluded)",
    "trainkit_train_data_wait_seconds": "Seconds per step this rank waited for its batches over the last log window",
    "trainkit_train_checkpoint_seconds": "Seconds the last checkpoint took (gather, write, upload, prune)",
    "trainkit_train_step": "The last optimizer step reported",
}
RAY_EXPORT_PREFIX = "ray_"
METRIC_TAGS = ("run", "namespace", "rank")
# TensorBoard scalar tags: what metrics.jsonl calls the same values.
TB_SCALARS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "gradNorm": "train/grad_norm",
    "tokensPerSecond": "train/tokens_per_second",
    "mfu": "train/mfu",
    "stepSeconds": "train/step_seconds",
    "dataWaitSeconds": "train/data_wait_seconds",
    "checkpointSeconds": "train/checkpoint_seconds",
}
TB_VALIDATION_PREFIX = "validation/"
MLFLOW_RUN_TAG = "trainkit.output"  # the MLflow run of an output URI: one per run, found again on a restart
MLFLOW_PARENT_TAG = "trainkit.parent"  # a parent (sweep) run, by its name
MLFLOW_MAX_PARAMS = 100  # MLflow's log_batch limit per request
MLFLOW_PARAM_CHARS = 6000  # MLflow's param value limit (MLflow >= 2.x)


def run_identity(output_uri: str) -> tuple[str, str]:
    """(run, namespace): the TrainingRun's (the operator sets the env), else (the output folder's name, "local")."""
    local_name = output_uri.rstrip("/").rsplit("/", 1)[-1] or "run"
    return os.environ.get("TRAINKIT_RUN_NAME") or local_name, os.environ.get("TRAINKIT_RUN_NAMESPACE") or "local"


# ------------------------------------------------------------------------------- pure helpers
def flat_params(doc: Any, prefix: str = "") -> dict[str, str]:
    """A spec as MLflow params: dotted keys, scalar values as text, lists of scalars as JSON (pure).
    Sources become `data.sources.<name>.<field>` (a weight is `data.sources.web.weight`)."""
    out: dict[str, str] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.update(flat_params(v, f"{prefix}{k}."))
    elif isinstance(doc, list) and doc and all(isinstance(x, dict) and "name" in x for x in doc):
        for item in doc:
            out.update(flat_params({k: v for k, v in item.items() if k != "name"}, f"{prefix}{item['name']}."))
    else:
        text = json.dumps(doc) if isinstance(doc, (list, bool)) or doc is None else str(doc)
        out[prefix.rstrip(".")] = text[:MLFLOW_PARAM_CHARS]
    return out


def mixture_weights(spec: TrainingRunSpec) -> dict[str, float]:
    """Each source's share of the tokens (weights normalised to sum to 1)."""
    total = sum(s.weight for s in spec.data.sources)
    return {s.name: s.weight / total for s in spec.data.sources}


def scalars_of(line: dict) -> dict[str, float]:
    """The TensorBoard tag -> value of a metrics line (finite numbers only; pure)."""
    out = {}
    for key, tag in TB_SCALARS.items():
        value = line.get(key)
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value == value
            and abs(value) != float("inf")
        ):
            out[tag] = float(value)
    return out


def eval_metrics(summary: dict) -> dict[str, float]:
    """MLflow metrics of an eval summary: eval/average and eval/<task> (pure)."""
    out = {}
    if isinstance(summary.get("average"), (int, float)):
        out["eval/average"] = float(summary["average"])
    for task, score in (summary.get("tasks") or {}).items():
        if isinstance(score, (int, float)):
            out[f"eval/{task}"] = float(score)
    return out


# ---------------------------------------------------------------------------- background sink
class Background:
    """One daemon thread doing a sink's slow calls in order; at most `capacity` waiting (the oldest dropped,
    counted). `close(timeout)` waits that long for what is queued. An error is reported once, never raised."""

    def __init__(self, name: str, capacity: int = 256):
        self.name = name
        self.queue: collections.deque[Callable[[], object]] = collections.deque(maxlen=capacity)
        self.dropped = 0
        self.failed = 0
        self.complained = False
        self.cond = threading.Condition()
        self.closing = False
        self.busy = False
        self.thread = threading.Thread(target=self._work, daemon=True, name=f"trainkit-{name}")
        self.thread.start()

    def put(self, call: Callable[[], object]) -> None:
        with self.cond:
            if len(self.queue) == self.queue.maxlen:
                self.dropped += 1
            self.queue.append(call)
            self.cond.notify()

    def _work(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.closing:
                    self.cond.wait()
                if not self.queue:
                    return
                call = self.queue.popleft()
                self.busy = True
            try:
                call()
            except Exception as e:  # noqa: BLE001 - tracking never fails the run; said once, then counted
                self.failed += 1
                if not self.complained:
                    self.complained = True
                    print(
                        f"[trainkit] {self.name}: {type(e).__name__}: {str(e)[:300]} (further errors not shown)",
                        flush=True,
                    )
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until everything queued is done (True), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.queue or self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def close(self, timeout: float) -> None:
        self.drain(timeout)
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.thread.join(timeout=0.1)


# ------------------------------------------------------------------------------------ sinks
class RayGauges:
    """The trainer's gauges in Ray's metrics (exported by each node's metrics agent)."""

    def __init__(self, output_uri: str, rank: int):
        from ray.util.metrics import Gauge

        run, namespace = run_identity(output_uri)
        self.tags = {"run": run, "namespace": namespace, "rank": str(rank)}
        self.gauges = {
            name: Gauge(name, description=text, tag_keys=METRIC_TAGS) for name, text in TRAINER_METRICS.items()
        }

    def set(self, name: str, value: float | None) -> None:
        if value is not None:
            self.gauges[name].set(float(value), tags=self.tags)


@dataclass
class TensorBoardPolicy:
    upload_seconds: float = 30.0  # the longest a log step waits before it is readable under <output>/tensorboard/
    file_bytes: int = 16 << 20  # a new event file past this size (each upload rewrites only the open file)


class TensorBoardSink:
    """Rank 0's event files: written locally, snapshots uploaded off the training thread (latest wins)."""

    def __init__(self, output_uri: str, options: StorageOptions | None, start_step: int, policy: TensorBoardPolicy):
        self.output_uri, self.options, self.policy = output_uri, options, policy
        self.local = tempfile.mkdtemp(prefix="trainkit-tb-")
        self.start_step = start_step
        self.writer = self._new_writer(purge_step=start_step or None)
        self.last_upload = 0.0
        self.uploads = Background("tensorboard upload", capacity=8)

    def _new_writer(self, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run's earlier events past its checkpoint are hidden by TensorBoard (they are redone).
        return SummaryWriter(log_dir=self.local, purge_step=purge_step, flush_secs=3600, max_queue=1000)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def maybe_upload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_upload < self.policy.upload_seconds:
            return
        self.last_upload = now
        self.writer.flush()  # whole records on disk before the snapshot
        sealed = []
        for name in sorted(os.listdir(self.local)):
            path = os.path.join(self.local, name)
            with open(path, "rb") as f:
                data = f.read()
            uri = artifacts.tensorboard_file_uri(self.output_uri, name)
            self.uploads.put(functools.partial(storage.write_bytes, uri, data, self.options))
            if len(data) >= self.policy.file_bytes:
                sealed.append(path)
        if sealed:  # rotate: the next events go to a new file; the sealed ones are uploaded once more, then dropped
            self.writer.close()
            for path in sealed:
                os.remove(path)
            self.writer = self._new_writer()

    def close(self, timeout: float) -> None:
        self.maybe_upload(force=True)
        self.writer.close()
        self.uploads.close(timeout)
        shutil.rmtree(self.local, ignore_errors=True)


class MlflowLogger:
    """Training scalars to an existing MLflow run (the driver made it), batched, off the training thread."""

    def __init__(self, uri: str, run_id: str):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = run_id
        self.calls = Background("mlflow", capacity=256)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(key=k, value=v, timestamp=stamp, step=step) for k, v in values.items()]
        self.calls.put(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def close(self, timeout: float) -> None:
        self.calls.close(timeout)


# ------------------------------------------------------------------------------ the loop's side
@dataclass
class StepTracker:
    """What the training loop reports to (every rank makes one; TensorBoard and MLflow only on rank 0)."""

    tokens_per_step: int
    gauges: RayGauges | None = None
    tensorboard: TensorBoardSink | None = None
    mlflow: MlflowLogger | None = None
    close_timeout: float = 30.0
    data_seconds: float = field(default=0.0, init=False)
    data_steps: int = field(default=0, init=False)
    last_checkpoint_seconds: float = field(default=0.0, init=False)

    @property
    def active(self) -> bool:
        return any(s is not None for s in (self.gauges, self.tensorboard, self.mlflow))

    def timed_data(self, next_step: Callable[[], T]) -> T:
        """The loader's next step, its wait counted for the data wait time."""
        started = time.perf_counter()
        try:
            return next_step()
        finally:
            self.data_seconds += time.perf_counter() - started
            self.data_steps += 1

    def log(self, line: dict) -> dict[str, float]:
        """A log step's values (the metrics.jsonl line, on every rank as far as it knows them) to every sink;
        returns what was added to it (stepSeconds, dataWaitSeconds, checkpointSeconds)."""
        tps = line.get("tokensPerSecond") or 0.0
        extra = {
            "stepSeconds": self.tokens_per_step / tps if tps > 0 else 0.0,
            "dataWaitSeconds": self.data_seconds / max(1, self.data_steps),
            "checkpointSeconds": self.last_checkpoint_seconds,
        }
        self.data_seconds, self.data_steps = 0.0, 0
        full = {**line, **extra}
        step = int(line["step"])
        if self.gauges is not None:
            self.gauges.set("trainkit_train_step", step)
            self.gauges.set("trainkit_train_loss", full.get("loss"))
            self.gauges.set("trainkit_train_tokens_per_second", tps)
            self.gauges.set("trainkit_train_mfu", full.get("mfu"))
            self.gauges.set("trainkit_train_step_seconds", extra["stepSeconds"])
            self.gauges.set("trainkit_train_data_wait_seconds", extra["dataWaitSeconds"])
        values = scalars_of(full)
        if self.tensorboard is not None:
            self.tensorboard.scalars(step, values)
            self.tensorboard.maybe_upload()
        if self.mlflow is not None:
            self.mlflow.metrics(step, values)
        return extra

    def checkpoint(self, seconds: float) -> None:
        self.last_checkpoint_seconds = seconds
        if self.gauges is not None:
            self.gauges.set("trainkit_train_checkpoint_seconds", seconds)

    def validation(self, step: int, line: dict | None) -> None:
        """Held-out losses (trainkit.train.validation's line) as validation/<source> and validation/mean."""
        if not line:
            return
        values = {f"{TB_VALIDATION_PREFIX}{k}": float(v["loss"]) for k, v in (line.get("sources") or {}).items()}
        if isinstance(line.get("mean"), (int, float)):
            values[f"{TB_VALIDATION_PREFIX}mean"] = float(line["mean"])
        if self.tensorboard is not None:
            self.tensorboard.scalars(step, values)
        if self.mlflow is not None:
            self.mlflow.metrics(step, values)

    def close(self) -> None:
        """Upload and send what is left (bounded by close_timeout per sink). Idempotent."""
        for sink in (self.tensorboard, self.mlflow):
            if sink is not None:
                try:
                    sink.close(self.close_timeout)
                except Exception as e:  # noqa: BLE001 - tracking never fails the run
                    print(f"[trainkit] closing {type(sink).__name__}: {type(e).__name__}: {e}", flush=True)
        self.tensorboard = self.mlflow = None
        _OPEN.pop(id(self), None)


_OPEN: dict[int, StepTracker] = {}  # the trackers of this process not closed yet


def close_all() -> None:
    """Close every tracker of this process (the worker's failure path: its events are uploaded too)."""
    for tracker in list(_OPEN.values()):
        tracker.close()


def for_worker(spec: TrainingRunSpec, tokens_per_step: int, rank: int, start_step: int, config: dict | None,
               options: StorageOptions | None) -> StepTracker:  # fmt: skip
    """The tracker of one training worker. `config` is train_loop_config["tracking"] from the driver:
    {"enabled": False} turns everything off (the overhead benchmark), "mlflowRunId" names the MLflow run,
    "tensorboardUploadSeconds" the upload interval."""
    config = config or {}
    tracker = StepTracker(tokens_per_step)
    if config.get("enabled", True) is False:
        return tracker
    if ray_connected():
        tracker.gauges = RayGauges(spec.output.uri, rank)
    if rank == 0 and spec.tracking.tensorboard:
        policy = TensorBoardPolicy(upload_seconds=float(config.get("tensorboardUploadSeconds", 30.0)))
        tracker.tensorboard = TensorBoardSink(spec.output.uri, options, start_step, policy)
    if rank == 0 and spec.tracking.mlflow is not None and config.get("mlflowRunId"):
        tracker.mlflow = MlflowLogger(spec.tracking.mlflow.uri, config["mlflowRunId"])
    _OPEN[id(tracker)] = tracker
    return tracker


def ray_connected() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


# ------------------------------------------------------------------------------ the driver's side
def _find_runs(client, experiment_id: str, tag: str, value: str) -> list:
    escaped = value.replace("'", "\\'")
    return client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{escaped}'", max_results=50)


def _find_or_create(client, experiment_id: str, tag: str, value: str, make: Callable[[], Any]):
    """The earliest MLflow run tagged tag=value, made if none. Two makers racing both see both afterwards and
    keep the earliest (start time, then id); the other deletes its own: never two runs for one key."""
    found = _find_runs(client, experiment_id, tag, value)
    if found:
        return min(found, key=lambda r: (r.info.start_time, r.info.run_id))
    mine = make()
    found = _find_runs(client, experiment_id, tag, value) or [mine]
    winner = min(found, key=lambda r: (r.info.start_time, r.info.run_id))
    if winner.info.run_id != mine.info.run_id:
        client.delete_run(mine.info.run_id)
    return winner


@dataclass
class MlflowRun:
    """The driver's handle on a run's MLflow run."""

    client: Any
    run_id: str

    def log_eval(self, summary: dict | None) -> None:
        """eval/average and eval/<task> at the eval's step."""
        if not summary or "step" not in summary:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, int(summary["step"])) for k, v in eval_metrics(summary).items()]
        if metrics:
            self._guarded("logging eval scores", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def finish(self, succeeded: bool) -> None:
        status = "FINISHED" if succeeded else "FAILED"
        self._guarded("ending the run", lambda: self.client.set_terminated(self.run_id, status=status))

    def _guarded(self, what: str, call: Callable[[], object]) -> None:
        try:
            call()
        except Exception as e:  # noqa: BLE001 - tracking never fails the run
            print(f"[trainkit] MLflow: {what} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)


def start_mlflow_run(spec: TrainingRunSpec, spec_document: dict) -> MlflowRun | None:
    """The driver: find or create the run's MLflow run (nested under its parent), log its spec as params
    (mixture weights as `weight.<source>`) and as spec.json. None, with the reason printed, when MLflow is
    not asked for or cannot be reached: training goes on without it."""
    if spec.tracking.mlflow is None:
        return None
    try:
        return _start_mlflow_run(spec, spec.tracking.mlflow, spec_document)
    except Exception as e:  # noqa: BLE001 - tracking never fails the run
        print(
            f"[trainkit] MLflow at {spec.tracking.mlflow.uri}: {type(e).__name__}: {str(e)[:300]}; not tracking",
            flush=True,
        )
        return None


def _start_mlflow_run(spec: TrainingRunSpec, m: MlflowSpec, spec_document: dict) -> MlflowRun:
    # Bounded: MLflow's client retries a failing request 7 times with backoff and waits 120 s by default.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=m.uri)
    experiment = client.get_experiment_by_name(m.experiment)
    experiment_id = experiment.experiment_id if experiment else _create_experiment(client, m.experiment)
    name, namespace = run_identity(spec.output.uri)
    tags = {MLFLOW_RUN_TAG: spec.output.uri, "trainkit.run": name, "trainkit.namespace": namespace}
    if m.parent_run_name:
        parent_key = f"{namespace}/{m.parent_run_name}"
        parent = _find_or_create(
            client, experiment_id, MLFLOW_PARENT_TAG, parent_key,
            lambda: client.create_run(experiment_id, run_name=m.parent_run_name, tags={MLFLOW_PARENT_TAG: parent_key}),
        )  # fmt: skip
        tags["mlflow.parentRunId"] = parent.info.run_id
    run = _find_or_create(
        client, experiment_id, MLFLOW_RUN_TAG, spec.output.uri,
        lambda: client.create_run(experiment_id, run_name=name, tags=tags),
    )  # fmt: skip
    run_id = run.info.run_id
    params = {**flat_params(spec_document), **{f"weight.{k}": f"{v:.6g}" for k, v in mixture_weights(spec).items()}}
    already = set(client.get_run(run_id).data.params)  # a restarted driver: params are write-once in MLflow
    todo = [Param(k[:250], v) for k, v in sorted(params.items()) if k[:250] not in already]
    for i in range(0, len(todo), MLFLOW_MAX_PARAMS):
        client.log_batch(run_id, params=todo[i : i + MLFLOW_MAX_PARAMS])
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items() if k != "mlflow.parentRunId"])
    client.log_dict(run_id, spec_document, "spec.json")
    return MlflowRun(client, run_id)


def _create_experiment(client, name: str) -> str:
    try:
        return client.create_experiment(name)
    except Exception:  # a concurrent driver made it first (RESOURCE_ALREADY_EXISTS)
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
