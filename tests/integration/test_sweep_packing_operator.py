"""A 512-run packed sweep through the operator (kopf) against the API test server and a real S3 server.

KubeRay and the trainer are SIMULATED here (this test is about the operator at scale): the test writes each
pack RayJob's status where KubeRay's controller would, and each run's records (spec.json, progress.json,
metrics.jsonl, eval summary, outcome.json) where the pack's driver would (tests/integration/test_pack_driver.py
runs the real driver on real Ray Train). Everything else is real: the sweep controller creating 512 runs and
8 pack RayJobs (checked against KubeRay's RayJob schema by the API test server: a field it does not declare
fails the test), the run controller deriving 512 phases from the shared RayJobs and each run's own outcome,
the operator's RBAC from the chart, garbage collection, and `trainkit compare` on the 512 runs' artifacts.
"""

from __future__ import annotations

import concurrent.futures
from collections import Counter
import json
import os
import resource
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import psutil
import pytest
import yaml

from test_operator_support import NS, RAYJOBS, REPO, RUNS, chart_rbac, wait_for
from trainkit_operator.builders import SPEC_HASH_ANNOTATION, configmap_name

SWEEPS = "trainingsweeps.trainkit.dev"
RUNS_TOTAL, K = 512, 64
PACKS = [f"big-p{p:03d}" for p in range(RUNS_TOTAL // K)]


def big_sweep(bucket: str) -> dict:
    doc = yaml.safe_load((REPO / "jobs" / "sweep-regmix-packed.yaml").read_text())
    doc["metadata"]["name"] = "big"
    spec = doc["spec"]
    spec.update({"parallelism": RUNS_TOTAL, "maxRuns": RUNS_TOTAL, "rankBy": "eval.average"})
    spec["packing"]["runsPerCluster"] = K
    spec["mixtures"]["dirichlet"]["samples"] = RUNS_TOTAL
    spec["template"]["eval"] = {"atEnd": True, "tasks": [{"name": "tk_piqa"}], "validationTokens": 0}
    spec["template"]["output"]["uri"] = f"{bucket}/sweeps/big/"
    spec["template"]["resources"]["memoryPerWorker"] = "128Gi"  # 64 runs' worker processes share the pod
    return doc


def the_runs(server) -> list[dict]:
    return server.list(RUNS, NS, label_selector="trainkit.dev/sweep=big")


def states(server) -> dict[str, tuple[str | None, str | None]]:
    """(phase, reason) of each of the sweep's runs, read in place: polling 512 deep copies would cost the
    API server (same process, same lock) more than the operator's own requests."""
    with server.store.lock:
        return {
            o["metadata"]["name"]: ((o.get("status") or {}).get("phase"), (o.get("status") or {}).get("reason"))
            for o in server.store.objects.get(("trainkit.dev", "trainingruns"), {}).values()
            if (o["metadata"].get("labels") or {}).get("trainkit.dev/sweep") == "big"
        }


def phases(server) -> dict[str, str | None]:
    return {name: phase for name, (phase, _) in states(server).items()}


def kuberay_moves(server, pack: str, **status):
    """SIMULATED KubeRay: the pack RayJob's status, written as its controller writes it (status subresource)."""
    rt = server.store.resolve("rayjobs")
    server.store.patch(rt, "v1", NS, pack, {"status": status}, "application/merge-patch+json", subresource="status")


def average_of(index: int) -> float:
    return round(0.2 + (index * 37 % 512) / 2048, 6)  # distinct per run, not in index order


def trainer_writes(run: dict, outcome: dict | None) -> None:
    """SIMULATED pack driver: one run's records under its own output, the outcome written last."""
    import boto3

    from trainkit import artifacts

    s3 = boto3.client("s3")
    spec = run["spec"]
    out = spec["output"]["uri"].rstrip("/")
    bucket, _, prefix = out[len("s3://") :].partition("/")
    index = int(run["metadata"]["name"].rsplit("-", 1)[1])
    steps = 1526
    progress = {"step": steps, "totalSteps": steps, "loss": 3.0, "finished": True}  # (in outcome.json)
    docs = {
        artifacts.SPEC: spec,
        f"{artifacts.EVAL}/{artifacts.step_dir_name(steps)}/{artifacts.EVAL_SUMMARY}": {
            "step": steps,
            "average": average_of(index),
            "tasks": {"tk_piqa": average_of(index)},
        },
    }
    for name, doc in docs.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=json.dumps(doc).encode())
    lines = "".join(json.dumps({"step": s, "loss": 10.0 - s / 200}) + "\n" for s in [*range(100, steps, 100), steps])
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{artifacts.METRICS}", Body=lines.encode())
    if outcome is not None:
        final = artifacts.outcome_doc(
            outcome["state"],
            outcome["message"],
            outcome["step"],
            outcome["finishedAt"],
            artifacts.owner_of_run(run["metadata"]["uid"], NS, run["metadata"]["name"], ""),
            progress=progress,
            eval_summary=docs[f"{artifacts.EVAL}/{artifacts.step_dir_name(steps)}/{artifacts.EVAL_SUMMARY}"],
        )
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{artifacts.OUTCOME}", Body=json.dumps(final).encode())


@contextmanager
def operator_process(server, tmp_path, **env):
    """The operator as the chart's Deployment runs it (`python -m trainkit_operator`, its own process, the chart's
    ServiceAccount token): at 512 runs it must not share one interpreter lock with the API test server."""
    kubeconfig = server.write_token_kubeconfig(tmp_path / "operator-kubeconfig", server.operator_token)
    log = open(tmp_path / "operator.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainkit_operator", "--liveness", ""],
        env={
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "TRAINKIT_NAMESPACES": NS,
            "TRAINKIT_STORAGE_ENDPOINT": os.environ["AWS_ENDPOINT_URL"],
            "TRAINKIT_WATCH_SERVER_TIMEOUT": "20",
            "TRAINKIT_WATCH_CLIENT_TIMEOUT": "25",
            "PYTHONUNBUFFERED": "1",
            **env,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
        assert proc.poll() is None, (tmp_path / "operator.log").read_text()[-3000:]
        times = psutil.Process(proc.pid).cpu_times()
        proc.cpu_seconds = times.user + times.system  # type: ignore[attr-defined]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    written = [w for w in server.warnings if "unknown field" in w[2]]
    assert not written, f"fields pruned as unknown (Warning headers): {written}"


@pytest.mark.kubeapi(gc_delay=None)
def test_a_512_run_sweep_packed_64_to_a_cluster_through_the_operator(cluster, seed_bucket, tmp_path, capsys):
    from trainkit.spec.crd import training_sweep_crd

    chart_rbac(cluster, "namespaced")
    cluster.create(training_sweep_crd())
    # Timers far apart: at this scale the runs move by events (creates, resumes, pack RayJob changes).
    env = {"TRAINKIT_TIMER_INTERVAL": "300", "TRAINKIT_MAX_WORKERS": "16"}
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    with operator_process(cluster, tmp_path, **env) as first:
        cluster.create(big_sweep(seed_bucket))
        wait_for(lambda: len(states(cluster)) == RUNS_TOTAL, timeout=240, interval=1.0, what="512 runs")
        timings["512 runs created (s)"] = time.monotonic() - t0
        wait_for(lambda: len(cluster.list(RAYJOBS, NS)) == len(PACKS), timeout=120, interval=1.0, what="8 packs")
        timings["8 pack RayJobs created (s)"] = time.monotonic() - t0

    # The operator stopped (a restart). Meanwhile SIMULATED KubeRay and pack drivers run every pack: pack 0 has
    # one run failing on its own and one whose driver task never reported (no outcome), and ends FAILED; the
    # other packs end SUCCEEDED.
    runs = {r["metadata"]["name"]: r for r in the_runs(cluster)}
    assert len(runs) == RUNS_TOTAL and len(cluster.list(RAYJOBS, NS)) == len(PACKS)
    for rj in cluster.list(RAYJOBS, NS):
        assert rj["spec"]["entrypoint"] == "python -m trainkit.jobs.pack --spec /etc/trainkit/spec.json"
        (ref,) = rj["metadata"]["ownerReferences"]
        assert ref["kind"] == "TrainingSweep" and ref["name"] == "big"
        digest = rj["metadata"]["annotations"][SPEC_HASH_ANNOTATION]  # immutable, named by its content
        cm = cluster.get("configmaps", configmap_name(rj["metadata"]["name"], digest), NS)
        members = json.loads(cm["data"]["spec.json"])["spec"]["runs"]
        assert len(members) == K and {m["uid"] for m in members} <= {r["metadata"]["uid"] for r in runs.values()}
    failed_run, silent_run = "big-001", "big-002"
    ok = {"state": "Succeeded", "message": "trained", "step": 1526, "finishedAt": "2026-12-06T00:00:00Z"}
    t_write = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for name, run in runs.items():
            outcome = None if name == silent_run else ok
            if name == failed_run:
                outcome = {**ok, "state": "Failed", "message": "training failed: RuntimeError: boom"}
            pool.submit(trainer_writes, run, outcome)
    timings["(simulated: 512 runs' records written to S3, s)"] = time.monotonic() - t_write
    for pack in PACKS:
        failed = pack == PACKS[0]
        kuberay_moves(
            cluster,
            pack,
            jobStatus="FAILED" if failed else "SUCCEEDED",
            jobDeploymentStatus="Complete",
            rayClusterName=pack,
            startTime="2026-12-06T00:00:00Z",
            **({"reason": "AppFailed", "message": "1 of 64 runs failed"} if failed else {}),
        )

    t1 = time.monotonic()
    with operator_process(cluster, tmp_path, **env) as second:
        try:
            st = wait_for(
                lambda: (
                    (s := cluster.get(SWEEPS, "big", NS).get("status") or {}).get("phase") in ("Succeeded", "Failed")
                    and (s.get("fullLeaderboard") or {}).get("rows") == RUNS_TOTAL
                    and s
                ),
                timeout=300,
                interval=1.0,
                what="every run finished and the sweep's whole leaderboard written",
            )
        except AssertionError as e:
            stuck = sorted(n for n, st in states(cluster).items() if st[0] not in ("Succeeded", "Failed"))[:5]
            raise AssertionError(f"{e}; runs (phase, reason): {Counter(states(cluster).values())}; {stuck}") from None
        timings["after the restart: every run finished, leaderboard written (s)"] = time.monotonic() - t1
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    timings["(CPU s: operator, both runs)"] = first.cpu_seconds + second.cpu_seconds
    timings["(CPU s: this process: API test server, S3 server, simulated KubeRay and trainer)"] = (
        cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    )
    calls = Counter(f"{q.verb} {q.resource}{'/' + q.subresource if q.subresource else ''}" for q in cluster.requests)
    timings["(API requests)"] = dict(calls.most_common(12))
    # Nothing was created twice across the restart.
    assert len(the_runs(cluster)) == RUNS_TOTAL and len(cluster.list(RAYJOBS, NS)) == len(PACKS)
    final = states(cluster)
    assert final[failed_run] == ("Failed", "RunFailed") and final[silent_run] == ("Failed", "PackEndedWithoutOutcome")
    # The pack's FAILED end did not touch its 62 good runs: each ended by its own outcome.
    assert [final[f"big-{i:03d}"] for i in range(3, K)] == [("Succeeded", "RunSucceeded")] * (K - 3)
    one = cluster.get(RUNS, "big-000", NS)["status"]
    assert one["rayJobName"] == PACKS[0] and one["jobStatus"] == "FAILED" and one["phase"] == "Succeeded"
    assert one["eval"]["average"] == average_of(0) and one["lastCheckpoint"]["step"] == 1526
    assert "boom" in cluster.get(RUNS, failed_run, NS)["status"]["message"]
    assert st["runs"] == {"total": RUNS_TOTAL, "created": RUNS_TOTAL, "active": 0, "succeeded": 510, "failed": 2}
    assert st["phase"] == "Succeeded" and st["packs"] == {"runsPerCluster": K, "total": 8, "created": 8}

    # A bounded status: the top 20 rows; the whole leaderboard is in S3.
    size = len(json.dumps(cluster.get(SWEEPS, "big", NS)))
    timings["(the sweep object, bytes)"] = size
    assert size < 64 * 1024, size  # the API server refuses objects over 1.5 MiB
    best = max(range(RUNS_TOTAL), key=average_of)  # a permutation: one best, and neither of the failed runs
    assert len(st["leaderboard"]) == 20 and st["best"]["run"] == f"big-{best:03d}"
    from trainkit import storage

    board = json.loads(storage.read_bytes(st["fullLeaderboard"]["uri"]))
    assert len(board["rows"]) == RUNS_TOTAL and board["rows"][0]["run"] == st["best"]["run"]
    assert [r.get("rank") for r in board["rows"][:510]] == list(range(1, 511))

    # `trainkit compare` on the 512 runs' artifacts.
    from trainkit.compare import compare_runs

    t_compare = time.monotonic()
    report = compare_runs([f"{seed_bucket}/sweeps/big"], rank_by="eval.average")
    timings["trainkit compare on 512 runs (s)"] = time.monotonic() - t_compare
    assert len(report.rows) == RUNS_TOTAL and report.rows[0].run.name == st["best"]["run"]
    with capsys.disabled():
        print("\n512-run packed sweep (simulated KubeRay; this machine, shared): " + json.dumps(timings, indent=1))
