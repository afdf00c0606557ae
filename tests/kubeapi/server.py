"""HTTP front of the test API server: routing, discovery, watch streams, tables, fault injection.

The aiohttp app runs on its own event loop in a daemon thread; `KubeAPIServer` is a context manager.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import admission, protobuf, rbac
from .store import (
    APIError,
    ResourceType,
    Store,
    WatchEvent,
    dumps,
    kopf_peering_crds,
    parse_field_selector,
    parse_label_selector,
    rayjob_crd,
    status_body,
)


def _reject_non_finite(token: str) -> Any:
    """NaN / Infinity are not JSON: the real API server (Go's encoding/json) refuses a body carrying them
    with 400 "invalid character 'N' looking for beginning of value"; Python's json would accept them."""
    raise ValueError(f"invalid character {token[0]!r} looking for beginning of value")


@dataclass(frozen=True)
class Request:
    """One resource request, in the terms an RBAC rule uses."""

    verb: str  # get list watch create update patch delete deletecollection
    group: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None = None
    injected: bool = False  # answered by a fault injection instead of being served

    @property
    def rbac(self) -> tuple[str, str, str]:
        """(group, resource[/subresource], verb), as a Role rule names it."""
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return (self.group, res, self.verb)


@dataclass
class _Injection:
    method: str
    pattern: re.Pattern
    status: int
    times: int | None
    message: str
    retry_after: int | None


class _Close:
    pass


_CLOSE = _Close()


class KubeAPIServer:
    """An in-memory Kubernetes API server on 127.0.0.1 for tests and benchmarks.

    with KubeAPIServer() as api:
        api.write_kubeconfig(path)
        ...
    """

    def __init__(self, *, history_limit: int = 10_000, rayjob: bool | str = True, kopf_peering: bool = False,
                 host: str = "127.0.0.1", gc_delay: float | None = 0.1):  # fmt: skip
        self.host = host
        self.gc_delay = gc_delay  # seconds before the garbage collector acts; None: only collect_garbage()
        self.history_limit = history_limit
        self._rayjob = rayjob
        self._kopf_peering = kopf_peering
        self.requests: list[Request] = []
        self.raw_requests: list[tuple[str, str]] = []  # (method, path?query), every request incl. discovery
        # every `Warning: 299` the server sent (e.g. unknown fields pruned): (method, path, warning)
        self.warnings: list[tuple[str, str, str]] = []
        self._injections: list[_Injection] = []
        self._inject_lock = threading.Lock()
        self._watches: dict[asyncio.Queue, web.Request] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.kubeconfig: Path | None = None  # the last path write_kubeconfig wrote
        # Authorization: off (every request allowed) unless a test calls enforce_rbac(); tokens -> users
        self.rbac_enforced = False
        self.owner_references_enforced = False
        self._tokens: dict[str, rbac.User] = {
            rbac.ADMIN_TOKEN: rbac.User("kubeapi-admin", (rbac.MASTERS, "system:authenticated"))
        }
        self._fresh_store()

    # ------------------------------------------------------------------------- lifecycle
    def _fresh_store(self) -> None:
        if getattr(self, "store", None) is not None:
            self.store.close()
        self.store = Store(history_limit=self.history_limit, gc_delay=self.gc_delay)
        if self._rayjob:
            # True: KubeRay's schema of the oldest supported KubeRay; a tag: that one; "schemaless": anything goes
            from support.kuberay_schema import DEFAULT_TAG

            tag = DEFAULT_TAG if self._rayjob is True else (None if self._rayjob == "schemaless" else str(self._rayjob))
            self.store.create(self.store.types[("apiextensions.k8s.io", "customresourcedefinitions")], "v1", None,
                              rayjob_crd(tag))  # fmt: skip
        if self._kopf_peering:
            for crd in kopf_peering_crds():
                self.store.create(
                    self.store.types[("apiextensions.k8s.io", "customresourcedefinitions")], "v1", None, crd
                )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "KubeAPIServer":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        errors: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                app = web.Application(client_max_size=64 * 1024 * 1024)
                app.router.add_route("*", "/{tail:.*}", self._handle)
                self._runner = web.AppRunner(
                    app, access_log=None, handle_signals=False, shutdown_timeout=0.5, handler_cancellation=True
                )  # a client that goes away ends its watch
                loop.run_until_complete(self._runner.setup())
                loop.run_until_complete(web.SockSite(self._runner, sock).start())
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())  # no-op when stop() cleaned up already
            loop.close()

        self._thread = threading.Thread(target=run, name=f"kubeapi-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        self.store.close()
        if self._loop is None:
            return
        self.drop_watches(abort=True)  # open streams would hold the shutdown for its timeout
        try:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        except Exception:  # noqa: BLE001 - stopping anyway
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> "KubeAPIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """Fresh state (objects, registered CRDs, history, request log, injections); open watches are cut."""
        self.drop_watches()
        self._fresh_store()
        self.requests.clear()
        self.raw_requests.clear()
        self.warnings.clear()
        with self._inject_lock:
            self._injections.clear()

    # ------------------------------------------------------------------------- test hooks
    def write_kubeconfig(self, path: str | os.PathLike, namespace: str = "default") -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeapi", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "kubeapi-test-token"}}],
            "contexts": [
                {"name": "kubeapi", "context": {"cluster": "kubeapi", "user": "tester", "namespace": namespace}}
            ],
            "current-context": "kubeapi",
        }
        path.write_text(yaml.safe_dump(config))
        self.kubeconfig = path
        return path

    def api_client(self):
        """A fresh official-client ApiClient for this server (close it when done); imports `kubernetes` lazily."""
        import kubernetes

        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        configuration.api_key = {"BearerToken": rbac.ADMIN_TOKEN}  # the client's key name for the bearer token
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return kubernetes.client.ApiClient(configuration)

    def enforce_rbac(self, owner_references: bool = True) -> None:
        """From now on: unknown tokens get 401, every resource request is authorized by the RBAC objects stored
        here (403 otherwise), and with `owner_references` the OwnerReferencesPermissionEnforcement admission
        check runs. The admin token of write_kubeconfig()/api_client() stays system:masters."""
        self.rbac_enforced = True
        self.owner_references_enforced = owner_references

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token that authenticates as ServiceAccount namespace/name (what its pod would mount)."""
        token = f"sa-{namespace}-{name}-token"
        self._tokens[token] = rbac.service_account_user(namespace, name)
        return token

    def write_token_kubeconfig(self, path: str | os.PathLike, token: str, namespace: str = "default") -> Path:
        """A kubeconfig that authenticates with `token` (e.g. a ServiceAccount's); does not change `kubeconfig`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kubeapi", "cluster": {"server": self.url}}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "kubeapi", "context": {"cluster": "kubeapi", "user": "sa", "namespace": namespace}}],
            "current-context": "kubeapi",
        }  # fmt: skip
        path.write_text(yaml.safe_dump(config))
        return path

    def inject(self, method: str, path_regex: str, status: int, times: int | None = 1, *, message: str | None = None,
               retry_after: int | None = None) -> None:  # fmt: skip
        """Answer the next `times` requests (None: all) whose METHOD matches and path (with query) matches
        `path_regex` (re.search) with a Status of `status` instead of serving them."""
        with self._inject_lock:
            self._injections.append(_Injection(method.upper(), re.compile(path_regex), status, times,
                                               message or f"injected failure ({status})", retry_after))  # fmt: skip

    def drop_watches(self, abort: bool = False) -> None:
        """End every open watch stream now; clients must re-watch. Default: a clean end of the chunked
        response (as a server-side timeout); abort=True: the TCP connection is cut mid-stream."""
        loop = self._loop
        if loop is None:
            return
        try:
            for q, request in list(self._watches.items()):
                if abort and request.transport is not None:
                    loop.call_soon_threadsafe(request.transport.abort)
                loop.call_soon_threadsafe(q.put_nowait, _CLOSE)
        except RuntimeError:  # loop already closed
            pass

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    def collect_garbage(self) -> int:
        """Run the garbage collector now, to a fixpoint (deterministic tests); returns its action count."""
        return self.store.collect_garbage()

    def compact(self) -> None:
        """Drop the watch history: a watch from any older resourceVersion then gets 410 Expired."""
        self.store.compact()

    # thread-safe direct access for test assertions (no HTTP, not recorded)
    def get(self, resource: str, name: str, namespace: str | None = "default") -> dict:
        rt = self.store.resolve(resource)
        return self.store.get(rt, namespace if rt.namespaced else None, name)

    def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict]:
        rt = self.store.resolve(resource)
        return self.store.list(rt, namespace if rt.namespaced else None, label_selector)[0]

    def exists(self, resource: str, name: str, namespace: str | None = "default") -> bool:
        try:
            self.get(resource, name, namespace)
            return True
        except (APIError, KeyError):
            return False

    def create(self, obj: dict, namespace: str | None = None) -> dict:
        """Create as a client would (full admission), without an HTTP round trip; watchers are notified."""
        group, _, version = obj["apiVersion"].rpartition("/")
        rt = next((t for t in self.store.types.values() if t.group == group and t.kind == obj["kind"]), None)
        if rt is None:
            raise KeyError(f"{obj['apiVersion']} {obj['kind']} is not served")
        ns = namespace or obj.get("metadata", {}).get("namespace") or ("default" if rt.namespaced else None)
        return self.store.create(rt, version, ns, obj)

    def requests_for(self, resource: str, verb: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.resource == resource and (verb is None or r.verb == verb)]

    # ------------------------------------------------------------------------- HTTP
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.raw_requests.append((request.method, request.path_qs))
        with self._inject_lock:
            inj = next((i for i in self._injections
                        if i.method in (request.method, "*") and i.pattern.search(request.path_qs)), None)  # fmt: skip
            if inj is not None and inj.times is not None:
                inj.times -= 1
                if inj.times <= 0:
                    self._injections.remove(inj)
        if inj is not None:
            headers = {"Retry-After": str(inj.retry_after)} if inj.retry_after is not None else None
            described = self._describe(request)
            if described is not None:  # the client made it (RBAC must allow it) though it was not served
                self.requests.append(dataclasses.replace(described, injected=True))
            return self._error(APIError(inj.status, inj.message), headers)
        try:
            if path in ("/healthz", "/readyz", "/livez"):
                return web.Response(text="ok")
            if path == "/openapi/v3":
                return self._json(self._openapi_index())
            if path.startswith("/openapi/v3/"):
                return self._json(self._openapi_gv(path[len("/openapi/v3/") :]))
            if path == "/version":
                return self._json(
                    {"major": "1", "minor": "32", "gitVersion": "v1.32.0-kubeapi", "platform": "linux/amd64"}
                )
            parts = [p for p in path.split("/") if p]
            if parts and parts[0] == "api":
                if len(parts) == 1:
                    return self._json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]})  # fmt: skip
                group, version, rest = "", parts[1], parts[2:]
            elif parts and parts[0] == "apis":
                if len(parts) == 1:
                    return self._json(self._group_list())
                if len(parts) == 2:
                    return self._json(self._group(parts[1]))
                group, version, rest = parts[1], parts[2], parts[3:]
            else:
                raise APIError(404, "the server could not find the requested resource", "NotFound", {})
            if not rest:
                return self._json(self._resource_list(group, version))
            return await self._resource(request, group, version, rest)
        except APIError as e:
            return self._error(e)
        except Exception as e:  # noqa: BLE001 - a server bug is a 500, with the message for the test log
            import traceback

            traceback.print_exc()
            return self._error(APIError(500, f"kubeapi internal error: {type(e).__name__}: {e}"))

    def _describe(self, request: web.Request) -> Request | None:
        """The resource request a URL + method is, or None (discovery, unknown paths)."""
        parts = [p for p in request.path.split("/") if p]
        if len(parts) >= 3 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        try:
            rt, namespace, name, sub = self._route(group, version, rest)
        except APIError:
            return None
        verb = _verb(request.method, name, _truthy(request.query.get("watch")))
        return Request(verb, group, rt.plural, sub, namespace, name) if verb else None

    # ------------------------------------------------------------------------- openapi v3 (operations only)
    def _openapi_index(self) -> dict:
        paths = {}
        for group, versions in self.store.group_versions().items():
            for v in versions:
                gv = f"api/{v}" if not group else f"apis/{group}/{v}"
                paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={self.store.rv}"}
        return {"paths": paths}

    def _openapi_gv(self, gv: str) -> dict:
        """The operations of one group-version, enough for kubectl to see that the server validates fields
        (`fieldValidation` on PATCH/POST) and which patch types it takes. No schemas: kubectl then leaves
        validation to the server and builds strategic merge patches for built-ins from its own types."""
        parts = gv.split("/")
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            raise APIError(404, "the server could not find the requested resource", "NotFound", {})
        with self.store.lock:
            types = [rt for rt in self.store.types.values() if rt.group == group and version in rt.versions
                     and rt.versions[version].served]  # fmt: skip
        if not types:
            raise APIError(404, "the server could not find the requested resource", "NotFound", {})
        query = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                 for n in ("dryRun", "fieldManager", "fieldValidation")]  # fmt: skip
        media = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
        paths = {}
        for rt in types:
            gvk = {"group": rt.group, "version": version, "kind": rt.kind}
            prefix = f"/{'api' if not group else 'apis/' + group}/{version}/"
            base = prefix + (f"namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else rt.plural)
            paths[base] = {
                "get": {"x-kubernetes-action": "list", "x-kubernetes-group-version-kind": gvk},
                "post": {"parameters": query, "x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk},
            }
            paths[base + "/{name}"] = {
                "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk},
                "put": {"parameters": query, "x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk},
                "patch": {
                    "parameters": query,
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "requestBody": {"content": {m: {"schema": {"type": "object"}} for m in media}},
                },
                "delete": {"x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk},
            }
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0-kubeapi"}, "paths": paths,
                "components": {"schemas": {}}}  # fmt: skip

    # ------------------------------------------------------------------------- discovery
    def _preferred(self, group: str) -> str:
        versions = self.store.group_versions().get(group, [])
        return sorted(versions, key=_version_priority)[0]

    def _group(self, group: str) -> dict:
        versions = self.store.group_versions().get(group)
        if not versions or not group:
            raise APIError(404, "the server could not find the requested resource", "NotFound", {})
        pref = self._preferred(group)
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": [
                {"groupVersion": f"{group}/{v}", "version": v} for v in sorted(versions, key=_version_priority)
            ],
            "preferredVersion": {"groupVersion": f"{group}/{pref}", "version": pref},
        }

    def _group_list(self) -> dict:
        groups = [g for g in self.store.group_versions() if g]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [{k: v for k, v in self._group(g).items()
                                                                          if k not in ("kind", "apiVersion")} for g in groups]}  # fmt: skip

    def _resource_list(self, group: str, version: str) -> dict:
        resources = []
        with self.store.lock:
            types = [rt for rt in self.store.types.values() if rt.group == group and version in rt.versions
                     and rt.versions[version].served]  # fmt: skip
        if not types:
            raise APIError(404, "the server could not find the requested resource", "NotFound", {})
        for rt in sorted(types, key=lambda t: t.plural):
            entry = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind,
                     "verbs": list(rt.verbs)}  # fmt: skip
            if rt.short_names:
                entry["shortNames"] = rt.short_names
            if rt.categories:
                entry["categories"] = rt.categories
            resources.append(entry)
            subs = (["status"] if rt.has_status(version) else []) + rt.extra_subresources
            if rt.versions[version].scale:
                subs.append("scale")
            for sub in subs:
                resources.append({"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                                  "kind": "Scale" if sub == "scale" else rt.kind,
                                  "verbs": ["update"] if sub == "finalize" else ["get", "patch", "update"]})  # fmt: skip
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    # ------------------------------------------------------------------------- resources
    def _route(self, group: str, version: str, rest: list[str]):
        namespace = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3:
            raise APIError(404, "the server could not find the requested resource", "NotFound", {})
        rt = self.store.find(group, version, plural)
        if rt is None:
            raise APIError(404, "the server could not find the requested resource", "NotFound", {})
        if not rt.namespaced and namespace is not None:
            raise APIError(404, "the server could not find the requested resource", "NotFound", {})
        if sub is not None:
            allowed = (["status"] if rt.has_status(version) else []) + rt.extra_subresources
            if rt.versions[version].scale:
                allowed.append("scale")
            if sub not in allowed:
                raise APIError(404, "the server could not find the requested resource", "NotFound", {})
        return rt, namespace, name, sub

    async def _resource(self, request: web.Request, group: str, version: str, rest: list[str]) -> web.StreamResponse:
        q = request.query
        rt, namespace, name, sub = self._route(group, version, rest)
        method = request.method
        verb = _verb(method, name, _truthy(q.get("watch")))
        if verb is None:
            raise APIError(405, f"method {method} not allowed")
        self.requests.append(Request(verb, group, rt.plural, sub, namespace, name))
        user = self._authorize(request, verb, group, rt, sub, namespace, name)
        if rt.namespaced and namespace is None and verb not in ("list", "watch"):
            # /api/v1/configmaps serves only list and watch across namespaces
            if name:
                raise APIError(404, "the server could not find the requested resource", "NotFound", {})
            raise APIError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
        if verb in ("create",) and name:
            raise APIError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
        if verb in ("update", "patch") and not name:
            raise APIError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
        field_validation = q.get("fieldValidation") or "Warn"
        if field_validation not in ("Ignore", "Warn", "Strict"):
            raise APIError(400, f"fieldValidation must be one of Ignore, Warn, Strict, got {field_validation}")
        dry_run = "All" in q.getall("dryRun", [])
        warnings: list[str] = []
        st = self.store

        if verb == "watch":
            return await self._watch(request, rt, version, namespace, name)
        if verb == "get":
            obj = st.get(rt, namespace, name)
            return self._object(request, rt, version, obj)
        if verb == "list":
            items, rv = st.list(rt, namespace, q.get("labelSelector"), q.get("fieldSelector"))
            return self._list(request, rt, version, items, rv)
        body = await self._body(request, verb)
        if (
            user is not None
            and self.owner_references_enforced
            and verb in ("create", "update", "patch")
            and sub is None
        ):
            self._admit_owner_references(user, verb, rt, version, namespace, name, body, request.content_type,
                                         field_validation, q.get("fieldManager"))  # fmt: skip
        info = admission.user_info(user)  # `request.userInfo` of admission policies (None: the test's admin)
        if verb == "create":
            obj = st.create(rt, version, namespace, body, field_validation=field_validation, dry_run=dry_run,
                            warnings=warnings, user=info)  # fmt: skip
            return self._object(request, rt, version, obj, 201, warnings)
        if verb == "update":
            obj = st.update(rt, version, namespace, name, body, subresource=sub, field_validation=field_validation,
                            dry_run=dry_run, warnings=warnings, user=info)  # fmt: skip
            return self._object(request, rt, version, obj, 200, warnings)
        if verb == "patch":
            obj, created = st.patch(rt, version, namespace, name, body, request.content_type, subresource=sub,
                                    field_validation=field_validation, dry_run=dry_run,
                                    field_manager=q.get("fieldManager"), warnings=warnings, user=info)  # fmt: skip
            return self._object(request, rt, version, obj, 201 if created else 200, warnings)
        options = dict(body or {})
        if q.get("propagationPolicy"):
            options["propagationPolicy"] = q["propagationPolicy"]
        if verb == "delete":
            obj = st.delete(rt, namespace, name, options, dry_run=dry_run)
            if rt.custom or obj["metadata"].get("deletionTimestamp") and st_exists(st, rt, obj):
                return self._object(request, rt, version, obj)
            return self._json(status_body(200, "", "", {"name": name, "group": group, "kind": rt.plural,
                                                         "uid": obj["metadata"]["uid"]}) | {"status": "Success"})  # fmt: skip
        # deletecollection
        st.delete_collection(rt, namespace, q.get("labelSelector"), q.get("fieldSelector"), options)
        return self._json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    # ------------------------------------------------------------------------- authn/authz (opt in)
    def _authorize(self, request: web.Request, verb: str, group: str, rt: ResourceType, sub: str | None,
                   namespace: str | None, name: str | None) -> rbac.User | None:  # fmt: skip
        """None when RBAC is not enforced; else the user, or an APIError 401/403 as the real server answers."""
        if not self.rbac_enforced:
            return None
        header = request.headers.get("Authorization", "")
        if not header:
            # kubectl and helm (client-go) never send a bearer token over plain http, and this server is http
            # only: the test's own tools are served as its admin. Any other request without credentials is
            # system:anonymous, as upstream (--anonymous-auth), so a client that drops its token is refused.
            agent = request.headers.get("User-Agent", "")
            if agent.startswith(("kubectl/", "helm/", "Helm/")):
                return None
            user = rbac.ANONYMOUS
        else:
            token = header[7:].strip() if header.lower().startswith("bearer ") else ""
            user = self._tokens.get(token)
        if user is None:
            raise APIError(401, "Unauthorized", "Unauthorized")
        if not rbac.allowed(self.store.objects, user, verb, group, rt.plural, sub, namespace, name):
            raise APIError(403, rbac.forbidden_message(user, verb, group, rt.plural, sub, namespace, name), "Forbidden",
                           {"name": name, "group": group, "kind": rt.plural} if name else {"group": group, "kind": rt.plural})  # fmt: skip
        return user

    def _admit_owner_references(self, user: rbac.User, verb: str, rt: ResourceType, version: str, namespace: str | None,
                                name: str | None, body: Any, content_type: str, field_validation: str,
                                field_manager: str | None) -> None:  # fmt: skip
        """OwnerReferencesPermissionEnforcement (plugin/pkg/admission/gc/gc_admission.go): a reference newly
        set with blockOwnerDeletion needs `update` on the owner's finalizers subresource."""
        st = self.store
        old_refs: list = []
        if verb == "create":
            new_obj = body if isinstance(body, dict) else {}
        else:
            old_refs = (st.get(rt, namespace, name).get("metadata") or {}).get("ownerReferences") or []
            if verb == "update":
                new_obj = st.update(rt, version, namespace, name, body, field_validation="Ignore", dry_run=True)
            else:
                new_obj, _ = st.patch(rt, version, namespace, name, body, content_type, field_validation="Ignore",
                                      dry_run=True, field_manager=field_manager)  # fmt: skip
        new_refs = (new_obj.get("metadata") or {}).get("ownerReferences") or []
        what = f'{rt.group_resource} "{(new_obj.get("metadata") or {}).get("name") or name or ""}"'
        for ref in rbac.new_blocking_refs(new_refs, old_refs):
            group_ = str(ref.get("apiVersion", "")).rpartition("/")[0]
            owner_rt = next((t for t in st.types.values() if t.group == group_ and t.kind == ref.get("kind")), None)
            if owner_rt is None:
                raise APIError(403, f"{what} is forbidden: cannot set blockOwnerDeletion in this case because cannot find "
                                    f"RESTMapping for APIVersion {ref.get('apiVersion')} Kind {ref.get('kind')}", "Forbidden")  # fmt: skip
            owner_ns = namespace if owner_rt.namespaced else None
            if not rbac.allowed(
                st.objects, user, "update", owner_rt.group, owner_rt.plural, "finalizers", owner_ns, ref.get("name")
            ):
                reason = rbac.forbidden_reason(user, "update", owner_rt.group, owner_rt.plural, "finalizers", owner_ns)
                shown = {
                    k: ref.get(k) for k in ("apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion")
                }
                raise APIError(403, f"{what} is forbidden: cannot set blockOwnerDeletion if an ownerReference refers to a "
                                    f"resource you can't set finalizers on: {reason}, {shown}", "Forbidden")  # fmt: skip

    async def _body(self, request: web.Request, verb: str) -> Any:
        raw = await request.read()
        if not raw:
            if verb in ("delete", "deletecollection"):
                return {}
            raise APIError(400, "the request body is empty")
        ct = request.content_type
        if "protobuf" in ct:  # kubectl's typed commands (create namespace/configmap/secret/serviceaccount)
            try:
                return protobuf.decode(raw)
            except (KeyError, ValueError, IndexError) as e:
                raise APIError(415, f"the body of the request was in an unknown format - accepted media types "
                                    f"include: application/json, application/yaml (protobuf only for a few core "
                                    f"kinds here: {e!r})")  # fmt: skip
        if "cbor" in ct:
            raise APIError(415, "the body of the request was in an unknown format - accepted media types include: "
                                "application/json, application/yaml")  # fmt: skip
        try:
            if ct == "application/apply-patch+yaml" or ct.endswith("yaml"):
                return yaml.load(raw, Loader=_YAMLLoader)  # noqa: S506 - a SafeLoader subclass
            return json.loads(raw, parse_constant=_reject_non_finite)
        except (ValueError, yaml.YAMLError) as e:
            raise APIError(400, f"the request body could not be decoded: {e}")

    # ------------------------------------------------------------------------- responses
    @staticmethod
    def _json(
        body: Any, status: int = 200, warnings: list[str] | None = None, headers: dict | None = None
    ) -> web.Response:
        h = dict(headers or {})
        if warnings:
            h["Warning"] = ", ".join('299 - "' + w.replace("\\", "\\\\").replace('"', '\\"') + '"' for w in warnings)
        return web.Response(body=dumps(body), status=status, content_type="application/json", headers=h)

    def _error(self, e: APIError, headers: dict | None = None) -> web.Response:
        return self._json(e.status(), e.code, headers=headers)

    @staticmethod
    def _versioned(rt: ResourceType, version: str, obj: dict) -> dict:
        obj = dict(obj)
        obj["apiVersion"] = rt.api_version(version)
        obj["kind"] = rt.kind
        return obj

    def _object(self, request, rt, version, obj, status=200, warnings=None) -> web.Response:
        for w in warnings or []:
            self.warnings.append((request.method, request.path, w))
        table = _wants_table(request)
        obj = self._versioned(rt, version, obj)
        if table:
            return self._json(
                self._table(request, rt, version, [obj], obj["metadata"].get("resourceVersion", "")), status
            )
        return self._json(obj, status, warnings)

    def _list(self, request, rt, version, items, rv) -> web.Response:
        q = request.query
        items = [self._versioned(rt, version, o) for o in items]
        meta: dict[str, Any] = {"resourceVersion": rv}
        limit = int(q.get("limit") or 0)
        start = 0
        if q.get("continue"):
            try:
                start = int(q["continue"])
            except ValueError:
                raise APIError(400, "continue key is not valid")
        if limit or start:
            page = items[start : start + limit] if limit else items[start:]
            if limit and start + limit < len(items):
                meta["continue"] = str(start + limit)
                meta["remainingItemCount"] = len(items) - start - limit
            items = page
        if _wants_table(request):
            return self._json(self._table(request, rt, version, items, rv, meta.get("continue")))
        return self._json(
            {"kind": f"{rt.kind}List", "apiVersion": rt.api_version(version), "metadata": meta, "items": items}
        )

    def _table(
        self, request, rt: ResourceType, version: str, items: list[dict], rv: str, cont: str | None = None
    ) -> dict:
        columns = [
            {
                "name": "Name",
                "type": "string",
                "format": "name",
                "description": "Name must be unique within a namespace.",
                "priority": 0,
            }
        ]
        printer = rt.versions[version].printer_columns
        if not printer:
            printer = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
                        "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}]  # fmt: skip
        for col in printer:
            columns.append({"name": col["name"], "type": "string" if col.get("type") == "date" else col.get("type", "string"),
                            "format": col.get("format", ""), "description": col.get("description", ""),
                            "priority": col.get("priority", 0)})  # fmt: skip
        include = request.query.get("includeObject", "Metadata")
        rows = []
        for obj in items:
            cells: list[Any] = [obj["metadata"]["name"]]
            for col in printer:
                value = _json_path(obj, col["jsonPath"])
                if col.get("type") == "date" and isinstance(value, str):
                    value = _age(value)
                cells.append(value)
            row: dict[str, Any] = {"cells": cells}
            if include == "Object":
                row["object"] = obj
            elif include == "Metadata":
                row["object"] = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                }
            rows.append(row)
        meta = {"resourceVersion": rv}
        if cont:
            meta["continue"] = cont
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "columnDefinitions": columns,
            "rows": rows,
        }

    # ------------------------------------------------------------------------- watch
    async def _watch(
        self, request: web.Request, rt: ResourceType, version: str, namespace: str | None, name: str | None
    ):
        q = request.query
        labels = parse_label_selector(q.get("labelSelector"))
        fields = parse_field_selector(q.get("fieldSelector"), rt)
        if name:  # GET .../name?watch=true: the old single-object form
            fields_ = fields
            fields = lambda o: o["metadata"]["name"] == name and fields_(o)  # noqa: E731
        timeout = q.get("timeoutSeconds")
        deadline = time.monotonic() + float(timeout) if timeout else None
        rv_param = q.get("resourceVersion") or ""
        bookmarks = _truthy(q.get("allowWatchBookmarks"))
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def matches(obj: dict | None) -> bool:
            if obj is None:
                return False
            if namespace is not None and obj["metadata"].get("namespace") != namespace:
                return False
            return labels(obj["metadata"].get("labels") or {}) and fields(obj)

        def translate(ev: WatchEvent) -> tuple[str, dict] | None:
            if ev.key != rt.key:
                return None
            now, before = matches(ev.obj), matches(ev.old)
            if ev.type == "DELETED":
                return ("DELETED", ev.obj) if before or now else None
            if now and not before:
                return ("ADDED", ev.obj)
            if now and before:
                return (ev.type, ev.obj)
            if before and not now:  # no longer selected: watchers see it go
                return ("DELETED", ev.obj)
            return None

        initial: list[tuple[str, dict]] = []
        expired: APIError | None = None
        with self.store.lock:
            if rv_param in ("", "0"):
                items, _ = self.store.list(rt, namespace)
                initial = [("ADDED", o) for o in items if matches(o)]
            else:
                try:
                    since = int(rv_param)
                except ValueError:
                    raise APIError(400, f"invalid resource version: {rv_param}")
                try:
                    for ev in self.store.events_since(since):
                        t = translate(ev)
                        if t:
                            initial.append(t)
                except APIError as e:
                    expired = e

            def listener(ev: WatchEvent) -> None:
                t = translate(ev)
                if t:
                    try:
                        loop.call_soon_threadsafe(queue.put_nowait, t)
                    except RuntimeError:  # the server's loop is closing: the stream is ending anyway
                        pass

            if expired is None:
                self.store.listeners.append(listener)

        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        if expired is not None:  # as the real server: 200, then one ERROR event with the 410 Status
            await response.write(dumps({"type": "ERROR", "object": expired.status()}) + b"\n")
            await response.write_eof()
            return response
        self._watches[queue] = request
        try:
            as_table = _wants_table(request)
            first_table = [True]

            def encode(t: str, obj: dict) -> bytes:
                obj = self._versioned(rt, version, obj)
                if as_table:  # kubectl get -w: each event carries a one-row Table; columns only in the first
                    obj = self._table(request, rt, version, [obj], obj["metadata"].get("resourceVersion", ""))
                    if not first_table[0]:
                        obj["columnDefinitions"] = []
                    first_table[0] = False
                return dumps({"type": t, "object": obj}) + b"\n"

            for t, obj in initial:
                await response.write(encode(t, obj))
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if item is _CLOSE:
                    break
                t, obj = item
                await response.write(encode(t, obj))
            if bookmarks and (deadline is not None and time.monotonic() >= deadline):
                bm = {
                    "kind": rt.kind,
                    "apiVersion": rt.api_version(version),
                    "metadata": {"resourceVersion": str(self.store.rv)},
                }
                await response.write(dumps({"type": "BOOKMARK", "object": bm}) + b"\n")
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._watches.pop(queue, None)
            with self.store.lock:
                if listener in self.store.listeners:
                    self.store.listeners.remove(listener)
        return response


