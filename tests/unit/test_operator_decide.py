"""Pure decisions of the operator: the phase table over KubeRay's enums, status, and what to do."""

from __future__ import annotations

import copy
import itertools
import json

import pytest

from trainkit.spec import parse_spec
from trainkit.spec.load import SpecError
from trainkit.spec.status import TrainingRunStatus
from trainkit_operator import builders, decide
from trainkit_operator.config import OperatorConfig

from test_operator_builders import seed_run

NOW = "2026-11-27T08:00:00Z"
LATER = "2026-11-27T09:00:00Z"
JOB_STATUSES = ["", "PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED"]
DEPLOYMENT_STATUSES = [
    "",
    "Initializing",
    "Running",
    "Complete",
    "Failed",
    "ValidationFailed",
    "Suspending",
    "Suspended",
    "Retrying",
    "Waiting",
]
CFG = OperatorConfig()


def rayjob_for(run: dict, js: str = "", jds: str = "", suspend: bool = False, **status) -> dict:
    spec, _ = parse_spec(run["spec"])
    rj = builders.build_rayjob(run, spec, CFG)
    rj["spec"]["suspend"] = suspend
    rj["status"] = {"jobStatus": js, "jobDeploymentStatus": jds, **status}
    return rj


def summarize(run, rj, progress=None, ev=None, now=NOW, **kw):
    spec, plan = parse_spec(run["spec"])
    decision = kw.pop("decision", decide.Decision("none"))
    seen = decide.Observation(rayjob=rj, progress=progress, eval_summary=ev, **kw)
    return decide.summarize(run, seen, now, decide.SpecView(spec=spec, total_steps=plan.total_steps), decision)


def with_status(run: dict, status: TrainingRunStatus) -> dict:
    run = copy.deepcopy(run)
    run["status"] = json.loads(json.dumps(decide.status_patch(status)))
    return run


# ------------------------------------------------------------------------------- phase table
# The phase for each KubeRay (jobDeploymentStatus, jobStatus), written out: columns follow JOB_STATUSES
# ("", PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED). The seed names a Kueue queue and the user did not
# ask to suspend, so a suspended RayJob is Queued.
PHASE_TABLE = {
    "": ("Pending",) * 6,
    "Initializing": ("Pending",) * 6,
    "Running": ("Pending", "Pending", "Running", "Running", "Running", "Running"),
    "Complete": ("Failed", "Failed", "Failed", "Failed", "Succeeded", "Failed"),
    "Failed": ("Failed",) * 6,
    "ValidationFailed": ("Failed",) * 6,
    "Suspending": ("Queued",) * 6,
    "Suspended": ("Queued",) * 6,
    "Retrying": ("Pending",) * 6,
    "Waiting": ("Pending",) * 6,
}


def expected_phase(js: str, jds: str) -> str:
    return PHASE_TABLE[jds][JOB_STATUSES.index(js)]


@pytest.mark.parametrize("js,jds", list(itertools.product(JOB_STATUSES, DEPLOYMENT_STATUSES)))
def test_phase_table_every_kuberay_combination(js, jds):
    phase, reason, message = decide.derive_phase(js, jds, kueue_queue_name="gpu-training")
    assert phase == expected_phase(js, jds)
    assert reason and message
    # and through summarize, with KubeRay's enums mirrored verbatim
    status = summarize(seed_run(), rayjob_for(seed_run(), js, jds))
    assert status.phase == phase
    assert status.job_status == (js or None) and status.job_deployment_status == (jds or None)
    assert [c.type for c in status.conditions] == list(decide.CONDITION_TYPES)
    assert sum(c.status == "True" for c in status.conditions if c.type in ("Running", "Succeeded", "Failed")) <= 1


def test_contradiction_running_under_failed_is_failed_with_kuberay_reason():
    phase, reason, message = decide.derive_phase(
        "RUNNING", "Failed", reason="DeadlineExceeded", message="the RayJob has passed the activeDeadlineSeconds"
    )
    assert phase == "Failed" and reason == "DeadlineExceeded"
    assert "activeDeadlineSeconds" in message and "RUNNING ignored" in message


def test_finished_job_status_under_live_deployment_is_not_terminal_yet():
    # terminal is sticky: declaring it early would freeze a wrong answer
    for js in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert decide.derive_phase(js, "Running")[0] == "Running"


