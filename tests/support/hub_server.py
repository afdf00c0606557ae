"""A Hugging Face Hub stand-in on 127.0.0.1: the routes huggingface_hub's `HfFileSystem` calls to list and read a
dataset repository, answered as the Hub answers them (payloads, pagination, error headers).

Read from huggingface_hub v2.4.0 (the version pinned in pyproject.toml), file by file:

- `GET /api/datasets/{org}/{name}` and `GET /api/datasets/{org}/{name}/revision/{rev}`: `hf_api.py`
  `HfApi.dataset_info` (via `repo_info`), which `hf_file_system.py` `HfFileSystem._repo_and_revision_exist` calls
  for every path it resolves; its JSON is `DatasetInfo` (`id`, `sha`, `private`, `siblings[].rfilename`, ...).
- `GET /api/datasets/{org}/{name}/tree/{rev}[/{path}]?recursive=&expand=`: `hf_api.py`
  `HfApi._iter_repo_tree_pages` (`list_repo_tree`), called by `HfFileSystem._ls_tree` and
  `_ParallelRepoTreeListing` (ls, find, info, size). Entries are `RepoFile` (`type: file`, `oid`, `size`, `path`)
  and `RepoFolder` (`type: directory`, `oid`, `path`); pages are cursor-based and chained by a `Link: <...>;
  rel="next"` header (`utils/_pagination.py` `_paginate_pages`). The path is quoted with `safe=""`.
- `POST /api/datasets/{org}/{name}/paths-info/{rev}` (form: `paths`, repeated, and `expand`): `hf_api.py`
  `HfApi.get_paths_info`, called by `HfFileSystem.info` when the parent's listing is not cached.
- `GET` / `HEAD /datasets/{org}/{name}/resolve/{rev}/{path}`: the URL of `file_download.py` `hf_hub_url`;
  `HfFileSystemFile._fetch_range` sends `Range: bytes=a-b` and `HfFileSystemStreamFile._open_connection`
  `Range: bytes=a-` (416 past the end). No `xetHash` is ever listed, so the Xet transfer path is not taken.

- `GET /api/agent-harnesses`: `utils/_detect_agent.py` fetches this registry (best effort, for its user-agent
  header); answered with an empty registry.

Errors carry the headers `utils/_http.py` `hf_raise_for_status` reads: `X-Error-Code: RepoNotFound` (401 to a
request without a token, 404 with one: the Hub never says whether a private repository exists),
`X-Error-Message: Invalid credentials in Authorization header` (401, a token the Hub does not know),
`RevisionNotFound` (404) and `EntryNotFound` (404). Revisions are branch names or commit ids; each repository
has one commit. Not modelled: writes, gated repositories, Xet, `expand=True` details (lastCommit, security).
Every request is recorded (method, route, whether it carried a token) for the tests to check.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

TREE_PAGE_SIZE = 1000  # the Hub's page size for tree listings without expand (hf_file_system.py)


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubDataset:
    repo_id: str
    files: dict[str, bytes]
    private: bool = False
    readers: frozenset[str] = frozenset()  # tokens that may read it when private
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit id (filled in by HubServer)

    @property
    def commit(self) -> str:
        h = hashlib.sha1(self.repo_id.encode())
        for path in sorted(self.files):
            h.update(path.encode() + b"\0" + git_blob_id(self.files[path]).encode())
        return h.hexdigest()

    def folders(self) -> set[str]:
        out = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return out

    def entry(self, path: str) -> dict | None:
        if path in self.files:
            data = self.files[path]
            return {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": path}
        if path in self.folders():
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        return None

    def tree(self, under: str, recursive: bool) -> list[dict] | None:
        """Entries below `under` ('' = the root), directories first as the Hub lists them; None if absent."""
        if under and under not in self.folders():
            entry = self.entry(under)
            return [entry] if entry else None
        prefix = under + "/" if under else ""
        names = [p for p in sorted(self.folders() | set(self.files)) if p.startswith(prefix)]
        if not recursive:
            names = [p for p in names if "/" not in p[len(prefix) :]]
        entries = [self.entry(p) for p in names]
        return sorted((e for e in entries if e), key=lambda e: (e["type"] != "directory", e["path"]))


class HubServer:
    """`with HubServer() as hub: hub.add_dataset("org/name", {"data/train-0.parquet": b"..."})`; `hub.url` is
    what HF_ENDPOINT should be."""

    def __init__(self, page_size: int = TREE_PAGE_SIZE):
        self.datasets: dict[str, HubDataset] = {}
        self.tokens: set[str] = set()
        self.page_size = page_size
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_dataset(
        self, repo_id: str, files: dict[str, bytes], private: bool = False, readers: tuple[str, ...] = ()
    ) -> HubDataset:
        ds = HubDataset(repo_id, dict(files), private, frozenset(readers))
        ds.branches = {"main": ds.commit}
        self.tokens.update(readers)
        self.datasets[repo_id] = ds
        return ds

    def routes_called(self) -> set[str]:
        with self._lock:
            return {r["route"] for r in self.requests}

    # ------------------------------------------------------------------------------ HTTP
    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet: the tests read hub.requests
                pass

            def do_GET(self) -> None:
                hub._serve(self, "GET")

            def do_HEAD(self) -> None:
                hub._serve(self, "HEAD")

            def do_POST(self) -> None:
                hub._serve(self, "POST")

        return Handler

    def _send(self, h, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _json(self, h, status: int, doc, headers: dict | None = None) -> None:
        self._send(h, status, json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, h, status: int, code: str | None, message: str, head: bool = False) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(h, status, json.dumps({"error": message}).encode(), headers, head)

    def _serve(self, h, method: str) -> None:
        parts = urlsplit(h.path)
        segments = parts.path.split("/")[1:]  # still quoted: a quoted path or revision may hold %2F
        query = parse_qs(parts.query)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "POST" else b""
        auth = h.headers.get("Authorization") or ""
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        route = self._route_name(method, segments)
        with self._lock:
            self.requests.append({"method": method, "route": route, "path": parts.path, "token": token is not None})
        if route == "agent_harnesses":
            return self._json(h, 200, {"standardEnvVars": [], "harnesses": {}})
        if route == "unknown":
            return self._error(h, 404, None, "Sorry, we can't find the page you are looking for.")
        if token is not None and token not in self.tokens:
            return self._error(h, 401, None, "Invalid credentials in Authorization header", method == "HEAD")
        api = segments[0] == "api"
        repo_id = "/".join(unquote(s) for s in (segments[2:4] if api else segments[1:3]))
        ds = self.datasets.get(repo_id)
        if ds is None or (ds.private and token not in ds.readers):
            status = 401 if token is None else 404
            return self._error(h, status, "RepoNotFound", "Repository not found", method == "HEAD")
        rest = segments[4:] if api else segments[3:]
        if route == "repo_info":
            revision = unquote(rest[1]) if rest else "main"
        else:
            revision = unquote(rest[1]) if len(rest) > 1 else "main"
        commit = ds.branches.get(revision) or (revision if revision == ds.commit else None)
        if commit is None:
            return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {revision}", method == "HEAD")
        if route == "repo_info":
            return self._json(h, 200, self._info(ds, commit))
        if route == "tree":
            path = "/".join(unquote(s) for s in rest[2:])
            return self._tree(h, ds, path, query, parts)
        if route == "paths_info":
            form = parse_qs(body.decode())
            found = [e for p in form.get("paths", []) if (e := ds.entry(p.strip("/")))]
            return self._json(h, 200, found)
        path = "/".join(unquote(s) for s in rest[2:])  # resolve
        if path not in ds.files:
            return self._error(h, 404, "EntryNotFound", f"{path} does not exist on {revision}", method == "HEAD")
        return self._file(h, ds, path, commit, method == "HEAD")

    @staticmethod
    def _route_name(method: str, segments: list[str]) -> str:
        if method == "GET" and segments == ["api", "agent-harnesses"]:
            return "agent_harnesses"
        if segments[:2] == ["api", "datasets"] and len(segments) >= 4:
            rest = segments[4:]
            if method == "GET" and (not rest or (rest[0] == "revision" and len(rest) == 2)):
                return "repo_info"
            if method == "GET" and rest[0] == "tree" and len(rest) >= 2:
                return "tree"
            if method == "POST" and rest[0] == "paths-info" and len(rest) == 2:
                return "paths_info"
        if segments[:1] == ["datasets"] and len(segments) >= 6 and segments[3] == "resolve":
            if method in ("GET", "HEAD"):
                return "resolve"
        return "unknown"

    def _info(self, ds: HubDataset, commit: str) -> dict:
        return {
            "_id": hashlib.sha1(ds.repo_id.encode()).hexdigest()[:24],
            "id": ds.repo_id,
            "author": ds.repo_id.split("/")[0],
            "sha": commit,
            "private": ds.private,
            "gated": False,
            "disabled": False,
            "tags": [],
            "lastModified": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": p} for p in sorted(ds.files)],
        }

    def _tree(self, h, ds: HubDataset, path: str, query: dict, parts) -> None:
        recursive = (query.get("recursive") or ["false"])[0].lower() == "true"
        entries = ds.tree(path, recursive)
        if entries is None:
            return self._error(h, 404, "EntryNotFound", f"{path} does not exist")
        start = int((query.get("cursor") or ["0"])[0])
        page = entries[start : start + self.page_size]
        headers = {}
        if start + self.page_size < len(entries):
            kept = [(k, v) for k, vs in query.items() if k != "cursor" for v in vs]
            next_query = "&".join(f"{k}={quote(v)}" for k, v in kept + [("cursor", str(start + self.page_size))])
            headers["Link"] = f'<{self.url}{parts.path}?{next_query}>; rel="next"'
        return self._json(h, 200, page, headers)

    def _file(self, h, ds: HubDataset, path: str, commit: str, head: bool) -> None:
        data = ds.files[path]
        headers = {
            "ETag": f'"{git_blob_id(data)}"',
            "X-Repo-Commit": commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        wanted = h.headers.get("Range")
        if not wanted:
            return self._send(h, 200, data, headers, head)
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        start = int(first)
        end = min(int(last), len(data) - 1) if last else len(data) - 1
        if start >= len(data):
            headers["Content-Range"] = f"bytes */{len(data)}"
            return self._send(h, 416, b"", headers, head)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return self._send(h, 206, data[start : end + 1], headers, head)
