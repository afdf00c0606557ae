"""Operator at scale: N TrainingRuns applied at once -> time until every RayJob exists and every status is written.

`trainkit bench operator [--runs 1000]`. The operator runs as its own process (`python -m trainkit_operator`,
exactly what the Deployment runs) against the HTTP Kubernetes API test server of `tests/kubeapi`, so its
resident memory (RSS) is measured alone. This is a DEV benchmark: it imports the API test server from the
repository's `tests/` folder (added to sys.path), so it runs from a source checkout, not from an installed wheel.
No KubeRay runs: RayJobs stay without status, so every run ends at phase Pending with all its conditions —
the figure is the operator's own work (parse, build, create ConfigMap + RayJob, status write, Event).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "jobs" / "gpt2-70m-50-30-20.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=1000, help="TrainingRuns applied at once (default 1000)")
    p.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    p.add_argument("--max-workers", type=int, default=16, help="operator handler threads (TRAINKIT_MAX_WORKERS)")
    p.add_argument(
        "--timer-interval", type=float, default=30, help="operator reconcile timer (TRAINKIT_TIMER_INTERVAL)"
    )
    p.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    import psutil

    try:
        proc = psutil.Process(pid)
        return (proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))) / 2**20
    except psutil.Error:
        return 0.0


def run(args: argparse.Namespace) -> int:
    import urllib.request

    import yaml

    sys.path.insert(0, str(REPO / "tests"))  # dev benchmark: the API test server lives with the tests
    from kubeapi import KubeAPIServer

    from trainkit.spec.crd import training_run_crd

    n = args.runs
    seed = yaml.safe_load(SEED.read_text())
    tmp = Path(tempfile.mkdtemp(prefix="trainkit-bench-operator-"))
    figures: dict = {"runs": n, "max_workers": args.max_workers, "timer_interval_s": args.timer_interval}
    with KubeAPIServer(history_limit=max(20_000, 40 * n)) as api:
        kubeconfig = api.write_kubeconfig(tmp / "kubeconfig")
        api.create(training_run_crd())
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "trainkit-s3", "namespace": "default"},
                "stringData": {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"},
            }
        )
        port = _free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "TRAINKIT_NAMESPACES": "default",
            "TRAINKIT_MAX_WORKERS": str(args.max_workers),
            "TRAINKIT_TIMER_INTERVAL": str(args.timer_interval),
            "PYTHONUNBUFFERED": "1",
        }
        log_path = tmp / "operator.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "trainkit_operator", "--liveness", f"http://127.0.0.1:{port}/healthz"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            t_start = time.monotonic()
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() - t_start > 60:
                        print(log_path.read_text()[-3000:], file=sys.stderr)
                        raise SystemExit("the operator did not come up") from None
                    time.sleep(0.2)
            time.sleep(1.0)  # watches established
            figures["startup_s"] = round(time.monotonic() - t_start, 2)
            figures["rss_idle_mb"] = round(_rss_mb(proc.pid), 1)
            requests_before = len(api.requests)

            t0 = time.monotonic()
            for i in range(n):  # "kubectl apply" of N runs at once: server-side creates, back to back
                doc = json.loads(json.dumps(seed))
                doc["metadata"]["name"] = f"bench-{i:05d}"
                doc["spec"]["output"]["uri"] = f"s3://trainkit-runs/runs/default/bench-{i:05d}/"
                api.create(doc)
            figures["apply_s"] = round(time.monotonic() - t0, 2)

            peak = figures["rss_idle_mb"]
            t_rayjobs = t_status = None
            while time.monotonic() - t0 < args.timeout:
                peak = max(peak, _rss_mb(proc.pid))
                if t_rayjobs is None and len(api.list("rayjobs.ray.io", "default")) >= n:
                    t_rayjobs = time.monotonic() - t0
                if (
                    t_status is None
                    and sum(
                        1
                        for r in api.list("trainingruns.trainkit.dev", "default")
                        if (r.get("status") or {}).get("phase")
                    )
                    >= n
                ):
                    t_status = time.monotonic() - t0
                if t_rayjobs is not None and t_status is not None:
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"the operator exited with {proc.returncode}")
                time.sleep(0.5)
            figures["all_rayjobs_s"] = None if t_rayjobs is None else round(t_rayjobs, 2)
            figures["all_statuses_s"] = None if t_status is None else round(t_status, 2)
            if t_status:
                figures["runs_per_s"] = round(n / t_status, 1)
            # settle: the timer keeps running; measure memory with everything in place
            time.sleep(3)
            figures["rss_peak_mb"] = round(max(peak, _rss_mb(proc.pid)), 1)
            figures["rss_after_mb"] = round(_rss_mb(proc.pid), 1)
            made = Counter(r.rbac for r in api.requests[requests_before:])
            figures["api_requests"] = sum(made.values())
            figures["api_requests_by_call"] = {f"{v} {g or 'core'}/{r}": c for (g, r, v), c in sorted(made.items())}
            rayjobs = api.list("rayjobs.ray.io", "default")
            figures["rayjobs"] = len(rayjobs)
            figures["duplicate_rayjobs"] = len(rayjobs) - len(
                {rj["metadata"]["labels"]["trainkit.dev/run"] for rj in rayjobs}
            )
            phases = Counter(
                (r.get("status") or {}).get("phase") for r in api.list("trainingruns.trainkit.dev", "default")
            )
            figures["phases"] = dict(phases)
        finally:
            proc.terminate()
            try:
                figures["operator_exit_code"] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                figures["operator_exit_code"] = "killed"

    print(
        f"operator bench: {n} TrainingRuns applied at once (API test server, no KubeRay; machine: {os.cpu_count()} cores)"
    )
    print(f"  every RayJob exists after     {figures['all_rayjobs_s']} s")
    print(f"  every status written after    {figures['all_statuses_s']} s  ({figures.get('runs_per_s')} runs/s)")
    print(
        f"  operator RSS idle / peak / after: {figures['rss_idle_mb']} / {figures['rss_peak_mb']} / {figures['rss_after_mb']} MiB"
    )
    print(
        f"  API requests: {figures['api_requests']}  duplicates: {figures['duplicate_rayjobs']}  phases: {figures['phases']}"
    )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["all_statuses_s"] is not None and figures["duplicate_rayjobs"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainkit_operator.bench", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
