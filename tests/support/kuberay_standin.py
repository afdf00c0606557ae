"""A KubeRay stand-in that EXECUTES RayJobs: real Ray nodes on this machine from the RayJob's own templates.

It follows KubeRay v1.4.2's RayJob controller (the oldest version docs/install.md supports) and notes where
v1.7.0 differs, function by function in ray-project/kuberay `ray-operator/controllers/ray/`:

- `rayjob_controller.go` `Reconcile`, one `switch` on `status.jobDeploymentStatus` per pass, then
  `checkBackoffLimitAndUpdateStatusIfNeeded` and `updateRayJobStatus` (the status is written only when jobStatus or
  jobDeploymentStatus changed; endTime is set on Complete/Failed), mirrored in `KubeRayStandIn.reconcile`:
  - "" (New): the finalizer `ray.io/rayjob-finalizer`, then `initRayJobStatusIfNeed`: a NEW jobId and
    rayClusterName (`utils.GenerateRayJobId` / `GenerateRayClusterName`: `<rayjob>-<5 random>`), startTime = now
    (every attempt and every resume gets its own), -> Initializing.
  - Initializing: `updateStatusToSuspendingIfNeeded` (suspend -> Suspending), `checkActiveDeadlineAndUpdateStatus...`
    (-> Failed/DeadlineExceeded), `getOrCreateRayClusterInstance`, wait for the cluster to be Ready, dashboardURL,
    `createK8sJobIfNeed` (K8sJobMode submitter) -> Running.
  - Running: suspend -> Suspending; deadline; `checkTransitionGracePeriodAndUpdateStatusIfNeeded` (300 s);
    `checkK8sJobAndUpdateStatusIfNeeded` (a submitter Job that failed -> Failed, AppFailed if jobStatus is FAILED,
    else SubmissionFailed); `GetJobInfo` from the dashboard: jobStatus and message mirrored, rayJobInfo times; a
    terminal Ray job whose submitter Job finished -> Complete, or Failed/AppFailed when FAILED. (v1.7.0 also fails
    a job the dashboard does not know once the submitter finished: "Submitter completed but Ray job not found".)
  - Suspending and Retrying: `deleteClusterResources` + `deleteSubmitterJob`, and no transition until they are
    gone ("Wait for the resources to be deleted"); then rayClusterName, dashboardURL, jobId, message, reason,
    rayJobInfo reset and jobStatus New; Suspending -> Suspended, Retrying -> New (so a retry or a resume runs on a
    NEW cluster). Deleting a pod is the kubelet's SIGTERM, then SIGKILL after terminationGracePeriodSeconds (30).
  - Suspended: `suspend: false` -> New.
  - Complete/Failed: `shutdownAfterJobFinishes`: the cluster is deleted `ttlSecondsAfterFinished` after endTime.
  - `checkBackoffLimitAndUpdateStatusIfNeeded`: on Failed, `failed` + 1 and, while `failed < backoffLimit + 1`
    (and the reason is not DeadlineExceeded), Retrying instead; on Complete with SUCCEEDED, `succeeded` + 1.
  - Deletion (`deletionTimestamp`): a non-terminal Ray job is stopped through the dashboard, the finalizer removed;
    the cluster goes with the RayJob (it owns the RayCluster).
- `common/job.go` `GetK8sJobCommand`: the submitter pod runs `/bin/bash -ce --` (utils `GetContainerCommand`)
  `if ! ray job status --address http://<dashboardURL> <jobId> >/dev/null 2>&1 ; then ray job submit --address ...
  --no-wait --submission-id <jobId> -- <entrypoint> ; fi ; ray job logs --address ... --follow <jobId>`, with
  PYTHONUNBUFFERED, RAY_DASHBOARD_ADDRESS and RAY_JOB_SUBMISSION_ID added (`getSubmitterTemplate`); the submitter is
  a Kubernetes Job with backoffLimit 2 (`createNewK8sJob`), so a failed pod is replaced twice before the Job fails.
- `common/pod.go` `generateRayStartCommand`: each rayStartParams key becomes `--key=value` on `ray start`
  (`--head` for the head group, `--address=<head>:<gcs port>` for workers), num-cpus/memory/num-gpus from the
  container limits when not given; every worker replica is its own Ray node. `setContainerEnvVars`: RAY_ADDRESS,
  RAY_PORT, RAY_CLUSTER_NAME, RAY_CLOUD_INSTANCE_ID, RAY_NODE_TYPE_NAME, KUBERAY_GEN_RAY_START_CMD and the usage
  flags. Ray pods restart with restartPolicy Always: a worker whose raylet dies comes back as a new node (the
  kubelet's part). Worker nodes start with `--include-log-monitor=false`: Ray wants one log monitor per host, and
  here every pod shares the head's session folder on one machine (three would ship every log line three times).
- Pods: each container's env is resolved from the API server the way the kubelet does (values, `secretKeyRef`,
  `configMapKeyRef`, `envFrom` secretRef/configMapRef; a missing non-optional key fails the pod, as
  CreateContainerConfigError does). ConfigMap volumes are written to a folder and bind-mounted at their
  `mountPath` inside a PRIVATE MOUNT NAMESPACE per pod (`unshare -m --propagation private`, root only), so the
  trainer reads `/etc/trainkit/spec.json` exactly where the operator's template mounts it. Each pod has its own
  TMPDIR, as a container has its own /tmp. The "image" is this machine's Python environment.
- Ray token auth, from KubeRay v1.7.0 (none in v1.4.2): with `rayClusterSpec.authOptions.mode: token` the
  cluster gets a Secret named after it with a random `auth_token` (`raycluster_controller.go`
  reconcileAuthSecret/createAuthSecret), every Ray container and the submitter get `RAY_AUTH_MODE=token` and
  `RAY_AUTH_TOKEN` from that Secret (`common/pod.go` SetContainerTokenAuthEnvVars, resolved like any env), and
  the controller's own dashboard requests carry `x-ray-authorization: Bearer <token>`
  (`utils/dashboardclient/dashboard_httpclient.go`, `utils/util.go` GetRayDashboardClientFunc).

Simplifications, said plainly: no scheduler, resources or GPUs (rayStartParams decide what Ray sees); the
dashboard listens on 127.0.0.1 (dashboardURL is `127.0.0.1:<port>`, not the head Service); without authOptions the
emulated pods run with RAY_AUTH_MODE=disabled (Ray 2.60 would otherwise turn it on itself); no Events of its
own but CreateContainerConfigError; a failed submitter pod is replaced at once (the Job controller backs off
10 s, 20 s, ...); the stand-in cannot adopt clusters after its own restart (their processes were its children), and
fails such a job with SubmissionFailed; the status is written by a poll loop, not watch events.
Processes are stopped by their own process groups, never with `ray stop`. `timeline` records what happened when
(the tests print it: where the time goes).
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

KUBERAY_VERSION = "v1.4.2"
FINALIZER = "ray.io/rayjob-finalizer"  # utils.RayJobStopJobFinalizer
RAY_JOB_TERMINAL = ("STOPPED", "SUCCEEDED", "FAILED")  # rayv1.IsJobTerminal
SUBMITTER_BACKOFF_LIMIT = 2  # createNewK8sJob: submitterConfig.backoffLimit defaults to 2
GRACE_PERIOD_S = 300  # utils.DEFAULT_RAYJOB_DEPLOYMENT_STATUS_TRANSITION_GRACE_PERIOD_SECONDS
POLL_S = 0.5  # KubeRay requeues every 3 s and reacts to watch events at once; a poll between the two


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def iso_from_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def random_suffix(name: str) -> str:
    """utils.GenerateRayJobId / GenerateRayClusterName: `<name>-<rand.String(5)>`."""
    return f"{name}-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))


UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str) -> float:
    text = str(value)
    for suffix in sorted(UNITS, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            return float(text[: -len(suffix)]) * UNITS[suffix]
    return float(text)


def ray_start_params(params: dict[str, Any], container: dict) -> dict[str, str]:
    """rayStartParams completed as KubeRay's generateRayStartCommand does: num-cpus, memory and num-gpus from
    the container's limits when the params do not set them (so a worker with 1 CPU is a 1-CPU Ray node)."""
    out = {k: str(v) for k, v in params.items()}
    limits = (container.get("resources") or {}).get("limits") or {}
    if "num-cpus" not in out and "cpu" in limits:
        out["num-cpus"] = str(int(quantity(limits["cpu"])))
    if "memory" not in out and "memory" in limits:
        out["memory"] = str(int(quantity(limits["memory"])))
    if "num-gpus" not in out and "nvidia.com/gpu" in limits:
        out["num-gpus"] = str(limits["nvidia.com/gpu"])
    return out


