"""`trainkit logs RUN [-f]`: print (or follow) the driver's and workers' logs under `<output>/logs/`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping


def register(sub) -> None:
    p = sub.add_parser("logs", help="print or follow (-f) a run's driver and worker logs (<output>/logs/)")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p) -> None:
    p.add_argument("run", metavar="RUN", help="the run's output URI, or a TrainingRun name in the current kube context")
    p.add_argument("-n", "--namespace", help="the TrainingRun's namespace (default: the kube context's)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until interrupted")
    p.add_argument("--stream", action="append", help="only this stream (driver, worker-0, ...); repeatable")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls with -f (default 2)")
    p.add_argument("--endpoint", help="S3 endpoint URL (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)")


Seen = dict[tuple[str, int], int]  # (stream, segment) -> bytes already printed


def new_text(segments: Mapping[str, list[int]], read: Callable[[str, int], bytes], seen: Seen, headed: set[str]) -> str:
    """What has not been printed yet, segment by segment, each stream headed once `==> stream <==`.
    A segment is rewritten whole at each flush, so only its bytes past `seen` are new."""
    out: list[str] = []
    for stream, indices in segments.items():
        if indices and indices[0] > 0 and stream not in headed:
            out.append(f"==> {stream} <==\n[trainkit] segments before {indices[0]} were removed (size cap)\n")
            headed.add(stream)
        for index in indices:
            data = read(stream, index)
            start = seen.get((stream, index), 0)
            if len(data) <= start:
                continue
            if stream not in headed:
                out.append(f"==> {stream} <==\n")
                headed.add(stream)
            out.append(data[start:].decode("utf-8", errors="replace"))
            seen[(stream, index)] = len(data)
    return "".join(out)


def run(args) -> int:
    from trainkit import artifacts, storage
    from trainkit.commands.runref import RunRefError, resolve_output_uri

    options = storage.StorageOptions(endpoint=args.endpoint)
    try:
        out = resolve_output_uri(args.run, args.namespace)
    except RunRefError as e:
        print(f"trainkit logs: error: {e}", file=sys.stderr)
        return 1
    seen: Seen = {}
    headed: set[str] = set()

    def read(stream: str, index: int) -> bytes:
        try:
            return storage.read_bytes(artifacts.log_segment_uri(out, stream, index), options)
        except FileNotFoundError:  # removed by the size cap between the listing and the read
            return b""

    try:
        while True:
            segments = artifacts.list_log_segments(out, options)
            if args.stream:
                segments = {k: v for k, v in segments.items() if k in args.stream}
            if not segments and not args.follow:
                print(f"trainkit logs: error: no logs under {artifacts.logs_uri(out)}/", file=sys.stderr)
                return 1
            sys.stdout.write(new_text(segments, read, seen, headed))
            sys.stdout.flush()
            if not args.follow:
                return 0
            time.sleep(args.interval)
    except (storage.StorageError, OSError) as e:
        print(f"trainkit logs: error: {out}: {e}", file=sys.stderr)
        return 1
