"""A tiny HTTP server speaking just enough S3 for the operator's guarded reader (GET object, ListObjectsV2),
used by `trainkit bench safety` and the hostile-storage tests, with hostile behaviours: silent, slow (trickles bytes), 5xx, redirect to another host, huge bodies.

It also answers per access key ID (parsed from the SigV4 Authorization header) so a test can see WHICH key
the operator read with: `objects` maps (key id, "bucket/key") to bytes; any other key id gets 403.
"""

from __future__ import annotations

import re
import socketserver
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

CREDENTIAL = re.compile(r"Credential=([^/]+)/")
BEHAVIOURS = ("silent", "slow", "5xx", "redirect", "huge")


@dataclass
class Hostile:
    behaviour: str | None = None  # None: a well-behaved S3 server
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    redirect_to: str = ""
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (key id, method, path)
    huge_bytes: int = 200 << 20


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        state: Hostile = self.server.state  # type: ignore[attr-defined]
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        m = CREDENTIAL.search(headers.get("authorization", ""))
        key_id = m.group(1) if m else ""
        url = urlsplit(target)
        state.requests.append((key_id, method, url.path))
        b = state.behaviour
        if b == "silent":
            time.sleep(60)
            return
        if b == "5xx":
            return self._send(503, b"<Error><Code>ServiceUnavailable</Code><Message>down</Message></Error>")
        if b == "redirect":
            loc = state.redirect_to + target
            return self._send(301, b"", {"Location": loc})
        if b == "slow":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(100):
                try:
                    self.wfile.write(b"{")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.5)
            return
        if b == "huge":
            # No Content-Length: only reading past the cap can tell
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            block = b" " * (1 << 20)
            try:
                for _ in range(state.huge_bytes >> 20):
                    self.wfile.write(block)
            except OSError:
                pass
            return
        path = url.path.lstrip("/")
        query = parse_qs(url.query)
        if "list-type" in query:
            bucket = path.rstrip("/")
            prefix = query.get("prefix", [""])[0]
            keys = [k for (kid, k) in state.objects if kid == key_id and k.startswith(f"{bucket}/{prefix}")]
            if not keys and not any(kid == key_id for kid, _ in state.objects):
                return self._send(403, b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>")
            body = "".join(
                f"<Contents><Key>{k[len(bucket) + 1 :]}</Key><Size>{len(state.objects[(key_id, k)])}</Size></Contents>"
                for k in keys
            )
            xml = f'<?xml version="1.0"?><ListBucketResult><Name>{bucket}</Name><IsTruncated>false</IsTruncated>{body}</ListBucketResult>'
            return self._send(200, xml.encode())
        if (key_id, path) in state.objects:
            return self._send(200, state.objects[(key_id, path)])
        if any(kid == key_id for kid, _ in state.objects) and not any(k == path for _, k in state.objects):
            return self._send(404, b"<Error><Code>NoSuchKey</Code><Message>none</Message></Error>")
        return self._send(403, b"<Error><Code>AccessDenied</Code><Message>denied</Message></Error>")

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items())
        try:
            self.wfile.write(head.encode() + b"\r\n" + body)
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class HostileS3:
    """`with HostileS3(Hostile(...)) as srv: srv.endpoint`."""

    def __init__(self, state: Hostile):
        self.state = state
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.state = state  # type: ignore[attr-defined]
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "HostileS3":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
