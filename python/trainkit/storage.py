"""Object storage through fsspec: s3:// (s3fs), file:// and plain local paths behave the same; hf://
(Hugging Face Hub datasets, read-only, through huggingface_hub's HfFileSystem) can be listed and read.

Endpoint and region come from the spec's `storage` block, else from the environment
(AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_DEFAULT_REGION). Credentials come only from the
environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, which the operator fills from the Secret
named in the spec) or the pod's IAM role: never from the spec, never on a command line.

The hub is `HF_ENDPOINT` (default https://huggingface.co, read when a filesystem is made, so a mirror or a
test server can be named at any time) and its token is `HF_TOKEN` (the prepare RayJob fills it from the Secret
named in the TrainingData) or the token file of `hf auth login`; never a spec field, never a command line.
Hub errors (401/403, missing repository or revision, an unreachable endpoint, offline mode) become one
`HubError` that says which and what to do (`hub_problem`), never the token.

Two kinds of reads. CONTROL reads (records, manifests, shard indexes, log segments, listings, existence
checks: `read_bytes`, `read_json`, `exists`, `list_names`, `list_sizes`) of s3:// URIs go through ONE guarded
transport (`_guarded_operation` over `_guarded_send`): a whole-request deadline a trickling server cannot
stretch, a byte cap, bounded attempts, no redirects, the endpoint's own host only, ending in the value,
FileNotFoundError or a StorageError naming the URI. The operator reads a tenant's storage with its own
`ReadGuard` (the tenant's key only); the CLI and the trainer read their user's storage with `own_read_guard()`,
the default of `StorageOptions`. BULK reads (token shards, checkpoint weights: `read_bulk`, `read_ranges`,
`download_file`, and whatever goes through s3fs) have no whole-call deadline but bounded connect and idle-read
timeouts and retries, and refuse redirects too.

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
import math
import os
import random
import socket
import ssl
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
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
    """Limits of a guarded read: every control read (a record, a manifest, a listing, an existence check) of
    an s3:// URI goes through the one guarded transport (`_guarded_operation`, `_guarded_send`).

    Every response body is capped (checked against Content-Length before reading, enforced while
    reading), every request has a connect timeout and a whole-request deadline, redirects are never
    followed and requests only go to the configured endpoint's host, link-local / metadata addresses are
    refused. With `own_storage` False (the operator's guards: storage a tenant controls) only explicit
    credentials and the explicit endpoint are used and local paths are refused; with it True (`own_read_guard`:
    the CLI's and the trainer's reads of storage their user configured) the process's own credential chain and
    endpoint settings are used, and local paths are read as files.
    """

    max_response_bytes: int = 1 << 20
    connect_timeout: float = 3.0
    # Per request, headers and body together (a server trickling bytes is cut off here).
    request_deadline: float = 5.0
    # Attempts per operation, the first included (`_guarded_operation` retries): few, a silent endpoint costs each.
    attempts: int = 2
    # Keys a listing may return in all (pages of 1000).
    max_keys: int = 10_000
    # The reader's own storage (CLI, trainer) rather than a tenant's (operator); see the class docstring.
    own_storage: bool = False

    @property
    def max_pages(self) -> int:
        """Pages a listing may take (a server answering empty pages with `IsTruncated` forever ends here)."""
        return self.max_keys // 1000 + 1

    @property
    def operation_deadline(self) -> float:
        """The longest one guarded operation (a GET or a whole listing, retries included) may take when no
        reconcile's deadline (`reads_deadline`) is set: every attempt's connect and request deadline."""
        return self.attempts * (self.connect_timeout + self.request_deadline)


# The CLI's and the trainer's control reads: seconds per request (a slow link to a large metrics.jsonl may need
# more) and bytes per response; the operator's limits are the chart's (trainkit_operator.config).
READ_TIMEOUT_ENV = "TRAINKIT_READ_TIMEOUT"
READ_MAX_BYTES_ENV = "TRAINKIT_READ_MAX_BYTES"
DEFAULT_READ_TIMEOUT = 20.0
DEFAULT_READ_MAX_BYTES = 256 << 20


def _positive_env(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise StorageError(f"{name}={text[:40]!r}: must be a positive number")
    return value


def own_read_guard() -> ReadGuard:
    """The guard of reads a user makes of their own storage (every CLI command, the trainer's records,
    manifests, listings and shard indexes): a whole-request deadline of TRAINKIT_READ_TIMEOUT seconds (default
    20), 3 attempts, at most TRAINKIT_READ_MAX_BYTES per response (default 256 MiB), 100,000 keys per listing;
    a silent or trickling endpoint then ends in a StorageError naming the URI in about a minute, never hours."""
    timeout = _positive_env(READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT)
    return ReadGuard(
        max_response_bytes=int(_positive_env(READ_MAX_BYTES_ENV, DEFAULT_READ_MAX_BYTES)),
        connect_timeout=min(5.0, timeout),
        request_deadline=timeout,
        attempts=3,
        max_keys=100_000,
        own_storage=True,
    )


@dataclass(frozen=True)
class StorageOptions:
    endpoint: str | None = None
    region: str | None = None
    # A tenant's key (the operator's reads): only these credentials, never the process's AWS_* environment.
    credentials: Credentials | None = field(default=None, repr=False)
    # Limits of control reads; the default reads the user's own storage (see ReadGuard.own_storage).
    guard: ReadGuard = field(default_factory=own_read_guard)

    @classmethod
    def from_spec(cls, storage) -> "StorageOptions":
        """From a `trainkit.spec.models.StorageSpec` (or None)."""
        if storage is None:
            return cls()
        return cls(endpoint=storage.endpoint, region=storage.region)

    def resolved_endpoint(self) -> str | None:
        if not self.guard.own_storage:
            return self.endpoint  # a tenant's storage: only where the reader was told, never where the env says
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


HUB_SCHEME = "hf://"
DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
HUB_ENDPOINT_ENV = "HF_ENDPOINT"
HUB_TOKEN_ENV = "HF_TOKEN"


def is_hub(uri: str) -> bool:
    return uri.startswith(HUB_SCHEME)


class HubError(StorageError):
    """The Hugging Face Hub refused or could not serve an hf:// input; the message says why and what to do."""


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
    if not options.guard.own_storage:
        # s3fs would sign with the process's own credential chain: a tenant's storage is read only guarded.
        raise StorageRefused(f"{uri}: a tenant's storage is read only through guarded reads (read_bytes, list_*)")
    if is_remote(uri):
        import s3fs

        kwargs: dict[str, Any] = {
            # Bulk reads and writes: bounded connect and read (idle) timeouts and retries inside botocore, our
            # own `retry` on top; no whole-call deadline (a shard or a checkpoint may take long), no redirects.
            "config_kwargs": {
                "retries": {"max_attempts": 3, "mode": "standard"},
                "connect_timeout": BULK_CONNECT_TIMEOUT,
                "read_timeout": BULK_READ_TIMEOUT,
                "http_session_cls": _no_redirect_session_class(),
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
    if is_hub(uri):
        return _hub_filesystem(), uri[len(HUB_SCHEME) :].rstrip("/")
    if uri.startswith(("gs://", "gcs://")):
        # The TrainingData spec accepts them; no GCS client is installed or tested yet: say so, never read
        # "gs:/bucket/..." as a local path.
        raise StorageError(f"{uri}: gs:// is not supported yet; copy the data to s3:// or read it from hf://")
    return fsspec.filesystem("file"), str(local_path(uri).absolute())


# --------------------------------------------------------------------------- Hugging Face Hub
def hub_endpoint() -> str:
    return (os.environ.get(HUB_ENDPOINT_ENV) or DEFAULT_HUB_ENDPOINT).rstrip("/")


def _hub_filesystem():
    from huggingface_hub import HfFileSystem

    # A fresh instance per call: no listing or repository cache outlives one operation (a long prepare must see
    # what the hub holds now), and HF_ENDPOINT is read now, not when huggingface_hub was imported. The token is
    # huggingface_hub's own lookup (HF_TOKEN, then the saved login), so it never passes through our code.
    return HfFileSystem(endpoint=hub_endpoint(), skip_instance_cache=True)


def _hub_token_sent() -> bool:
    from huggingface_hub import get_token

    return bool(get_token())


def _causes(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    node: BaseException | None = e
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        yield node
        node = node.__cause__ or node.__context__


def hub_problem(uri: str, e: BaseException) -> str:
    """What went wrong reading `uri` from the hub and what to do, from huggingface_hub's exceptions anywhere in
    the chain (HfFileSystem wraps them in FileNotFoundError). Never the token, only whether one was sent."""
    from huggingface_hub import errors

    chain = list(_causes(e))
    org_name = uri[len(HUB_SCHEME) :].split("/", 3)[1:3]
    where = f"hub dataset {'/'.join(org_name).split('@')[0]} at {hub_endpoint()}"

    def first(*types: type[BaseException]) -> BaseException | None:
        return next((c for c in chain if isinstance(c, types)), None)

    def status_of(cause: BaseException) -> int | None:
        return getattr(getattr(cause, "response", None), "status_code", None)

    if first(errors.OfflineModeIsEnabled):
        return f"{uri}: HF_HUB_OFFLINE is set, so the hub cannot be read (unset it to prepare hf:// inputs)"
    if cause := first(errors.RevisionNotFoundError):
        revision = uri.split("@", 1)[1].split("/", 1)[0] if "@" in uri else "main"
        return f"{uri}: revision {revision!r} does not exist in {where} (the hub answered {status_of(cause)})"
    if cause := first(errors.GatedRepoError):
        return (
            f"{uri}: {where} is gated and the token's account has not been granted access "
            f"(the hub answered {status_of(cause)}); accept its conditions on the hub"
        )
    cause = first(errors.HfHubHTTPError)
    status = status_of(cause) if cause is not None else None
    if cause is not None and status in (401, 403, 404) and not isinstance(cause, errors.EntryNotFoundError):
        if not _hub_token_sent():
            return (
                f"{uri}: the hub answered {status} for {where} and no token was sent: the dataset is private, "
                f"gated or does not exist (a TrainingData names a Secret with key {HUB_TOKEN_ENV} in "
                f"spec.hfTokenSecret; trainkit prepare reads {HUB_TOKEN_ENV})"
            )
        return (
            f"{uri}: the hub answered {status} for {where} with the token given: the token is invalid, or the "
            "dataset does not exist or is not readable with it"
        )
    if cause is not None and status is not None and status >= 500:
        return f"{uri}: the hub at {hub_endpoint()} failed with {status} (after retries); try again later"
    unreachable = next(
        (
            c
            for c in chain
            if isinstance(c, (ConnectionError, TimeoutError))
            or type(c).__name__ in ("ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError")
        ),
        None,
    )
    if unreachable is not None:
        return (
            f"{uri}: the hub at {hub_endpoint()} is unreachable ({type(unreachable).__name__}: "
            f"{str(unreachable)[:200]}); set HF_ENDPOINT to a reachable hub or mirror"
        )
    if first(FileNotFoundError) or (cause is not None and status == 404):
        return f"{uri}: no such file or folder in {where}"
    return f"{uri}: {type(e).__name__}: {str(e)[:300]}"


def _hub_call(uri: str, fn: Callable[[], T], what: str) -> T:
    """`retry(fn)` for an hf:// URI, its failure re-raised as one HubError naming the cause."""
    try:
        return retry(fn, what)
    except Exception as e:  # every hub failure becomes one clear HubError (classified by hub_problem)
        raise HubError(hub_problem(uri, e)) from e


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(e, TRANSIENT_ERRORS):
        return True
    response = getattr(e, "response", None)
    if getattr(response, "status_code", None) in (429, 500, 502, 503, 504):
        return True  # the hub's (httpx) errors carry their response
    # botocore's ClientError carries a dict: the HTTP status botocore itself retries
    if isinstance(response, dict) and (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") in (
        500,
        502,
        503,
        504,
    ):
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
            "ConnectError",  # httpx (the hub client): refused or reset while connecting
        )
    )


def retry(
    fn: Callable[[], T], what: str, attempts: int = 4, base_delay: float = 0.25, deadline: float | None = None
) -> T:
    """Run `fn`, retrying transient errors with exponential backoff and jitter; bounded in count (and, with a
    `deadline` on time.monotonic(), in time: no retry starts that its backoff would push past it)."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as e:  # classified below; re-raised either way
            delay = base_delay * (2**attempt) * (0.5 + random.random())
            out_of_time = deadline is not None and time.monotonic() + delay >= deadline
            if not _is_transient(e) or attempt == attempts - 1 or out_of_time:
                if isinstance(e, StorageError) and what.rsplit(" ", 1)[-1] not in str(e):
                    # a refusal or cap met inside a request names the request: name the operation's object too
                    e.args = (f"{what}: {e}"[:2000],)
                if isinstance(e, (FileNotFoundError, PermissionError, StorageError)):
                    raise
                raise StorageError(f"{what}: {type(e).__name__}: {e}"[:2000]) from e
            time.sleep(delay)
    raise AssertionError("unreachable")


def read_bytes(uri: str, options: StorageOptions | None = None, attempts: int = 4) -> bytes:
    """A CONTROL read (a record, a manifest, an index, a log segment): on S3 one guarded GET within
    `options.guard`'s deadline and byte cap (at most `attempts` attempts), StorageError naming `uri` otherwise.
    Shards and checkpoint weights are bulk reads: `read_bulk`, `read_ranges`, `download_file`."""
    options = options or StorageOptions()
    if is_remote(uri):
        guard = options.guard
        if attempts < guard.attempts:
            guard = replace(guard, attempts=max(1, attempts))
        return _guarded_operation(guard, f"reading {uri}", lambda: _whole_object(uri, options))
    _refuse_local(uri, options.guard)
    fs, path = filesystem(uri, options)
    return retry(lambda: fs.cat_file(path), f"reading {uri}", attempts=attempts)


def _get_object(client: Any, uri: str, **kwargs: Any) -> dict:
    """GET of the s3:// object `uri` through `client`, S3's missing key or bucket as FileNotFoundError naming it."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    try:
        return client.get_object(Bucket=bucket, Key=key, **kwargs)
    except client.exceptions.NoSuchKey as e:
        raise FileNotFoundError(f"{uri}: no such object") from e
    except client.exceptions.NoSuchBucket as e:
        raise FileNotFoundError(f"{uri}: no such bucket") from e


def _whole_object(uri: str, options: StorageOptions) -> bytes:
    """One guarded GET of an s3:// object (one request, no HEAD first)."""
    try:
        return _get_object(_guarded_client(options), uri)["Body"].read()
    except ObjectTooLarge as e:
        raise ObjectTooLarge(uri, e.size, e.cap) from None


# Bulk reads (token shards, checkpoint weights): no whole-call deadline and no byte cap (a shard or a weights
# file may be large, and a loaded link slow), but bounded connect and idle-read timeouts, bounded retries, and
# no redirects (botocore would recurse looking for the bucket's region; aiohttp, under s3fs, follows them to
# any host).
BULK_CONNECT_TIMEOUT = 5.0
BULK_READ_TIMEOUT = 60.0  # seconds without a byte before a socket read fails (and is retried)


def read_bulk(uri: str, options: StorageOptions | None = None, attempts: int = 4) -> bytes:
    """A whole object or file as BULK data (a token shard): one GET straight through botocore on S3 (no HEAD
    first; ~3x faster than s3fs for the few-MB objects shards are), bounded timeouts, no redirects."""
    options = options or StorageOptions()
    if not is_remote(uri):
        _refuse_local(uri, options.guard)
        fs, path = filesystem(uri, options)
        return retry(lambda: fs.cat_file(path), f"reading {uri}", attempts=attempts)
    client = _bulk_client(options)
    return retry(lambda: _get_object(client, uri)["Body"].read(), f"reading {uri}", attempts=attempts)


def download_file(uri: str, target: Path, options: StorageOptions | None = None, attempts: int = 4) -> None:
    """Copy one object or file to the local `target`, streamed (a weights file never sits in memory whole), as
    a BULK read (bounded timeouts, no redirects); a failed attempt leaves no partial `target`."""
    options = options or StorageOptions()
    if not is_remote(uri):
        fs, path = filesystem(uri, options)
        retry(lambda: fs.get_file(path, str(target)), f"downloading {uri}", attempts=attempts)
        return
    client = _bulk_client(options)

    def get() -> None:
        body = _get_object(client, uri)["Body"]
        try:
            with open(target, "wb") as out:
                for chunk in body.iter_chunks(8 << 20):
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    retry(get, f"downloading {uri}", attempts=attempts)


# Ranged GETs at a time per process (read_ranges).
RANGE_THREADS = 8
_RANGE_POOL: list[Any] = []  # the one ThreadPoolExecutor, made on first use


def read_ranges(
    ranges: list[tuple[str, int, int]], options: StorageOptions | None = None, attempts: int = 4
) -> list[bytes]:
    """Bytes [start, end) of each (uri, start, end), fetched concurrently as BULK reads. On S3, ranged GETs
    straight through botocore, RANGE_THREADS at a time: here about half the wall time and CPU of s3fs's
    cat_ranges (which runs every request through one asyncio loop), as whole-object reads are in read_bulk.
    Local files through fsspec. A missing object raises FileNotFoundError; a range past an object's end comes
    back short or, starting past it, as a StorageError (callers check lengths against what they expect)."""
    if not ranges:
        return []

    def one(r: tuple[str, int, int]) -> bytes:
        uri, start, end = r
        if end <= start:
            return b""
        if not is_remote(uri):
            fs, path = filesystem(uri, options)
            return retry(lambda: fs.cat_file(path, start, end), f"reading {uri}", attempts=attempts)
        client = _bulk_client(options or StorageOptions())

        def get() -> bytes:
            return _get_object(client, uri, Range=f"bytes={start}-{end - 1}")["Body"].read()

        return retry(get, f"reading bytes {start}-{end} of {uri}", attempts=attempts)

    if len(ranges) == 1:
        return [one(ranges[0])]
    if not _RANGE_POOL:
        import concurrent.futures as cf

        _RANGE_POOL.append(cf.ThreadPoolExecutor(RANGE_THREADS, thread_name_prefix="trainkit-ranges"))
    return list(_RANGE_POOL[0].map(one, ranges))


_S3_CLIENTS: dict[tuple, Any] = {}


def _bulk_client(options: StorageOptions):
    """The botocore S3 client of bulk reads and of writes, one per endpoint/region (thread-safe; creating one
    costs ~50 ms): the process's own credential chain, bounded timeouts and retries, redirects refused."""
    if not options.guard.own_storage:
        raise StorageRefused("a tenant's storage is read only through guarded reads, with the tenant's key")
    key = (options.resolved_endpoint(), options.region, os.getpid())
    if key not in _S3_CLIENTS:
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=BULK_CONNECT_TIMEOUT,
            read_timeout=BULK_READ_TIMEOUT,
            max_pool_connections=16,
        )
        client = boto3.session.Session().client(
            "s3", endpoint_url=key[0], region_name=options.region or None, config=config
        )
        # First, before botocore's region redirector (which would re-send to another region's endpoint).
        client.meta.events.register_first("needs-retry.s3", _refuse_redirect_response)
        _S3_CLIENTS[key] = client
    return _S3_CLIENTS[key]


def _redirect_refusal(status: int, location: str | None, what: str) -> StorageRefused:
    to = urlsplit(location or "").hostname or "elsewhere"
    return StorageRefused(f"{what}: the server redirected ({status}) to {to[:100]!r}; not followed")


def _refuse_redirect_response(response: Any = None, request_dict: Any = None, **_: Any) -> None:
    """botocore's `needs-retry` hook: a 3xx answer ends the request (urllib3 under botocore does not follow it;
    this keeps botocore's region redirector from following it either)."""
    http = response[0] if response else None
    if http is not None and 300 <= http.status_code < 400:
        what = f"{(request_dict or {}).get('method', 'GET')} {urlsplit((request_dict or {}).get('url', '')).path}"
        raise _redirect_refusal(http.status_code, http.headers.get("Location"), what)


_NO_REDIRECT_SESSION: list[type] = []  # made on first use (imports aiobotocore)


def _no_redirect_session_class() -> type:
    """aiobotocore's HTTP session (under s3fs) with redirects refused: aiohttp follows them by default, to any
    host. It wraps aiobotocore 3.x's `_get_session` (pinned through s3fs; tests/integration/
    test_storage_guarded_reads.py would see a redirect followed if that changed)."""
    if not _NO_REDIRECT_SESSION:
        from aiobotocore.httpsession import AIOHTTPSession

        class _RefusingRedirects:
            def __init__(self, session: Any):
                self._session = session

            async def request(self, method: str, url: Any, **kwargs: Any) -> Any:
                response = await self._session.request(method, url=url, allow_redirects=False, **kwargs)
                if 300 <= response.status < 400:
                    location = response.headers.get("Location")
                    response.release()
                    raise _redirect_refusal(response.status, location, f"{method} {url.path}")
                return response

        class NoRedirectAIOHTTPSession(AIOHTTPSession):
            async def _get_session(self, proxy_url: Any) -> Any:
                return _RefusingRedirects(await super()._get_session(proxy_url))

        _NO_REDIRECT_SESSION.append(NoRedirectAIOHTTPSession)
    return _NO_REDIRECT_SESSION[0]


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


def _refuse_local(uri: str, guard: ReadGuard) -> None:
    """A tenant's reader (not `own_storage`) reads s3:// URIs only: a file:// output would be the reader's
    own file system."""
    if not is_remote(uri) and not guard.own_storage:
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
        if 300 <= response.status < 400:
            # botocore would follow it (and, for S3, recurse looking for the bucket's region): a guarded reader
            # talks to the configured endpoint only, so a redirect ends the request.
            raise _redirect_refusal(response.status, response.getheader("Location"), what)
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
        if expired.is_set():  # the watchdog cut a trickling body short: a timeout, not a short object
            raise ReadTimeoutError(endpoint_url=f"{url.scheme}://{url.netloc}")
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


def _ambient_identity() -> tuple[str | None, ...]:
    """What selects the process's own credentials (botocore resolves them once per client): a cached client
    is not reused once they change."""
    return tuple(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_ROLE_ARN"))


def _guarded_client(options: StorageOptions):
    """A botocore S3 client sending through `_guarded_send`: for a tenant, with the given credentials only
    (never the environment's) and the given endpoint only; for the reader's own storage, with the process's
    credential chain and endpoint settings. Cached per (endpoint, region, credentials, guard), a bounded
    number of them."""
    guard = options.guard
    endpoint = options.resolved_endpoint()
    if options.credentials is None and not guard.own_storage:
        raise StorageRefused("a guarded reader needs explicit credentials (the run's Secret); none given")
    if endpoint and (why := endpoint_refusal(endpoint)):
        raise StorageRefused(f"storage endpoint refused: {why}")
    identity = _ambient_identity() if options.credentials is None else options.credentials
    key = (endpoint, options.region, identity, guard, os.getpid())
    with _GUARDED_LOCK:
        if key in _GUARDED_CLIENTS:
            _GUARDED_CLIENTS.move_to_end(key)
            return _GUARDED_CLIENTS[key]
    import boto3
    from botocore.config import Config

    endpoint_host = (urlsplit(endpoint).hostname or "").lower() if endpoint else None

    def allowed_host(host: str) -> bool:
        host = host.lower()
        if endpoint_host is None:
            return host.endswith(".amazonaws.com")
        # the user's own endpoint may address buckets as its sub-domains (virtual-hosted style)
        return host == endpoint_host or (guard.own_storage and host.endswith("." + endpoint_host))

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},  # _guarded_operation retries, within the deadline
        connect_timeout=guard.connect_timeout,
        read_timeout=guard.request_deadline,
        # a tenant's: path style, its endpoint's own host; the user's own: addressed as their bulk client does
        s3={"addressing_style": "auto" if guard.own_storage else "path"},
        # botocore >= 1.31 would otherwise take AWS_ENDPOINT_URL(_S3) from the environment.
        ignore_configured_endpoint_urls=not guard.own_storage,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    if options.credentials is None:  # own storage: the process's credential chain (env, profile, role)
        session = boto3.session.Session(region_name=options.region or None)
    else:
        session = boto3.session.Session(
            aws_access_key_id=options.credentials.access_key_id,
            aws_secret_access_key=options.credentials.secret_access_key,
            aws_session_token=options.credentials.session_token,
            region_name=options.region or "us-east-1",
        )
    client = session.client("s3", endpoint_url=endpoint or None, config=config)
    client.meta.events.register_first(
        "before-send.s3", lambda request, **kw: _guarded_send(request, guard, allowed_host, **kw)
    )
    with _GUARDED_LOCK:
        _GUARDED_CLIENTS[key] = client
        while len(_GUARDED_CLIENTS) > _GUARDED_CLIENTS_MAX:
            _GUARDED_CLIENTS.popitem(last=False)
    return client


def _guarded_operation(guard: ReadGuard, what: str, operation: Callable[[], T]) -> T:
    """THE way every guarded operation (a GET, a whole listing) runs: within the reconcile's deadline or, when
    none is set, its own (`guard.operation_deadline`), retried `guard.attempts` times in all on transient
    errors (here, not in botocore, whose backoff ignores deadlines), and whatever the server does it ends in
    the value, FileNotFoundError (absent) or a StorageError naming `what`: never botocore's exceptions, never
    a RecursionError or any other surprise of a hostile server."""
    own = time.monotonic() + guard.operation_deadline
    overall = _READS_DEADLINE.get()
    deadline = own if overall is None else min(own, overall)
    token = _READS_DEADLINE.set(deadline)
    try:
        return retry(operation, what, attempts=guard.attempts, base_delay=0.1, deadline=deadline)
    finally:
        _READS_DEADLINE.reset(token)


def _guarded_listing(uri: str, options: StorageOptions, delimiter: bool) -> tuple[list[str], dict[str, int]]:
    """(sub-folder names, {relpath: size}) directly under (delimiter) or anywhere under `uri`, at most
    `guard.max_keys` entries in `guard.max_pages` pages; more -> StorageError (a listing that large is not a
    run's)."""
    guard = options.guard
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""

    def pages() -> tuple[list[str], dict[str, int]]:
        client = _guarded_client(options)
        folders: list[str] = []
        files: dict[str, int] = {}
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
        if delimiter:
            kwargs["Delimiter"] = "/"
        for _ in range(guard.max_pages):
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
            if token == kwargs.get("ContinuationToken"):
                raise StorageError(f"listing {uri}: the server sent the same continuation token twice")
            kwargs["ContinuationToken"] = token
        raise StorageError(f"listing {uri}: more than {guard.max_pages} pages")

    return _guarded_operation(guard, f"listing {uri}", pages)


def read_json(uri: str, options: StorageOptions | None = None) -> Any:
    return json.loads(read_bytes(uri, options))


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    """Whether an object (or a folder: a prefix holding objects) is at `uri`; a control read, guarded on S3."""
    options = options or StorageOptions()
    if is_remote(uri):
        return _guarded_operation(options.guard, f"checking {uri}", lambda: _object_or_prefix_exists(uri, options))
    fs, path = filesystem(uri, options)
    return retry(lambda: fs.exists(path), f"checking {uri}")


def _object_or_prefix_exists(uri: str, options: StorageOptions) -> bool:
    bucket, _, key = uri[len("s3://") :].partition("/")
    client = _guarded_client(options)
    try:
        if key.strip("/"):
            try:
                client.head_object(Bucket=bucket, Key=key)
                return True
            except client.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                    raise
            page = client.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
            return bool(page.get("Contents") or page.get("CommonPrefixes"))
        client.head_bucket(Bucket=bucket)
        return True
    except client.exceptions.NoSuchBucket:
        return False
    except client.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
            return False
        raise


def write_bytes(uri: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Write one object/file so readers never see a part of it. Guarded options (the operator writing a
    sweep's leaderboard with the tenant's key) write only to s3://, through the guarded client."""
    if options is not None and not options.guard.own_storage:
        _refuse_local(uri, options.guard)
        bucket, _, key = uri[len("s3://") :].partition("/")
        guarded = options
        _guarded_operation(
            options.guard,
            f"writing {uri}",
            lambda: _guarded_client(guarded).put_object(Bucket=bucket, Key=key, Body=data),
        )
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
    # The owner marker is a control operation: guarded (deadline, no redirects) like the reads around it.
    options = options or StorageOptions()
    bucket, _, key = uri[len("s3://") :].partition("/")

    def put() -> bool:
        client = _guarded_client(options)
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except client.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    return _guarded_operation(options.guard, f"creating {uri}", put)


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

    if is_hub(uri):

        def hub_listing():
            # Not fs.exists(): it answers False for every failure, hiding a 401 or a missing revision.
            fs.resolve_path(path)
            return [path] if fs.info(path)["type"] == "file" else fs.find(path)

        return sorted(HUB_SCHEME + f for f in _hub_call(uri, hub_listing, f"listing {uri}"))
    found = retry(listing, f"listing {uri}")
    if is_remote(uri):
        return sorted("s3://" + f for f in found)
    return sorted(found)


def pin_hub_revision(uri: str) -> str:
    """`hf://datasets/ORG/NAME[@rev][/path]` with the revision replaced by the commit it names now, so that every
    file of one prepare is read from the same commit even if the branch moves meanwhile (and the index records
    which commit). Other URIs are returned unchanged."""
    if not is_hub(uri):
        return uri
    fs, path = filesystem(uri)
    resolved = _hub_call(uri, lambda: fs.resolve_path(path), f"resolving {uri}")
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_endpoint())
    info = _hub_call(
        uri,
        lambda: api.repo_info(resolved.repo_id, revision=resolved.revision, repo_type=resolved.repo_type),
        f"reading the commit of {uri}",
    )
    if not info.sha:
        raise HubError(f"{uri}: the hub gave no commit for revision {resolved.revision!r}")
    inside = "/" + resolved.path_in_repo if resolved.path_in_repo else ""
    return f"{HUB_SCHEME}{resolved.repo_type}s/{resolved.repo_id}@{info.sha}{inside}"


def list_names(uri: str, options: StorageOptions | None = None, directories_only: bool = False) -> list[str]:
    """Names of the entries directly under `uri`, sorted ([] when it does not exist). The listing cache is
    dropped first: a run's folders grow while it is read (new checkpoints, eval steps, sweep runs). A control
    read: guarded on S3."""
    options = options or StorageOptions()
    if is_remote(uri):
        folders, files = _guarded_listing(uri, options, delimiter=True)
        return sorted(folders if directories_only else [*folders, *files])
    _refuse_local(uri, options.guard)
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
    """{relpath: size} of every file under `uri` ({} when it does not exist). A control read: guarded on S3."""
    options = options or StorageOptions()
    if is_remote(uri):
        return _guarded_listing(uri, options, delimiter=False)[1]
    _refuse_local(uri, options.guard)
    fs, path = filesystem(uri, options)
    fs.invalidate_cache()
    try:
        found = retry(lambda: fs.find(path, detail=True), f"listing {uri}")
    except FileNotFoundError:
        return {}
    return {name[len(path) :].lstrip("/"): int(info.get("size") or 0) for name, info in found.items()}


def size(uri: str, options: StorageOptions | None = None) -> int:
    fs, path = filesystem(uri, options)
    if is_hub(uri):
        return int(_hub_call(uri, lambda: fs.size(path), f"reading the size of {uri}"))
    return int(retry(lambda: fs.size(path), f"reading the size of {uri}"))


def open_input(uri: str, options: StorageOptions | None = None, compression: str | None = "infer"):
    """A readable binary file object (decompressing .gz/.zst when `compression` is 'infer')."""
    fs, path = filesystem(uri, options)
    if compression == "infer":
        from fsspec.utils import infer_compression

        compression = infer_compression(path)

    # Large blocks: s3fs reads ~3x faster with 50 MB blocks than with its default against S3 servers (and the
    # hub's files are read in the same 32 MiB ranged GETs).
    def opened():
        return fs.open(path, "rb", compression=compression, block_size=32 << 20)

    if is_hub(uri):
        return _hub_call(uri, opened, f"opening {uri}")
    return retry(opened, f"opening {uri}")


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
