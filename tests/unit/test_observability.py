"""The pure parts of issue 16: the operator's metric bookkeeping, the Events a status change posts, what the
trainer hands TensorBoard/MLflow, the MLflow block of the spec and the RayJob env it becomes."""

from __future__ import annotations

import datetime
import threading
import time

import pytest

from trainkit.spec import parse_spec
from trainkit.spec.load import SpecError

NOW = datetime.datetime(2026, 12, 6, 12, 0, 0, tzinfo=datetime.timezone.utc)


def run_body(name: str, phase: str | None, uid: str = "u1", created: str = "2026-12-06T11:59:00Z") -> dict:
    body = {"metadata": {"name": name, "namespace": "team-a", "uid": uid, "creationTimestamp": created}}
    if phase:
        body["status"] = {"phase": phase}
    return body


def test_api_verb_and_code():
    from trainkit_operator.metrics import api_verb, error_code

    path = "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}"
    assert api_verb("GET", path) == "get" and api_verb("GET", path.rsplit("/", 1)[0]) == "list"
    assert api_verb("PATCH", path + "/status") == "patch" and api_verb("POST", path) == "create"
    assert api_verb("PUT", path) == "update" and api_verb("DELETE", path) == "delete"

    class E(Exception):
        status = 503

    assert error_code(E()) == "503" and error_code(ConnectionError("refused")) == "connection"


def test_phase_book_counts_queue_wait_once_per_run():
    from trainkit_operator.metrics import PhaseBook

    book = PhaseBook()
    assert book.saw("TrainingRun", run_body("a", None), "ADDED", NOW) is None
    assert book.counts() == {("TrainingRun", "team-a", "New"): 1}
    assert book.saw("TrainingRun", run_body("a", "Pending"), "MODIFIED", NOW) is None
    assert book.saw("TrainingRun", run_body("a", "Running"), "MODIFIED", NOW) == 60.0  # created a minute ago
    # a retry (Pending again, then Running) is not a second queue wait
    book.saw("TrainingRun", run_body("a", "Pending"), "MODIFIED", NOW)
    assert book.saw("TrainingRun", run_body("a", "Running"), "MODIFIED", NOW) is None
    # a run already Running when the operator starts (the initial listing): its wait began unseen
    assert book.saw("TrainingRun", run_body("b", "Running", uid="u2"), None, NOW) is None
    assert book.counts() == {("TrainingRun", "team-a", "Running"): 2}
    book.saw("TrainingRun", run_body("a", "Running"), "DELETED", NOW)
    assert book.counts() == {("TrainingRun", "team-a", "Running"): 1}
    # an unparsable creation time: no wait rather than a wrong one
    assert book.saw("TrainingRun", run_body("c", "Running", uid="u3", created="yesterday"), "MODIFIED", NOW) is None


def test_resources_gauge_shows_every_known_phase():
    from prometheus_client import generate_latest

    from trainkit_operator.wiring import new_metrics

    metrics = new_metrics()
    metrics.saw("TrainingRun", run_body("a", "Running"), "ADDED")
    text = generate_latest(metrics.registry).decode()
    assert 'trainkit_resources{kind="TrainingRun",namespace="team-a",phase="Running"} 1.0' in text
    assert 'trainkit_resources{kind="TrainingRun",namespace="team-a",phase="Queued"} 0.0' in text
    assert 'kind="TrainingSweep"' not in text  # no sweep in any namespace: no series


def status(phase: str, reason: str = "r", eval_step: int | None = None, logs: str | None = "s3://b/run/logs/"):
    from trainkit.spec.status import Artifacts, EvalSummary, TrainingRunStatus

    ev = None
    if eval_step is not None:
        ev = EvalSummary(step=eval_step, average=41.5, tasks={"piqa": 60.0, "mmlu": 23.0}, report_uri="s3://b/r.md")
    return TrainingRunStatus(
        phase=phase, reason=reason, message="m", eval=ev, artifacts=Artifacts(logs=logs) if logs else None
    )


def test_run_events_link_logs_at_the_end_and_announce_evals():
    from trainkit_operator.decide import run_events

    assert run_events(status("Pending"), status("Running", "JobRunning")) == (
        ("Normal", "JobRunning", "Pending -> Running: m"),
    )
    (failed,) = run_events(status("Running"), status("Failed", "AppFailed"))
    assert failed == ("Warning", "AppFailed", "Running -> Failed: m (logs: s3://b/run/logs/)")
    both = run_events(status("Running", eval_step=100), status("Succeeded", "JobSucceeded", eval_step=200))
    assert [e[1] for e in both] == ["JobSucceeded", "EvalResult"]
    assert both[1][2] == "eval of step 200: average 41.5; mmlu 23, piqa 60; report: s3://b/r.md"
    assert run_events(status("Running", eval_step=100), status("Running", eval_step=100)) == ()
    # a long message is cut before the logs link, never the link
    long = status("Failed", "AppFailed")
    long.message = "x" * 5000
    (cut,) = run_events(status("Running"), long)
    assert len(cut[2]) == 1000 and cut[2].endswith("(logs: s3://b/run/logs/)")


