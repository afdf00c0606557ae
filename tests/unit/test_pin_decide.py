"""The reconcile's decisions pinned as literal tables: stickiness, phases, pod problems, progress clamps,
the status patch's wire keys, and what to do with children that are missing, lost or edited by hand."""

from __future__ import annotations

import copy

import pytest

from trainkit.spec import parse_spec
from trainkit.spec.status import TrainingRunStatus
from trainkit_operator import builders, decide
from trainkit_operator.config import OperatorConfig

from test_operator_builders import UID, seed_run
from test_operator_decide import NOW, cm_for, rayjob_for, summarize, with_status

CFG = OperatorConfig()


# ----------------------------------------------------------------------------- stickiness
@pytest.mark.parametrize(
    "phase,reason,ray_job_name,sticky",
    [
        ("Succeeded", "JobSucceeded", "rj", True),
        ("Failed", "AppFailed", "rj", True),
        ("Failed", "AppFailed", None, True),
        ("Failed", "InvalidSpec", None, False),  # nothing ever ran: fixing the spec may start it
        ("Failed", "InvalidSpec", "rj", True),  # it ran once: terminal
        ("Failed", "DataFailed", None, False),  # its TrainingData failed before it started: fixing the data starts it
        ("Failed", "DataFailed", "rj", True),
        ("Running", "JobRunning", "rj", False),
        ("Pending", "InvalidSpec", None, False),
        ("Queued", "WaitingForKueue", "rj", False),
    ],
)
def test_sticky_terminal_table(phase, reason, ray_job_name, sticky):
    status = TrainingRunStatus(phase=phase, reason=reason, ray_job_name=ray_job_name)
    assert decide.is_sticky_terminal(status) is sticky


def test_no_status_is_not_terminal():
    assert decide.is_sticky_terminal(None) is False
    assert decide.previous_status({"status": {}}) is None
    assert decide.previous_status({"status": {"phase": "Running", "conditions": "not a list"}}) is None
    assert decide.previous_status({"status": {"phase": "Running"}}).phase == "Running"


def test_a_sticky_failed_run_is_left_alone_and_its_status_kept():
    run = seed_run()
    rj = rayjob_for(run, "FAILED", "Failed", reason="AppFailed", message="boom")
    failed = summarize(run, rj)
    assert failed.phase == "Failed"
    stored = with_status(run, failed)
    d = decide.plan_actions(stored, parse_spec(run["spec"])[0], None, None, None, CFG)
    assert d.action == "none" and "run is Failed: terminal" in d.message
    again = summarize(stored, rayjob_for(run, "RUNNING", "Running"))
    assert again == decide.previous_status(stored)