def ray_start_args(params: dict[str, Any]) -> list[str]:
    """rayStartParams -> `ray start` flags, as KubeRay's generateRayStartCommand writes them."""
    return [f"--{k}={v}" for k, v in sorted(params.items())]


def k8s_job_command(dashboard_url: str, job_id: str, entrypoint: str) -> str:
    """common/job.go GetK8sJobCommand, joined with spaces as getSubmitterTemplate puts it in the container's args."""
    address = dashboard_url if dashboard_url.startswith("http://") else f"http://{dashboard_url}"
    return " ".join(
        ["if", "!", "ray", "job", "status", "--address", address, job_id, ">/dev/null", "2>&1", ";", "then"]
        + ["ray", "job", "submit", "--address", address, "--no-wait", "--submission-id", job_id]
        + ["--", entrypoint.strip(), ";", "fi", ";", "ray", "job", "logs", "--address", address, "--follow", job_id]
    )


def process_tree(root: int) -> list[tuple[int, str]]:
    """(pid, command line) of `root` and every descendant, from /proc."""
    children: dict[int, list[int]] = {}
    cmdlines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in cmdlines:
            out.append((pid, cmdlines[pid]))
        stack.extend(children.get(pid, []))
    return out


class StandInStopped(Exception):
    """Raised instead of starting a process once the stand-in is exiting."""


class PodConfigError(Exception):
    """What the kubelet reports as CreateContainerConfigError (a missing Secret/ConfigMap key)."""


@dataclass
class Pod:
    name: str
    proc: subprocess.Popen
    log: Path
    group: str  # the node group (ray.io/group): "headgroup" or the worker group's name
    spec: dict = field(default_factory=dict)
    ray_args: list[str] = field(default_factory=list)
    tmp: str = ""  # the container's own /tmp (TMPDIR); kept across container restarts, as a pod's is
    restarts: int = 0
    ready: bool = False

    @property
    def agent_port(self) -> int:
        return int(next(a.split("=", 1)[1] for a in self.ray_args if a.startswith("--dashboard-agent-listen-port=")))

    def pid_of(self, needle: str) -> int | None:
        """The pid of this pod's process whose command line contains `needle` (e.g. "/raylet "), or None."""
        return next((pid for pid, cmd in process_tree(self.proc.pid) if needle in cmd), None)


