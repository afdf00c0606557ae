"""pytest fixtures: `from kubeapi.fixtures import kube_api` in a test module (or conftest) to use them.

`kube_api` (function scope): a fresh server, its kubeconfig written to tmp_path/kubeconfig and KUBECONFIG set
for the test (restored after). The kubernetes client is NOT configured for you: call
`kubernetes.config.load_kube_config()` (or `api.api_client()`) inside the test, never at import time.
"""

from __future__ import annotations


import pytest

from .server import KubeAPIServer


@pytest.fixture
def kube_api(tmp_path, monkeypatch):
    with KubeAPIServer() as server:
        path = server.write_kubeconfig(tmp_path / "kubeconfig")  # also sets server.kubeconfig
        monkeypatch.setenv("KUBECONFIG", str(path))
        # kubectl keeps a discovery cache per server address; keep it per test
        monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "kube-cache"))
        yield server