# ---------------------------------------------------------------------------------- phases
@pytest.mark.parametrize(
    "js,jds,kw,expected",
    [
        ("SUCCEEDED", "Complete", {}, ("Succeeded", "JobSucceeded", "the training job succeeded")),
        ("FAILED", "Complete", {}, ("Failed", "AppFailed", "the Ray job failed")),
        ("FAILED", "Complete", {"reason": "OOM", "message": "killed"}, ("Failed", "OOM", "killed")),
        ("STOPPED", "Complete", {}, ("Failed", "JobStopped", "the Ray job was stopped")),
        (
            "",
            "Complete",
            {},
            (
                "Failed",
                "InconsistentStatus",
                "KubeRay reports jobDeploymentStatus Complete with "
                "jobStatus unset; success is only declared with jobStatus SUCCEEDED",
            ),
        ),
        ("FAILED", "Failed", {}, ("Failed", "Failed", "KubeRay marked the RayJob Failed")),
        (
            "STOPPED",
            "ValidationFailed",
            {},
            ("Failed", "ValidationFailed", "KubeRay marked the RayJob ValidationFailed"),
        ),
        (
            "PENDING",
            "Failed",
            {},
            (
                "Failed",
                "Failed",
                "KubeRay marked the RayJob Failed (jobStatus PENDING ignored: the deployment status is authoritative)",
            ),
        ),
        ("", "Suspended", {"user_suspend": True}, ("Suspended", "SuspendedByUser", "spec.scheduling.suspend is true")),
        (
            "",
            "Running",
            {"rayjob_suspended": True, "kueue_queue_name": "q"},
            ("Queued", "WaitingForKueue", "Kueue holds the RayJob suspended until LocalQueue q admits it"),
        ),
        (
            "",
            "Suspending",
            {},
            (
                "Suspended",
                "SuspendedExternally",
                "the RayJob is suspended, but not by this run's spec (Kueue with manageJobsWithoutQueueName, or "
                "another controller); the operator leaves it suspended",
            ),
        ),
        ("RUNNING", "Running", {}, ("Running", "JobRunning", "training")),
        (
            "SUCCEEDED",
            "Running",
            {},
            ("Running", "JobFinishing", "jobStatus SUCCEEDED; waiting for KubeRay to finish the deployment"),
        ),
        ("PENDING", "Running", {}, ("Pending", "JobPending", "the Ray cluster is up; the job is being submitted")),
        ("", "Retrying", {}, ("Pending", "Retrying", "KubeRay is retrying the job on a new Ray cluster")),
        ("", "", {}, ("Pending", "Created", "waiting for the Ray cluster")),
        ("", "Initializing", {"message": "pulling"}, ("Pending", "Initializing", "pulling")),
        # KubeRay never emits 'Scheduled'; like any value it adds later, it keeps the last known phase
        (
            "",
            "Scheduled",
            {},
            (
                "Pending",
                "UnknownJobDeploymentStatus",
                "KubeRay reports jobDeploymentStatus 'Scheduled', which this operator does not know; showing the "
                "last known phase Pending until KubeRay reports a known value",
            ),
        ),
    ],
)
def test_phase_table(js, jds, kw, expected):
    assert decide.derive_phase(js, jds, **kw) == expected


# ------------------------------------------------------------------------------ pod problems
def pod(
    name: str, *, waiting: str | None = None, scheduled: str | None = None, init_waiting: str | None = None
) -> dict:
    status: dict = {}
    if scheduled is not None:
        status["conditions"] = [
            {"type": "PodScheduled", "status": scheduled, "reason": "Unschedulable", "message": "0/3 nodes"},
            {"type": "Ready", "status": "False"},
        ]
    if waiting is not None:
        status["containerStatuses"] = [{"name": "ray", "state": {"waiting": {"reason": waiting, "message": "m"}}}]
    if init_waiting is not None:
        status["initContainerStatuses"] = [{"name": "init", "state": {"waiting": {"reason": init_waiting}}}]
    return {"metadata": {"name": name}, "status": status}


def test_healthy_and_starting_pods_are_no_problem():
    healthy = {
        "metadata": {"name": "h"},
        "status": {
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "ray", "state": {"running": {}}}],
        },
    }
    assert decide.pod_problems([healthy]) is None
    assert (
        decide.pod_problems([pod("a", waiting="ContainerCreating"), pod("b", init_waiting="PodInitializing")]) is None
    )
    assert decide.pod_problems([pod("a", scheduled="True")]) is None
    assert decide.pod_problems([]) is None and decide.pod_problems(None) is None


def test_pod_problem_messages():
    assert decide.pod_problems([pod("w", scheduled="False")]) == "w: Unschedulable: 0/3 nodes"
    assert (
        decide.pod_problems([pod("h", waiting="ErrImagePull"), pod("i", init_waiting="CreateContainerConfigError")])
        == "h/ray: ErrImagePull: m; i/init: CreateContainerConfigError"
    )
    assert len(decide.pod_problems([pod("x" * 3000, waiting="CrashLoopBackOff")])) == 2000


