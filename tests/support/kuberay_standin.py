"""A KubeRay stand-in that EXECUTES RayJobs: real Ray nodes on this machine from the RayJob's own templates.

It follows KubeRay v1.4.2's RayJob controller (the oldest version docs/install.md supports), checked against
v1.7.0 where they differ, file by file in ray-project/kuberay:

- `ray-operator/controllers/ray/rayjob_controller.go` (Reconcile): the jobDeploymentStatus machine
  "" (New) -> Initializing (RayCluster created, rayClusterName and jobId chosen, startTime set) -> Running (the
  submitter ran `ray job submit`) -> Complete | Failed; `suspend` in New/Initializing/Running -> Suspending (the
  cluster is deleted, jobStatus reset) -> Suspended, and unsuspend -> New with a NEW cluster;
  `backoffLimit`: a FAILED job with `failed < backoffLimit` -> Retrying (cluster deleted) -> New, a new cluster per
  retry; `activeDeadlineSeconds` -> Failed with reason DeadlineExceeded; `shutdownAfterJobFinishes` (+
  `ttlSecondsAfterFinished`) deletes the cluster after the job ends; counters `succeeded`/`failed`.
- `ray-operator/controllers/ray/common/job.go` (GetK8sJobCommand, K8sJobMode): the submitter runs
  `ray job submit --address http://<head>:<dashboard port> --submission-id <jobId> -- <entrypoint>`; the
  controller then follows the job through the dashboard's job API (`utils/dashboardclient`), mirroring Ray's
  job states (PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED) into `jobStatus`.
- `ray-operator/controllers/ray/common/pod.go` (generateRayStartCommand): each rayStartParams key becomes
  `--key=value` on `ray start` (`--head` for the head group, `--address=<head>:<gcs port>` for workers);
  every worker replica is its own Ray node.
- Pods: each container's env is resolved from the API server the way the kubelet does (values, `secretKeyRef`,
  `configMapKeyRef`, `envFrom` secretRef/configMapRef; a missing non-optional key fails the pod, as
  CreateContainerConfigError does). ConfigMap volumes are written to a folder and bind-mounted at their
  `mountPath` inside a PRIVATE MOUNT NAMESPACE per pod (`unshare -m --propagation private`, root only), so the
  trainer reads `/etc/trainkit/spec.json` exactly where the operator's template mounts it; nothing else of the
  host is hidden. The "image" is this machine's Python environment.

- Ray token auth, from KubeRay v1.7.0 (none in v1.4.2): with `rayClusterSpec.authOptions.mode: token` the
  cluster gets a Secret named after it with a random `auth_token` (`controllers/ray/raycluster_controller.go`
  reconcileAuthSecret/createAuthSecret), every Ray container and the submitter get `RAY_AUTH_MODE=token` and
  `RAY_AUTH_TOKEN` from that Secret (`common/pod.go` SetContainerTokenAuthEnvVars, resolved like any env), and
  the controller's own dashboard requests carry `x-ray-authorization: Bearer <token>`
  (`utils/dashboardclient/dashboard_httpclient.go`, `utils/util.go` GetRayDashboardClientFunc).

Simplifications, said plainly: no scheduler, resources or GPUs (rayStartParams decide what Ray sees); without
authOptions the emulated pods run with RAY_AUTH_MODE=disabled (Ray 2.60 would otherwise turn it on itself);
`ttlSecondsAfterFinished` is honoured but tests set it to 0; the status is written by a poll loop (0.3 s),
not watch events. Processes are stopped by their own process groups, never with `ray stop`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

KUBERAY_VERSION = "v1.4.2"
RAY_JOB_TERMINAL = ("STOPPED", "SUCCEEDED", "FAILED")


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class PodConfigError(Exception):
    """What the kubelet reports as CreateContainerConfigError (a missing Secret/ConfigMap key)."""


@dataclass
class Pod:
    name: str
    proc: subprocess.Popen
    log: Path
    spec: dict = field(default_factory=dict)
    ray_args: list[str] = field(default_factory=list)
    restarts: int = 0


@dataclass
class Cluster:
    name: str
    root: Path
    gcs_port: int
    dashboard_port: int
    pods: list[Pod] = field(default_factory=list)
    submitter: subprocess.Popen | None = None
    auth_secret: str | None = None  # the cluster's token Secret (authOptions.mode token)
    auth_token: str | None = None
    # Ray's session folder for this cluster only (short: Ray's socket paths must stay under 107 bytes)
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="tkray-", dir="/tmp"))

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"


@dataclass
class JobState:
    cluster: Cluster | None = None
    finished_at: float | None = None


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
        self.clusters_started: list[str] = []  # every cluster name ever started, in order (tests count retries)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kuberay-standin", daemon=True)
        self.errors: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "KubeRayStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for state in self.jobs.values():
            if state.cluster:
                self._delete_cluster(state.cluster)
        self.api_client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile_all()
            except Exception as e:  # noqa: BLE001 - keep reconciling; tests read .errors
                self.errors.append(repr(e))
            self._stop.wait(0.3)

    # ------------------------------------------------------------------ API
    def _rayjobs(self) -> list[dict]:
        return self.custom.list_namespaced_custom_object("ray.io", "v1", self.ns, "rayjobs").get("items") or []

    def _write_status(self, name: str, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status("ray.io", "v1", self.ns, "rayjobs", name, {"status": status})

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

    def _dashboard_get(self, cluster: Cluster, path: str, timeout: float) -> Any:
        headers = {"x-ray-authorization": f"Bearer {cluster.auth_token}"} if cluster.auth_token else {}
        req = urllib.request.Request(f"{cluster.dashboard}{path}", headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def _start_pod(self, cluster: Cluster, pod_name: str, pod_spec: dict, ray_args: list[str]) -> Pod:
        container = self.with_token_auth_env(pod_spec["containers"][0], cluster.auth_secret)
        pod_dir = cluster.root / pod_name
        pod_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/root"),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
            **self.resolve_env(container),
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
        proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(pod_dir),
        )
        return Pod(pod_name, proc, log, pod_spec, ray_args)

    def _create_cluster(self, rayjob: dict, cluster_name: str) -> Cluster:
        spec = rayjob["spec"]["rayClusterSpec"]
        root = Path(tempfile.mkdtemp(prefix=f"{cluster_name}-", dir=self.workdir))
        cluster = Cluster(cluster_name, root, free_port(), free_port())
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
        cluster.pods.append(self._start_pod(cluster, f"{cluster_name}-head", head["template"]["spec"], head_args))
        self.clusters_started.append(cluster_name)
        return cluster

    def _start_workers(self, rayjob: dict, cluster: Cluster) -> None:
        for group in rayjob["spec"]["rayClusterSpec"].get("workerGroupSpecs") or []:
            for i in range(int(group.get("replicas", 1))):
                args = [
                    f"--address=127.0.0.1:{cluster.gcs_port}",
                    "--node-ip-address=127.0.0.1",
                    f"--dashboard-agent-listen-port={free_port()}",
                    f"--metrics-export-port={free_port()}",
                    f"--object-store-memory={self.object_store_bytes}",
                    *ray_start_args(
                        ray_start_params(group.get("rayStartParams") or {}, group["template"]["spec"]["containers"][0])
                    ),
                ]
                cluster.pods.append(
                    self._start_pod(
                        cluster, f"{cluster.name}-{group['groupName']}-{i}", group["template"]["spec"], args
                    )
                )

    def _delete_cluster(self, cluster: Cluster) -> None:
        for proc in [p.proc for p in cluster.pods] + ([cluster.submitter] if cluster.submitter else []):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for proc in [p.proc for p in cluster.pods] + ([cluster.submitter] if cluster.submitter else []):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # Ray daemons (raylet, gcs, dashboard) may have left the process group: end them by their session dir.
        self._kill_leftovers(cluster)
        cluster.pods.clear()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)

    def _kill_leftovers(self, cluster: Cluster) -> None:
        marker = cluster.temp_dir.encode()
        port_flag = f"--gcs_server_port={cluster.gcs_port}".encode()
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                cmd = (pid_dir / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmd or port_flag in cmd:
                try:
                    os.kill(int(pid_dir.name), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def _cluster_ready(self, rayjob: dict, cluster: Cluster) -> bool:
        """The head's dashboard answers and every worker replica has joined as a node."""
        want = 1 + sum(
            int(g.get("replicas", 1)) for g in rayjob["spec"]["rayClusterSpec"].get("workerGroupSpecs") or []
        )
        try:
            nodes = self._dashboard_get(cluster, "/nodes?view=summary", timeout=2)["data"]["summary"]
        except Exception:  # noqa: BLE001 - not up yet
            return False
        alive = [n for n in nodes if (n.get("raylet") or {}).get("state") == "ALIVE"]
        return len(alive) >= want

    def _job_info(self, cluster: Cluster, job_id: str) -> dict | None:
        try:
            return self._dashboard_get(cluster, f"/api/jobs/{job_id}", timeout=15)
        except Exception:  # noqa: BLE001 - dashboard down or job not there yet
            return None

    def _submit(self, rayjob: dict, cluster: Cluster, job_id: str) -> None:
        """K8sJobMode: the submitter pod runs `ray job submit --address ... --submission-id ... -- <entrypoint>`."""
        entry = rayjob["spec"]["entrypoint"]
        log = cluster.root / "submitter.log"
        cmd = [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            "--address",
            cluster.dashboard,
            "--submission-id",
            job_id,
            "--",
            *entry.split(),
        ]
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/root"),
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        if cluster.auth_secret:  # rayjob_controller.go: the submitter container gets the token env too
            env.update(self.resolve_env(self.with_token_auth_env({"env": []}, cluster.auth_secret)))
        cluster.submitter = subprocess.Popen(
            cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, cwd=str(cluster.root)
        )

    # ------------------------------------------------------------------ the state machine
    def reconcile_all(self) -> None:
        seen = set()
        for rj in self._rayjobs():
            name = rj["metadata"]["name"]
            seen.add(name)
            state = self.jobs.setdefault(name, JobState())
            try:
                self.reconcile(rj, state)
            except PodConfigError as e:
                self._event(rj, "Warning", "CreateContainerConfigError", str(e))
        for gone in set(self.jobs) - seen:  # RayJob deleted: its cluster goes with it
            state = self.jobs.pop(gone)
            if state.cluster:
                self._delete_cluster(state.cluster)

    def reconcile(self, rj: dict, state: JobState) -> None:
        name = rj["metadata"]["name"]
        spec = rj["spec"]
        st = dict(rj.get("status") or {})
        jds = st.get("jobDeploymentStatus") or ""
        suspend = bool(spec.get("suspend"))

        if jds in ("Complete", "Failed"):
            if state.cluster and spec.get("shutdownAfterJobFinishes"):
                if state.finished_at is None:
                    state.finished_at = time.monotonic()
                if time.monotonic() - state.finished_at >= float(spec.get("ttlSecondsAfterFinished") or 0):
                    self._delete_cluster(state.cluster)
                    state.cluster = None
            return

        if suspend and jds in ("", "Initializing", "Running"):
            # Suspending: delete the cluster (and with it the job), reset the job's status, then Suspended
            if jds:
                self._write_status(name, {**st, "jobDeploymentStatus": "Suspending"})
            if state.cluster:
                self._delete_cluster(state.cluster)
                state.cluster = None
            self._write_status(
                name,
                {
                    **st,
                    "jobDeploymentStatus": "Suspended",
                    "jobStatus": "",
                    "jobId": "",
                    "rayClusterName": "",
                    "message": "",
                    "startTime": st.get("startTime"),
                },
            )
            return
        if jds == "Suspended":
            if not suspend:
                self._write_status(name, {**st, "jobDeploymentStatus": "", "jobStatus": ""})
            return
        if jds == "Retrying":
            if state.cluster:
                self._delete_cluster(state.cluster)
                state.cluster = None
            self._write_status(
                name, {**st, "jobDeploymentStatus": "", "jobStatus": "", "jobId": "", "rayClusterName": ""}
            )
            return

        deadline = spec.get("activeDeadlineSeconds")
        if deadline and st.get("startTime"):
            started = datetime.strptime(st["startTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            if (datetime.now(timezone.utc) - started).total_seconds() > float(deadline):
                self._finish(
                    name,
                    st,
                    state,
                    "Failed",
                    reason="DeadlineExceeded",
                    message=f"The RayJob has passed the activeDeadlineSeconds ({deadline} s)",
                )
                return

        if jds == "":
            suffix = uuid.uuid4().hex[:5]
            cluster_name, job_id = f"{name}-{suffix}", f"{name}-{uuid.uuid4().hex[:6]}"
            state.cluster = self._create_cluster(rj, cluster_name)
            self._write_status(
                name,
                {
                    **st,
                    "jobDeploymentStatus": "Initializing",
                    "jobStatus": st.get("jobStatus") or "",
                    "rayClusterName": cluster_name,
                    "jobId": job_id,
                    "startTime": st.get("startTime") or now_iso(),
                    "failed": st.get("failed", 0),
                    "succeeded": st.get("succeeded", 0),
                },
            )
            return
        if state.cluster is None:
            # We (the stand-in) restarted or lost the cluster: KubeRay would see the RayCluster gone; retry or fail.
            self._job_failed(name, st, state, "SubmissionFailed", "the RayCluster of this RayJob disappeared")
            return
        cluster = state.cluster
        # Ray pods run with restartPolicy Always: an exited worker container is restarted by the kubelet
        # (a raylet killed mid-run comes back as a new node); the head's exit ends the cluster as in KubeRay.
        for i, pod in enumerate(cluster.pods[1:], start=1):
            if pod.proc.poll() is not None and cluster.pods[0].proc.poll() is None:
                fresh = self._start_pod(cluster, pod.name, pod.spec, pod.ray_args)
                fresh.restarts = pod.restarts + 1
                cluster.pods[i] = fresh
        if jds == "Initializing":
            # KubeRay's worker pods wait for the GCS in an init container; here: start them once it answers
            if len(cluster.pods) == 1 and cluster.pods[0].proc.poll() is None and self._head_up(cluster):
                self._start_workers(rj, cluster)
            if self._cluster_ready(rj, cluster) and cluster.submitter is None:
                self._submit(rj, cluster, st["jobId"])
                self._write_status(name, {**st, "jobDeploymentStatus": "Running"})
            return
        if jds == "Running":
            info = self._job_info(cluster, st["jobId"])
            if info is None:
                if (
                    cluster.submitter is not None
                    and cluster.submitter.poll() not in (None, 0)
                    and self._job_info(cluster, st["jobId"]) is None
                ):
                    self._job_failed(
                        name, st, state, "SubmissionFailed", "the submitter exited without submitting the job"
                    )
                return
            js = info.get("status") or ""
            if js != st.get("jobStatus"):
                st = {**st, "jobStatus": js, "message": (info.get("message") or "")[:1000]}
                self._write_status(name, st)
            if js == "SUCCEEDED":
                self._finish(name, st, state, "Complete", succeeded=True)
            elif js in ("FAILED", "STOPPED"):
                self._job_failed(name, st, state, "AppFailed", info.get("message") or f"job {js}")

    def _head_up(self, cluster: Cluster) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", cluster.gcs_port), timeout=0.5):
                return True
        except OSError:
            return False

    def _job_failed(self, name: str, st: dict, state: JobState, reason: str, message: str) -> None:
        failed = int(st.get("failed") or 0) + 1
        limit = int(
            (
                self.custom.get_namespaced_custom_object("ray.io", "v1", self.ns, "rayjobs", name)["spec"].get(
                    "backoffLimit"
                )
            )
            or 0
        )
        if failed <= limit:
            # Retrying: KubeRay deletes the cluster and starts over with a NEW one (a new rayClusterName)
            self._write_status(
                name,
                {
                    **st,
                    "jobDeploymentStatus": "Retrying",
                    "failed": failed,
                    "reason": reason,
                    "message": message[:1000],
                },
            )
            return
        self._finish(name, {**st, "failed": failed}, state, "Failed", reason=reason, message=message)

    def _finish(
        self,
        name: str,
        st: dict,
        state: JobState,
        jds: str,
        *,
        succeeded: bool = False,
        reason: str = "",
        message: str | None = None,
    ) -> None:
        out = {**st, "jobDeploymentStatus": jds, "endTime": now_iso()}
        if succeeded:
            out["succeeded"] = int(st.get("succeeded") or 0) + 1
        if reason:
            out["reason"] = reason
        if message is not None:
            out["message"] = message[:1000]
        self._write_status(name, out)
        state.finished_at = time.monotonic()


def cleanup_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