def test_flat_params_weights_and_scalars():
    from trainkit.train.tracking import eval_metrics, flat_params, scalars_of

    doc = {"data": {"sources": [{"name": "web", "weight": 0.3, "uri": "s3://b/w"}]}, "training": {"betas": [0.9, 0.95]}}
    assert flat_params(doc) == {
        "data.sources.web.weight": "0.3",
        "data.sources.web.uri": "s3://b/w",
        "training.betas": "[0.9, 0.95]",
    }
    line = {"step": 4, "loss": 3.5, "lr": 1e-3, "gradNorm": float("nan"), "tokensPerSecond": 10.0, "mfu": None}
    assert scalars_of(line) == {"train/loss": 3.5, "train/lr": 1e-3, "train/tokens_per_second": 10.0}
    assert eval_metrics({"average": 40.0, "tasks": {"piqa": 60.0, "bad": "x"}}) == {
        "eval/average": 40.0,
        "eval/piqa": 60.0,
    }


def test_background_is_bounded_and_never_raises(capsys):
    from trainkit.train.tracking import Background

    gate = threading.Event()
    done: list[int] = []
    sink = Background("test", capacity=2)
    sink.put(gate.wait)  # the worker is busy with this one
    time.sleep(0.1)
    for i in range(5):
        sink.put(lambda i=i: done.append(i))
    assert sink.dropped == 3  # only the newest two wait
    sink.put(lambda: 1 / 0)  # drops one more, then fails: said once, not raised
    gate.set()
    sink.close(timeout=10)
    assert done == [4] and sink.failed == 1 and sink.dropped == 4
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_step_tracker_timings():
    from trainkit.train.tracking import StepTracker

    tracker = StepTracker(tokens_per_step=1000)
    for _ in range(4):
        tracker.timed_data(lambda: time.sleep(0.01))
    tracker.checkpoint(2.5)
    extra = tracker.log({"step": 4, "loss": 3.0, "tokensPerSecond": 500.0})
    assert extra["stepSeconds"] == 2.0 and extra["checkpointSeconds"] == 2.5
    assert 0.009 < extra["dataWaitSeconds"] < 0.5
    assert tracker.log({"step": 5, "tokensPerSecond": 0.0})["dataWaitSeconds"] == 0.0  # the window restarts


SPEC = {
    "data": {"totalTokens": 1000, "seqLength": 32, "sources": [{"name": "web", "uri": "s3://tk-b/web", "weight": 1}]},
    "training": {"microBatchSize": 1, "globalBatchSize": 1},
    "output": {"uri": "s3://tk-b/out"},
}


def test_mlflow_spec_and_its_credentials():
    from trainkit_operator.builders import mlflow_env

    spec = parse_spec({**SPEC, "tracking": {"mlflow": {"uri": "https://mlflow.ml:5000", "credentialsSecret": "mlf"}}})[
        0
    ]
    env = mlflow_env(spec)
    assert [e["name"] for e in env] == ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"]
    assert all(set(e) == {"name", "valueFrom"} and e["valueFrom"]["secretKeyRef"]["name"] == "mlf" for e in env)
    assert parse_spec(SPEC)[0].tracking.tensorboard is True and mlflow_env(parse_spec(SPEC)[0]) == []
    for bad in ("https://user:pw@mlflow.ml", "file:///tmp/mlruns", "mlflow.ml:5000"):
        with pytest.raises(SpecError, match="tracking.mlflow.uri"):
            parse_spec({**SPEC, "tracking": {"mlflow": {"uri": bad}}})


def test_sweep_proxies_nest_under_the_sweep():
    from trainkit.spec.sweep import TrainingSweep, expand_sweep

    template = {**SPEC, "tracking": {"mlflow": {"uri": "http://mlflow:5000"}}}
    sweep = TrainingSweep.model_validate({
        "apiVersion": "trainkit.dev/v1alpha1", "kind": "TrainingSweep", "metadata": {"name": "mix"},
        "spec": {"template": template, "rankBy": "loss", "mixtures": {"explicit": [{"weights": {"web": 1}}, {"weights": {"web": 2}}]}},
    })  # fmt: skip
    runs = expand_sweep(sweep)
    assert [r["spec"]["tracking"]["mlflow"]["parentRunName"] for r in runs] == ["mix", "mix"]


def test_metrics_port_setting():
    from trainkit_operator.config import OperatorConfig

    assert OperatorConfig.from_env({}).metrics_port is None  # off unless the chart (or the user) asks
    assert OperatorConfig.from_env({"TRAINKIT_METRICS_PORT": "8081"}).metrics_port == 8081
    for bad in ("0", "70000", "http"):
        with pytest.raises(ValueError, match="TRAINKIT_METRICS_PORT must be a port number"):
            OperatorConfig.from_env({"TRAINKIT_METRICS_PORT": bad})


def test_kubectl_plugin_durations():
    from trainkit.commands.kubectl import duration

    assert [duration(x) for x in (42, 333, 3720, 90000, None, -1)] == ["42s", "5m33s", "1h02m", "1d01h", "-", "-"]
