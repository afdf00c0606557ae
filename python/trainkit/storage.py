"""Object storage through fsspec: s3:// (s3fs), file:// and plain local paths behave the same.

Endpoint and region come from the spec's `storage` block, else from the environment
(AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_DEFAULT_REGION). Credentials come only from the
environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, which the operator fills from the Secret
named in the spec) or the pod's IAM role: never from the spec, never on a command line.

Writes are atomic for readers: local files go to a temporary name and are renamed; an S3 PUT is
atomic by itself. Multi-file artifacts (checkpoints, shard sets) are committed by writing their
manifest last: readers only trust what a manifest lists.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import ipaddress
import json
import os
import random
import socket
import ssl
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlsplit

import fsspec

T = TypeVar("T")


@dataclass(frozen=True)
class Credentials:
    """One tenant's S3 key, taken from that tenant's Secret; never printed (repr hides the secret parts)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ReadGuard:
    """Limits of a guarded reader: storage the reader does not trust (a tenant's endpoint and objects).

    Every response body is capped (checked against Content-Length before reading, enforced while
    reading), every request has a connect timeout and a whole-request deadline, redirects are never
    followed and requests only go to the configured endpoint's host, link-local / metadata addresses are
    refused, and local paths are refused: only s3:// URIs are read.
    """

    max_response_bytes: int = 1 << 20
    connect_timeout: float = 3.0
    # Per request, headers and body together (a server trickling bytes is cut off here).
    request_deadline: float = 5.0
    # Attempts per request (botocore's retry count, the first included): few, a silent endpoint costs each.
    attempts: int = 2
    # Keys a listing may return in all (pages of 1000).
    max_keys: int = 10_000


@dataclass(frozen=True)
class StorageOptions:
    endpoint: str | None = None
    region: str | None = None
    # Guarded reads (the operator's): only these credentials, never the process's AWS_* environment.
    credentials: Credentials | None = field(default=None, repr=False)
    guard: ReadGuard | None = None

    @classmethod
    def from_spec(cls, storage) -> "StorageOptions":
        """From a `trainkit.spec.models.StorageSpec` (or None)."""
        if storage is None:
            return cls()
        return cls(endpoint=storage.endpoint, region=storage.region)

    def resolved_endpoint(self) -> str | None:
        if self.guard is not None:
            return self.endpoint  # a guarded reader goes only where it was told, never where the env says
        return self.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


class StorageError(OSError):
    """A storage operation failed for good (after retries), with the URI in the message."""


class ObjectTooLarge(StorageError):
    """A guarded read met a response larger than its cap; nothing past the cap was read."""

    def __init__(self, what: str, size: int | None, cap: int):
        self.what, self.size, self.cap = what, size, cap
        told = f"{size} bytes" if size is not None else "more bytes"
        super().__init__(f"{what} is too large: {told} > the {cap}-byte cap")


class StorageRefused(StorageError):
    """A guarded reader refused a request (local path, other host, metadata address, no credentials)."""


def is_remote(uri: str) -> bool:
    return uri.startswith("s3://")


def local_path(uri: str) -> Path:
    return Path(uri[len("file://") :] if uri.startswith("file://") else uri)


def join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


class UnsafePath(ValueError):
    """A relative path read from object storage that could leave its prefix (or that names nothing)."""


MAX_RELPATH = 1024


def safe_relpath(rel: object, where: str) -> str:
    """THE check for every relative path read from object storage before it is joined as `prefix/rel` or
    `dest / rel` (checkpoint.json file entries, index.json shard names, listings): a non-empty string of at
    most MAX_RELPATH characters, '/'-separated, with no absolute path, no drive or backslash, no empty, '.',
    '..' or NUL component. Returns it unchanged; raises UnsafePath naming `where` otherwise. A manifest in
    a prefix someone else can write must never make a reader fetch or write outside it."""
    shown = repr(rel)[:80]
    if not isinstance(rel, str) or not rel:
        raise UnsafePath(f"{where}: path {shown} must be a non-empty string")
    if len(rel) > MAX_RELPATH:
        raise UnsafePath(f"{where}: path {shown}... is longer than {MAX_RELPATH} characters")
    if "\\" in rel or "\0" in rel or rel.startswith("/") or ":" in rel.split("/", 1)[0]:
        raise UnsafePath(f"{where}: path {shown} must be relative, '/'-separated, without backslashes or NUL")
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise UnsafePath(f"{where}: path {shown} has an empty, '.' or '..' component (it must stay under its prefix)")
    return rel


