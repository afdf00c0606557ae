"""TrainingData: spec rules, content addressing, the prepare RayJob's security, and the pure decisions."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from trainkit.spec.data import TrainingDataSpec, TrainingDataStatus, content_hash, resolved_uri
from trainkit.spec.models import SourceSpec
from trainkit_operator.config import OperatorConfig
from trainkit_operator.data_builders import PREPARE_ENTRYPOINT, build_data_configmap, build_data_rayjob
from trainkit_operator.data_decide import decide_data, resolve_sources

BASE = {"inputs": ["s3://raw/finepdfs/"], "output": {"uri": "s3://shards/"}}
NOW = "2026-01-01T00:00:00Z"


def spec(**over) -> TrainingDataSpec:
    return TrainingDataSpec.model_validate({**BASE, **over})


def data_obj(**over) -> dict:
    return {
        "apiVersion": "trainkit.dev/v1alpha1",
        "kind": "TrainingData",
        "metadata": {"name": "finepdfs", "namespace": "t1", "uid": "u-1", "generation": 1},
        "spec": {**BASE, **over},
    }


def test_same_content_same_uri_and_every_content_field_changes_it():
    a = spec()
    same = spec(storage={"credentialsSecret": "other"}, resources={"workers": 8})  # not content
    assert resolved_uri(a) == resolved_uri(same) == f"s3://shards/{content_hash(a)}/"
    changed = [
        spec(inputs=["s3://raw/other/"]),
        spec(textColumn="body"),
        spec(tokenizer="s3-free-folder"),
        spec(filter={"minLength": 10}),
        spec(filter={"dedup": "exact"}),
        spec(filter={"languageField": "lang", "language": "en"}),
        spec(shardTokens=1024),
    ]
    hashes = {content_hash(s) for s in changed} | {content_hash(a)}
    assert len(hashes) == len(changed) + 1


@pytest.mark.parametrize(
    "over, words",
    [
        ({"inputs": ["ftp://x/y"]}, "unknown URI scheme"),
        ({"inputs": ["hf://models/gpt2"]}, "hf://datasets/ORG/NAME"),
        ({"inputs": ["s3://key:secret@bucket/x"]}, "credentials"),
        ({"inputs": ["s3://raw/a", "s3://raw/a"]}, "must not repeat"),
        ({"filter": {"language": "en"}}, "together"),
        ({"hfToken": "hf_abc"}, "credentials must not be written"),
    ],
)
def test_bad_specs_name_the_problem(over, words):
    from trainkit.spec.load import SpecError, parse_data

    with pytest.raises(SpecError) as e:
        parse_data({**data_obj(), "spec": {**BASE, **over}})
    assert words in str(e.value)


def test_hf_inputs_with_revision_and_path_are_accepted():
    s = spec(inputs=["hf://datasets/codelion/finepdfs-1B@main/data", "hf://datasets/org/name"])
    assert s.inputs[0].startswith("hf://")


def test_prepare_rayjob_follows_the_security_rules():
    s = spec(storage={"credentialsSecret": "s3-creds"}, hfTokenSecret="hf-token")
    obj = data_obj(storage={"credentialsSecret": "s3-creds"}, hfTokenSecret="hf-token")
    cfg = OperatorConfig()
    rj = build_data_rayjob(obj, s, cfg)
    cm = build_data_configmap(obj, s, cfg)
    assert rj["metadata"]["name"] == "data-finepdfs" and rj["spec"]["entrypoint"] == PREPARE_ENTRYPOINT
    assert json.loads(cm["data"]["spec.json"])["spec"]["inputs"] == ["s3://raw/finepdfs/"]
    groups = [rj["spec"]["rayClusterSpec"]["headGroupSpec"], *rj["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
            assert secret_env["HF_TOKEN"] == {"name": "hf-token", "key": "HF_TOKEN", "optional": False}
            assert secret_env["AWS_SECRET_ACCESS_KEY"]["name"] == "s3-creds"
            assert all("value" not in e for e in c["env"] if e["name"] in secret_env)
    assert rj["metadata"]["ownerReferences"][0]["kind"] == "TrainingData"


def index_doc(tokens=100) -> dict:
    return {
        "format": "trainkit-tokens-v1",
        "tokenizer": {"name": "gpt2", "fingerprint": "sha256:abc"},
        "totalTokens": tokens,
        "totalDocuments": 3,
        "shards": [{"file": "shards/a.bin"}],
        "sourceFiles": [{"uri": "x"}, {"uri": "y"}],
    }


def test_existing_index_makes_it_ready_without_a_rayjob():
    d = decide_data(data_obj(), spec(), None, None, index_doc(), None, OperatorConfig(), NOW)
    assert d.action == "none" and d.status.phase == "Ready"
    assert (d.status.total_tokens, d.status.fingerprint, d.status.progress.files_done) == (100, "sha256:abc", 2)
    assert d.status.uri == resolved_uri(spec())


def test_no_index_creates_the_rayjob_then_follows_it():
    d = decide_data(data_obj(), spec(), None, None, None, None, OperatorConfig(), NOW)
    assert d.action == "create" and d.rayjob is not None and d.status.phase == "Preparing"
    running = {"metadata": {"name": "data-finepdfs"}, "status": {"jobStatus": "RUNNING"}}
    progress = {"filesDone": 1, "filesTotal": 2, "tokens": 50, "documents": 2}
    d = decide_data(data_obj(), spec(), None, running, None, progress, OperatorConfig(), NOW)
    assert d.action == "none" and d.status.phase == "Preparing" and d.status.progress.files_done == 1
    failed = {"metadata": {"name": "data-finepdfs"}, "status": {"jobStatus": "FAILED"}}
    d = decide_data(
        data_obj(), spec(), None, failed, None, {"error": "x.parquet: no 'text' column"}, OperatorConfig(), NOW
    )
    assert d.status.phase == "Failed" and "no 'text' column" in d.status.message


def test_a_failed_job_waits_for_its_error_before_failing_for_good():
    failed = {"metadata": {"name": "data-finepdfs"}, "status": {"jobStatus": "FAILED", "message": "exit 1"}}
    error = {"error": "x.parquet: no 'text' column"}
    cfg = OperatorConfig()
    # The read of prepare-progress.json was deferred or failed: Failed is final, so it is not decided on "exit 1".
    waiting = decide_data(data_obj(), spec(), None, failed, None, None, cfg, NOW, "unreadable", "reads deferred")
    assert (waiting.status.phase, waiting.status.reason) == ("Preparing", "StorageUnreadable")
    assert "ended FAILED; waiting to read its error: reads deferred" in waiting.status.message
    obj = {**data_obj(), "status": waiting.status.model_dump(by_alias=True, mode="json")}
    final = decide_data(obj, spec(), None, failed, None, error, cfg, NOW).status
    assert final.phase == "Failed" and final.message == "prepare failed: x.parquet: no 'text' column"


def test_finished_job_without_a_valid_index_is_failed_never_ready():
    done = {"metadata": {"name": "data-finepdfs"}, "status": {"jobStatus": "SUCCEEDED"}}
    d = decide_data(data_obj(), spec(), None, done, index_doc(tokens=0), None, OperatorConfig(), NOW)
    assert d.status.phase == "Failed" and "no tokens" in d.status.message


def test_unreadable_storage_never_decides_and_workload_identity_trusts_the_job():
    done = {"metadata": {"name": "data-finepdfs"}, "status": {"jobStatus": "SUCCEEDED"}}
    cfg = OperatorConfig()

    def decide(rayjob, state):
        return decide_data(data_obj(), spec(), None, rayjob, None, None, cfg, NOW, state, "could not read index.json")

    # Reads failed this time: no RayJob is started (the shards may be there), nothing terminal is decided.
    assert (decide(None, "unreadable").action, decide(None, "unreadable").status.phase) == ("none", "Pending")
    waiting = decide(done, "unreadable").status
    assert waiting.phase == "Preparing" and "could not read index.json" in waiting.message
    # No key to read with (workload identity): the prepare job runs, and its success is Ready.
    assert decide(None, "none").action == "create"
    ready = decide(done, "none").status
    assert ready.phase == "Ready" and ready.total_tokens is None and "workload-identity" in ready.message


def test_local_paths_are_refused_on_the_cluster():
    from trainkit_operator.data_decide import data_cluster_error

    assert "spec.inputs[0]" in (data_cluster_error(spec(inputs=["/data/x"])) or "")
    assert data_cluster_error(spec(inputs=["hf://datasets/a/b"])) is None


def test_run_sources_resolve_wait_and_fail():
    ready = {"status": {"phase": "Ready", "uri": "s3://shards/h/", "fingerprint": "sha256:f"}}
    r = resolve_sources({"web": "d1"}, {"d1": ready})
    assert r.uris == {"web": "s3://shards/h/"} and r.waiting is None and r.failed is None
    r = resolve_sources({"web": "d1", "code": "d2"}, {"d1": ready, "d2": {"status": {"phase": "Preparing"}}})
    assert r.waiting and "d2" in r.waiting and r.failed is None
    r = resolve_sources({"web": "d1"}, {"d1": None})
    assert "does not exist" in (r.waiting or "")
    r = resolve_sources({"web": "d1"}, {"d1": {"status": {"phase": "Failed", "message": "no 'text' column"}}})
    assert r.failed and "no 'text' column" in r.failed


def test_a_validation_target_naming_a_training_data_is_resolved_like_a_source():
    from trainkit.spec.models import DataSpec
    from trainkit_operator.data_decide import Resolution, apply_resolution

    class Spec:  # apply_resolution only needs `data` and model_copy
        def __init__(self, data):
            self.data = data

        def model_copy(self, update):
            return Spec(update["data"])

    data = DataSpec.model_validate(
        {
            "totalTokens": 4096,
            "sources": [{"name": "web", "dataset": "d1", "weight": 1.0}],
            "validationTargets": [{"name": "law", "dataset": "d2"}, {"name": "code", "uri": "s3://shards/code/"}],
        }
    )
    out = apply_resolution(
        Spec(data), Resolution({"web": "s3://shards/w/", "law": "s3://shards/l/"}, {"law": "sha256:l"})
    ).data
    assert [s.shards_uri for s in out.sources] == ["s3://shards/w/"]
    assert [(t.shards_uri, t.fingerprint) for t in out.validation_targets] == [
        ("s3://shards/l/", "sha256:l"),
        ("s3://shards/code/", None),
    ]


def test_a_source_needs_uri_or_dataset():
    assert SourceSpec.model_validate({"name": "a", "dataset": "finepdfs", "weight": 1.0}).uri is None
    with pytest.raises(ValidationError, match="set uri"):
        SourceSpec.model_validate({"name": "a", "weight": 1.0})


# ------------------------------------------------------- Secrets, stuck pods, stalls (the runs' rules, reused)
def preparing_obj(prev: TrainingDataStatus, **over) -> dict:
    return {**data_obj(**over), "status": prev.model_dump(by_alias=True, mode="json")}


RUNNING = {"metadata": {"name": "data-finepdfs"}, "status": {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}}


def test_hub_token_secret_errors_name_the_field_the_secret_and_the_key():
    from trainkit_operator import decide

    def error(state):
        return decide.secret_spec_error("hf-token", "t1", state, field="spec.hfTokenSecret", keys=("HF_TOKEN",))

    assert error("missing") == (
        "spec.hfTokenSecret: Secret 'hf-token' does not exist in namespace 't1'; create it with key HF_TOKEN"
    )
    assert error("lacks-keys").startswith("spec.hfTokenSecret: Secret 'hf-token' in namespace 't1' has no key HF_TOKEN")
    assert "403 Forbidden" in error("forbidden") and "rbac.secretNames" in error("forbidden")
    assert error("present") is None
    # The runs' message is unchanged by the generalisation.
    assert decide.secret_spec_error("s3", "t1", "missing").endswith("keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_a_secret_error_fails_it_until_the_secret_exists_then_it_prepares():
    why = "spec.hfTokenSecret: Secret 'hf-token' does not exist in namespace 't1'; create it with key HF_TOKEN"
    failed = decide_data(data_obj(), spec(), why, None, None, None, OperatorConfig(), NOW).status
    assert (failed.phase, failed.reason, failed.message) == ("Failed", "InvalidSpec", why)
    valid = next(c for c in failed.conditions if c.type == "SpecValid")
    assert (valid.status, valid.message) == ("False", why)
    # Nothing ran (no RayJob): the Failed status is re-evaluated, and once the Secret is there the prepare starts.
    again = decide_data(preparing_obj(failed), spec(), None, None, None, None, OperatorConfig(), NOW)
    assert again.action == "create" and again.status.phase == "Preparing"
    # A prepare that ran and failed stays Failed whatever happens next (final, as a run's AppFailed).
    ran = decide_data(
        data_obj(), spec(), None, {**RUNNING, "status": {"jobStatus": "FAILED"}}, None, None, OperatorConfig(), NOW
    ).status
    assert ran.phase == "Failed" and ran.ray_job_name == "data-finepdfs"
    assert decide_data(preparing_obj(ran), spec(), None, None, None, None, OperatorConfig(), NOW).status == ran


def test_pods_that_cannot_start_are_named_while_preparing():
    from trainkit_operator import decide

    pod = {
        "metadata": {"name": "data-finepdfs-head-x"},
        "status": {
            "containerStatuses": [
                {
                    "name": "ray-head",
                    "state": {
                        "waiting": {"reason": "CreateContainerConfigError", "message": "couldn't find key HF_TOKEN"}
                    },
                }
            ]
        },
    }
    starting = decide.starting_problem([pod], None)
    initializing = {"metadata": {"name": "data-finepdfs"}, "status": {"jobDeploymentStatus": "Initializing"}}
    st = decide_data(
        data_obj(), spec(), None, initializing, None, None, OperatorConfig(), NOW, starting=starting
    ).status
    assert (st.phase, st.reason) == ("Preparing", "PodsNotReady")
    assert st.message == "data-finepdfs-head-x/ray-head: CreateContainerConfigError: couldn't find key HF_TOKEN"
    # The Event rule of runs: a warning reason appearing (or going) while Preparing is an Event.
    prev = decide_data(data_obj(), spec(), None, initializing, None, None, OperatorConfig(), NOW).status
    assert decide.transition_event(prev, st) == ("Warning", "PodsNotReady", f"Preparing -> Preparing: {st.message}")
    assert decide.transition_event(st, prev)[0] == "Normal"
    created = decide_data(data_obj(), spec(), None, None, None, None, OperatorConfig(), NOW).status
    assert decide.transition_event(created, prev) is None  # RayJobCreated -> Preparing: no Event


def test_no_progress_past_the_deadline_turns_progressing_false_and_progress_resets_it():
    from trainkit_operator import decide

    s = spec(progressDeadlineSeconds=600)
    created = decide_data(data_obj(), s, None, None, None, None, OperatorConfig(), NOW).status
    assert created.last_progress_time == NOW
    one_file = {"filesDone": 1, "filesTotal": 4, "tokens": 50, "documents": 2}

    def at(prev, when, progress, state="read"):
        obj = preparing_obj(prev, progressDeadlineSeconds=600)
        return decide_data(obj, s, None, RUNNING, None, progress, OperatorConfig(), when, state).status

    def progressing(st):
        return next(c for c in st.conditions if c.type == "Progressing")

    quiet = at(created, "2026-01-01T00:10:00Z", None)  # exactly the deadline: not past it
    assert progressing(quiet).status == "True" and quiet.reason == "Preparing"
    stalled = at(quiet, "2026-01-01T00:10:01Z", None)
    assert (stalled.phase, stalled.reason, progressing(stalled).reason) == (
        "Preparing",
        "ProgressDeadlineExceeded",
        "ProgressDeadlineExceeded",
    )
    assert (
        progressing(stalled).status == "False" and "no progress since 2026-01-01T00:00:00Z, longer" in stalled.message
    )
    assert at(stalled, "2026-01-01T00:15:00Z", None) == stalled  # nothing new to write while nothing happens
    assert (
        "spec.progressDeadlineSeconds (600)" in stalled.message and "RayJob data-finepdfs: RUNNING" in stalled.message
    )
    assert decide.transition_event(quiet, stalled)[0] == "Warning"
    # Unreadable storage can neither show a stall nor end one (the counts were not read): the condition stays.
    assert progressing(at(quiet, "2026-01-01T01:00:00Z", None, "unreadable")).status == "True"
    unread = at(stalled, "2026-01-01T01:00:00Z", None, "unreadable")
    assert progressing(unread) == progressing(stalled) and unread.reason == "ProgressDeadlineExceeded"
    # A file finishing restarts the clock.
    moved = at(stalled, "2026-01-01T00:20:00Z", one_file)
    assert progressing(moved).status == "True" and moved.last_progress_time == "2026-01-01T00:20:00Z"
    assert moved.reason == "Preparing" and moved.progress.files_done == 1
    assert progressing(at(moved, "2026-01-01T00:29:00Z", one_file)).status == "True"
    assert progressing(at(moved, "2026-01-01T00:31:00Z", one_file)).status == "False"


def test_the_prepare_pods_get_the_platforms_hub_endpoint():
    s = spec(inputs=["hf://datasets/org/name"])
    cfg = OperatorConfig.from_env({"TRAINKIT_HF_ENDPOINT": "https://hub.internal.example"})
    env = build_data_rayjob(data_obj(), s, cfg)["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    assert {"name": "HF_ENDPOINT", "value": "https://hub.internal.example"} in env
    assert "HF_ENDPOINT" not in json.dumps(build_data_rayjob(data_obj(), s, OperatorConfig()))
    with pytest.raises(ValueError, match="TRAINKIT_HF_ENDPOINT"):
        OperatorConfig.from_env({"TRAINKIT_HF_ENDPOINT": "ftp://hub"})