def test_healthy_pods_do_not_turn_a_pending_run_into_pods_not_ready():
    run = seed_run()
    st = summarize(run, rayjob_for(run, "", "Initializing"), pods=[pod("a", waiting="ContainerCreating")])
    assert (st.phase, st.reason) == ("Pending", "Initializing")
    st = summarize(run, rayjob_for(run, "", "Retrying"), pods=[pod("a", waiting="ImagePullBackOff")])
    assert (st.reason, st.message) == ("PodsNotReady", "a/ray: ImagePullBackOff: m")
    # A running job's pods are not second-guessed.
    st = summarize(run, rayjob_for(run, "RUNNING", "Running"), pods=[pod("a", waiting="ImagePullBackOff")])
    assert st.reason == "JobRunning"


# -------------------------------------------------------------------------- progress / eval
def test_progress_clamps_and_types():
    p = decide.progress_from(
        {
            "step": 150,
            "totalSteps": 100,
            "tokens": -5,
            "etaSeconds": -3.0,
            "loss": True,
            "mfu": 0.4,
            "tokensPerSecond": 10,
        },
        None,
    )
    assert (p.step, p.total_steps, p.percent, p.tokens, p.eta_seconds, p.loss, p.mfu, p.tokens_per_second) == (
        150,
        100,
        100.0,
        0,
        0.0,
        None,
        0.4,
        10.0,
    )
    p = decide.progress_from({"step": -4, "etaSeconds": 12}, 50)
    assert (p.step, p.total_steps, p.percent, p.eta_seconds) == (0, 50, 0.0, 12.0)
    p = decide.progress_from({"step": 1, "totalSteps": 3}, 99)
    assert (p.total_steps, p.percent) == (3, 33.33)
    p = decide.progress_from({"step": 5}, None)
    assert (p.total_steps, p.percent) == (0, 0.0)
    assert decide.progress_from({"step": "five"}, 10) is None
    assert decide.progress_from({}, 10) is None and decide.progress_from(None, 10) is None


def test_eval_summary_average_rounding_and_report():
    ev = decide.eval_from({"step": 200, "tasks": {"a": 0.5, "b": 0.25, "c": "n/a"}}, "s3://b/run")
    assert (ev.step, ev.average, ev.tasks) == (200, 0.375, {"a": 0.5, "b": 0.25})
    assert ev.report_uri == "s3://b/run/eval/step-00000200/report.md"
    ev = decide.eval_from({"step": 3, "average": 0.123456, "tasks": {"a": 1}}, None)
    assert (ev.average, ev.report_uri) == (0.1235, None)
    assert decide.eval_from({"step": 3, "tasks": {}}, None).average is None
    assert decide.eval_from({"tasks": {"a": 1}}, None) is None and decide.eval_from(None, None) is None


# ---------------------------------------------------------------------------- wire format
def test_status_patch_is_camel_case_with_explicit_nulls():
    run = seed_run()
    st = summarize(
        run,
        rayjob_for(run, "RUNNING", "Running", startTime="2026-11-27T07:00:00Z"),
        progress={"step": 10, "totalSteps": 100, "tokensPerSecond": 5.0, "etaSeconds": 9.0},
        checkpoint={"step": 10, "uri": "s3://b/c/step-00000010"},
    )
    patch = decide.status_patch(st)
    for key in (
        "phase",
        "reason",
        "message",
        "jobStatus",
        "jobDeploymentStatus",
        "rayJobName",
        "observedGeneration",
        "conditions",
        "progress",
        "lastCheckpoint",
        "eval",
        "artifacts",
        "startTime",
        "completionTime",
    ):
        assert key in patch, key
    assert not [k for k in patch if "_" in k]
    assert patch["completionTime"] is None and patch["eval"] is None  # null clears a stale value
    assert {"totalSteps", "tokensPerSecond", "etaSeconds"} <= set(patch["progress"])
    assert {"lastTransitionTime", "observedGeneration"} <= set(patch["conditions"][0])
    assert patch["lastCheckpoint"] == {"step": 10, "uri": "s3://b/c/step-00000010"}
    assert patch["startTime"] == "2026-11-27T07:00:00Z" and patch["observedGeneration"] == 1