def test_complete_without_succeeded_is_never_success():
    assert decide.derive_phase("RUNNING", "Complete")[0] == "Failed"
    assert decide.derive_phase("", "Complete")[1] == "InconsistentStatus"


def test_failed_carries_kuberay_reason_and_message():
    run = seed_run()
    st = summarize(
        run, rayjob_for(run, "FAILED", "Failed", reason="AppFailed", message="Job entrypoint failed: exit 1")
    )
    assert st.phase == "Failed" and st.reason == "AppFailed" and st.message == "Job entrypoint failed: exit 1"
    failed = next(c for c in st.conditions if c.type == "Failed")
    assert failed.status == "True" and failed.reason == "AppFailed" and "exit 1" in failed.message


def test_queued_vs_suspended():
    run = seed_run()
    assert summarize(run, rayjob_for(run, "", "", suspend=True)).phase == "Queued"
    st = summarize(run, rayjob_for(run, "", "Suspended", suspend=True))
    assert st.phase == "Queued" and st.reason == "WaitingForKueue" and "gpu-training" in st.message
    admitted = next(c for c in st.conditions if c.type == "Admitted")
    assert admitted.status == "False" and admitted.reason == "WaitingForKueue"
    user = seed_run(**{"scheduling.suspend": True})
    del user["spec"]["scheduling"]["queueName"]  # suspend is refused together with a Kueue queue
    assert summarize(user, rayjob_for(user, "", "Suspended", suspend=True)).phase == "Suspended"
    nokueue = seed_run()
    del nokueue["spec"]["scheduling"]["queueName"]
    assert summarize(nokueue, rayjob_for(nokueue, "", "Suspended", suspend=True)).reason == "SuspendedExternally"


def test_pending_without_rayjob_and_conditions_initialised():
    st = summarize(seed_run(), None)
    assert st.phase == "Pending" and st.reason == "Creating"
    assert {c.type: c.status for c in st.conditions} == {
        "SpecValid": "True",
        "SpecApplied": "True",
        "Admitted": "False",
        "Running": "False",
        "Succeeded": "False",
        "Failed": "False",
        "MetricsFinite": "True",
    }
    assert st.observed_generation == 1
    assert st.artifacts.output == "s3://trainkit-runs/runs/default/gpt2-70m-50-30-20/"
    assert st.artifacts.checkpoints == "s3://trainkit-runs/runs/default/gpt2-70m-50-30-20/checkpoints/"
    assert st.progress.total_steps == 8138 and st.progress.percent == 0


def test_progress_percent_eta_checkpoint_and_eval_average():
    run = seed_run()
    progress = {
        "step": 2000,
        "totalSteps": 8138,
        "tokens": 245760000,
        "loss": 3.41,
        "tokensPerSecond": 1.2e6,
        "mfu": 0.41,
        "etaSeconds": 5000.0,
        "updatedAt": "2026-11-27T07:59:00Z",
    }
    ev = {"step": 8138, "average": 38.1512, "tasks": {"mmlu": 24.11, "hellaswag": 27.03}}
    ckpt = {"step": 2000, "uri": "s3://trainkit-runs/runs/default/gpt2-70m-50-30-20/checkpoints/step-00002000/"}
    st = summarize(run, rayjob_for(run, "RUNNING", "Running"), progress, ev, checkpoint=ckpt)
    assert st.phase == "Running"
    assert st.progress.percent == pytest.approx(24.58, abs=0.01)
    assert st.progress.loss == 3.41 and st.progress.eta_seconds == 5000 and st.progress.tokens_per_second == 1.2e6
    assert st.last_checkpoint.step == 2000
    assert st.eval.average == pytest.approx(38.1512) and st.eval.tasks["mmlu"] == 24.11
    assert st.eval.report_uri.endswith("eval/step-00008138/report.md")
    # average computed from tasks when the summary has none
    st2 = summarize(run, rayjob_for(run, "RUNNING", "Running"), None, {"step": 10, "tasks": {"a": 40.0, "b": 50.0}})
    assert st2.eval.average == 45.0


