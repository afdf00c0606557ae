"""The operator's Prometheus metrics, scraped over HTTP while a run goes Pending -> Running -> Succeeded -> deleted.

Real parts: kopf runs the operator against the API test server, the run's artifacts are on a real S3 server
(moto), the metrics are served by prometheus_client's own HTTP server and parsed with its own parser.
SIMULATED: KubeRay's RayJob status transitions (written by the test where KubeRay writes them).
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from test_operator_support import (
    NS,
    RAYJOBS,
    RUNS,
    events_for,
    get,
    kuberay_sets_status,
    operator_config,
    put_json,
    running_operator,
    seed_doc,
    status_of,
    wait_for,
)

RUN = "metrics-run"


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def scraped_when(port: int, ok, what: str) -> dict:
    """The first scrape for which `ok(samples)` holds (the operator acts on watch events: not at once)."""

    def attempt():
        samples = scrape(port)
        return samples if ok(samples) else None

    return wait_for(attempt, what=what)


def runs_in(samples: dict, phase: str) -> float:
    return value(samples, "trainkit_resources", kind="TrainingRun", namespace=NS, phase=phase)


def test_metrics_follow_a_run_through_its_phases(cluster, s3_bucket):
    from trainkit_operator.wiring import new_metrics

    metrics = new_metrics()
    out = f"{s3_bucket}/runs/{NS}/{RUN}"
    config = operator_config(metrics_port=0, metrics_host="127.0.0.1")
    with running_operator(cluster, config=config, metrics=metrics):
        cluster.create(seed_doc(RUN, bucket=s3_bucket))
        wait_for(lambda: get(cluster, RAYJOBS, RUN), what="the RayJob")
        wait_for(lambda: status_of(cluster, RUN).get("phase") == "Pending", what="Pending")
        port = metrics.port
        assert port
        first = scraped_when(port, lambda s: runs_in(s, "Pending") == 1, what="Pending counted")
        assert runs_in(first, "Running") == 0 and runs_in(first, "Succeeded") == 0  # every phase shows, at 0
        assert value(first, "trainkit_reconcile_duration_seconds_count", kind="TrainingRun") >= 1
        assert value(first, "trainkit_reconcile_duration_seconds_sum", kind="TrainingRun") > 0
        # the RayJob did not exist at the first reconcile: its GET answered 404 (counted by verb and code)
        assert value(first, "trainkit_api_errors_total", verb="get", code="404") >= 1
        assert value(first, "trainkit_run_queue_wait_seconds_count") == 0
        assert value(first, "trainkit_events_total", kind="TrainingRun", reason="Created") == 1

        # SIMULATED KubeRay: the job runs; the trainer's progress.json is there but too large to read
        # (over the operator's 1 MiB cap): a storage read failure, counted for the run's namespace
        put_json(f"{out}/progress.json", {"step": 1, "totalSteps": 8138, "loss": 3.0, "pad": "x" * (1 << 20)})
        kuberay_sets_status(cluster, RUN, jobStatus="RUNNING", jobDeploymentStatus="Running", rayClusterName="rc")
        wait_for(lambda: status_of(cluster, RUN).get("phase") == "Running", what="Running")
        running = scraped_when(
            port,
            lambda s: (
                runs_in(s, "Running") == 1 and value(s, "trainkit_storage_read_failures_total", namespace=NS) >= 1
            ),
            what="Running and a read failure counted",
        )
        assert runs_in(running, "Pending") == 0
        assert value(running, "trainkit_run_queue_wait_seconds_count") == 1  # the run's one create -> Running
        wait = value(running, "trainkit_run_queue_wait_seconds_sum")
        assert 0 < wait < 120
        assert value(running, "trainkit_run_queue_wait_seconds_bucket", le="+Inf") == 1
        before = value(running, "trainkit_reconcile_duration_seconds_count", kind="TrainingRun")

        # the API server fails the next read of the RayJob: counted by verb and code, the reconcile as failed
        cluster.inject("GET", rf"/rayjobs/{RUN}$", 503, times=1)
        failed = scraped_when(
            port,
            lambda s: value(s, "trainkit_api_errors_total", verb="get", code="503") == 1,
            what="the 503 counted",
        )
        assert value(failed, "trainkit_reconcile_failures_total", kind="TrainingRun") >= 1

        # the trainer's records readable again; SIMULATED KubeRay: done
        put_json(f"{out}/progress.json", {"step": 8138, "totalSteps": 8138, "loss": 2.9})
        put_json(f"{out}/eval/step-00008138/summary.json", {"step": 8138, "average": 40.0, "tasks": {"piqa": 60.0}})
        kuberay_sets_status(cluster, RUN, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
        wait_for(lambda: status_of(cluster, RUN).get("phase") == "Succeeded", what="Succeeded")
        done = scraped_when(port, lambda s: runs_in(s, "Succeeded") == 1, what="Succeeded")
        assert runs_in(done, "Running") == 0
        assert value(done, "trainkit_reconcile_duration_seconds_count", kind="TrainingRun") > before
        assert value(done, "trainkit_run_queue_wait_seconds_count") == 1  # not counted again
        assert value(done, "trainkit_events_total", kind="TrainingRun", type="Normal", reason="JobSucceeded") == 1
        assert value(done, "trainkit_events_total", kind="TrainingRun", type="Normal", reason="EvalResult") == 1

        # the Events: the end names where the logs are; the eval result has its own Event with the report
        events = {e["reason"]: e["message"] for e in events_for(cluster, RUN)}
        assert events["JobSucceeded"].endswith(f"(logs: {out}/logs/)")
        assert events["EvalResult"].startswith("eval of step 8138: average 40; piqa 60; report: ")
        assert status_of(cluster, RUN)["artifacts"]["logs"] == f"{out}/logs/"

        # deleted: it no longer counts (the watch's DELETED event)
        cluster.store.delete(cluster.store.resolve(RUNS), NS, RUN)
        gone = scraped_when(port, lambda s: runs_in(s, "Succeeded") == 0, what="deletion seen")
        assert runs_in(gone, "Running") == 0
    # the endpoint closes with the operator
    try:
        scrape(port)
        raise AssertionError("the metrics endpoint outlived the operator")
    except OSError:
        pass
