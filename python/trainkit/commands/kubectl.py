"""`kubectl trainkit ...`: the kubectl plugin (the `kubectl-trainkit` console script; kubectl finds it on PATH).

    kubectl trainkit status [RUN]        runs in a table, or one run: phase, conditions, progress, eval, where its
                                         logs are, and its Events (phase changes, eval results, refusals)
    kubectl trainkit progress RUN [-w]   step, loss, tokens/s and ETA from the run's status (-w: until it ends)
    kubectl trainkit logs RUN [-f]       the driver's and workers' logs under <output>/logs/ (as `trainkit logs`)
    kubectl trainkit compare SWEEP       a TrainingSweep's leaderboard: each proxy run's weights, loss, score, rank

It reads the API server of the current kube context (KUBECONFIG, --kubeconfig, --context, -n) with the user's own
credentials; `logs` also reads the run's storage with the user's AWS_* environment (the endpoint from the run's
spec.storage.endpoint unless --endpoint is given). Every formatting decision is a pure function below.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable

from trainkit.spec.models import API_GROUP, API_VERSION

TERMINAL = ("Succeeded", "Failed")
RUNS, SWEEPS = "trainingruns", "trainingsweeps"


class PluginError(Exception):
    """What the user must fix; printed as one line, exit 1."""


# ------------------------------------------------------------------------------------ pure formatting
def table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, three spaces apart (kubectl's look)."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows) + "\n"


def num(v: object, fmt: str = "{:.4g}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def duration(seconds: object) -> str:
    """1h02m, 5m03s, 42s (kubectl's AGE style); '-' when unknown."""
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return "-"
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def age(timestamp: str | None, now: datetime.datetime) -> str:
    if not timestamp:
        return "-"
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    return duration((now - then).total_seconds())


def runs_table(runs: list[dict], now: datetime.datetime) -> str:
    rows = [["NAME", "PHASE", "STEP", "PERCENT", "LOSS", "TOKENS/S", "ETA", "EVAL", "AGE", "REASON"]]
    for run in sorted(runs, key=lambda r: r["metadata"]["name"]):
        st = run.get("status") or {}
        p = st.get("progress") or {}
        rows.append(
            [
                run["metadata"]["name"],
                st.get("phase") or "New",
                f"{p.get('step', 0)}/{p.get('totalSteps', 0)}" if p else "-",
                num(p.get("percent"), "{:.1f}%"),
                num(p.get("loss")),
                num(p.get("tokensPerSecond"), "{:,.0f}"),
                duration(p.get("etaSeconds")) if st.get("phase") == "Running" else "-",
                num((st.get("eval") or {}).get("average")),
                age(run["metadata"].get("creationTimestamp"), now),
                st.get("reason") or "",
            ]
        )
    return table(rows)


def run_details(run: dict, events: list[dict], now: datetime.datetime) -> str:
    """One run, as `kubectl describe` would put what matters: phase, why, progress, eval, artifacts, Events."""
    meta, st = run["metadata"], run.get("status") or {}
    p, ev, art = st.get("progress") or {}, st.get("eval") or {}, st.get("artifacts") or {}
    out = [
        f"Name:        {meta['name']}",
        f"Namespace:   {meta.get('namespace', 'default')}",
        f"Phase:       {st.get('phase') or 'New'}" + (f" ({st['reason']})" if st.get("reason") else ""),
    ]
    if st.get("message"):
        out.append(f"Message:     {st['message']}")
    if p:
        out.append(
            f"Progress:    step {p.get('step', 0)}/{p.get('totalSteps', 0)} ({num(p.get('percent'), '{:.1f}')}%), "
            f"loss {num(p.get('loss'))}, {num(p.get('tokensPerSecond'), '{:,.0f}')} tokens/s, "
            f"ETA {duration(p.get('etaSeconds'))}, updated {p.get('updatedAt') or '-'}"
        )
    if st.get("lastCheckpoint"):
        out.append(f"Checkpoint:  step {st['lastCheckpoint'].get('step')} {st['lastCheckpoint'].get('uri')}")
    if ev:
        tasks = ", ".join(f"{k} {num(v)}" for k, v in sorted((ev.get("tasks") or {}).items()))
        out.append(f"Eval:        step {ev.get('step')}: average {num(ev.get('average'))} ({tasks or 'no tasks'})")
        if ev.get("reportUri"):
            out.append(f"Report:      {ev['reportUri']}")
    for label, key in (("Output", "output"), ("Logs", "logs"), ("Checkpoints", "checkpoints")):
        if art.get(key):
            out.append(f"{label + ':':<13}{art[key]}")
    if art.get("logs"):
        out.append(f"             (kubectl trainkit logs {meta['name']})")
    conds = st.get("conditions") or []
    if conds:
        out.append("Conditions:")
        rows = [["  TYPE", "STATUS", "REASON", "AGE"]]
        rows += [[f"  {c.get('type')}", str(c.get("status")), str(c.get("reason") or ""),
                  age(c.get("lastTransitionTime"), now)] for c in conds]  # fmt: skip
        out.append(table(rows).rstrip("\n"))
    out.append("Events:" if events else "Events:      <none>")
    if events:
        rows = [["  TYPE", "REASON", "AGE", "MESSAGE"]]
        for e in sorted(events, key=event_time):
            rows.append(
                [f"  {e.get('type', '')}", str(e.get("reason", "")), age(event_time(e), now), str(e.get("message", ""))]
            )
        out.append(table(rows).rstrip("\n"))
    return "\n".join(out) + "\n"


def event_time(e: dict) -> str:
    return e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp") or ""


def progress_line(run: dict) -> str:
    """One line of `progress`: the live figures from the run's status."""
    st = run.get("status") or {}
    p = st.get("progress") or {}
    phase = st.get("phase") or "New"
    if not p:
        return f"{run['metadata']['name']}: {phase}, no progress reported yet"
    total = p.get("totalSteps") or 0
    step = p.get("step", 0)
    width = 30
    filled = int(width * step / total) if total else 0
    bar = "#" * filled + "." * (width - filled)
    eta = f"ETA {duration(p.get('etaSeconds'))}" if phase == "Running" else phase
    return (
        f"{run['metadata']['name']}: [{bar}] {step}/{total} ({num(p.get('percent'), '{:.1f}')}%) "
        f"loss {num(p.get('loss'))}  {num(p.get('tokensPerSecond'), '{:,.0f}')} tokens/s  {eta}"
    )


def leaderboard(sweep: dict) -> str:
    """A sweep's leaderboard: rank, run, phase, each source's weight, loss, eval average, the ranked value."""
    st = sweep.get("status") or {}
    rows_in = st.get("leaderboard") or []
    sources = sorted({k for r in rows_in for k in (r.get("weights") or {})})
    rank_by = (sweep.get("spec") or {}).get("rankBy") or "value"
    rows = [["RANK", "RUN", "PHASE", *(s.upper() for s in sources), "LOSS", "EVAL", rank_by.upper()]]
    for r in sorted(rows_in, key=lambda r: (r.get("rank") is None, r.get("rank") or 0, r.get("run", ""))):
        rows.append(
            [
                str(r.get("rank") or "-"),
                str(r.get("run")),
                str(r.get("phase") or "-"),
                *(num((r.get("weights") or {}).get(s), "{:.3f}") for s in sources),
                num(r.get("loss")),
                num(r.get("evalAverage")),
                num(r.get("value")),
            ]
        )
    counts = st.get("runs") or {}
    head = f"TrainingSweep {sweep['metadata']['name']}: {st.get('phase') or 'Pending'}"
    if counts:
        head += (
            f", {counts.get('succeeded', 0)} succeeded, {counts.get('failed', 0)} failed, "
            f"{counts.get('active', 0)} active of {counts.get('total', 0)}"
        )
    best = st.get("best")
    tail = f"best: {best['run']} ({best['metric']} {num(best['value'])})\n" if best else ""
    return head + "\n" + (table(rows) if rows_in else "no runs yet\n") + tail


# -------------------------------------------------------------------------------------- the shell
class Cluster:
    """The user's API server (the current kube context, or --kubeconfig/--context)."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None):
        from kubernetes import client, config

        try:
            self.api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except (config.ConfigException, OSError) as e:
            raise PluginError(f"no usable kube context: {e}") from None
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        self.namespace = namespace or ((chosen or {}).get("context") or {}).get("namespace") or "default"
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    def _call(self, what: str, call: Callable[[], dict]) -> dict:
        from kubernetes import client

        try:
            return call()
        except client.ApiException as e:
            if e.status == 404:
                raise PluginError(f"{what}: not found in namespace {self.namespace}") from None
            raise PluginError(f"{what}: the API server answered {e.status} {e.reason}") from None
        except OSError as e:
            raise PluginError(f"{what}: cannot reach the API server ({type(e).__name__})") from None

    def get(self, plural: str, name: str) -> dict:
        kind = "TrainingRun" if plural == RUNS else "TrainingSweep"
        return self._call(
            f"{kind} {name}",
            lambda: self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, plural, name),
        )

    def items(self, plural: str) -> list[dict]:
        got = self._call(
            plural, lambda: self.custom.list_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, plural)
        )
        return got.get("items") or []

    def events_of(self, name: str) -> list[dict]:
        got = self._call(
            f"Events of {name}",
            lambda: self.api_client.sanitize_for_serialization(
                self.core.list_namespaced_event(
                    self.namespace, field_selector=f"involvedObject.kind=TrainingRun,involvedObject.name={name}"
                )
            ),
        )
        return got.get("items") or []


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def cmd_status(cluster: Cluster, args) -> int:
    if args.run:
        run = cluster.get(RUNS, args.run)
        sys.stdout.write(run_details(run, cluster.events_of(args.run), _now()))
    else:
        runs = cluster.items(RUNS)
        if not runs:
            print(f"No TrainingRuns in namespace {cluster.namespace}.")
            return 0
        sys.stdout.write(runs_table(runs, _now()))
    return 0


def cmd_progress(cluster: Cluster, args) -> int:
    while True:
        run = cluster.get(RUNS, args.run)
        print(progress_line(run), flush=True)
        phase = (run.get("status") or {}).get("phase")
        if not args.watch or phase in TERMINAL:
            return 1 if phase == "Failed" else 0
        time.sleep(args.interval)


def cmd_logs(cluster: Cluster, args) -> int:
    from trainkit.commands import logs
    from trainkit.commands.runref import RunRefError, output_uri_of_run_object

    run = cluster.get(RUNS, args.run)
    try:
        out = output_uri_of_run_object(run, f"TrainingRun {cluster.namespace}/{args.run}")
    except RunRefError as e:
        raise PluginError(str(e)) from None
    endpoint = args.endpoint or ((run.get("spec") or {}).get("storage") or {}).get("endpoint")
    forwarded = argparse.Namespace(
        run=out, namespace=None, follow=args.follow, stream=args.stream, interval=args.interval, endpoint=endpoint
    )
    return logs.run(forwarded)


def cmd_compare(cluster: Cluster, args) -> int:
    sys.stdout.write(leaderboard(cluster.get(SWEEPS, args.sweep)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubectl trainkit", description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--context", help="kube context (default: the current one)")
    p.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    s = sub.add_parser("status", help="runs in a table, or one run's phase, progress, eval, logs and Events")
    s.add_argument("run", nargs="?", metavar="RUN")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("progress", help="a run's live step, loss, tokens/s and ETA")
    s.add_argument("run", metavar="RUN")
    s.add_argument("-w", "--watch", action="store_true", help="keep printing until the run ends")
    s.add_argument("--interval", type=float, default=10.0, help="seconds between lines with -w (default 10)")
    s.set_defaults(func=cmd_progress)
    s = sub.add_parser("logs", help="a run's driver and worker logs (<output>/logs/)")
    s.add_argument("run", metavar="RUN")
    s.add_argument("-f", "--follow", action="store_true")
    s.add_argument("--stream", action="append", help="only this stream (driver, worker-0, ...); repeatable")
    s.add_argument("--interval", type=float, default=2.0)
    s.add_argument(
        "--endpoint", help="S3 endpoint URL (default: the run's spec.storage.endpoint, else AWS_ENDPOINT_URL)"
    )
    s.set_defaults(func=cmd_logs)
    s = sub.add_parser("compare", help="a TrainingSweep's leaderboard")
    s.add_argument("sweep", metavar="SWEEP")
    s.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cluster = Cluster(args.kubeconfig, args.context, args.namespace)
        return int(args.func(cluster, args) or 0)
    except PluginError as e:
        print(f"kubectl trainkit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