def test_a_failed_read_keeps_previous_progress_and_eval():
    run = seed_run()
    st = summarize(
        run,
        rayjob_for(run, "RUNNING", "Running"),
        {"step": 100, "totalSteps": 8138, "loss": 5.0},
        {"step": 100, "average": 30.0, "tasks": {}},
    )
    st2 = summarize(with_status(run, st), rayjob_for(run, "RUNNING", "Running"), None, None, now=LATER)
    assert st2.progress.step == 100 and st2.eval.average == 30.0
    assert st2 == st  # nothing changed: the reconcile writes nothing


def test_condition_transition_times_are_kept_until_status_flips():
    run = seed_run()
    st = summarize(run, rayjob_for(run, "RUNNING", "Running"), now=NOW)
    run2 = with_status(run, st)
    st2 = summarize(run2, rayjob_for(run, "RUNNING", "Running"), now=LATER)
    assert {c.type: c.last_transition_time for c in st2.conditions} == {
        c.type: c.last_transition_time for c in st.conditions
    }
    st3 = summarize(run2, rayjob_for(run, "SUCCEEDED", "Complete", endTime="2026-11-27T08:30:00Z"), now=LATER)
    running = next(c for c in st3.conditions if c.type == "Running")
    succeeded = next(c for c in st3.conditions if c.type == "Succeeded")
    assert running.status == "False" and running.last_transition_time == LATER
    assert succeeded.status == "True" and st3.completion_time == "2026-11-27T08:30:00Z"


def test_terminal_is_sticky():
    run = seed_run()
    done = with_status(run, summarize(run, rayjob_for(run, "SUCCEEDED", "Complete")))
    # KubeRay later reports something else, or the RayJob is gone: nothing changes, nothing is created
    assert summarize(done, rayjob_for(run, "RUNNING", "Running"), now=LATER).phase == "Succeeded"
    assert summarize(done, None, now=LATER) == decide.previous_status(done)
    assert decide.plan_actions(done, parse_spec(run["spec"])[0], None, None, None, CFG).action == "none"


def test_invalid_spec_is_failed_with_condition_and_recoverable_before_anything_ran():
    run = seed_run()
    st = decide.summarize(
        run,
        decide.Observation(),
        NOW,
        decide.SpecView(error="spec.storage.credentialsSecret: Secret 'x' does not exist"),
        decision=decide.Decision("invalid"),
    )
    assert st.phase == "Failed" and st.reason == "InvalidSpec"
    valid = next(c for c in st.conditions if c.type == "SpecValid")
    assert valid.status == "False" and valid.reason == "InvalidSpec" and "does not exist" in valid.message
    failed = with_status(run, st)
    assert not decide.is_sticky_terminal(decide.previous_status(failed))
    assert decide.plan_actions(failed, parse_spec(run["spec"])[0], None, None, None, CFG).action == "create"


def test_rayjob_deleted_after_it_ran_is_failed_never_recreated():
    run = seed_run()
    running = with_status(run, summarize(run, rayjob_for(run, "RUNNING", "Running")))
    d = decide.plan_actions(running, parse_spec(run["spec"])[0], None, None, None, CFG)
    assert d.action == "lost"
    st = summarize(running, None, decision=d)
    assert st.phase == "Failed" and st.reason == "RayJobDeleted"


def test_pod_reasons_surface_while_initializing():
    run = seed_run()
    pods = [
        {
            "metadata": {"name": "gpt2-head-x"},
            "status": {
                "containerStatuses": [
                    {
                        "name": "ray-head",
                        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
                    }
                ]
            },
        },
        {
            "metadata": {"name": "gpt2-worker-y"},
            "status": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/4 nodes: Insufficient nvidia.com/gpu",
                    }
                ]
            },
        },
    ]
    st = summarize(run, rayjob_for(run, "", "Initializing"), pods=pods)
    assert st.phase == "Pending" and st.reason == "PodsNotReady"
    assert "ImagePullBackOff" in st.message and "Insufficient nvidia.com/gpu" in st.message


# ---------------------------------------------------------------------------------- actions
def cm_for(run):
    spec, _ = parse_spec(run["spec"])
    return builders.build_configmap(run, spec, CFG)


