"""pytest fixtures: `from kubeapi.fixtures import kube_api` in a test module (or conftest) to use them.

`kube_api` (function scope): a fresh, started `KubeAPIServer`; its kubeconfig written to
tmp_path/kubeconfig (`kube_api.kubeconfig`), KUBECONFIG set for the test (restored after) and, when the
`kubernetes` package is already imported, its default kubeconfig location pointed there too (the
client captures $KUBECONFIG at import). The client is NOT configured for you: call
`kubernetes.config.load_kube_config()` or use `kube_api.api_client()` inside the test.
`@pytest.mark.kubeapi(**options)` passes KubeAPIServer options (e.g. `rayjob="schemaless"`).
"""

from __future__ import annotations

import sys

import pytest

from .server import KubeAPIServer


def point_clients_at(server: KubeAPIServer, folder, monkeypatch: pytest.MonkeyPatch) -> None:
    """kubectl, helm and the `kubernetes` client talk to `server` while `monkeypatch` lasts: its kubeconfig in
    `folder`, KUBECONFIG set, and the client's default location too when it is imported already."""
    path = server.write_kubeconfig(folder / "kubeconfig")  # also sets server.kubeconfig
    monkeypatch.setenv("KUBECONFIG", str(path))
    # kubectl keeps a discovery cache per server address; keep it per test
    monkeypatch.setenv("KUBECACHEDIR", str(folder / "kube-cache"))
    kube_config = sys.modules.get("kubernetes.config.kube_config")
    if kube_config is not None and hasattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION"):
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


@pytest.fixture
def kube_api(tmp_path, monkeypatch, request):
    marker = request.node.get_closest_marker("kubeapi")  # @pytest.mark.kubeapi(rayjob="schemaless")
    with KubeAPIServer(**(marker.kwargs if marker else {})) as server:
        point_clients_at(server, tmp_path, monkeypatch)
        yield server
