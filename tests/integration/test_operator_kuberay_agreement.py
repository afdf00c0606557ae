"""The operator against KubeRay's and Kueue's real behaviour where it used to disagree (issue 12), under kopf
against the API test server. KubeRay and Kueue are not running: what they would write is SIMULATED by the
test through the same API, and each test says what and why (the upstream facts: shared/REFERENCES.md).
"""

from __future__ import annotations

import time

from test_operator_support import (
    NS,
    RAYJOBS,
    WORKLOAD_CRD,
    events_for,
    get,
    kuberay_sets_status,
    kueue_sets_suspend,
    kueue_sets_workload,
    running_operator,
    seed_doc,
    status_of,
    wait_for,
)


def kueue_writes_workload(server, name: str, job_uid: str, message: str) -> None:
    """SIMULATED Kueue: the Workload it creates for a job, and (status subresource) why it is not admitted."""
    pending = {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": message}
    kueue_sets_workload(server, name, job_uid, [{**pending, "lastTransitionTime": "2026-12-03T00:00:00Z"}])


def condition(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


UNTOLERATED = (
    "couldn't assign flavors to pod set gpu-workers: untolerated taint {nvidia.com/gpu: present} in flavor h100-80gb"
)


def test_6_a_queued_run_shows_why_kueue_does_not_admit_it(cluster, seed_bucket):
    cluster.create(WORKLOAD_CRD)
    with running_operator(cluster):
        cluster.create(seed_doc("untolerated", bucket=seed_bucket))
        rj = wait_for(lambda: get(cluster, RAYJOBS, "untolerated"), what="RayJob")
        # SIMULATED Kueue: the webhook suspends the RayJob, the Workload it creates cannot get a flavor
        kueue_sets_suspend(cluster, "untolerated", True)
        kuberay_sets_status(cluster, "untolerated", jobStatus="", jobDeploymentStatus="Suspended")  # SIMULATED KubeRay
        kueue_writes_workload(cluster, "rayjob-untolerated-1a2b3", rj["metadata"]["uid"], UNTOLERATED)
        # a Workload of another job in the same namespace is not this run's business
        kueue_writes_workload(cluster, "rayjob-other-9z9z9", "other-uid", "insufficient quota for cpu")
        st = wait_for(
            lambda: (s := status_of(cluster, "untolerated")).get("reason") == "NotAdmitted" and s, what="NotAdmitted"
        )
        assert st["phase"] == "Queued" and UNTOLERATED in st["message"] and "insufficient quota" not in st["message"]
        assert UNTOLERATED in condition(st, "Admitted")["message"]
        ev = wait_for(
            lambda: [e for e in events_for(cluster, "untolerated") if e["reason"] == "NotAdmitted"], what="Event"
        )
        assert ev[0]["type"] == "Warning" and UNTOLERATED in ev[0]["message"]
        assert get(cluster, RAYJOBS, "untolerated")["spec"]["suspend"] is True  # never unsuspended against Kueue


def test_8_a_rayjob_kuberay_rejected_without_a_status_shows_kuberays_warning(cluster, seed_bucket):
    with running_operator(cluster):
        cluster.create(seed_doc("rejected", bucket=seed_bucket))
        rj = wait_for(lambda: get(cluster, RAYJOBS, "rejected"), what="RayJob")
        # SIMULATED KubeRay 1.4: validation fails, it records a Warning Event and writes no status at all
        cluster.create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": "rejected.17f0", "namespace": NS},
                "involvedObject": {
                    "apiVersion": "ray.io/v1",
                    "kind": "RayJob",
                    "name": "rejected",
                    "namespace": NS,
                    "uid": rj["metadata"]["uid"],
                },
                "type": "Warning",
                "reason": "InvalidRayJobSpec",
                "message": "The RayJob spec is invalid: a RayJob with shutdownAfterJobFinishes set to false is not allowed",
                "source": {"component": "rayjob-controller"},
                "count": 1,
                "firstTimestamp": "2026-12-03T00:00:00Z",
                "lastTimestamp": "2026-12-03T00:00:00Z",
            }
        )
        st = wait_for(
            lambda: (s := status_of(cluster, "rejected")).get("reason") == "RayJobRejected" and s, what="RayJobRejected"
        )
        assert (
            st["phase"] == "Pending"
            and "InvalidRayJobSpec" in st["message"]
            and "shutdownAfterJobFinishes" in st["message"]
        )
        ev = wait_for(
            lambda: [
                e
                for e in events_for(cluster, "rejected")
                if e["reason"] == "RayJobRejected" and e["involvedObject"]["kind"] == "TrainingRun"
            ],
            what="Event on the run",
        )
        assert ev[0]["type"] == "Warning"


def test_1_kueue_without_a_queue_label_keeps_the_rayjob_suspended(cluster, seed_bucket):
    with running_operator(cluster):
        cluster.create(seed_doc("unlabelled", bucket=seed_bucket, **{"scheduling.queueName": None}))
        wait_for(lambda: get(cluster, RAYJOBS, "unlabelled"), what="RayJob")
        # SIMULATED Kueue with manageJobsWithoutQueueName: true suspends it although it names no queue
        kueue_sets_suspend(cluster, "unlabelled", True)
        kuberay_sets_status(cluster, "unlabelled", jobStatus="", jobDeploymentStatus="Suspended")  # SIMULATED KubeRay
        st = wait_for(
            lambda: (s := status_of(cluster, "unlabelled")).get("reason") == "SuspendedExternally" and s,
            what="SuspendedExternally",
        )
        assert st["phase"] == "Suspended"
        time.sleep(2.5)  # several timer ticks (1 s): the operator must not flip suspend back
        assert get(cluster, RAYJOBS, "unlabelled")["spec"]["suspend"] is True
        # SIMULATED Kueue admits it: the run proceeds
        kueue_sets_suspend(cluster, "unlabelled", False)
        kuberay_sets_status(cluster, "unlabelled", jobStatus="RUNNING", jobDeploymentStatus="Running")
        wait_for(lambda: status_of(cluster, "unlabelled").get("phase") == "Running", what="Running")