def test_create_when_nothing_exists():
    run = seed_run()
    d = decide.plan_actions(run, parse_spec(run["spec"])[0], None, None, None, CFG)
    assert d.action == "create" and d.rayjob["metadata"]["name"] == "gpt2-70m-50-30-20"
    assert (
        d.configmap["metadata"]["name"]
        == f"gpt2-70m-50-30-20-spec-{builders.spec_hash(run, parse_spec(run['spec'])[0])}"
    )
    assert d.configmap["immutable"] is True
    # the RayJob mounts exactly that ConfigMap
    volumes = d.rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]
    assert {"name": d.configmap["metadata"]["name"], "items": [{"key": "spec.json", "path": "spec.json"}]} in [
        v.get("configMap") for v in volumes
    ]


def test_nothing_to_do_when_children_match():
    run = seed_run()
    d = decide.plan_actions(
        run, parse_spec(run["spec"])[0], None, rayjob_for(run, "RUNNING", "Running"), cm_for(run), CFG
    )
    assert d.action == "none"


def test_mutable_change_is_applied():
    run = seed_run()
    rj, cm = rayjob_for(run, "RUNNING", "Running"), cm_for(run)
    edited = seed_run(**{"scheduling.backoffLimit": 4, "scheduling.activeDeadlineSeconds": 7200})
    edited_spec = parse_spec(edited["spec"])[0]
    d = decide.plan_actions(edited, edited_spec, None, rj, cm, CFG)
    # a new immutable ConfigMap for the edited spec (never an update of the old one), named by its hash, which
    # the RayJob's spec-hash annotation then names; the RayJob's volume keeps the one it was created with
    assert (
        d.action == "update"
        and d.configmap == cm_for(edited)
        and d.configmap["metadata"]["name"] != cm["metadata"]["name"]
    )
    paths = {o["path"]: o.get("value") for o in d.patch}
    assert "/spec/backoffLimit" in paths and "/spec/activeDeadlineSeconds" in paths
    assert "/spec/suspend" not in paths
    assert paths["/metadata/annotations/trainkit.dev~1spec-hash"] == builders.spec_hash(edited, edited_spec)
    assert not any("volumes" in p or "rayClusterSpec" in p for p in paths)
    # the next reconcile compares with the ConfigMap the annotation names
    patched = copy.deepcopy(rj)
    for op in d.patch:  # what the API server does with the JSON patch (only add ops here)
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        node = patched
        for key in parents:
            node = node[key]
        node[last] = op["value"]
    assert decide.applied_configmap_name(edited, edited_spec, patched) == d.configmap["metadata"]["name"]
    assert decide.applied_configmap_name(edited, edited_spec, rj) == cm["metadata"]["name"]
    assert decide.plan_actions(edited, edited_spec, None, patched, d.configmap, CFG).action == "none"


def test_suspend_follows_the_spec_without_kueue_but_is_refused_under_kueue():
    base = seed_run()
    del base["spec"]["scheduling"]["queueName"]
    rj, cm = rayjob_for(base, "RUNNING", "Running"), cm_for(base)
    edited = copy.deepcopy(base)
    edited["spec"]["scheduling"]["suspend"] = True
    d = decide.plan_actions(edited, parse_spec(edited["spec"])[0], None, rj, cm, CFG)
    assert d.action == "update" and {"op": "add", "path": "/spec/suspend", "value": True} in d.patch
    # in a Kueue queue, suspend is refused by the spec itself (Kueue would unsuspend on admission)...
    kueued = seed_run()
    with pytest.raises(SpecError, match="queueName"):
        parse_spec(seed_run(**{"scheduling.suspend": True})["spec"])
    # ...and if a RayJob in a queue got suspend from an older spec, a change of it is still refused
    cm = cm_for(kueued)
    applied = json.loads(cm["data"]["spec.json"])
    applied["spec"]["scheduling"]["suspend"] = True
    cm["data"]["spec.json"] = json.dumps(applied)
    d = decide.plan_actions(
        kueued, parse_spec(kueued["spec"])[0], None, rayjob_for(kueued, "RUNNING", "Running"), cm, CFG
    )
    assert d.action == "refuse" and "spec.scheduling.suspend" in d.refused and "Kueue" in d.message


