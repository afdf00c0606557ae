"""An in-memory, HTTP, stateful Kubernetes API server for tests and benchmarks. See README.md."""

from .store import APIError, ResourceType, Store, rayjob_crd
from .server import KubeAPIServer, Request

__all__ = ["APIError", "KubeAPIServer", "Request", "ResourceType", "Store", "rayjob_crd", "kube_api_server"]


def kube_api_server(**kwargs) -> KubeAPIServer:
    """`with kube_api_server() as api:` - a started server (plain context manager, no pytest needed)."""
    return KubeAPIServer(**kwargs)
