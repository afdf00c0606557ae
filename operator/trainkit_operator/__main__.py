"""`python -m trainkit_operator`: run the operator (what the Helm chart's Deployment runs).

Watches the namespaces in TRAINKIT_NAMESPACES (comma-separated) or the whole cluster.
`--liveness` serves kopf's health endpoint for the Deployment's liveness probe.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from trainkit_operator.config import OperatorConfig
from trainkit_operator.wiring import register


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainkit_operator", description=__doc__.splitlines()[0])
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="health endpoint URL ('' to disable)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = OperatorConfig.from_env()
    registry = kopf.OperatorRegistry()

    # A bare registry has no login handler: authenticate as the `kubernetes` client would (in-cluster
    # ServiceAccount token, else KUBECONFIG), which is what the Deployment and `kubectl` users expect.
    @kopf.on.login(registry=registry)
    def login(**kwargs):
        return kopf.login_via_client(**kwargs)

    register(registry, config)
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            standalone=config.peering_name is None,
            peering_name=config.peering_name,
            liveness_endpoint=args.liveness or None,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