@dataclass
class Submitter:
    """The K8sJobMode submitter Kubernetes Job: pods with restartPolicy Never, replaced up to backoffLimit times."""

    command: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path
    attempts: list[subprocess.Popen] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)  # the stand-in's: set, nothing new starts

    def start(self) -> None:
        if self.stopped.is_set():
            return
        with self.log.open("ab") as out:
            self.attempts.append(
                subprocess.Popen(
                    self.command,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=str(self.cwd),
                )
            )

    def poll(self) -> str | None:
        """The Job's finished condition, "Complete" or "Failed" (backoff limit reached), or None while it runs;
        a failed pod is replaced first, as the Job controller does."""
        codes = [p.poll() for p in self.attempts]
        if 0 in codes:
            return "Complete"
        if codes and None not in codes:
            if len(codes) > SUBMITTER_BACKOFF_LIMIT:
                return "Failed"
            self.start()  # the Job controller replaces the failed pod
        return None


@dataclass
class Cluster:
    name: str
    root: Path
    gcs_port: int
    dashboard_port: int
    pods: list[Pod] = field(default_factory=list)
    submitter: Submitter | None = None
    auth_secret: str | None = None  # the cluster's token Secret (authOptions.mode token)
    auth_token: str | None = None
    ready_at: float | None = None
    rayjob: str = ""
    grace_s: float = 30.0  # the pods' terminationGracePeriodSeconds (Kubernetes' default: 30)
    deleting_since: float | None = None
    # Ray's session folder for this cluster only (short: Ray's socket paths must stay under 107 bytes)
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="tkray-", dir="/tmp"))

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def processes(self) -> list[subprocess.Popen]:
        return [p.proc for p in self.pods] + (self.submitter.attempts if self.submitter else [])


@dataclass
class JobState:
    cluster: Cluster | None = None


