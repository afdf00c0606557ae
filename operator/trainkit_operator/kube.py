"""The operator's Kubernetes API client: every call it makes (api_calls.py lists them for the chart's RBAC),
what a 404 and a 409 mean (once, here), which errors are transient, and the backoff between retries.

Made per operator at start-up, never at import (kubernetes captures $KUBECONFIG when first imported).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import threading
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from trainkit.storage import Credentials

from trainkit_operator.builders import SWEEP_LABEL
from trainkit_operator.decide import SecretState
from trainkit_operator.packs import PACK_LABEL

GROUP, VERSION = "trainkit.dev", "v1alpha1"
PLURAL, SWEEPS = "trainingruns", "trainingsweeps"
DATAS = "trainingdatas"
REQUEST_TIMEOUT = (10, 60)  # connect, read (seconds) for every call of ours
KUEUE_VERSION = "v1beta2"  # Kueue's stored version (v1beta1 is deprecated since v0.16); see jobs/kueue-setup.yaml
T = TypeVar("T")


def _status_body(status: dict, resource_version: str | None) -> dict[str, Any]:
    """A status patch; with the resourceVersion read, so that a stale write gets 409 and is retried."""
    body: dict[str, Any] = {"status": status}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return body


def lock_for(memo: Any, key: tuple[str, ...]) -> threading.Lock:
    """The lock that serialises reconciles of one object (kopf may run a timer and an event handler at once)."""
    with memo.locks_guard:
        lock = memo.locks.get(key)
        if lock is None:
            lock = memo.locks[key] = threading.Lock()
        return lock


def backoff_delay(retry: int, base: float = 1.0, cap: float = 60.0) -> float:
    return min(cap, base * (2 ** min(retry, 8))) * (0.5 + random.random() / 2)


class Kube:
    """The operator's Kubernetes calls (see api_calls.API_CALLS); made per operator, never at import."""

    def __init__(self, api_client) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        # Told of every failed call (HTTP method, the client's path template, the error): the metrics count them.
        self.on_api_error: Callable[[str, str, BaseException], None] = lambda method, path, e: None
        send = api_client.call_api

        def call_api(resource_path: str, method: str, *args: Any, **kwargs: Any) -> Any:
            # Every generated API method of the client goes through call_api: one place sees every failure.
            try:
                return send(resource_path, method, *args, **kwargs)
            except Exception as e:
                self.on_api_error(method, resource_path, e)
                raise

        api_client.call_api = call_api

    @classmethod
    def from_environment(cls, pool_size: int = 16) -> "Kube":
        from kubernetes import client, config

        cfg = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
        else:
            # The path is read NOW: kubernetes captures $KUBECONFIG when first imported.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None, client_configuration=cfg)
        cfg.connection_pool_maxsize = pool_size
        cfg.retries = 0  # we retry with backoff ourselves (kopf.TemporaryError)
        return cls(client.ApiClient(cfg))

    def close(self) -> None:
        try:
            self.api_client.close()
        except Exception:  # noqa: BLE001
            pass

    @staticmethod
    def _or_none(call: Callable[[], T]) -> T | None:
        """The call's result, or None when the object does not exist (404): the one place a 404 is "absent"."""
        try:
            return call()
        except Exception as e:
            if getattr(e, "status", None) == 404:
                return None
            raise

    def get_run(self, ns: str, name: str) -> dict | None:
        return self._or_none(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )
        )

    def patch_run_status(self, ns: str, name: str, resource_version: str | None, status: dict) -> dict:
        return self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL, name, _status_body(status, resource_version), _request_timeout=REQUEST_TIMEOUT
        )

    def get_rayjob(self, ns: str, name: str) -> dict | None:
        return self._or_none(
            lambda: self.custom.get_namespaced_custom_object(
                "ray.io", "v1", ns, "rayjobs", name, _request_timeout=REQUEST_TIMEOUT
            )
        )

    def create_rayjob(self, ns: str, body: dict) -> dict:
        return self.custom.create_namespaced_custom_object(
            "ray.io", "v1", ns, "rayjobs", body, _request_timeout=REQUEST_TIMEOUT
        )

    def patch_rayjob(self, ns: str, name: str, ops: list[dict]) -> dict:
        return self.custom.patch_namespaced_custom_object(
            "ray.io",
            "v1",
            ns,
            "rayjobs",
            name,
            ops,
            _content_type="application/json-patch+json",
            _request_timeout=REQUEST_TIMEOUT,
        )

    def get_configmap(self, ns: str, name: str) -> dict | None:
        cm = self._or_none(lambda: self.core.read_namespaced_config_map(name, ns, _request_timeout=REQUEST_TIMEOUT))
        return None if cm is None else self.api_client.sanitize_for_serialization(cm)

    def create_configmap(self, ns: str, body: dict) -> dict:
        cm = self.core.create_namespaced_config_map(ns, body, _request_timeout=REQUEST_TIMEOUT)
        return self.api_client.sanitize_for_serialization(cm) if cm is not None else body

    def create_network_policy(self, ns: str, body: dict) -> None:
        """Create-only (the policy never changes for a run); 409: an earlier reconcile made it."""
        try:
            self.networking.create_namespaced_network_policy(ns, body, _request_timeout=REQUEST_TIMEOUT)
        except Exception as e:
            if getattr(e, "status", None) != 409:
                raise

    def namespace_labels(self, ns: str) -> dict[str, str] | Literal["missing", "forbidden"]:
        """The namespace's labels, "missing", or "forbidden" (the chart grants `get` on namespaces only where
        the operator checks them: decide.namespace_opt_in_error)."""
        try:
            found = self._or_none(lambda: self.core.read_namespace(ns, _request_timeout=REQUEST_TIMEOUT))
        except Exception as e:
            if getattr(e, "status", None) != 403:
                raise
            return "forbidden"
        return "missing" if found is None else dict(found.metadata.labels or {})

    def secret_exists(self, ns: str, name: str) -> bool:
        """Existence only: asks for metadata (PartialObjectMetadata) and drops the response unread."""
        response = self._or_none(
            lambda: self.core.read_namespaced_secret(
                name,
                ns,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
                _headers={"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"},
            )
        )
        if response is None:
            return False
        # Discard the body unparsed (a server without metadata-only reads would send the data),
        # then hand the connection back: releasing it unread would corrupt the next request on it.
        response.drain_conn()
        response.release_conn()
        return True

    def secret_state(self, ns: str, name: str, keys: tuple[str, ...] = ()) -> SecretState:
        """Whether Secret `name` can give the Ray pods `keys` by secretKeyRef: present, missing, forbidden (403:
        the chart's RBAC names the Secrets the operator may get) or lacks-keys (one is absent or empty). Without
        `keys` only the metadata is asked for; with them the body is parsed for its key names and dropped (no
        value is kept, returned or logged)."""
        try:
            if not keys:
                return "present" if self.secret_exists(ns, name) else "missing"
            response = self._or_none(
                lambda: self.core.read_namespaced_secret(
                    name, ns, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except Exception as e:
            if getattr(e, "status", None) != 403:
                raise
            return "forbidden"
        if response is None:
            return "missing"
        try:
            data = (json.loads(response.data).get("data") or {}) if len(response.data) < (1 << 20) else {}
        finally:
            response.release_conn()
        return "present" if all(data.get(k) for k in keys) else "lacks-keys"

    def read_storage_credentials(self, ns: str, name: str) -> Credentials | None:
        """The S3 key in Secret `name` of namespace `ns` (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional
        AWS_SESSION_TOKEN), or None when the Secret does not exist. A Secret without the two keys, or with
        values that are not short base64 text, raises ValueError naming the Secret (never a value)."""
        response = self._or_none(
            lambda: self.core.read_namespaced_secret(name, ns, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        )
        if response is None:
            return None
        try:
            data = (json.loads(response.data).get("data") or {}) if len(response.data) < (1 << 20) else {}
        finally:
            response.release_conn()

        def value(key: str) -> str | None:
            raw = data.get(key)
            if raw is None:
                return None
            try:
                text = base64.b64decode(raw, validate=True).decode("ascii").strip()
            except (binascii.Error, UnicodeDecodeError, TypeError):
                raise ValueError(f"Secret {ns}/{name}: {key} is not base64-encoded ASCII text") from None
            if not text or len(text) > 4096:
                raise ValueError(f"Secret {ns}/{name}: {key} is empty or longer than 4096 characters")
            return text

        key_id, secret = value("AWS_ACCESS_KEY_ID"), value("AWS_SECRET_ACCESS_KEY")
        if key_id is None or secret is None:
            raise ValueError(f"Secret {ns}/{name} lacks AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY")
        return Credentials(key_id, secret, value("AWS_SESSION_TOKEN"))

    def list_pods(self, ns: str, selector: str) -> list[dict]:
        # Raw JSON, not the client's models: their validation rejects some real-world pods.
        response = self.core.list_namespaced_pod(
            ns, label_selector=selector, _request_timeout=REQUEST_TIMEOUT, _preload_content=False
        )
        return json.loads(response.data).get("items") or []

    def list_workloads(self, ns: str, rayjob_uid: str) -> list[dict] | None:
        """Kueue's Workloads of a RayJob (Kueue labels them with the job's uid); None without Kueue."""
        try:
            found = self.custom.list_namespaced_custom_object(
                "kueue.x-k8s.io",
                KUEUE_VERSION,
                ns,
                "workloads",
                label_selector=f"kueue.x-k8s.io/job-uid={rayjob_uid}",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except Exception as e:
            if getattr(e, "status", None) in (403, 404):  # Kueue not installed, or not granted: nothing to add
                return None
            raise
        return found.get("items") or []

    def list_rayjob_events(self, ns: str, name: str) -> list[dict]:
        response = self.core.list_namespaced_event(
            ns,
            field_selector=f"involvedObject.kind=RayJob,involvedObject.name={name}",
            _request_timeout=REQUEST_TIMEOUT,
            _preload_content=False,
        )
        return json.loads(response.data).get("items") or []

    # TrainingSweeps (see api_calls.SWEEP_API_CALLS)
    def get_sweep(self, ns: str, name: str) -> dict | None:
        return self._or_none(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, SWEEPS, name, _request_timeout=REQUEST_TIMEOUT
            )
        )

    def list_sweep_runs(self, ns: str, sweep_name: str) -> list[dict]:
        return self.list_runs(ns, f"{SWEEP_LABEL}={sweep_name}")

    def list_runs(self, ns: str, label_selector: str) -> list[dict]:
        got = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, label_selector=label_selector, _request_timeout=REQUEST_TIMEOUT
        )
        return got.get("items", [])

    def create_run(self, ns: str, body: dict) -> None:
        try:
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, body, _request_timeout=REQUEST_TIMEOUT
            )
        except Exception as e:
            if getattr(e, "status", None) != 409:  # already there: created before a restart
                raise

    def list_pack_rayjobs(self, ns: str, sweep_name: str) -> list[dict]:
        """The RayJobs of a sweep's packs (labelled with the sweep and a pack)."""
        got = self.custom.list_namespaced_custom_object(
            "ray.io",
            "v1",
            ns,
            "rayjobs",
            label_selector=f"{SWEEP_LABEL}={sweep_name},{PACK_LABEL}",
            _request_timeout=REQUEST_TIMEOUT,
        )
        return got.get("items", [])

    def create_ignoring_conflict(self, create: Callable[[], object]) -> None:
        """Create a child with a deterministic name; 409 means an earlier reconcile made it already."""
        try:
            create()
        except Exception as e:
            if getattr(e, "status", None) != 409:
                raise

    def patch_sweep_status(self, ns: str, name: str, resource_version: str | None, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, SWEEPS, name, _status_body(status, resource_version), _request_timeout=REQUEST_TIMEOUT
        )

    # TrainingData (see api_calls.DATA_API_CALLS)
    def get_data(self, ns: str, name: str) -> dict | None:
        return self._or_none(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, DATAS, name, _request_timeout=REQUEST_TIMEOUT
            )
        )

    def patch_data_status(self, ns: str, name: str, resource_version: str | None, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, DATAS, name, _status_body(status, resource_version), _request_timeout=REQUEST_TIMEOUT
        )


def is_transient(e: BaseException) -> bool:
    status = getattr(e, "status", None)
    if status is not None:
        return status in (408, 409, 429) or status >= 500 or status == 0
    name = type(e).__name__
    return isinstance(e, (ConnectionError, TimeoutError, OSError)) or name in (
        "MaxRetryError",
        "ProtocolError",
        "NewConnectionError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
    )


def describe_api_error(e: BaseException) -> str:
    """Status code and reason only: response bodies can echo request content, which stays out of logs."""
    status, reason = getattr(e, "status", None), getattr(e, "reason", None)
    if status is not None:
        return f"{type(e).__name__} {status} {reason}"
    # connection-level errors (urllib3): the message names the host and the cause, nothing else
    return f"{type(e).__name__}: {str(e)[:300]}"