def test_completion_time_and_admission_of_a_finished_run():
    run = seed_run()
    st = summarize(run, rayjob_for(run, "SUCCEEDED", "Complete", endTime="2026-11-27T07:30:00Z"))
    assert st.completion_time == "2026-11-27T07:30:00Z"
    assert summarize(run, rayjob_for(run, "SUCCEEDED", "Complete")).completion_time == NOW
    conds = {c.type: (c.status, c.reason) for c in st.conditions}
    assert conds == {
        "SpecValid": ("True", "Valid"),
        "SpecApplied": ("True", "Applied"),
        "Admitted": ("True", "Admitted"),
        "Running": ("False", "Succeeded"),
        "Succeeded": ("True", "JobSucceeded"),
        "Failed": ("False", "Succeeded"),
        "MetricsFinite": ("True", "Finite"),
    }
    queued = summarize(run, rayjob_for(run, "", "Suspended", suspend=True))
    assert {c.type: (c.status, c.reason) for c in queued.conditions}["Admitted"] == ("False", "WaitingForKueue")
    assert queued.completion_time is None


# ------------------------------------------------------------------------------- children
def spec_of(run: dict):
    return parse_spec(run["spec"])[0]


def test_configmap_exists_rayjob_does_not():
    run = seed_run()
    name = cm_for(run)["metadata"]["name"]
    assert name == f"gpt2-70m-50-30-20-spec-{builders.spec_hash(run, spec_of(run))}"
    same = decide.plan_actions(run, spec_of(run), None, None, cm_for(run), CFG)
    assert (same.action, same.configmap) == ("create", None) and same.rayjob is not None  # named by content: no write
    d = decide.plan_actions(run, spec_of(run), None, None, None, CFG)
    assert (d.action, d.configmap) == ("create", cm_for(run))
    previous = copy.deepcopy(cm_for(run))  # a deleted run of the same name and spec, not yet garbage-collected
    previous["metadata"]["ownerReferences"][0]["uid"] = "the-deleted-run"
    d = decide.plan_actions(run, spec_of(run), None, None, previous, CFG)
    assert d.action == "wait" and "previous TrainingRun of this name (uid the-deleted-run)" in d.message
    foreign = copy.deepcopy(cm_for(run))
    foreign["metadata"]["ownerReferences"][0].update(kind="Deployment", uid="someone-else")
    d = decide.plan_actions(run, spec_of(run), None, None, foreign, CFG)
    assert d.action == "conflict" and d.message == f"ConfigMap {name} exists and is not owned by this run"


def test_configmap_lost_while_the_rayjob_runs():
    run = seed_run()
    rj = rayjob_for(run, "RUNNING", "Running")
    d = decide.plan_actions(run, spec_of(run), None, rj, None, CFG)
    assert (d.action, d.patch) == ("update", [])
    assert d.configmap == cm_for(run)
    unreadable = copy.deepcopy(cm_for(run))
    unreadable["data"] = {}
    d = decide.plan_actions(run, spec_of(run), None, rj, unreadable, CFG)
    assert (d.action, d.configmap) == ("update", cm_for(run))
    edited = seed_run(**{"scheduling.backoffLimit": 9})
    d = decide.plan_actions(edited, spec_of(edited), None, rj, None, CFG)
    assert d.action == "refuse" and d.refused == ("spec",)
    assert "no longer readable" in d.message