class KubeRayStandIn:
    """Reconciles every RayJob in `namespace` on the API server that `kubeconfig` names, with real Ray processes."""

    def __init__(
        self,
        kubeconfig: str | os.PathLike,
        namespace: str,
        workdir: str | os.PathLike,
        extra_env: dict[str, str] | None = None,
        object_store_bytes: int = 200 << 20,
    ):
        import kubernetes

        self.api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.ns = namespace
        self.workdir = Path(workdir)
        self.extra_env = dict(extra_env or {})
        self.object_store_bytes = object_store_bytes
        self.jobs: dict[str, JobState] = {}
        self.deleting: list[Cluster] = []  # clusters whose pods got SIGTERM and are not all gone yet
        self.clusters_started: list[str] = []  # every cluster name ever started, in order (tests count retries)
        self._every_cluster: list[Cluster] = []  # for the last sweep at exit, whatever the loop was doing
        self.timeline: list[tuple[float, str, str]] = []  # (seconds since start, RayJob, what happened)
        self._t0 = time.monotonic()
        self._lock = threading.RLock()  # the loop and a test's process look-ups share `jobs`
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kuberay-standin", daemon=True)
        self.errors: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "KubeRayStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Once _stop is set no pod or submitter starts (`_start_pod`, `Submitter.start`), so a reconcile still
        # running (a slow one under load outlives the join) cannot leave a cluster behind after the sweep below.
        self._stop.set()
        self._thread.join(timeout=60)
        with self._lock:
            for state in self.jobs.values():
                if state.cluster:
                    self.deleting.append(state.cluster)
                    state.cluster = None
            for cluster in self.deleting:
                cluster.grace_s = min(cluster.grace_s, 5.0)  # the test is over: no full grace period
                self._delete_cluster(cluster)
            for cluster in self._every_cluster:  # anything a reconcile started and lost track of
                if any(p.poll() is None for p in cluster.processes()):
                    cluster.grace_s = 0.0
                    cluster.deleting_since = None
                    self._delete_cluster(cluster)
        self.api_client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self.reconcile_all()
            except StandInStopped:
                return
            except Exception as e:  # noqa: BLE001 - keep reconciling; tests read .errors
                self.errors.append(repr(e))
            self._stop.wait(POLL_S)

    def note(self, rayjob: str, what: str) -> None:
        self.timeline.append((round(time.monotonic() - self._t0, 1), rayjob, what))

    def timeline_text(self, rayjob: str | None = None) -> str:
        return "\n".join(f"{t:7.1f}s {name}: {what}" for t, name, what in self.timeline if rayjob in (None, name))

    # ------------------------------------------------------------------ what tests act on
    def cluster_of(self, rayjob: str) -> Cluster | None:
        with self._lock:
            state = self.jobs.get(rayjob)
            return state.cluster if state else None

    def worker_pods(self, rayjob: str) -> list[Pod]:
        cluster = self.cluster_of(rayjob)
        return list(cluster.pods[1:]) if cluster else []

    def job_info(self, rayjob: str) -> dict | None:
        """The Ray job of the RayJob's current attempt as the dashboard reports it (driver_info holds the
        driver's pid once it connected), or None."""
        cluster = self.cluster_of(rayjob)
        try:
            job_id = self.custom.get_namespaced_custom_object("ray.io", "v1", self.ns, "rayjobs", rayjob)["status"][
                "jobId"
            ]
        except Exception:  # noqa: BLE001 - no RayJob or no attempt yet
            return None
        info, _ = self._job_info(cluster, job_id) if cluster else (None, False)
        return info

    # ------------------------------------------------------------------ API
    def _rayjobs(self) -> list[dict]:
        return self.custom.list_namespaced_custom_object("ray.io", "v1", self.ns, "rayjobs").get("items") or []

    def _replace_status(self, rj: dict, status: dict) -> bool:
        """`r.Status().Update(ctx, rayJob)`: the whole status at the resourceVersion read; a conflict waits a pass."""
        import kubernetes

        meta = rj["metadata"]
        body = {
            "apiVersion": "ray.io/v1",
            "kind": "RayJob",
            "metadata": {"name": meta["name"], "namespace": self.ns, "resourceVersion": meta["resourceVersion"]},
            "status": {k: v for k, v in status.items() if v not in ("", None, {})},  # Go's omitempty
        }
        try:
            self.custom.replace_namespaced_custom_object_status("ray.io", "v1", self.ns, "rayjobs", meta["name"], body)
        except kubernetes.client.ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    def _set_finalizers(self, rj: dict, finalizers: list[str]) -> None:
        meta = rj["metadata"]
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
        self.custom.patch_namespaced_custom_object("ray.io", "v1", self.ns, "rayjobs", meta["name"], patch)

    def _event(self, rayjob: dict, type_: str, reason: str, message: str) -> None:
        meta = rayjob["metadata"]
        self.core.create_namespaced_event(
            self.ns,
            {
                "metadata": {"generateName": f"{meta['name']}.", "namespace": self.ns},
                "involvedObject": {
                    "apiVersion": "ray.io/v1",
                    "kind": "RayJob",
                    "name": meta["name"],
                    "namespace": self.ns,
                    "uid": meta.get("uid"),
                },
                "type": type_,
                "reason": reason,
                "message": message,
                "source": {"component": "rayjob-controller"},
                "firstTimestamp": now_iso(),
                "lastTimestamp": now_iso(),
                "count": 1,
            },
        )

    def _secret(self, name: str) -> dict[str, str]:
        s = self.core.read_namespaced_secret(name, self.ns)
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    def _configmap(self, name: str) -> dict[str, str]:
        return dict(self.core.read_namespaced_config_map(name, self.ns).data or {})

    # ------------------------------------------------------------------ pods
    def resolve_env(self, container: dict) -> dict[str, str]:
        """The container's env as the kubelet resolves it: envFrom first, then env in order (later wins)."""
        import kubernetes

        def lookup(kind: str, name: str, key: str | None, optional: bool) -> dict[str, str] | str | None:
            try:
                data = self._secret(name) if kind == "secret" else self._configmap(name)
            except kubernetes.client.ApiException as e:
                if e.status == 404 and optional:
                    return None
                raise PodConfigError(f"{kind} {name!r} not found") from None
            if key is None:
                return data
            if key not in data:
                if optional:
                    return None
                raise PodConfigError(f"couldn't find key {key} in {kind.capitalize()} {self.ns}/{name}")
            return data[key]

        env: dict[str, str] = {}
        for src in container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for kind, ref in (("secret", src.get("secretRef")), ("configmap", src.get("configMapRef"))):
                if ref:
                    data = lookup(kind, ref["name"], None, bool(ref.get("optional")))
                    env.update({prefix + k: v for k, v in (data or {}).items()})  # type: ignore[union-attr]
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            vf = item.get("valueFrom") or {}
            for kind, ref in (("secret", vf.get("secretKeyRef")), ("configmap", vf.get("configMapKeyRef"))):
                if ref:
                    value = lookup(kind, ref["name"], ref["key"], bool(ref.get("optional")))
                    if value is not None:
                        env[item["name"]] = str(value)
        return env

    def _mounts(self, pod_spec: dict, container: dict, pod_dir: Path) -> list[tuple[Path, str]]:
        """(host folder, mountPath) for every ConfigMap volume the container mounts, files written with their items."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        out: list[tuple[Path, str]] = []
        for m in container.get("volumeMounts") or []:
            vol = volumes.get(m["name"]) or {}
            if "configMap" not in vol:
                continue  # emptyDir (/dev/shm) and others: the host's own is fine on one machine
            ref = vol["configMap"]
            data = self._configmap(ref["name"])
            src = pod_dir / "volumes" / m["name"]
            src.mkdir(parents=True, exist_ok=True)
            items = ref.get("items") or [{"key": k, "path": k} for k in data]
            for it in items:
                if it["key"] not in data:
                    raise PodConfigError(f"configmap {ref['name']!r} has no key {it['key']!r}")
                (src / it["path"]).write_text(data[it["key"]])
            out.append((src, m["mountPath"]))
        return out

    def _create_auth_secret(self, rayjob: dict, cluster_name: str) -> tuple[str, str]:
        """KubeRay's createAuthSecret: a Secret named after the cluster holding a random `auth_token`."""
        import secrets

        token = secrets.token_urlsafe(32)
        meta = rayjob["metadata"]
        owner = {"apiVersion": "ray.io/v1", "kind": "RayJob", "name": meta["name"], "uid": meta["uid"]}
        body = {
            "metadata": {"name": cluster_name, "namespace": self.ns, "ownerReferences": [owner]},
            "stringData": {"auth_token": token},
        }
        self.core.create_namespaced_secret(self.ns, body)
        return cluster_name, token

    @staticmethod
    def with_token_auth_env(container: dict, secret: str | None) -> dict:
        """SetContainerTokenAuthEnvVars: RAY_AUTH_MODE and RAY_AUTH_TOKEN (secretKeyRef), unless already set."""
        if secret is None:
            return container
        env = list(container.get("env") or [])
        names = {e["name"] for e in env}
        if "RAY_AUTH_MODE" not in names:
            env.append({"name": "RAY_AUTH_MODE", "value": "token"})
        if "RAY_AUTH_TOKEN" not in names:
            env.append({"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "auth_token"}}})
        return {**container, "env": env}

    def _dashboard(self, cluster: Cluster, path: str, timeout: float, method: str = "GET") -> Any:
        headers = {"x-ray-authorization": f"Bearer {cluster.auth_token}"} if cluster.auth_token else {}
        req = urllib.request.Request(f"{cluster.dashboard}{path}", headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def _image_env(self) -> dict[str, str]:
        """What every container of the "image" starts with, before the pod's own env."""
        return {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "HOME": os.environ.get("HOME", "/root"),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled",
            **self.extra_env,
        }

    @staticmethod
    def kuberay_env(cluster: Cluster, pod_name: str, group: str, ray_args: list[str]) -> tuple[dict, dict]:
        """common/pod.go setContainerEnvVars: (what KubeRay sets unless the container does, what it always sets).
        RAY_ADDRESS is the head's GCS (`127.0.0.1` on the head, the head Service on workers; both loopback here)."""
        unless_set = {
            "RAY_PORT": str(cluster.gcs_port),
            "RAY_ADDRESS": f"127.0.0.1:{cluster.gcs_port}",
            "RAY_USAGE_STATS_KUBERAY_IN_USE": "1",
            "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE": "1",
        }
        always = {
            "RAY_CLUSTER_NAME": cluster.name,
            "RAY_CLOUD_INSTANCE_ID": pod_name,
            "RAY_NODE_TYPE_NAME": group,
            "KUBERAY_GEN_RAY_START_CMD": " ".join(["ray", "start", *ray_args]),
        }
        return unless_set, always

    def _start_pod(
        self, cluster: Cluster, pod_name: str, group: str, pod_spec: dict, ray_args: list[str], tmp: str = ""
    ) -> Pod:
        if self._stop.is_set():
            raise StandInStopped(f"the stand-in is stopping: pod {pod_name} not started")
        container = self.with_token_auth_env(pod_spec["containers"][0], cluster.auth_secret)
        pod_dir = cluster.root / pod_name
        pod_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp or tempfile.mkdtemp(prefix="tkpod-", dir="/tmp")
        unless_set, always = self.kuberay_env(cluster, pod_name, group, ray_args)
        env = {
            **self._image_env(),
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": tmp,
            **unless_set,
            **self.resolve_env(container),
            **always,
        }
        mounts = self._mounts(pod_spec, container, pod_dir)
        ray_cmd = [str(Path(sys.executable).parent / "ray"), "start", "--block", *ray_args]
        # A private mount namespace per pod: the ConfigMap folders appear at their mountPaths for this pod only.
        script = (
            "set -e; "
            + "".join(
                f"mkdir -p {json.dumps(target)}; mount --bind {json.dumps(str(src))} {json.dumps(target)}; "
                for src, target in mounts
            )
            + "exec "
            + " ".join(json.dumps(a) for a in ray_cmd)
        )
        log = pod_dir / "ray.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(pod_dir),
            )
        return Pod(pod_name, proc, log, group, pod_spec, ray_args, tmp)

    def _create_cluster(self, rayjob: dict, cluster_name: str) -> Cluster:
        """The RayCluster's head pod (workers follow once its GCS answers, as KubeRay's init container waits)."""
        spec = rayjob["spec"]["rayClusterSpec"]
        root = Path(tempfile.mkdtemp(prefix=f"{cluster_name}-", dir=self.workdir))
        cluster = Cluster(cluster_name, root, free_port(), free_port(), rayjob=rayjob["metadata"]["name"])
        self._every_cluster.append(cluster)
        grace = spec["headGroupSpec"]["template"]["spec"].get("terminationGracePeriodSeconds")
        if grace is not None:
            cluster.grace_s = float(grace)
        if (spec.get("authOptions") or {}).get("mode") == "token":
            cluster.auth_secret, cluster.auth_token = self._create_auth_secret(rayjob, cluster_name)
        head = spec["headGroupSpec"]
        # dashboard-host 0.0.0.0 (for the head Service) becomes loopback: test servers bind 127.0.0.1 only
        params = {
            k: v
            for k, v in ray_start_params(
                head.get("rayStartParams") or {}, head["template"]["spec"]["containers"][0]
            ).items()
            if k != "dashboard-host"
        }
        head_args = [
            "--head",
            f"--port={cluster.gcs_port}",
            f"--temp-dir={cluster.temp_dir}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={cluster.dashboard_port}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--object-store-memory={self.object_store_bytes}",
            *ray_start_args(params),
        ]
        head_pod = self._start_pod(cluster, f"{cluster_name}-head", "headgroup", head["template"]["spec"], head_args)
        cluster.pods.append(head_pod)
        self.clusters_started.append(cluster_name)
        self.note(rayjob["metadata"]["name"], f"RayCluster {cluster_name}: head pod started")
        return cluster

    def _start_workers(self, rayjob: dict, cluster: Cluster) -> None:
        for group in rayjob["spec"]["rayClusterSpec"].get("workerGroupSpecs") or []:
            for i in range(int(group.get("replicas", 1))):
                args = [
                    f"--address=127.0.0.1:{cluster.gcs_port}",
                    "--node-ip-address=127.0.0.1",
                    # One log monitor per host, as Ray requires: a real pod's reads its own session folder, but
                    # these nodes share the head's on this one machine (the head's already ships every line).
                    "--include-log-monitor=false",
                    f"--dashboard-agent-listen-port={free_port()}",
                    f"--metrics-export-port={free_port()}",
                    f"--object-store-memory={self.object_store_bytes}",
                    *ray_start_args(
                        ray_start_params(group.get("rayStartParams") or {}, group["template"]["spec"]["containers"][0])
                    ),
                ]
                cluster.pods.append(
                    self._start_pod(
                        cluster,
                        f"{cluster.name}-{group['groupName']}-{i}",
                        group["groupName"],
                        group["template"]["spec"],
                        args,
                    )
                )
        self.note(rayjob["metadata"]["name"], f"RayCluster {cluster.name}: GCS up, {len(cluster.pods) - 1} worker pods")

    def _begin_delete(self, cluster: Cluster) -> None:
        """Pod deletion as the kubelet does it: SIGTERM to every container (here: each pod's process group and the
        submitter's), SIGKILL once the grace period is over (`_deletion_done`). Never blocks the loop."""
        if cluster.deleting_since is not None:
            return
        cluster.deleting_since = time.monotonic()
        for proc in cluster.processes():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        if cluster not in self.deleting:
            self.deleting.append(cluster)

    def _deletion_done(self, cluster: Cluster) -> bool:
        """True once every process of the cluster is gone (SIGKILL after the grace period); then its folders go."""
        procs = cluster.processes()
        if any(p.poll() is None for p in procs):
            if time.monotonic() - (cluster.deleting_since or 0) < cluster.grace_s:
                return False
            for proc in procs:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for proc in procs:
                proc.wait(timeout=10)
        # Ray daemons (raylet, gcs, dashboard, the driver) may have left the process group: end them by their
        # session folder, ports and pod TMPDIR.
        self._kill_leftovers(cluster)
        for pod in cluster.pods:
            shutil.rmtree(pod.tmp, ignore_errors=True)
        cluster.pods.clear()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
        return True

    def _reap(self) -> None:
        for cluster in list(self.deleting):
            if self._deletion_done(cluster):
                self.deleting.remove(cluster)
                waited = time.monotonic() - (cluster.deleting_since or 0)
                self.note(cluster.rayjob, f"RayCluster {cluster.name} deleted ({waited:.1f} s after SIGTERM)")

    def _delete_cluster(self, cluster: Cluster) -> None:
        """Delete and wait until it is gone (for tests that start a cluster themselves, and at exit)."""
        self._begin_delete(cluster)
        while not self._deletion_done(cluster):
            time.sleep(0.2)
        if cluster in self.deleting:
            self.deleting.remove(cluster)

    def _kill_leftovers(self, cluster: Cluster) -> None:
        markers = [cluster.temp_dir.encode(), f"--gcs_server_port={cluster.gcs_port}".encode()]
        markers += [f"TMPDIR={pod.tmp}".encode() for pod in cluster.pods if pod.tmp]
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
                continue
            try:
                cmd = (pid_dir / "cmdline").read_bytes()
                env = (pid_dir / "environ").read_bytes() if cluster.pods else b""
            except OSError:
                continue
            if any(m in cmd for m in markers[:2]) or any(m in env for m in markers[2:]):
                try:
                    os.kill(int(pid_dir.name), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def _cluster_ready(self, rayjob: dict, cluster: Cluster) -> bool:
        """RayCluster Ready: every replica's pod runs and passes KubeRay's readiness probe
        (common/pod.go initLivenessAndReadinessProbe: the node's dashboard agent answers api/local_raylet_healthz,
        the head's dashboard api/gcs_healthz too). The probe's 10 s initial delay and 5 s period are not kept."""
        want = 1 + sum(
            int(g.get("replicas", 1)) for g in rayjob["spec"]["rayClusterSpec"].get("workerGroupSpecs") or []
        )
        for i, pod in enumerate(cluster.pods):
            if not pod.ready and pod.proc.poll() is None:
                probes = [f"http://127.0.0.1:{pod.agent_port}/api/local_raylet_healthz"]
                if i == 0:
                    probes.append(f"{cluster.dashboard}/api/gcs_healthz")
                pod.ready = all(self._probe(url) for url in probes)
        return len(cluster.pods) >= want and all(p.ready and p.proc.poll() is None for p in cluster.pods)

    @staticmethod
    def _probe(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except Exception:  # noqa: BLE001 - not ready
            return False

    def _job_info(self, cluster: Cluster, job_id: str) -> tuple[dict | None, bool]:
        """(the dashboard's JobDetails, not found): GetJobInfo; (None, False) when the dashboard does not answer."""
        try:
            return self._dashboard(cluster, f"/api/jobs/{job_id}", timeout=15), False
        except urllib.error.HTTPError as e:
            return None, e.code == 404
        except Exception:  # noqa: BLE001 - dashboard down or busy: requeue, as KubeRay does
            return None, False

    def _create_submitter(self, rayjob: dict, cluster: Cluster, status: dict) -> None:
        """createK8sJobIfNeed: the submitter Job from submitterPodTemplate with KubeRay's command and env."""
        template = (rayjob["spec"].get("submitterPodTemplate") or {}).get("spec") or {"containers": [{}]}
        container = self.with_token_auth_env(template["containers"][0], cluster.auth_secret)
        env = {
            **self._image_env(),
            **self.resolve_env(container),
            "PYTHONUNBUFFERED": "1",
            "RAY_DASHBOARD_ADDRESS": status["dashboardURL"],
            "RAY_JOB_SUBMISSION_ID": status["jobId"],
        }
        if container.get("command"):
            command = [*container["command"], *(container.get("args") or [])]
        else:
            command = [
                "/bin/bash",
                "-ce",
                "--",
                k8s_job_command(status["dashboardURL"], status["jobId"], rayjob["spec"]["entrypoint"]),
            ]
        cluster.submitter = Submitter(command, env, cluster.root / "submitter.log", cluster.root, stopped=self._stop)
        cluster.submitter.start()
        self.note(rayjob["metadata"]["name"], f"submitter Job started for Ray job {status['jobId']}")

    def _restart_exited_pods(self, name: str, cluster: Cluster) -> None:
        """The kubelet's part, restartPolicy Always: an exited container starts again in the same pod, with the
        same ports. A worker's raylet joins as a new node; a restarted head is a new GCS (without GCS fault
        tolerance the cluster's Ray jobs are gone, and the workers, losing the GCS, exit and come back)."""
        if cluster.deleting_since is not None:
            return
        for i, pod in enumerate(cluster.pods):
            if pod.proc.poll() is not None:
                fresh = self._start_pod(cluster, pod.name, pod.group, pod.spec, pod.ray_args, pod.tmp)
                fresh.restarts = pod.restarts + 1
                cluster.pods[i] = fresh
                self.note(name, f"pod {pod.name} exited ({pod.proc.returncode}): restarted ({fresh.restarts})")

    # ------------------------------------------------------------------ the controller
    def reconcile_all(self) -> None:
        self._reap()
        seen = set()
        for rj in self._rayjobs():
            name = rj["metadata"]["name"]
            seen.add(name)
            state = self.jobs.setdefault(name, JobState())
            if state.cluster:
                self._restart_exited_pods(name, state.cluster)
            try:
                self.reconcile(rj, state)
            except PodConfigError as e:
                self._event(rj, "Warning", "CreateContainerConfigError", str(e))
        for gone in set(self.jobs) - seen:  # RayJob deleted: the RayCluster it owns goes with it
            state = self.jobs.pop(gone)
            if state.cluster:
                self._begin_delete(state.cluster)
                self.note(gone, "RayJob gone: deleting its RayCluster")

    def reconcile(self, rj: dict, state: JobState) -> None:
        """One pass of rayjob_controller.go Reconcile (see the module docstring)."""
        meta, spec = rj["metadata"], rj["spec"]
        name = meta["name"]
        if meta.get("deletionTimestamp"):
            self._finalize(rj, state)
            return
        old = dict(rj.get("status") or {})
        st = dict(old)
        jds = st.get("jobDeploymentStatus") or ""

        if jds == "":
            if FINALIZER not in (meta.get("finalizers") or []):
                self._set_finalizers(rj, [*(meta.get("finalizers") or []), FINALIZER])
                return  # r.Update: the next pass reads the new resourceVersion
            # initRayJobStatusIfNeed
            st["jobId"] = st.get("jobId") or random_suffix(name)
            st["rayClusterName"] = st.get("rayClusterName") or random_suffix(name)
            st["jobDeploymentStatus"] = "Initializing"
            st["startTime"] = now_iso()
        elif jds == "Initializing":
            if not (self._to_suspending(spec, st) or self._deadline_passed(spec, st)):
                cluster = state.cluster
                if cluster is None:  # getOrCreateRayClusterInstance
                    cluster = state.cluster = self._create_cluster(rj, st["rayClusterName"])
                if len(cluster.pods) == 1 and cluster.pods[0].proc.poll() is None and self._head_up(cluster):
                    self._start_workers(rj, cluster)  # the workers' init containers wait for the GCS
                if not self._cluster_ready(rj, cluster):
                    return  # "Wait for the RayCluster.Status.State to be ready before submitting the job"
                if cluster.ready_at is None:
                    cluster.ready_at = time.monotonic()
                    self.note(name, f"RayCluster {cluster.name}: Ready")
                st["dashboardURL"] = f"127.0.0.1:{cluster.dashboard_port}"
                if cluster.submitter is None:
                    self._create_submitter(rj, cluster, st)
                st["jobDeploymentStatus"] = "Running"
        elif jds == "Running":
            if not (self._to_suspending(spec, st) or self._deadline_passed(spec, st) or self._grace_passed(st)):
                if state.cluster is None:
                    # The stand-in restarted: the processes of this cluster were its children and are gone.
                    st.update(
                        jobDeploymentStatus="Failed",
                        reason="SubmissionFailed",
                        message="the KubeRay stand-in lost this RayJob's cluster (it was restarted)",
                    )
                elif not self._follow_job(state.cluster, st):
                    return
        elif jds in ("Suspending", "Retrying"):
            if state.cluster is not None:
                self._begin_delete(state.cluster)
                self.note(name, f"{jds}: deleting RayCluster {state.cluster.name} and the submitter")
                state.cluster = None
            if any(c.rayjob == name for c in self.deleting):
                return  # "Wait for the resources to be deleted before the status transitions"
            for key in ("rayClusterName", "dashboardURL", "jobId", "message", "reason", "rayJobInfo", "jobStatus"):
                st.pop(key, None)
            st["jobDeploymentStatus"] = "Suspended" if jds == "Suspending" else ""
        elif jds == "Suspended":
            if spec.get("suspend"):
                return
            st.pop("jobStatus", None)
            st["jobDeploymentStatus"] = ""
        elif jds in ("Complete", "Failed"):
            self._shutdown_after_job_finishes(rj, st, state)
            return
        else:
            return  # "Unknown JobDeploymentStatus": requeue

        self._check_backoff_limit(spec, st)
        self._update_status(rj, old, st)

    def _follow_job(self, cluster: Cluster, st: dict) -> bool:
        """The Running branch after the checks: the submitter Job, then GetJobInfo. False: requeue, nothing to write."""
        finished = cluster.submitter.poll() if cluster.submitter else None
        if finished == "Failed":  # checkK8sJobAndUpdateStatusIfNeeded
            st["jobDeploymentStatus"] = "Failed"
            if st.get("jobStatus") == "FAILED":
                st["reason"] = "AppFailed"
            else:
                st["reason"] = "SubmissionFailed"
                st["message"] = (
                    "Job submission has failed. Reason: BackoffLimitExceeded. Message: Job has reached the "
                    "specified backoff limit"
                )
            return True
        info, not_found = self._job_info(cluster, st["jobId"])
        if info is None:
            if not_found and finished is not None:  # v1.7.0; v1.4.2 requeues for ever
                st.update(
                    jobDeploymentStatus="Failed",
                    reason="AppFailed",
                    message="Submitter completed but Ray job not found in RayCluster.",
                )
                return True
            return False
        js = info.get("status") or ""
        jds, reason = "Running", ""
        if js in RAY_JOB_TERMINAL and finished is not None:
            jds, reason = ("Failed", "AppFailed") if js == "FAILED" else ("Complete", "")
        st.update(jobStatus=js, jobDeploymentStatus=jds, reason=reason, message=info.get("message") or "")
        st["rayJobInfo"] = {
            key: iso_from_ms(info[field]) for key, field in (("startTime", "start_time"), ("endTime", "end_time"))
            if info.get(field)
        }  # fmt: skip
        return True

    @staticmethod
    def _to_suspending(spec: dict, st: dict) -> bool:
        """updateStatusToSuspendingIfNeeded: only Initializing and Running may go to Suspending."""
        if spec.get("suspend") and st.get("jobDeploymentStatus") in ("Initializing", "Running"):
            st["jobDeploymentStatus"] = "Suspending"
            return True
        return False

    @staticmethod
    def _deadline_passed(spec: dict, st: dict) -> bool:
        """checkActiveDeadlineAndUpdateStatusIfNeeded (startTime is this attempt's: each New resets it)."""
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is None or (datetime.now(timezone.utc) - parse_iso(st["startTime"])).total_seconds() < deadline:
            return False
        st.update(
            jobDeploymentStatus="Failed",
            reason="DeadlineExceeded",
            message=(
                f"The RayJob has passed the activeDeadlineSeconds. StartTime: {st['startTime']}. "
                f"ActiveDeadlineSeconds: {deadline}"
            ),
        )
        return True

    @staticmethod
    def _grace_passed(st: dict) -> bool:
        """checkTransitionGracePeriodAndUpdateStatusIfNeeded: a terminal Ray job under a Running deployment."""
        end = (st.get("rayJobInfo") or {}).get("endTime")
        if st.get("jobStatus") not in RAY_JOB_TERMINAL or not end:
            return False
        if (datetime.now(timezone.utc) - parse_iso(end)).total_seconds() < GRACE_PERIOD_S:
            return False
        st.update(
            jobDeploymentStatus="Failed" if st["jobStatus"] == "FAILED" else "Complete",
            reason="JobDeploymentStatusTransitionGracePeriodExceeded",
            message=(
                "JobDeploymentStatus does not transition to Complete or Failed within the grace period after "
                "JobStatus reaches a terminal state."
            ),
        )
        return True

    @staticmethod
    def _check_backoff_limit(spec: dict, st: dict) -> None:
        """checkBackoffLimitAndUpdateStatusIfNeeded."""
        failed, succeeded = int(st.get("failed") or 0), int(st.get("succeeded") or 0)
        if st.get("jobDeploymentStatus") == "Failed":
            failed += 1
        if st.get("jobStatus") == "SUCCEEDED" and st.get("jobDeploymentStatus") == "Complete":
            succeeded += 1
        st["failed"], st["succeeded"] = failed, succeeded
        limit = spec.get("backoffLimit")
        if (
            st.get("jobDeploymentStatus") == "Failed"
            and limit is not None
            and failed < int(limit) + 1
            and st.get("reason") != "DeadlineExceeded"
        ):
            st["jobDeploymentStatus"] = "Retrying"

    def _update_status(self, rj: dict, old: dict, st: dict) -> None:
        """updateRayJobStatus: written only when jobStatus or jobDeploymentStatus changed; endTime on Complete/Failed."""
        if (old.get("jobStatus") or "") == (st.get("jobStatus") or "") and (old.get("jobDeploymentStatus") or "") == (
            st.get("jobDeploymentStatus") or ""
        ):
            return
        if st.get("jobDeploymentStatus") in ("Complete", "Failed"):
            st["endTime"] = now_iso()
        if self._replace_status(rj, st):
            self.note(
                rj["metadata"]["name"],
                f"status {old.get('jobDeploymentStatus') or 'New'}/{old.get('jobStatus') or '-'} -> "
                f"{st.get('jobDeploymentStatus') or 'New'}/{st.get('jobStatus') or '-'}"
                + (f" ({st['reason']})" if st.get("reason") else ""),
            )

    def _shutdown_after_job_finishes(self, rj: dict, st: dict, state: JobState) -> None:
        spec = rj["spec"]
        if state.cluster is None or not spec.get("shutdownAfterJobFinishes") or not st.get("endTime"):
            return
        ttl = float(spec.get("ttlSecondsAfterFinished") or 0)
        if (datetime.now(timezone.utc) - parse_iso(st["endTime"])).total_seconds() >= ttl:
            self._begin_delete(state.cluster)
            self.note(rj["metadata"]["name"], f"shutdownAfterJobFinishes: deleting RayCluster {state.cluster.name}")
            state.cluster = None

    def _finalize(self, rj: dict, state: JobState) -> None:
        """A RayJob being deleted: stop a Ray job that is not terminal, then remove the finalizer."""
        st = rj.get("status") or {}
        if state.cluster is not None and st.get("jobId") and st.get("jobStatus") not in RAY_JOB_TERMINAL:
            try:
                self._dashboard(state.cluster, f"/api/jobs/{st['jobId']}/stop", timeout=10, method="POST")
            except Exception:  # noqa: BLE001 - "Remove the finalizer no matter StopJob() succeeds or not."
                pass
        finalizers = [f for f in rj["metadata"].get("finalizers") or [] if f != FINALIZER]
        if finalizers != (rj["metadata"].get("finalizers") or []):
            self._set_finalizers(rj, finalizers)

    def _head_up(self, cluster: Cluster) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", cluster.gcs_port), timeout=0.5):
                return True
        except OSError:
            return False


def cleanup_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
