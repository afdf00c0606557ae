"""A diverged run's NaN loss under kopf against the API test server (which, like the real one, refuses a body
with NaN/Infinity) and a real S3 server (moto): the status shows the loss as null with a NonFiniteLoss condition,
and the run still reaches its terminal phase (before the fix, every status patch was refused and the run never
ended). KubeRay's status transitions are SIMULATED by the test, written where KubeRay writes them."""

from __future__ import annotations

import subprocess

from test_operator_support import RUNS, SEED, get, kuberay_sets_status, running_operator, status_of, wait_for

RUN = "gpt2-70m-50-30-20"


def test_nan_loss_shows_null_with_a_condition_and_the_run_still_ends(cluster, seed_bucket):
    from trainkit import storage

    out_uri = "s3://trainkit-runs/runs/default/gpt2-70m-50-30-20"
    with running_operator(cluster):
        subprocess.run(
            ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "apply", "--validate=false", "-f", str(SEED)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(lambda: get(cluster, "rayjobs.ray.io", RUN), what="the RayJob")
        # what Python's json.dumps writes for a diverged loss (the trainer's old behaviour)
        storage.write_bytes(
            f"{out_uri}/progress.json", b'{"step": 40, "totalSteps": 8138, "loss": NaN, "tokensPerSecond": Infinity}'
        )
        storage.write_bytes(
            f"{out_uri}/eval/step-00000040/summary.json", b'{"step": 40, "average": NaN, "tasks": {"piqa": NaN}}'
        )
        kuberay_sets_status(cluster, RUN, jobStatus="RUNNING", jobDeploymentStatus="Running")
        st = wait_for(
            lambda: (
                (s := status_of(cluster, RUN)).get("phase") == "Running"
                and s.get("progress", {}).get("step") == 40
                and s
            ),
            what="Running with the diverged progress",
        )
        assert st["progress"].get("loss") is None and st["progress"].get("tokensPerSecond") is None  # null: cleared
        cond = {c["type"]: c for c in st["conditions"]}["MetricsFinite"]
        assert cond["status"] == "False" and cond["reason"] == "NonFiniteLoss" and "nan" in cond["message"]
        # the trainer stops a diverged run (NonFiniteLoss): KubeRay reports the job failed; the run ends
        kuberay_sets_status(cluster, RUN, jobStatus="FAILED", jobDeploymentStatus="Complete")
        st = wait_for(lambda: (s := status_of(cluster, RUN)).get("phase") == "Failed" and s, what="Failed")
        assert st["completionTime"] and get(cluster, RUNS, RUN)["status"]["phase"] == "Failed"