def test_the_applied_configmap_is_the_one_the_rayjob_annotation_names():
    run = seed_run()
    rj = rayjob_for(run, "RUNNING", "Running")
    assert decide.applied_configmap_name(run, spec_of(run), None) == cm_for(run)["metadata"]["name"]
    rj["metadata"]["annotations"][builders.SPEC_HASH_ANNOTATION] = "0123456789abcdef"
    assert decide.applied_configmap_name(run, spec_of(run), rj) == "gpt2-70m-50-30-20-spec-0123456789abcdef"
    for bad in ("../../x", "0123456789ABCDEF", "", None):  # a hand-edited annotation names no ConfigMap
        rj["metadata"]["annotations"][builders.SPEC_HASH_ANNOTATION] = bad
        assert decide.applied_configmap_name(run, spec_of(run), rj) == cm_for(run)["metadata"]["name"]
    other = copy.deepcopy(rj)
    other["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    other["metadata"]["annotations"][builders.SPEC_HASH_ANNOTATION] = "0123456789abcdef"
    assert decide.applied_configmap_name(run, spec_of(run), other) == cm_for(run)["metadata"]["name"]


def test_rayjob_deleted_after_it_was_seen_is_lost_not_recreated():
    run = seed_run()
    seen = with_status(run, summarize(run, rayjob_for(run, "RUNNING", "Running")))
    d = decide.plan_actions(seen, spec_of(run), None, None, cm_for(run), CFG)
    assert d.action == "lost" and d.rayjob is None
    st = decide.summarize(seen, decide.Observation(), NOW, decide.SpecView(spec=spec_of(run)), decision=d)
    assert (st.phase, st.reason, st.ray_job_name, st.job_status) == (
        "Failed",
        "RayJobDeleted",
        "gpt2-70m-50-30-20",
        "RUNNING",
    )


def test_children_edited_by_hand_are_repaired():
    run = seed_run()
    rj = rayjob_for(run, "RUNNING", "Running")
    rj["spec"]["backoffLimit"] = 42  # someone ran kubectl edit on the RayJob
    d = decide.plan_actions(run, spec_of(run), None, rj, cm_for(run), CFG)
    want = builders.build_rayjob(run, spec_of(run), CFG)["spec"]["backoffLimit"]
    assert d.action == "update" and d.configmap is None
    assert {"op": "add", "path": "/spec/backoffLimit", "value": want} in d.patch


def test_an_invalid_spec_without_children_is_invalid():
    run = seed_run()
    d = decide.plan_actions(run, None, "spec.data: bad", None, None, CFG)
    assert (d.action, d.message) == ("invalid", "spec.data: bad")
    assert decide.plan_actions(run, None, None, None, None, CFG).message == "spec missing"
    other = rayjob_for(run, "RUNNING", "Running")
    other["metadata"]["ownerReferences"][0]["uid"] = "x"
    assert decide.plan_actions(run, None, "bad", other, None, CFG).action == "invalid"


def test_ownership_and_queue_helpers():
    run = seed_run()
    mine = {"metadata": {"ownerReferences": [{"uid": UID, "controller": True}]}}
    assert decide.owned_by(mine, run)
    assert not decide.owned_by({"metadata": {"ownerReferences": [{"uid": UID, "controller": False}]}}, run)
    assert not decide.owned_by({"metadata": {"ownerReferences": [{"uid": "x", "controller": True}]}}, run)
    assert not decide.owned_by({}, run)
    assert decide.kueue_queue({"metadata": {"labels": {builders.KUEUE_QUEUE_LABEL: "q"}}}) == "q"
    assert decide.kueue_queue({"metadata": {}}) is None
    assert decide.applied_spec(None) is None and decide.applied_spec({"data": {builders.SPEC_KEY: "{"}}) is None
    assert decide.applied_spec(cm_for(run)) == decide.dump_spec(spec_of(run))


def test_spec_diff_of_added_and_removed_keys():
    assert decide.spec_diff({"a": 1}, {"a": 1, "b": 2}) == ["spec.b"]
    assert decide.spec_diff({"x": {"y": 1}}, {}) == ["spec.x"]
    assert decide.spec_diff(1, 2, "p") == ["p"]


def test_transition_event_table():
    def st(phase: str, reason: str, msg: str = "m", applied: tuple[str, str, str] | None = None) -> TrainingRunStatus:
        conds = (
            []
            if applied is None
            else [
                {
                    "type": "SpecApplied",
                    "status": applied[0],
                    "reason": applied[1],
                    "message": applied[2],
                    "lastTransitionTime": NOW,
                }
            ]
        )
        return TrainingRunStatus.model_validate({"phase": phase, "reason": reason, "message": msg, "conditions": conds})

    assert decide.transition_event(None, st("Pending", "Creating")) == ("Normal", "Creating", "New -> Pending: m")
    assert decide.transition_event(st("Pending", "Creating"), st("Pending", "PodsNotReady", "pull")) == (
        "Warning",
        "PodsNotReady",
        "Pending -> Pending: pull",
    )
    assert decide.transition_event(st("Pending", "Creating"), st("Pending", "NameConflict"))[0] == "Warning"
    assert decide.transition_event(st("Running", "JobRunning"), st("Running", "JobFinishing")) is None
    assert decide.transition_event(st("Running", "JobRunning"), st("Succeeded", "JobSucceeded"))[0] == "Normal"
    refused = st("Running", "JobRunning", applied=("False", "ImmutableFieldChanged", "no"))
    assert decide.transition_event(st("Running", "JobRunning"), refused) == ("Warning", "ImmutableFieldChanged", "no")
    assert decide.transition_event(refused, refused) is None
    again = st("Running", "JobRunning", applied=("False", "ImmutableFieldChanged", "other"))
    assert decide.transition_event(refused, again) == ("Warning", "ImmutableFieldChanged", "other")
    ok = st("Running", "JobRunning", applied=("True", "Applied", "fine"))
    assert decide.transition_event(refused, ok) is None


# --------------------------------------------------------------------- messages and conditions
def test_refusal_messages_say_why_for_each_kind_of_field():
    kueued = seed_run()
    rj, cm = rayjob_for(kueued, "RUNNING", "Running"), cm_for(kueued)
    workers = seed_run(**{"resources.workers": 5})
    d = decide.plan_actions(workers, spec_of(workers), None, rj, cm, CFG)
    assert d.message == (
        "refused changes to spec.resources.workers (only "
        + ", ".join(sorted(decide.MUTABLE_SPEC_FIELDS))
        + " may change after the RayJob exists); nothing of this edit was applied, the run continues "
        "with the spec it started with"
    )


def test_condition_messages_are_capped_at_32768_characters():
    run = seed_run()
    st = decide.summarize(run, decide.Observation(), NOW, decide.SpecView(error="x" * 40_000))
    valid = next(c for c in st.conditions if c.type == "SpecValid")
    assert (valid.status, valid.reason, len(valid.message)) == ("False", "InvalidSpec", 32768)


def test_event_messages_are_capped_at_1000_characters():
    before = TrainingRunStatus(phase="Running", reason="JobRunning")
    after = TrainingRunStatus(phase="Failed", reason="AppFailed", message="y" * 5000)
    assert len(decide.transition_event(before, after)[2]) == 1000
    refused = TrainingRunStatus.model_validate(
        {
            "phase": "Running",
            "reason": "JobRunning",
            "conditions": [
                {
                    "type": "SpecApplied",
                    "status": "False",
                    "reason": "ImmutableFieldChanged",
                    "message": "z" * 5000,
                    "lastTransitionTime": NOW,
                }
            ],
        }
    )
    assert len(decide.transition_event(before, refused)[2]) == 1000


def test_progress_defaults_for_missing_fields_and_edges():
    p = decide.progress_from({"totalSteps": 10}, None)
    assert (p.step, p.tokens, p.percent, p.total_steps) == (0, 0, 0.0, 10)
    p = decide.progress_from({"step": 0, "totalSteps": 10}, None)
    assert (p.step, p.percent) == (0, 0.0)
    p = decide.progress_from({"step": 1, "totalSteps": 1}, None)
    assert (p.step, p.total_steps, p.percent) == (1, 1, 100.0)
    p = decide.progress_from({"step": 3, "totalSteps": -7}, None)
    assert (p.total_steps, p.percent) == (0, 0.0)


def test_pod_problems_only_refine_a_pending_run_that_is_starting():
    run = seed_run()
    bad = [pod("a", waiting="ImagePullBackOff")]
    st = summarize(run, rayjob_for(run, "PENDING", "Running"), pods=bad)
    assert (st.phase, st.reason) == ("Pending", "JobPending")  # the cluster is up: pods are not the story
    st = summarize(run, rayjob_for(run, "", "Initializing", suspend=True), pods=bad)
    assert (st.phase, st.reason) == ("Queued", "WaitingForKueue")
    st = summarize(
        run,
        rayjob_for(
            run,
            "",
            "",
        ),
        pods=bad,
    )
    assert st.reason == "PodsNotReady"


def test_a_refused_edit_stays_visible_until_a_decision_says_otherwise():
    run = seed_run()
    rj = rayjob_for(run, "RUNNING", "Running")
    edited = seed_run(**{"resources.workers": 5})
    refusal = decide.plan_actions(edited, spec_of(edited), None, rj, cm_for(run), CFG)
    refused = with_status(edited, summarize(edited, rj, decision=refusal))
    kept = decide.summarize(
        refused, decide.Observation(rayjob=rj), NOW, decide.SpecView(spec=spec_of(edited)), decision=None
    )
    applied = next(c for c in kept.conditions if c.type == "SpecApplied")
    assert (applied.status, applied.reason, applied.message) == ("False", "ImmutableFieldChanged", refusal.message)
    fine = with_status(run, summarize(run, rj))
    kept = decide.summarize(fine, decide.Observation(rayjob=rj), NOW, decide.SpecView(spec=spec_of(run)), decision=None)
    applied = next(c for c in kept.conditions if c.type == "SpecApplied")
    assert (applied.status, applied.reason) == ("True", "Applied")
    cleared = decide.summarize(
        refused,
        decide.Observation(rayjob=rj),
        NOW,
        decide.SpecView(spec=spec_of(run)),
        decision=decide.Decision("none"),
    )
    assert next(c for c in cleared.conditions if c.type == "SpecApplied").status == "True"


def test_phase_conditions_carry_the_reason_and_message_only_for_their_phase():
    run = seed_run()
    running = summarize(run, rayjob_for(run, "RUNNING", "Running"))
    conds = {c.type: (c.status, c.reason, c.message) for c in running.conditions}
    assert conds["Running"] == ("True", "JobRunning", "training")
    assert conds["Succeeded"] == ("False", "Running", "") and conds["Failed"] == ("False", "Running", "")
    done = summarize(run, rayjob_for(run, "SUCCEEDED", "Complete"))
    conds = {c.type: (c.status, c.reason, c.message) for c in done.conditions}
    assert conds["Succeeded"] == ("True", "JobSucceeded", "the training job succeeded")
    assert conds["Running"] == ("False", "Succeeded", "")
    failed = summarize(run, rayjob_for(run, "FAILED", "Failed", message="boom"))
    conds = {c.type: (c.status, c.reason, c.message) for c in failed.conditions}
    assert conds["Failed"] == ("True", "Failed", "boom") and conds["Succeeded"] == ("False", "Failed", "")


def test_a_lost_rayjob_keeps_both_kuberay_statuses():
    run = seed_run()
    seen = with_status(run, summarize(run, rayjob_for(run, "RUNNING", "Running")))
    d = decide.plan_actions(seen, spec_of(run), None, None, cm_for(run), CFG)
    st = decide.summarize(seen, decide.Observation(), NOW, decide.SpecView(spec=spec_of(run)), decision=d)
    assert (st.job_status, st.job_deployment_status) == ("RUNNING", "Running")
    fresh = decide.summarize(
        seen, decide.Observation(), NOW, decide.SpecView(spec=spec_of(run)), decision=decide.Decision("create")
    )
    assert (fresh.job_status, fresh.job_deployment_status, fresh.ray_job_name) == (None, None, None)
