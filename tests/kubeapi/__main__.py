"""Run the test API server by hand: `PYTHONPATH=tests python -m kubeapi --kubeconfig /tmp/kc`.

Prints the URL, writes a kubeconfig, serves until interrupted (Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import threading

from .server import KubeAPIServer


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m kubeapi", description=__doc__)
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the server here")
    parser.add_argument("--no-rayjob", action="store_true", help="do not pre-register the ray.io RayJob CRD")
    parser.add_argument("--kopf-peering", action="store_true", help="pre-register kopf's peering CRDs")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with KubeAPIServer(rayjob=not args.no_rayjob, kopf_peering=args.kopf_peering) as server:
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig)
        print(server.url, flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