# --------------------------------------------------------------------------------------- helpers
def st_exists(st: Store, rt: ResourceType, obj: dict) -> bool:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"]) in st.objects.get(rt.key, {})


class _YAMLLoader(yaml.SafeLoader):
    """YAML as the API server reads it (sigs.k8s.io/yaml): `1e-8` is a float, as in YAML 1.2 / JSON."""


_YAMLLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _verb(method: str, name: str | None, watch: bool) -> str | None:
    return {
        "GET": "watch" if watch else ("get" if name else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }.get(method)


def _truthy(value: str | None) -> bool:
    """Go's strconv.ParseBool, as the API server parses boolean query parameters (the python client sends True)."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def _version_priority(v: str):
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
    if not m:
        return (3, 0, 0, v)
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0), v)


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    first = accept.split(",")[0]
    return "as=Table" in first


def _json_path(obj: Any, path: str) -> Any:
    """The simple JSONPath subset printer columns use: .a.b, .a[0].b, .a['x.y']."""
    cur = obj
    for m in re.finditer(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\['([^']+)'\]", path):
        key, idx, quoted = m.groups()
        if idx is not None:
            cur = cur[int(idx)] if isinstance(cur, list) and int(idx) < len(cur) else None
        else:
            cur = cur.get(key or quoted) if isinstance(cur, dict) else None
        if cur is None:
            return None
    return cur


def _age(ts: str) -> str:
    try:
        then = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return ts
    s = max(0, int((datetime.now(timezone.utc) - then).total_seconds()))
    if s < 120:
        return f"{s}s"
    if s < 3600 * 2:
        return f"{s // 60}m"
    if s < 86400 * 2:
        return f"{s // 3600}h"
    return f"{s // 86400}d"
