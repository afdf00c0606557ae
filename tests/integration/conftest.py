"""Fixtures shared across integration test modules, registered here once so that no test module
imports fixtures from another (an imported fixture shadows the test's parameter of the same name)."""

from kubeapi.fixtures import kube_api
from test_operator_support import cluster
from test_train_run import bucket, sources

__all__ = ["bucket", "cluster", "kube_api", "sources"]
