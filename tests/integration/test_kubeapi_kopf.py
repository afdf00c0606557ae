"""A minimal kopf operator (under kopf.testing.KopfRunner) against the test API server: it sees a created
TrainingRun, creates an owned ConfigMap, patches status through the /status subresource, posts Events,
and its finalizer holds deletion until its delete handler ran; the ConfigMap is garbage-collected."""

from __future__ import annotations

import time
from pathlib import Path

import yaml


REPO = Path(__file__).resolve().parents[2]


def _wait(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_kopf_operator_reconciles_against_the_server(kube_api):
    import kopf
    import kubernetes
    from kopf.testing import KopfRunner
    from trainkit.spec.crd import training_run_crd

    kube_api.create(training_run_crd())
    registry = kopf.OperatorRegistry()
    settings = kopf.OperatorSettings()
    # the TrainingRun status schema is strict: kopf's own status.kopf writes would be pruned
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.watching.server_timeout = 5
    settings.watching.client_timeout = 10
    deleted: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_):
        return kopf.ConnectionInfo(server=kube_api.url, default_namespace="default")

    @kopf.on.create("trainkit.dev", "v1alpha1", "trainingruns", registry=registry)
    def on_create(body, name, namespace, patch, logger, **_):
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-plan"}, "data": {"steps": "8138"}}
        kopf.adopt(cm, owner=body)
        client = kubernetes.config.new_client_from_config(config_file=str(kube_api.kubeconfig))
        try:
            kubernetes.client.CoreV1Api(client).create_namespaced_config_map(namespace, cm)
        finally:
            client.close()
        patch.status["phase"] = "Running"
        patch.status["observedGeneration"] = body["metadata"]["generation"]
        kopf.info(body, reason="Started", message="plan written")

    @kopf.on.delete("trainkit.dev", "v1alpha1", "trainingruns", registry=registry)
    def on_delete(name, **_):
        deleted.append(name)

    run = yaml.safe_load((REPO / "jobs" / "gpt2-70m-50-30-20.yaml").read_text())
    run["metadata"]["name"] = "seed-run"
    with KopfRunner(["run", "--standalone", "--namespace=default"], registry=registry, settings=settings) as runner:
        created = kube_api.create(run)
        status = _wait(lambda: (kube_api.get("trainingruns.trainkit.dev", "seed-run").get("status") or {}).get("phase") == "Running",
                       what="status.phase Running")  # fmt: skip
        assert status
        stored = kube_api.get("trainingruns.trainkit.dev", "seed-run")
        assert stored["status"]["observedGeneration"] == 1
        assert stored["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        cm = kube_api.get("configmaps", "seed-run-plan")
        assert cm["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
        # kopf wrote status through the subresource (and the rest through the main resource)
        assert any(r.verb == "patch" and r.subresource == "status" for r in kube_api.requests_for("trainingruns"))
        # kopf posted an Event about the handler
        events = _wait(lambda: [e for e in kube_api.list("events", "default") if e["involvedObject"].get("name") == "seed-run"],
                       what="a kopf Event")  # fmt: skip
        assert events[0]["reason"] == "Started" and events[0]["involvedObject"]["uid"] == created["metadata"]["uid"]
        assert events[0]["metadata"]["name"].startswith("kopf-event-")  # generateName

        # deletion: the finalizer holds the object until kopf's delete handler ran and released it
        kubernetes.config.load_kube_config(config_file=str(kube_api.kubeconfig))
        kubernetes.client.CustomObjectsApi().delete_namespaced_custom_object(
            "trainkit.dev", "v1alpha1", "default", "trainingruns", "seed-run"
        )
        _wait(lambda: not kube_api.exists("trainingruns.trainkit.dev", "seed-run"), what="the run to be deleted")
        assert deleted == ["seed-run"]
        _wait(
            lambda: not kube_api.exists("configmaps", "seed-run-plan"), what="garbage collection of the owned ConfigMap"
        )
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None


def test_kopf_survives_cut_watches_and_expired_history(kube_api):
    """kopf resumes a cut watch from its last resourceVersion (the server replays what it missed) and
    re-lists after a 410 for compacted history."""
    import kopf
    from kopf.testing import KopfRunner

    registry = kopf.OperatorRegistry()
    settings = kopf.OperatorSettings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.finalizer = "kubeapi.test/finalizer"
    handled: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_):
        return kopf.ConnectionInfo(server=kube_api.url, default_namespace="default")

    @kopf.on.create("ray.io", "v1", "rayjobs", registry=registry)
    def on_create(name, patch, **_):
        handled.append(name)
        patch.status["jobStatus"] = "RUNNING"

    def rayjob(name):
        return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": name}, "spec": {"entrypoint": "x"}}

    def running(name):
        return lambda: (kube_api.get("rayjobs", name).get("status") or {}).get("jobStatus") == "RUNNING"

    with KopfRunner(["run", "--standalone", "--namespace=default"], registry=registry, settings=settings) as runner:
        kube_api.create(rayjob("first"))
        _wait(running("first"), what="first handled")
        _wait(lambda: kube_api.open_watches >= 1, what="kopf's watch")

        # cut: events between the cut and the re-watch come from the history
        kube_api.drop_watches()
        kube_api.create(rayjob("second"))
        _wait(running("second"), what="second handled after a cut watch")

        # expire: kopf's last resourceVersion is compacted away; its re-watch gets 410 and it re-lists
        kube_api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bump"}})
        kube_api.compact()
        mark = len(kube_api.requests)
        kube_api.drop_watches()
        kube_api.create(rayjob("third"))
        _wait(running("third"), what="third handled after 410")
        after = kube_api.requests[mark:]
        assert any(r.verb == "list" and r.resource == "rayjobs" for r in after), "kopf re-listed after 410"
    assert handled == ["first", "second", "third"]
    assert runner.exit_code == 0, runner.output


def test_kopf_notices_a_crd_created_after_it_started(kube_api):
    """kopf watches CRDs and re-scans discovery: a resource that appears later gets served."""
    import kopf
    from kopf.testing import KopfRunner
    from trainkit.spec.crd import training_run_crd

    registry = kopf.OperatorRegistry()
    settings = kopf.OperatorSettings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    seen: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_):
        return kopf.ConnectionInfo(server=kube_api.url, default_namespace="default")

    @kopf.on.create("trainkit.dev", "v1alpha1", "trainingruns", registry=registry)
    def on_create(name, **_):
        seen.append(name)

    with KopfRunner(["run", "--standalone", "--namespace=default"], registry=registry, settings=settings) as runner:
        _wait(lambda: any(r.resource == "customresourcedefinitions" and r.verb == "watch" for r in kube_api.requests),
              what="kopf watching CRDs")  # fmt: skip
        kube_api.create(training_run_crd())
        run = yaml.safe_load((REPO / "jobs" / "gpt2-70m-50-30-20.yaml").read_text())
        kube_api.create(run)
        _wait(lambda: seen == ["gpt2-70m-50-30-20"], what="the run handled after its CRD appeared")
    assert runner.exit_code == 0, runner.output
