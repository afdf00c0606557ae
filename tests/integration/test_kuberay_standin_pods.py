"""The KubeRay stand-in's pod emulation (tests/support/kuberay_standin.py) against the API test server, without
starting Ray: env resolved as the kubelet does, rayStartParams completed as KubeRay does, the ConfigMap files
written for the bind mount. The operator's own RayJob is the input."""

from __future__ import annotations

import pytest

from test_operator_support import NS


@pytest.fixture
def standin(kube_api, tmp_path):
    from support.kuberay_standin import KubeRayStandIn

    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3", "namespace": NS},
            "stringData": {"AWS_ACCESS_KEY_ID": "AKIA-from-secret", "AWS_SECRET_ACCESS_KEY": "s3cr3t"},
        }
    )
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": NS},
            "data": {"LOG_LEVEL": "debug", "REGION": "eu-west-1"},
        }
    )
    s = KubeRayStandIn(kube_api.kubeconfig, NS, tmp_path)
    yield s
    s.api_client.close()


def test_env_is_resolved_like_the_kubelet_does(standin):
    from support.kuberay_standin import PodConfigError

    container = {
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CM_"}],
        "env": [
            {"name": "PLAIN", "value": "1"},
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}}},
            {"name": "REGION", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "REGION"}}},
            {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "absent", "optional": True}}},
            {"name": "CM_LOG_LEVEL", "value": "info"},  # env wins over envFrom
        ],
    }
    assert standin.resolve_env(container) == {
        "CM_LOG_LEVEL": "info",
        "CM_REGION": "eu-west-1",
        "PLAIN": "1",
        "AWS_ACCESS_KEY_ID": "AKIA-from-secret",
        "REGION": "eu-west-1",
    }
    with pytest.raises(PodConfigError, match="couldn't find key nope in Secret default/s3"):
        standin.resolve_env({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "nope"}}}]})
    with pytest.raises(PodConfigError, match="secret 'missing' not found"):
        standin.resolve_env({"envFrom": [{"secretRef": {"name": "missing"}}]})


def test_the_operators_rayjob_becomes_ray_start_flags_and_mounted_files(standin, kube_api, tmp_path):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "unit"))
    from support.kuberay_standin import ray_start_args, ray_start_params
    from test_operator_builders import built

    run, spec, rj, cm = built()
    cm["metadata"]["namespace"] = NS
    cm["metadata"].pop("ownerReferences")
    kube_api.create(cm)
    head = rj["spec"]["rayClusterSpec"]["headGroupSpec"]
    worker = rj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    head_params = ray_start_params(head["rayStartParams"], head["template"]["spec"]["containers"][0])
    assert head_params["num-cpus"] == "0" and head_params["num-gpus"] == "0"  # the operator's, not the limits'
    worker_params = ray_start_params(worker["rayStartParams"], worker["template"]["spec"]["containers"][0])
    assert worker_params == {"num-cpus": "8", "memory": str(64 * 2**30), "num-gpus": "1"}  # from the limits
    assert ray_start_args({"num-cpus": "0", "block": "true"}) == ["--block=true", "--num-cpus=0"]
    pod = head["template"]["spec"]
    mounts = standin._mounts(pod, pod["containers"][0], tmp_path / "head")
    assert [target for _, target in mounts] == ["/etc/trainkit"]
    ((src, _),) = mounts
    assert (src / "spec.json").read_text() == cm["data"]["spec.json"]


def test_the_submitter_command_is_kuberays():
    """common/job.go GetK8sJobCommand (v1.4.2 and v1.7.0 alike), joined as getSubmitterTemplate does."""
    from support.kuberay_standin import k8s_job_command

    cmd = k8s_job_command(
        "127.0.0.1:8265", "run-abcde", " python -m trainkit.jobs.train --spec /etc/trainkit/spec.json "
    )
    assert cmd == (
        "if ! ray job status --address http://127.0.0.1:8265 run-abcde >/dev/null 2>&1 ; then "
        "ray job submit --address http://127.0.0.1:8265 --no-wait --submission-id run-abcde -- "
        "python -m trainkit.jobs.train --spec /etc/trainkit/spec.json ; fi ; "
        "ray job logs --address http://127.0.0.1:8265 --follow run-abcde"
    )


@pytest.mark.parametrize(
    "limit,failed,reason,expected",
    [
        (None, 0, "AppFailed", ("Failed", 1)),  # no backoffLimit: one attempt
        (0, 0, "AppFailed", ("Failed", 1)),
        (1, 0, "AppFailed", ("Retrying", 1)),  # failed < backoffLimit + 1: a new cluster
        (1, 1, "AppFailed", ("Failed", 2)),  # retries used up
        (3, 0, "DeadlineExceeded", ("Failed", 1)),  # never retried
    ],
)
def test_backoff_counts_as_kuberays_check_backoff_limit(limit, failed, reason, expected):
    from support.kuberay_standin import KubeRayStandIn

    st = {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": reason, "failed": failed}
    KubeRayStandIn._check_backoff_limit({} if limit is None else {"backoffLimit": limit}, st)
    assert (st["jobDeploymentStatus"], st["failed"]) == expected and st["succeeded"] == 0
    done = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
    KubeRayStandIn._check_backoff_limit({"backoffLimit": 1}, done)
    assert (done["failed"], done["succeeded"]) == (0, 1)


def test_only_initializing_and_running_rayjobs_go_to_suspending():
    """updateStatusToSuspendingIfNeeded's validTransitions."""
    from support.kuberay_standin import KubeRayStandIn

    for jds in ("", "Initializing", "Running", "Complete", "Failed", "Retrying", "Suspended"):
        st = {"jobDeploymentStatus": jds}
        moved = KubeRayStandIn._to_suspending({"suspend": True}, st)
        assert moved == (jds in ("Initializing", "Running")) and st["jobDeploymentStatus"] == (
            "Suspending" if moved else jds
        )
        assert not KubeRayStandIn._to_suspending({"suspend": False}, {"jobDeploymentStatus": jds})