def test_immutable_change_refused_as_a_whole_never_half_applied():
    run = seed_run()
    rj, cm = rayjob_for(run, "RUNNING", "Running"), cm_for(run)
    edited = seed_run(**{"scheduling.backoffLimit": 4})  # mutable ...
    edited["spec"]["resources"]["workers"] = 2  # ... plus immutable ones
    edited["spec"]["training"]["globalBatchSize"] = 96
    d = decide.plan_actions(edited, parse_spec(edited["spec"])[0], None, rj, cm, CFG)
    assert d.action == "refuse" and d.patch == [] and d.configmap is None and d.rayjob is None
    assert d.refused == ("spec.resources.workers", "spec.training.globalBatchSize")
    st = summarize(edited, rj, decision=d)
    applied = next(c for c in st.conditions if c.type == "SpecApplied")
    assert applied.status == "False" and applied.reason == "ImmutableFieldChanged"
    assert "spec.resources.workers" in applied.message and "nothing of this edit was applied" in applied.message
    assert st.phase == "Running"  # the run goes on with the spec it started with
    ev = decide.transition_event(decide.previous_status(with_status(run, summarize(run, rj))), st)
    assert ev[0] == "Warning" and ev[1] == "ImmutableFieldChanged"


def test_rayjob_of_another_owner_is_never_adopted():
    run = seed_run()
    rj = rayjob_for(run, "RUNNING", "Running")
    rj["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "example.dev/v1",
            "kind": "Pipeline",
            "name": "someone-else",
            "uid": "someone-else",
            "controller": True,
        }
    ]
    d = decide.plan_actions(run, parse_spec(run["spec"])[0], None, rj, cm_for(run), CFG)
    assert d.action == "conflict"
    st = summarize(run, rj, decision=d)
    assert st.reason == "NameConflict" and st.ray_job_name is None and st.job_deployment_status is None


