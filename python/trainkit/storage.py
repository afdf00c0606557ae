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

import json
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import fsspec

T = TypeVar("T")


@dataclass(frozen=True)
class StorageOptions:
    endpoint: str | None = None
    region: str | None = None

    @classmethod
    def from_spec(cls, storage) -> "StorageOptions":
        """From a `trainkit.spec.models.StorageSpec` (or None)."""
        if storage is None:
            return cls()
        return cls(endpoint=storage.endpoint, region=storage.region)

    def resolved_endpoint(self) -> str | None:
        return self.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


class StorageError(OSError):
    """A storage operation failed for good (after retries), with the URI in the message."""


def is_remote(uri: str) -> bool:
    return uri.startswith("s3://")


def local_path(uri: str) -> Path:
    return Path(uri[len("file://") :] if uri.startswith("file://") else uri)


def join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


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
                if isinstance(e, (FileNotFoundError, PermissionError)):
                    raise
                raise StorageError(f"{what}: {type(e).__name__}: {e}") from e
            time.sleep(base_delay * (2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def read_bytes(uri: str, options: StorageOptions | None = None, attempts: int = 4) -> bytes:
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

    return retry(whole_object, f"reading {uri}", attempts=attempts)


_S3_CLIENTS: dict[tuple, Any] = {}


def _s3_client(options: StorageOptions):
    """One botocore S3 client per endpoint/region (thread-safe; creating one costs ~50 ms)."""
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


def read_json(uri: str, options: StorageOptions | None = None) -> Any:
    return json.loads(read_bytes(uri, options))


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    fs, path = filesystem(uri, options)
    return retry(lambda: fs.exists(path), f"checking {uri}")


def write_bytes(uri: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Write one object/file so readers never see a part of it."""
    if not is_remote(uri):
        write_bytes_atomic_local(local_path(uri), data)
        return
    fs, path = filesystem(uri, options)
    retry(lambda: fs.pipe_file(path, data), f"writing {uri}")


def write_json(uri: str, obj: Any, options: StorageOptions | None = None) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n", options)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic_local(Path(path), text.encode())


def write_bytes_atomic_local(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
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
        target = dest / rel
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