def contained(dest: Path, rel: str, where: str) -> Path:
    """`dest / rel` after `safe_relpath`, and checked to resolve under `dest` (a symlink already there cannot
    redirect it)."""
    target = dest / safe_relpath(rel, where)
    if not target.resolve().is_relative_to(dest.resolve()):
        raise UnsafePath(f"{where}: path {rel!r:.80} resolves outside {dest}")
    return target


def absolute_uri(uri: str, base: str | None = None) -> str:
    """A relative local path made absolute against `base` (default: the working directory), so that Ray
    workers, whatever their own working directory, use the place the user meant. URIs are unchanged."""
    if "://" in uri or os.path.isabs(uri):
        return uri
    return os.path.normpath(os.path.join(base or os.getcwd(), uri))


def filesystem(uri: str, options: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for `uri` and the path inside it."""
    options = options or StorageOptions()
    if is_remote(uri):
        import s3fs

        kwargs: dict[str, Any] = {
            # Bounded retries inside botocore; our own `retry` wraps whole operations on top.
            "config_kwargs": {
                "retries": {"max_attempts": 3, "mode": "standard"},
                "connect_timeout": 5,
                "read_timeout": 60,
            },
            # Writers and readers meet through manifests (index.json, checkpoint.json): a cached listing
            # would hide a manifest written a moment ago by another process.
            "use_listings_cache": False,
        }
        if endpoint := options.resolved_endpoint():
            kwargs["endpoint_url"] = endpoint
        if options.region:
            kwargs["client_kwargs"] = {"region_name": options.region}
        return s3fs.S3FileSystem(**kwargs), uri[len("s3://") :].rstrip("/")
    return fsspec.filesystem("file"), str(local_path(uri).absolute())


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(e, TRANSIENT_ERRORS):
        return True
    text = f"{type(e).__name__} {e}"
    return any(
        s in text
        for s in (
            "EndpointConnectionError",
            "ConnectTimeout",
            "ReadTimeout",
            "SlowDown",
            "ServiceUnavailable",
            "InternalError",
            "Connection reset",
            "ConnectionClosed",
        )
    )


def retry(fn: Callable[[], T], what: str, attempts: int = 4, base_delay: float = 0.25) -> T:
    """Run `fn`, retrying transient errors with exponential backoff and jitter; bounded in count."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as e:  # classified below; re-raised either way
            if not _is_transient(e) or attempt == attempts - 1:
                if isinstance(e, (FileNotFoundError, PermissionError, StorageError)):
                    raise
                raise StorageError(f"{what}: {type(e).__name__}: {e}") from e
            time.sleep(base_delay * (2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def read_bytes(uri: str, options: StorageOptions | None = None, attempts: int = 4) -> bytes:
    guarded = options is not None and options.guard is not None
    if guarded:
        _refuse_local(uri)
        attempts = 1  # the guarded client retries (few times) itself; no second layer on top
    if not is_remote(uri):
        fs, path = filesystem(uri, options)
        return retry(lambda: fs.cat_file(path), f"reading {uri}", attempts=attempts)
    bucket, _, key = uri[len("s3://") :].partition("/")
    client = _s3_client(options or StorageOptions())

    def whole_object() -> bytes:
        # Whole-object reads (shards, manifests) go to botocore directly: one GET with no HEAD first,
        # ~3x faster than s3fs for the few-MB objects shards are. Same endpoint and credential chain.
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey as e:
            raise FileNotFoundError(f"{uri}: no such object") from e
        except client.exceptions.NoSuchBucket as e:
            raise FileNotFoundError(f"{uri}: no such bucket") from e
        except ObjectTooLarge as e:
            raise ObjectTooLarge(uri, e.size, e.cap) from None

    return retry(whole_object, f"reading {uri}", attempts=attempts)


_S3_CLIENTS: dict[tuple, Any] = {}


def _s3_client(options: StorageOptions):
    """One botocore S3 client per endpoint/region (thread-safe; creating one costs ~50 ms)."""
    if options.guard is not None:
        return _guarded_client(options)
    key = (options.resolved_endpoint(), options.region, os.getpid())
    if key not in _S3_CLIENTS:
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60, max_pool_connections=16
        )
        _S3_CLIENTS[key] = boto3.session.Session().client(
            "s3", endpoint_url=key[0], region_name=options.region or None, config=config
        )
    return _S3_CLIENTS[key]


# ----------------------------------------------------------------------------- guarded reads
# The operator reads what tenants wrote, from endpoints tenants name. Its requests go through one
# transport of its own (botocore's `before-send` hook: botocore signs, this sends), so that every
# response of every operation (GET, LIST) is capped and deadline-bound, whatever the server does.

_GUARDED_CLIENTS: OrderedDict[tuple, Any] = OrderedDict()
_GUARDED_CLIENTS_MAX = 64  # one per (endpoint, key) in use; bounded so rotating keys cannot grow memory
_GUARDED_LOCK = threading.Lock()
_READS_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("trainkit_reads_deadline", default=None)

# Link-local (169.254.0.0/16 incl. the AWS/GCP/Azure metadata address, fe80::/10) is caught by
# `is_link_local`; these are the other well-known instance-metadata addresses.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192"))
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"})


class ReadDeadlineExceeded(StorageError):
    """The reads of one reconcile (or one request) ran past their deadline."""


def refused_address(address: str) -> bool:
    """Whether a guarded reader must never connect to `address` (link-local or a metadata service)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local or ip in METADATA_ADDRESSES


def endpoint_refusal(endpoint: str) -> str | None:
    """Why a guarded reader will not use `endpoint` whatever any allow-list says, or None (pure: no DNS)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{endpoint!r} is not an http(s):// URL"
    host = parts.hostname.rstrip(".").lower()
    if host in METADATA_HOSTS:
        return f"{host!r} is an instance-metadata host"
    try:
        if refused_address(host):
            return f"{host} is a link-local or instance-metadata address"
    except ValueError:
        pass  # a name: checked again, resolved, when connecting
    return None


@contextlib.contextmanager
def reads_deadline(seconds: float) -> Iterator[None]:
    """Guarded requests made inside this block fail once `seconds` have passed (one reconcile's budget)."""
    token = _READS_DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _READS_DEADLINE.reset(token)


def _refuse_local(uri: str) -> None:
    if not is_remote(uri):
        raise StorageRefused(f"{uri}: a guarded reader reads only s3:// URIs, never local paths or file://")


class _Body(io.BytesIO):
    """The capped response body handed back to botocore (urllib3's response API, the part botocore uses)."""

    def stream(self, amt: int = 1 << 16, decode_content: bool = True) -> Iterator[bytes]:
        while chunk := self.read(amt):
            yield chunk


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """A socket to the first resolved address of `host`, every address checked first (the address checked is
    the one connected to: no second lookup that DNS could answer differently)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        if refused_address(str(sockaddr[0])):
            raise StorageRefused(f"{host} resolves to {sockaddr[0]}, a link-local or instance-metadata address")
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.settimeout(timeout)
    try:
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _guarded_send(request: Any, guard: ReadGuard, allowed_host: Callable[[str], bool], **_: Any) -> Any:
    """Send one signed botocore request: one host, no redirects, body capped, whole request deadline-bound."""
    import http.client

    from botocore.awsrequest import AWSResponse
    from botocore.exceptions import ReadTimeoutError

    url = urlsplit(request.url)
    host = url.hostname or ""
    if not allowed_host(host):
        raise StorageRefused(f"refusing a request to {host!r}: not the configured endpoint's host")
    now = time.monotonic()
    deadline = now + guard.request_deadline
    if (overall := _READS_DEADLINE.get()) is not None:
        if overall <= now:
            raise ReadDeadlineExceeded("the storage reads ran past their deadline")
        deadline = min(deadline, overall)
    port = url.port or (443 if url.scheme == "https" else 80)
    sock = _connect(host, port, min(guard.connect_timeout, max(0.05, deadline - now)))
    # The watchdog: a server that trickles headers or body one byte at a time never trips a socket
    # timeout; shutting the socket down at the deadline wakes the blocked read whatever it waits for.
    expired = threading.Event()

    def cut_off() -> None:
        expired.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), cut_off)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn: http.client.HTTPConnection
        if url.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=guard.request_deadline)
            conn.sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=guard.request_deadline)
            conn.sock = sock
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        body = request.body if isinstance(request.body, (bytes, type(None))) else request.body.read()
        conn.request(request.method, target, body=body, headers=dict(request.headers.items()))
        response = conn.getresponse()
        what = f"{request.method} {url.path}"
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > guard.max_response_bytes:
            raise ObjectTooLarge(what, int(declared), guard.max_response_bytes)
        chunks: list[bytes] = []
        total = 0
        while chunk := response.read1(1 << 16):
            total += len(chunk)
            if total > guard.max_response_bytes:
                raise ObjectTooLarge(what, None, guard.max_response_bytes)
            chunks.append(chunk)
        return AWSResponse(request.url, response.status, dict(response.getheaders()), _Body(b"".join(chunks)))
    except (OSError, http.client.HTTPException) as e:
        if isinstance(e, StorageError):
            raise
        if expired.is_set() or isinstance(e, TimeoutError):
            raise ReadTimeoutError(endpoint_url=f"{url.scheme}://{url.netloc}") from None
        raise
    finally:
        watchdog.cancel()
        sock.close()


def _guarded_client(options: StorageOptions):
    """A botocore S3 client with the given credentials only (never the environment's), sending through
    `_guarded_send`. Cached per (endpoint, region, credentials, guard), a bounded number of them."""
    guard = options.guard
    assert guard is not None
    if options.credentials is None:
        raise StorageRefused("a guarded reader needs explicit credentials (the run's Secret); none given")
    if options.endpoint and (why := endpoint_refusal(options.endpoint)):
        raise StorageRefused(f"storage endpoint refused: {why}")
    key = (options.endpoint, options.region, options.credentials, guard, os.getpid())
    with _GUARDED_LOCK:
        if key in _GUARDED_CLIENTS:
            _GUARDED_CLIENTS.move_to_end(key)
            return _GUARDED_CLIENTS[key]
    import boto3
    from botocore.config import Config

    endpoint_host = (urlsplit(options.endpoint).hostname or "").lower() if options.endpoint else None

    def allowed_host(host: str) -> bool:
        host = host.lower()
        return host == endpoint_host if endpoint_host is not None else host.endswith(".amazonaws.com")

    config = Config(
        retries={"max_attempts": guard.attempts, "mode": "standard"},
        connect_timeout=guard.connect_timeout,
        read_timeout=guard.request_deadline,
        s3={"addressing_style": "path"},
        # botocore >= 1.31 would otherwise take AWS_ENDPOINT_URL(_S3) from the environment.
        ignore_configured_endpoint_urls=True,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session(
        aws_access_key_id=options.credentials.access_key_id,
        aws_secret_access_key=options.credentials.secret_access_key,
        aws_session_token=options.credentials.session_token,
        region_name=options.region or "us-east-1",
    )
    client = session.client("s3", endpoint_url=options.endpoint or None, config=config)
    client.meta.events.register_first(
        "before-send.s3", lambda request, **kw: _guarded_send(request, guard, allowed_host, **kw)
    )
    with _GUARDED_LOCK:
        _GUARDED_CLIENTS[key] = client
        while len(_GUARDED_CLIENTS) > _GUARDED_CLIENTS_MAX:
            _GUARDED_CLIENTS.popitem(last=False)
    return client


def _guarded_listing(uri: str, options: StorageOptions, delimiter: bool) -> tuple[list[str], dict[str, int]]:
    """(sub-folder names, {relpath: size}) directly under (delimiter) or anywhere under `uri`, at most
    `guard.max_keys` entries in all; more -> StorageError (a listing that large is not a run's)."""
    guard = options.guard
    assert guard is not None
    _refuse_local(uri)
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    client = _s3_client(options)
    folders: list[str] = []
    files: dict[str, int] = {}
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
    if delimiter:
        kwargs["Delimiter"] = "/"
    while True:
        try:
            page = client.list_objects_v2(**kwargs)
        except client.exceptions.NoSuchBucket:
            return [], {}
        folders += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes") or []]
        for obj in page.get("Contents") or []:
            files[obj["Key"][len(prefix) :]] = int(obj.get("Size") or 0)
        if len(folders) + len(files) > guard.max_keys:
            raise StorageError(f"listing {uri}: more than {guard.max_keys} entries")
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return folders, files
        kwargs["ContinuationToken"] = token


def read_json(uri: str, options: StorageOptions | None = None) -> Any:
    return json.loads(read_bytes(uri, options))


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    fs, path = filesystem(uri, options)
    return retry(lambda: fs.exists(path), f"checking {uri}")


def write_bytes(uri: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Write one object/file so readers never see a part of it. Guarded options (the operator writing a
    sweep's leaderboard with the tenant's key) write only to s3://, through the guarded client."""
    if options is not None and options.guard is not None:
        _refuse_local(uri)
        bucket, _, key = uri[len("s3://") :].partition("/")
        _s3_client(options).put_object(Bucket=bucket, Key=key, Body=data)
        return
    if not is_remote(uri):
        write_bytes_atomic_local(local_path(uri), data)
        return
    fs, path = filesystem(uri, options)
    retry(lambda: fs.pipe_file(path, data), f"writing {uri}")


def create_exclusive(uri: str, data: bytes, options: StorageOptions | None = None) -> bool:
    """Write one object/file only if nothing is there yet: True when this call created it, False when it
    already existed (then nothing was written). S3: a conditional PUT (`If-None-Match: *`, which S3 and
    moto honour atomically); local: a complete temporary file hard-linked into place (link fails if the
    name exists, so a reader never sees a part of it and two writers cannot both win)."""
    if not is_remote(uri):
        path = local_path(uri)
        tmp = _complete_temp_file_beside(path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
    bucket, _, key = uri[len("s3://") :].partition("/")
    client = _s3_client(options or StorageOptions())

    def put() -> bool:
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except client.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    return retry(put, f"creating {uri}")


def write_json(uri: str, obj: Any, options: StorageOptions | None = None) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n", options)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic_local(Path(path), text.encode())


def _complete_temp_file_beside(path: Path, data: bytes) -> str:
    """A fsynced temporary file holding `data` in `path`'s folder (same file system, so it can be renamed
    or linked into place); removed again if writing it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_bytes_atomic_local(path: Path, data: bytes) -> None:
    tmp = _complete_temp_file_beside(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def upload_dir(local_dir: str | os.PathLike, uri: str, options: StorageOptions | None = None) -> list[str]:
    """Copy every file under `local_dir` to `uri` (files keep their relative paths); returns them."""
    root = Path(local_dir)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        rel = p.relative_to(root).as_posix()
        write_bytes(join(uri, rel), p.read_bytes(), options)
    return [p.relative_to(root).as_posix() for p in files]


def download_dir(uri: str, local_dir: str | os.PathLike, options: StorageOptions | None = None) -> Path:
    """Copy every file under `uri` into `local_dir`; returns the local folder."""
    fs, path = filesystem(uri, options)
    dest = Path(local_dir)
    dest.mkdir(parents=True, exist_ok=True)
    found = retry(lambda: fs.find(path), f"listing {uri}")
    if not found:
        raise FileNotFoundError(f"{uri}: nothing there")
    for f in found:
        rel = f[len(path) :].lstrip("/")
        target = contained(dest, rel, uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        retry(_get_file(fs, f, target), f"downloading {f}")
    return dest


def _get_file(fs: fsspec.AbstractFileSystem, remote: str, target: Path) -> Callable[[], None]:
    """One download as a thunk for `retry` (a loop's lambda would see the loop's last values)."""
    return lambda: fs.get_file(remote, str(target))


def find(uri: str, options: StorageOptions | None = None) -> list[str]:
    """Every file under `uri` (recursively), as URIs of the same scheme, sorted. A missing bucket or
    folder raises FileNotFoundError naming `uri`."""
    fs, path = filesystem(uri, options)

    def listing():
        if not fs.exists(path):
            raise FileNotFoundError(f"{uri}: not found (missing bucket, prefix or folder)")
        if fs.isfile(path):
            return [path]
        return fs.find(path)

    found = retry(listing, f"listing {uri}")
    if is_remote(uri):
        return sorted("s3://" + f for f in found)
    return sorted(found)


def list_names(uri: str, options: StorageOptions | None = None, directories_only: bool = False) -> list[str]:
    """Names of the entries directly under `uri`, sorted ([] when it does not exist). The listing cache is
    dropped first: a run's folders grow while it is read (new checkpoints, eval steps, sweep runs)."""
    if options is not None and options.guard is not None:
        folders, files = _guarded_listing(uri, options, delimiter=True)
        return sorted(folders if directories_only else [*folders, *files])
    fs, path = filesystem(uri, options)
    fs.invalidate_cache()
    try:
        entries = retry(lambda: fs.ls(path, detail=True), f"listing {uri}")
    except FileNotFoundError:
        return []
    return sorted(
        e["name"].rstrip("/").rsplit("/", 1)[-1]
        for e in entries
        if not directories_only or e.get("type") == "directory"
    )


def list_sizes(uri: str, options: StorageOptions | None = None) -> dict[str, int]:
    """{relpath: size} of every file under `uri` ({} when it does not exist)."""
    if options is not None and options.guard is not None:
        return _guarded_listing(uri, options, delimiter=False)[1]
    fs, path = filesystem(uri, options)
    fs.invalidate_cache()
    try:
        found = retry(lambda: fs.find(path, detail=True), f"listing {uri}")
    except FileNotFoundError:
        return {}
    return {name[len(path) :].lstrip("/"): int(info.get("size") or 0) for name, info in found.items()}


def size(uri: str, options: StorageOptions | None = None) -> int:
    fs, path = filesystem(uri, options)
    return int(retry(lambda: fs.size(path), f"reading the size of {uri}"))


def open_input(uri: str, options: StorageOptions | None = None, compression: str | None = "infer"):
    """A readable binary file object (decompressing .gz/.zst when `compression` is 'infer')."""
    fs, path = filesystem(uri, options)
    if compression == "infer":
        from fsspec.utils import infer_compression

        compression = infer_compression(path)
    # Large blocks: s3fs reads ~3x faster with 50 MB blocks than with its default against S3 servers.
    return retry(lambda: fs.open(path, "rb", compression=compression, block_size=32 << 20), f"opening {uri}")


def remove(uri: str, options: StorageOptions | None = None) -> None:
    """Delete one file/object if it is there."""
    fs, path = filesystem(uri, options)

    def rm():
        if fs.exists(path):
            fs.rm_file(path)

    retry(rm, f"deleting {uri}")


def bucket_exists(uri: str, options: StorageOptions | None = None) -> bool:
    """For s3:// URIs, whether the bucket exists; local paths always 'exist' (folders are created)."""
    if not is_remote(uri):
        return True
    fs, path = filesystem(uri, options)
    bucket = path.split("/", 1)[0]
    return bool(retry(lambda: fs.exists(bucket), f"checking bucket of {uri}"))
