"""A run's tracking, end to end on real parts: one Ray Train run (2 workers, moto S3) with TensorBoard on, MLflow
pointed at a REAL local tracking server (`mlflow server`, sqlite backend, 127.0.0.1) and an eval at the end; then

- the event files under <output>/tensorboard/ read back with TensorBoard's own EventAccumulator: the same values as
  metrics.jsonl, step for step;
- the MLflow run read back with MLflow's own client: the spec and mixture weights as params, the loss curve and
  the eval scores as metrics, nested under the parent run a sweep's proxies share;
- the trainer's gauges through Ray's metrics (ray.util.metrics), scraped from Ray's Prometheus export over HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from trainkit import artifacts, storage
from trainkit.spec import parse_spec

from test_train_run import STEPS, make_spec, metrics

pytestmark = pytest.mark.slow
TASKS = Path(__file__).resolve().parents[1] / "data" / "lm_eval_tasks" / "tk_winogrande"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a sqlite backend, as its docs set one up. It starts at once and is
    waited for only when first used (`url`), so its start-up overlaps the run's own preparations."""

    def __init__(self, folder: Path):
        self.folder = folder
        port = free_port()
        mlflow = Path(sys.executable).with_name("mlflow")
        cmd = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts")]  # fmt: skip
        self.log = open(folder / "server.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=folder)
        self._url = f"http://127.0.0.1:{port}"
        self.ready = False

    @property
    def url(self) -> str:
        deadline = time.monotonic() + 180
        while not self.ready:
            try:
                with urllib.request.urlopen(f"{self._url}/health", timeout=2) as r:
                    self.ready = r.status == 200
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(
                    f"mlflow server did not start:\n{(self.folder / 'server.log').read_text()[-3000:]}"
                )
            if not self.ready:
                time.sleep(0.3)
        return self._url

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


class RayExportPoller:
    """Scrapes Ray's Prometheus export (the node's metrics agent) every second while the run trains, keeping the
    newest `ray_trainkit_train_*` samples of `run` by (name, rank): the agent drops a dead worker's gauges after a
    while, so they are read while the workers live, as Prometheus would."""

    def __init__(self, port: int, run: str):
        self.url, self.run = f"http://127.0.0.1:{port}/metrics", run
        self.seen: dict[tuple[str, str | None], float] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        while not self.done.wait(1.0):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                continue
            found = {
                (s.name, s.labels.get("rank")): s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name.startswith("ray_trainkit_train_") and s.labels.get("run") == self.run
            }
            if ("ray_trainkit_train_step", "0") in found:
                self.seen = found

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def tracked_run(mlflow_server, ray_session, bucket, sources):
    from trainkit.train.launch import run_training

    storage.upload_dir(TASKS, f"{bucket}/tasks/tracking-winogrande")
    out = f"{bucket}/runs/tracked"
    doc = make_spec(sources, out).model_dump(mode="json", by_alias=True)
    doc["eval"] = {
        "tasks": [{"name": "tk_winogrande", "path": f"{bucket}/tasks/tracking-winogrande", "limit": 4}],
        "batchSize": 2,
    }
    doc["tracking"] = {"mlflow": {"uri": mlflow_server.url, "experiment": "trainkit-test", "parentRunName": "sweep-a"}}
    spec = parse_spec(doc)[0]
    poller = RayExportPoller(ray_session.nodes()[0]["MetricsExportPort"], run="tracked")
    try:
        result = run_training(spec, name="tracked")
    finally:
        poller.stop()
    return out, spec, result, poller


def test_tensorboard_events_hold_the_metrics_jsonl_values(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, _, _ = tracked_run
    names = artifacts.list_tensorboard_files(out)
    assert names, "no event files under tensorboard/"
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            Path(tmp, name).write_bytes(storage.read_bytes(artifacts.tensorboard_file_uri(out, name)))
        acc = EventAccumulator(tmp, size_guidance={"scalars": 0})
        acc.Reload()
    lines = metrics(out)
    assert [m["step"] for m in lines] == list(range(2, STEPS + 1, 2))
    for key, tag in (("loss", "train/loss"), ("lr", "train/lr"), ("gradNorm", "train/grad_norm"),
                     ("tokensPerSecond", "train/tokens_per_second")):  # fmt: skip
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [m["step"] for m in lines], tag
        for e, m in zip(events, lines):
            assert e.value == pytest.approx(m[key], rel=1e-6), (tag, e.step)  # TensorBoard keeps float32
    tags = set(acc.Tags()["scalars"])
    assert {"train/step_seconds", "train/data_wait_seconds", "train/checkpoint_seconds"} <= tags
    assert "train/mfu" not in tags  # no MFU on a CPU (no peak FLOP/s): nothing made up
    ckpt = acc.Scalars("train/checkpoint_seconds")
    assert ckpt[0].value == 0.0 and ckpt[-1].value > 0  # the first checkpoint (step 4) shows from the next log step


def test_mlflow_server_recorded_params_metrics_and_eval(tracked_run, mlflow_server):
    from mlflow.tracking import MlflowClient

    out, spec, result, _ = tracked_run
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name("trainkit-test")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`trainkit.output` = '{out}'")
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["weight.manuals"] == "0.5" and params["weight.web"] == "0.3" and params["weight.edu"] == "0.2"
    assert params["data.sources.manuals.weight"] == "0.5" and params["model.preset"] == "tiny"
    assert params["training.globalBatchSize"] == "4" and params["output.uri"] == out
    history = client.get_metric_history(run.info.run_id, "train/loss")
    lines = metrics(out)
    assert [(h.step, pytest.approx(h.value, rel=1e-9)) for h in history] == [(m["step"], m["loss"]) for m in lines]
    assert result.eval is not None and "error" not in result.eval, result.eval
    scores = client.get_metric_history(run.info.run_id, "eval/tk_winogrande")
    assert [(s.step, s.value) for s in scores] == [(STEPS, result.eval["tasks"]["tk_winogrande"])]
    assert client.get_metric_history(run.info.run_id, "eval/average")[0].value == result.eval["average"]
    # the whole spec as an artifact too
    with tempfile.TemporaryDirectory() as tmp:
        spec_json = Path(client.download_artifacts(run.info.run_id, "spec.json", tmp)).read_text()
    assert json.loads(spec_json) == spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    # nested: the sweep's parent run, which a second proxy of the same sweep joins (not a second parent)
    parent_id = run.data.tags["mlflow.parentRunId"]
    parent = client.get_run(parent_id)
    assert parent.info.run_name == "sweep-a" and parent.data.tags["trainkit.parent"] == "local/sweep-a"
    from trainkit.train.tracking import start_mlflow_run

    sibling_doc = spec.model_dump(mode="json", by_alias=True)
    sibling_doc["output"]["uri"] = out + "-sibling"
    sibling = start_mlflow_run(parse_spec(sibling_doc)[0], sibling_doc)
    assert sibling is not None
    assert client.get_run(sibling.run_id).data.tags["mlflow.parentRunId"] == parent_id
    sibling.finish(succeeded=True)
    children = client.search_runs([experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert {c.data.tags["trainkit.output"] for c in children} == {out, out + "-sibling"}
    # a restarted driver finds the same run again (one MLflow run per output)
    again = start_mlflow_run(spec, spec.model_dump(mode="json", by_alias=True))
    assert again is not None and again.run_id == run.info.run_id


def test_mlflow_unreachable_never_fails_the_driver(capsys):
    from trainkit.train.tracking import start_mlflow_run

    doc = make_spec({n: f"s3://tk-nowhere/{n}" for n in "abc"}, "s3://tk-nowhere/out").model_dump(
        mode="json", by_alias=True
    )
    doc["tracking"] = {"mlflow": {"uri": f"http://127.0.0.1:{free_port()}"}}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        started = time.monotonic()
        assert start_mlflow_run(parse_spec(doc)[0], doc) is None
        assert time.monotonic() - started < 60
    finally:
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
    assert "not tracking" in capsys.readouterr().out


def test_trainer_gauges_in_rays_prometheus_export(tracked_run):
    """Ray's metrics agent (every Ray node runs one) serves the workers' ray.util.metrics gauges, prefixed ray_,
    scraped over HTTP while the run trained. The agent publishes what workers recorded every few seconds, so the
    newest sample may lag the last log step: the gauges must show SOME logged step, with that step's values."""
    out, _, _, poller = tracked_run
    lines = {m["step"]: m for m in metrics(out)}
    found = poller.seen
    assert found, "the trainer's gauges never reached Ray's export"
    step = int(found[("ray_trainkit_train_step", "0")])
    assert step in lines, (step, sorted(lines))
    line = lines[step]
    assert found[("ray_trainkit_train_loss", "0")] == pytest.approx(line["loss"], rel=1e-9)
    assert found[("ray_trainkit_train_tokens_per_second", "0")] == pytest.approx(line["tokensPerSecond"], rel=1e-9)
    assert found[("ray_trainkit_train_step_seconds", "0")] == pytest.approx(4 * 32 / line["tokensPerSecond"], rel=1e-9)
    assert found[("ray_trainkit_train_data_wait_seconds", "0")] >= 0
    assert ("ray_trainkit_train_mfu", "0") not in found  # CPU: no MFU
