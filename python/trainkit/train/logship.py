"""Ship a process's stdout and stderr to `<output>/logs/` while it runs, so logs outlive the Ray pods.

`capture(output_uri, stream, options)` redirects file descriptors 1 and 2 (so C extensions, Ray's own
prints and tracebacks are caught too) through pipes: each byte still goes to where it went before (the pod
log, the terminal) and into the current segment of `<stream>`. A background thread uploads the segment
at most every `LogPolicy.flush_seconds` (the delay a reader sees) and once more at exit, failures included.
A header line (stream, host, pid, start time) is uploaded before the block runs, so every process that started
has a stream under logs/ even when it is killed outright (Ray kills the other workers of a failed group with
no chance to flush); only its last `flush_seconds` of output can be lost that way.

Object stores do not append, so a segment is rewritten whole at each flush: segments are rotated at
`segment_bytes`, and only the newest `max_segments` per stream are kept (the size cap); memory holds at most
one open segment plus the sealed ones not yet uploaded (never more than `max_segments`). Segment numbers go
on after the highest already stored, so a restarted worker appends rather than overwrites. Storage errors
are reported once on the original stderr and retried at the next flush: logging never fails the run.
The names are owned by `trainkit.artifacts` (`log_segment_uri`, `list_log_segments`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import select
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from trainkit import artifacts, storage
from trainkit.storage import StorageOptions


@dataclass(frozen=True)
class LogPolicy:
    flush_seconds: float = 5.0  # the longest a line waits before it is readable under logs/
    segment_bytes: int = 4 << 20  # rotate at this size
    max_segments: int = 16  # per stream: at most segment_bytes x max_segments stored (64 MiB by default)

    @classmethod
    def from_config(cls, doc: dict | None) -> "LogPolicy":
        doc = doc or {}
        return cls(
            float(doc.get("flushSeconds", cls.flush_seconds)),
            int(doc.get("segmentBytes", cls.segment_bytes)),
            int(doc.get("maxSegments", cls.max_segments)),
        )

    def as_config(self) -> dict:
        return {
            "flushSeconds": self.flush_seconds,
            "segmentBytes": self.segment_bytes,
            "maxSegments": self.max_segments,
        }


def split_into_segments(current: bytes, data: bytes, segment_bytes: int) -> tuple[list[bytes], bytes]:
    """(segments sealed by appending `data` to the open segment `current`, the new open segment) (pure)."""
    buf = current + data
    sealed = []
    while len(buf) > segment_bytes:
        sealed.append(buf[:segment_bytes])
        buf = buf[segment_bytes:]
    return sealed, buf


def stream_header(stream: str, host: str, pid: int, started: str) -> bytes:
    """The first line of every capture: which process this stream is (pure)."""
    return f"[trainkit] {stream}: pid {pid} on {host}, log started {started}\n".encode()


def segments_over_cap(indices: list[int], max_segments: int) -> list[int]:
    """The oldest segment indices beyond the newest `max_segments` (pure)."""
    ordered = sorted(indices)
    return ordered[: max(0, len(ordered) - max_segments)]


class LogShipper:
    """One stream's segments: `write` buffers, `flush` uploads what changed and enforces the cap."""

    def __init__(self, output_uri: str, stream: str, options: StorageOptions | None, policy: LogPolicy, err_fd: int):
        self.output_uri, self.stream, self.options, self.policy = output_uri, stream, options, policy
        self.err_fd = err_fd  # where our own complaints go (the original stderr, never the pipe)
        self.lock = threading.Lock()
        self.flush_lock = threading.Lock()
        try:
            existing = artifacts.list_log_segments(output_uri, options).get(stream, [])
        except (storage.StorageError, OSError):
            existing = []
        self.stored = list(existing)
        self.index = (max(existing) + 1) if existing else 0  # the open segment's number
        self.current = b""
        self.dirty = False
        self.sealed: list[tuple[int, bytes]] = []
        self.complained = False

    def write(self, data: bytes) -> None:
        with self.lock:
            sealed, self.current = split_into_segments(self.current, data, self.policy.segment_bytes)
            for seg in sealed:
                self.sealed.append((self.index, seg))
                self.index += 1
            # Sealed segments the cap would delete anyway are dropped here, so memory stays bounded while storage is down.
            del self.sealed[: max(0, len(self.sealed) - self.policy.max_segments)]
            self.dirty = True

    def flush(self) -> None:
        with self.flush_lock:
            with self.lock:
                if not self.dirty:
                    return
                todo = list(self.sealed) + ([(self.index, self.current)] if self.current else [])
                self.dirty = False
            try:
                for index, data in todo:
                    storage.write_bytes(
                        artifacts.log_segment_uri(self.output_uri, self.stream, index), data, self.options
                    )
                    if index not in self.stored:
                        self.stored.append(index)
                with self.lock:
                    done = {i for i, _ in todo}
                    self.sealed = [(i, d) for i, d in self.sealed if i not in done]
                for index in segments_over_cap(self.stored, self.policy.max_segments):
                    storage.remove(artifacts.log_segment_uri(self.output_uri, self.stream, index), self.options)
                    self.stored.remove(index)
            except (storage.StorageError, OSError) as e:
                with self.lock:
                    self.dirty = True  # try again at the next flush
                if not self.complained:
                    self.complained = True
                    os.write(self.err_fd, f"[trainkit] cannot ship logs to {self.output_uri}: {e}\n".encode())


def _pump(read_fd: int, out_fd: int, shipper: LogShipper, stop: threading.Event) -> None:
    """Copy a pipe to its original target and to the shipper until EOF (or `stop` once drained)."""
    while True:
        ready, _, _ = select.select([read_fd], [], [], 0.2)
        if not ready:
            if stop.is_set():
                return
            continue
        try:
            data = os.read(read_fd, 65536)
        except OSError:
            return
        if not data:
            return
        with contextlib.suppress(OSError):
            os.write(out_fd, data)
        shipper.write(data)


@contextlib.contextmanager
def capture(
    output_uri: str, stream: str, options: StorageOptions | None = None, policy: LogPolicy | None = None
) -> Iterator[LogShipper]:
    """Tee this process's fds 1 and 2 into `<output>/logs/<stream>.*.log` for the duration of the block."""
    policy = policy or LogPolicy()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    shipper = LogShipper(output_uri, stream, options, policy, err_fd=saved[2])
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    shipper.write(stream_header(stream, socket.gethostname(), os.getpid(), started))
    shipper.flush()
    stop, done = threading.Event(), threading.Event()
    pumps, read_fds = [], []
    for fd in (1, 2):
        r, w = os.pipe()
        os.dup2(w, fd)
        os.close(w)
        read_fds.append(r)
        t = threading.Thread(target=_pump, args=(r, saved[fd], shipper, stop), daemon=True, name=f"trainkit-log-{fd}")
        t.start()
        pumps.append(t)

    def ticker() -> None:
        while not done.wait(policy.flush_seconds):
            shipper.flush()

    tick = threading.Thread(target=ticker, daemon=True, name="trainkit-log-flush")
    tick.start()
    try:
        yield shipper
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)  # closes our pipe's write end held by fd 1/2
        stop.set()  # a child process may still hold a write end: drain what is there, then stop
        for t in pumps:
            t.join(timeout=2.0)
        done.set()
        tick.join(timeout=policy.flush_seconds + 1)
        shipper.flush()
        for r in read_fds:
            os.close(r)
        for fd in saved.values():
            os.close(fd)