def test_rayjob_of_a_previous_run_of_this_name_is_waited_for_never_recorded():
    """Delete + re-apply: the old run's RayJob (owner: same name, another uid) lingers while KubeRay's finalizer
    runs. The new run neither adopts nor records it, so its disappearance can never fail the new run."""
    run = seed_run()
    rj = rayjob_for(run, "RUNNING", "Running")
    rj["metadata"]["ownerReferences"][0]["uid"] = "uid-of-the-deleted-run"
    rj["metadata"]["deletionTimestamp"] = "2026-11-27T08:00:00Z"
    spec = parse_spec(run["spec"])[0]
    d = decide.plan_actions(run, spec, None, rj, cm_for(run), CFG)
    assert d.action == "wait" and "uid-of-the-deleted-run" in d.message
    st = summarize(run, rj, decision=d)
    assert (st.phase, st.reason) == ("Pending", "WaitingForPreviousRayJob")
    assert st.ray_job_name is None and st.job_status is None and st.job_deployment_status is None
    # the old RayJob is gone: the run creates its own (today's bug: Failed/RayJobDeleted for good)
    waited = with_status(run, st)
    d2 = decide.plan_actions(waited, spec, None, None, None, CFG)
    assert d2.action == "create" and d2.rayjob["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
    # its ConfigMap may outlive the RayJob (the GC is not ordered): waited for too, not a NameConflict
    old_cm = cm_for(run)
    old_cm["metadata"]["ownerReferences"][0]["uid"] = "uid-of-the-deleted-run"
    assert decide.plan_actions(waited, spec, None, None, old_cm, CFG).action == "wait"


def test_transition_events():
    run = seed_run()
    pending = summarize(run, None)
    running = summarize(with_status(run, pending), rayjob_for(run, "RUNNING", "Running"))
    assert decide.transition_event(pending, running)[:2] == ("Normal", "JobRunning")
    failed = summarize(
        with_status(run, running), rayjob_for(run, "FAILED", "Failed", reason="AppFailed", message="boom")
    )
    assert decide.transition_event(running, failed) == ("Warning", "AppFailed", "Running -> Failed: boom")
    assert decide.transition_event(running, running) is None
    assert decide.transition_event(None, pending)[0] == "Normal"


def test_spec_diff_paths():
    assert decide.spec_diff({"a": {"b": 1, "c": [1]}}, {"a": {"b": 2, "c": [1, 2]}}) == ["spec.a.b", "spec.a.c"]
    assert decide.spec_diff({"a": 1}, {"a": 1}) == []


def test_an_edit_that_makes_the_spec_invalid_is_refused_not_fatal_for_a_live_run():
    run = seed_run()
    rj = rayjob_for(run, "RUNNING", "Running")
    running = with_status(run, summarize(run, rj))
    d = decide.plan_actions(running, None, "spec: warmup too long", rj, cm_for(run), CFG)
    assert d.action == "refuse" and "warmup too long" in d.message and d.patch == []
    st = decide.summarize(running, decide.Observation(rayjob=rj), LATER, decision=d)
    assert st.phase == "Running"
    assert next(c for c in st.conditions if c.type == "SpecApplied").status == "False"
    # before anything exists the same error is an invalid spec
    assert decide.plan_actions(run, None, "spec: warmup too long", None, None, CFG).action == "invalid"


# ----------------------------------------------------------------- non-finite numbers never reach the status
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_loss_is_null_in_the_patch_with_a_non_finite_loss_condition(bad):
    run = seed_run()
    progress = {"step": 10, "totalSteps": 100, "loss": bad, "tokensPerSecond": bad, "etaSeconds": bad}
    summary = {"step": 10, "average": bad, "tasks": {"piqa": bad, "arc_easy": 0.5}}
    status = summarize(run, rayjob_for(run, "RUNNING", "Running"), progress, summary)
    patch = decide.status_patch(status)
    json.dumps(patch, allow_nan=False)  # the API server takes it: no NaN/Infinity token anywhere
    assert patch["progress"]["loss"] is None and patch["progress"]["step"] == 10
    assert patch["eval"]["tasks"] == {"arc_easy": 0.5} and patch["eval"]["average"] == 0.5
    cond = {c["type"]: c for c in patch["conditions"]}["MetricsFinite"]
    assert cond["status"] == "False" and cond["reason"] == "NonFiniteLoss" and "step 10" in cond["message"]
    # a later finite loss clears it
    later = summarize(with_status(run, status), rayjob_for(run, "RUNNING", "Running"), {"step": 20, "loss": 2.5})
    cond = {c.type: c for c in later.conditions}["MetricsFinite"]
    assert cond.status == "True" and later.progress is not None and later.progress.loss == 2.5


def test_status_patch_nulls_a_non_finite_number_whatever_path_brought_it():
    """The second line behind `finite`: any non-finite float left in a status (here set after summarize) is
    written as null, so the API server never refuses the patch."""
    run = seed_run()
    status = summarize(run, rayjob_for(run, "RUNNING", "Running"), {"step": 10, "totalSteps": 100, "loss": 2.5})
    assert status.progress is not None
    status.progress.loss = float("nan")
    patch = decide.status_patch(status)
    json.dumps(patch, allow_nan=False)
    assert patch["progress"]["loss"] is None and patch["progress"]["step"] == 10


def test_huge_numbers_and_unbounded_task_lists_in_artifacts_are_bounded_in_the_status():
    run = seed_run()
    assert decide.progress_from({"step": float("inf")}, 10) is None  # int(inf) is an OverflowError, not a crash
    progress = {"step": 10**400, "totalSteps": 10**400, "tokens": 10**400, "loss": 3.0}
    summary = {"step": 5, "tasks": {("t" * 10_000) + str(i): 0.5 for i in range(5_000)}}
    status = summarize(run, rayjob_for(run, "RUNNING", "Running"), progress, summary)
    patch = decide.status_patch(status)
    json.dumps(patch, allow_nan=False)
    assert patch["progress"]["loss"] == 3.0
    assert len(patch["eval"]["tasks"]) <= decide.MAX_STATUS_TASKS
    assert all(len(k) <= decide.MAX_TASK_NAME for k in patch["eval"]["tasks"])


@pytest.mark.parametrize(
    "js,jds,suspend,want",
    [
        ("", "", False, decide.Reads(rayjob_events=True)),  # KubeRay 1.4 rejections show only as Events
        ("", "Initializing", False, decide.Reads(pods_of_cluster="c1")),
        ("", "Retrying", False, decide.Reads(pods_of_cluster="c1")),
        ("RUNNING", "Running", False, decide.Reads(storage=True)),
        ("SUCCEEDED", "Complete", False, decide.Reads(storage=True)),
        ("", "Suspended", True, decide.Reads(workloads_of="uid-1")),  # Kueue holds it: why not admitted
        ("PENDING", "Initializing", True, decide.Reads(pods_of_cluster="c1", workloads_of="uid-1")),
    ],
)
def test_reads_needed_asks_only_for_what_the_status_can_use(js, jds, suspend, want):
    run = seed_run()
    rj = rayjob_for(run, js, jds, suspend=suspend, rayClusterName="c1")
    rj["metadata"]["uid"] = "uid-1"
    assert decide.reads_needed(rj, spec_valid=True) == want
    assert decide.reads_needed(rj, spec_valid=False) == decide.Reads()
    assert decide.reads_needed(None, spec_valid=True) == decide.Reads()


def test_secret_errors_name_the_field_the_secret_and_the_fix():
    missing = decide.secret_spec_error("s3", "team-a", "missing")
    assert missing and missing.startswith("spec.storage.credentialsSecret: Secret 's3' does not exist")
    forbidden = decide.secret_spec_error("s3", "team-a", "forbidden")
    assert forbidden and "403 Forbidden" in forbidden and "rbac.secretNames" in forbidden
    assert decide.secret_spec_error("s3", "team-a", "present") is None
    assert decide.secret_check_needed("s3", None) and not decide.secret_check_needed("s3", {"metadata": {}})
    assert not decide.secret_check_needed(None, None)


def test_only_namespaces_that_opted_in_are_served():
    chart = OperatorConfig.from_env({"TRAINKIT_TENANT_NAMESPACE_LABEL": "trainkit.dev/tenant=true"})
    assert chart.tenant_namespace_label == ("trainkit.dev/tenant", "true")
    assert decide.namespace_opt_in_error("team-a", {"trainkit.dev/tenant": "true", "x": "y"}, chart) is None
    for labels in ({}, {"trainkit.dev/tenant": "false"}, {"trainkit.dev/tenant": "True"}, "missing"):
        why = decide.namespace_opt_in_error("kube-system", labels, chart)
        assert why is not None and "namespace 'kube-system' has not opted in to trainkit" in why
        assert "kubectl label namespace kube-system trainkit.dev/tenant=true" in why
    assert "403 Forbidden" in (decide.namespace_opt_in_error("team-a", "forbidden", chart) or "")
    # checked before the children exist, and only where the chart asks (a namespaced install lists its namespaces)
    assert decide.namespace_check_needed(chart, None) and not decide.namespace_check_needed(chart, {"kind": "RayJob"})
    unset = OperatorConfig.from_env({})
    assert not decide.namespace_check_needed(unset, None)
    assert decide.namespace_opt_in_error("kube-system", {}, unset) is None


def test_placement_policy_refuses_what_the_platform_did_not_allow():
    def error(env: dict, **updates):
        spec, _ = parse_spec(seed_run(**updates)["spec"])
        return decide.placement_spec_error(spec, OperatorConfig.from_env(env))

    chart = {  # the chart's defaults (values.yaml policy)
        "TRAINKIT_ALLOWED_PRIORITY_CLASSES": "",
        "TRAINKIT_ALLOWED_TOLERATION_KEYS": "nvidia.com/gpu",
        "TRAINKIT_ALLOWED_NODE_SELECTOR_KEYS": "nvidia.com/gpu.product",
        "TRAINKIT_ALLOWED_VOLCANO_QUEUES": "",
    }
    assert error(chart) is None  # the seed run: GPU toleration and selector, no priority class
    assert error({}, **{"scheduling.priorityClassName": "system-cluster-critical"}) is None  # no chart: no policy
    prio = error(chart, **{"scheduling.priorityClassName": "system-cluster-critical"})
    assert prio == (
        "spec.scheduling.priorityClassName: priority class 'system-cluster-critical' is not allowed here (allowed: none)"
    )
    assert (
        error({**chart, "TRAINKIT_ALLOWED_PRIORITY_CLASSES": "high"}, **{"scheduling.priorityClassName": "high"})
        is None
    )
    cp = [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]
    assert "key 'node-role.kubernetes.io/control-plane' is not allowed" in error(chart, **{"resources.tolerations": cp})
    everything = error(chart, **{"resources.tolerations": [{"operator": "Exists"}]})
    assert "tolerations[0]: a toleration without a key tolerates every taint" in everything
    sel = error(chart, **{"resources.nodeSelector": {"node-role.kubernetes.io/control-plane": ""}})
    assert sel.startswith("spec.resources.nodeSelector: key 'node-role.kubernetes.io/control-plane' is not allowed")
    vq = error(chart, **{"scheduling.queueName": None, "scheduling.volcanoQueue": "other-team"})
    assert "spec.scheduling.volcanoQueue: queue 'other-team' is not allowed" in vq
    nq = error({**chart, "TRAINKIT_REQUIRE_QUEUE_NAME": "true"}, **{"scheduling.queueName": None})
    assert nq == "spec.scheduling.queueName: required here (every run goes through Kueue)"


# ------------------------------------------------------------- what the real launch path's faults showed
# (tests/integration/test_operator_real_ray.py runs them with real Ray; these pin the decisions)
def _running_with_checkpoint(run: dict) -> dict:
    rj = rayjob_for(run, "RUNNING", "Running", startTime="2026-11-27T07:00:00Z")
    ckpt = {"step": 4, "uri": "s3://trainkit-runs/runs/x/checkpoints/step-00000004"}
    return with_status(run, summarize(run, rj, progress={"step": 5, "totalSteps": 8}, checkpoint=ckpt))


PREEMPTED = {
    "type": "Evicted",
    "status": "True",
    "reason": "Preempted",
    "message": "Preempted to accommodate a workload (UID: 1, JobUID: 2) due to prioritization in the ClusterQueue",
}


def test_a_run_kueue_suspends_after_it_ran_is_shown_preempted_with_where_it_resumes():
    run = _running_with_checkpoint(seed_run())
    # KubeRay tore the cluster down (Suspending -> Suspended resets jobStatus); Kueue's Workload says why
    held = rayjob_for(run, "", "Suspended", suspend=True, startTime="2026-11-27T07:00:00Z")
    wl = {"status": {"conditions": [PREEMPTED, {"type": "QuotaReserved", "status": "False", "message": "Pending"}]}}
    st = summarize(run, held, workloads=[wl])
    assert (st.phase, st.reason) == ("Queued", "Preempted")
    assert "Preempted to accommodate a workload" in st.message and "checkpoint step 4" in st.message
    assert st.last_checkpoint.step == 4 and st.progress.step == 5  # storage is not read while held: kept
    assert decide.transition_event(decide.previous_status(run), st)[1] == "Preempted"
    # still held on the next tick, and without a readable Workload (no Kueue RBAC): still Preempted
    again = summarize(with_status(run, st), held, workloads=None)
    assert (again.phase, again.reason) == ("Queued", "Preempted") and "checkpoint step 4" in again.message
    # another eviction reason of Kueue's is named as such
    timeout = {**PREEMPTED, "reason": "PodsReadyTimeout", "message": "Exceeded the PodsReady timeout"}
    assert summarize(run, held, workloads=[{"status": {"conditions": [timeout]}}]).reason == "Evicted"
    # a run that never started and waits in the queue is not "preempted"
    fresh = seed_run()
    assert summarize(fresh, rayjob_for(fresh, "", "Suspended", suspend=True)).reason == "WaitingForKueue"


def test_a_kuberay_retry_attempt_says_so_and_where_training_resumes():
    run = _running_with_checkpoint(seed_run(**{"scheduling.backoffLimit": 1}))
    # KubeRay's Retrying -> New reset reason, message and jobStatus; only `failed` tells it is a retry
    for jds in ("", "Initializing"):
        st = summarize(run, rayjob_for(run, "", jds, failed=1, succeeded=0))
        assert (st.phase, st.reason) == ("Pending", "Retrying"), st
        assert "attempt 2 of 2" in st.message and "checkpoint step 4" in st.message
    first = seed_run()
    assert summarize(first, rayjob_for(first, "", "", failed=0)).reason == "Created"


def test_start_time_is_the_runs_not_the_latest_attempts():
    """KubeRay's initRayJobStatusIfNeed sets startTime again for every attempt (a retry, a resume)."""
    run = _running_with_checkpoint(seed_run())
    retry = rayjob_for(run, "RUNNING", "Running", startTime="2026-11-27T07:40:00Z", failed=1)
    assert summarize(run, retry).start_time == "2026-11-27T07:00:00Z"
