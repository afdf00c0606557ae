"""Packed proxy runs (TrainingSweep spec.packing), the pure parts: the spec's rules, which runs form which pack,
the pack's objects (RayJob, ConfigMap, NetworkPolicy) and a packed run's phase."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from trainkit.spec.load import SpecError, parse_sweep
from trainkit.spec.packing import TrainingPack, pack_members, pack_name, packed_share
from trainkit.spec.sweep_status import STATUS_LEADERBOARD_ROWS
from trainkit_operator.builders import SPEC_HASH_ANNOTATION, SPEC_KEY, SWEEP_LABEL
from trainkit_operator.config import OperatorConfig
from trainkit_operator.decide import operator_refusal, packed_decision
from trainkit_operator.packs import (
    PACK_ENTRYPOINT,
    PACK_LABEL,
    PackView,
    pack_of_run,
    packed_phase,
)
from trainkit_operator.sweeps import decide_packs, decide_sweep, full_leaderboard_doc, leaderboard_write_due

REPO = Path(__file__).resolve().parents[2]
PACKED = yaml.safe_load((REPO / "jobs" / "sweep-regmix-packed.yaml").read_text())
CONFIG = OperatorConfig(trainer_image="ghcr.io/trainkit/trainer:test")


def sweep_doc(runs: int = 7, k: int = 3, parallelism: int = 6, **spec) -> dict:
    doc = copy.deepcopy(PACKED)
    doc["metadata"].update({"name": "mix", "namespace": "team-a", "uid": "sweep-uid-1", "generation": 1})
    doc["spec"].update({"parallelism": parallelism, "maxRuns": 100, "packing": {"runsPerCluster": k}})
    doc["spec"]["mixtures"] = {"dirichlet": {"samples": runs, "seed": 1}}
    doc["spec"].update(spec)
    return doc


def created(manifests: list[dict], uid_prefix: str = "run-uid") -> list[dict]:
    """What the API server gives back: each run with a uid."""
    out = copy.deepcopy(manifests)
    for i, run in enumerate(out):
        run["metadata"]["uid"] = f"{uid_prefix}-{run['metadata']['name']}-{i}"
    return out


def with_phase(run: dict, phase: str, average: float | None = None) -> dict:
    run = copy.deepcopy(run)
    run["status"] = {"phase": phase, "progress": {"loss": 3.0}, "eval": {"average": average, "tasks": {}}}
    return run


def parse(doc):
    return parse_sweep(doc, "sweep.yaml")


# ------------------------------------------------------------------------------------------ the spec
def test_the_regmix_example_validates_and_packs_512_runs_into_32_rayjobs():
    sweep = parse(PACKED)
    assert sweep.spec.packing.runs_per_cluster == 16
    packs = pack_members(512, 16)
    assert len(packs) == 32 and [len(p) for p in packs] == [16] * 32
    assert pack_name("regmix-512", 31) == "regmix-512-p031"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"parallelism": 2}, "parallelism 2 is below packing.runsPerCluster 3"),
        ({"packing": {"runsPerCluster": 1}}, "runsPerCluster"),
        ({"packing": {"runsPerCluster": 65}}, "runsPerCluster"),
    ],
)
def test_packing_rules_name_the_field(change, expected):
    with pytest.raises(SpecError) as e:
        parse(sweep_doc(**change))
    assert expected in str(e.value)


def test_a_packing_sweep_name_leaves_room_for_the_pack_suffix():
    doc = sweep_doc()
    doc["metadata"]["name"] = "a" * 36  # fine without packing (runs add -NNN), one too long with it
    with pytest.raises(SpecError, match="the most a packing sweep may have"):
        parse(doc)
    del doc["spec"]["packing"]
    doc["spec"]["parallelism"] = 2
    parse(doc)


def test_each_packed_run_must_fit_its_share_of_the_pods_memory():
    doc = sweep_doc(k=16, parallelism=16)
    doc["spec"]["template"]["resources"].update({"gpusPerWorker": 0, "memoryPerWorker": "16Gi"})
    with pytest.raises(SpecError, match=r"each packed run gets 1/16 of template.resources.memoryPerWorker 16Gi"):
        parse(doc)


def test_gpu_shares_must_be_fractions_or_whole_gpus_and_training_data_sources_cannot_be_packed():
    doc = sweep_doc(k=2, parallelism=2)
    doc["spec"]["template"]["resources"]["gpusPerWorker"] = 3
    with pytest.raises(SpecError, match="1.5 GPUs per packed run"):
        parse(doc)
    doc = sweep_doc()
    doc["spec"]["template"]["data"]["sources"][0] = {"name": "finepdfs", "dataset": "finepdfs", "weight": 0.5}
    with pytest.raises(SpecError, match="cannot be packed"):
        parse(doc)


def test_packed_share_divides_the_pod_and_never_adds_up_to_more():
    assert packed_share(8, 1, 16) == {"CPU": 0.5, "GPU": 0.0625}
    share = packed_share(1, 1, 3)
    assert share["CPU"] * 3 <= 1 and share["GPU"] * 3 <= 1 and share["GPU"] > 0.333
    assert packed_share(2, 0, 4) == {"CPU": 0.5}


# ------------------------------------------------------------------------- which runs are created
def test_runs_are_created_a_whole_pack_at_a_time_within_parallelism_and_labelled():
    d = decide_sweep(sweep_doc(runs=7, k=3, parallelism=6), [])
    names = [r["metadata"]["name"] for r in d.create]
    assert names == [f"mix-{i:03d}" for i in range(6)]  # two whole packs; the third would exceed 6
    assert [pack_of_run(r) for r in d.create] == ["mix-p000"] * 3 + ["mix-p001"] * 3
    for r in d.create:
        (ref,) = r["metadata"]["ownerReferences"]
        assert ref["uid"] == "sweep-uid-1" and ref["kind"] == "TrainingSweep" and ref["controller"]
        assert r["metadata"]["labels"][SWEEP_LABEL] == "mix"
    assert d.status.packs.model_dump() == {"runs_per_cluster": 3, "total": 3, "created": 0}

    runs = created(d.create)
    assert decide_sweep(sweep_doc(runs=7, k=3, parallelism=6), runs).create == []
    # One pack's runs finish: the last pack (one run) starts.
    runs = [with_phase(r, "Succeeded", 0.3) if pack_of_run(r) == "mix-p000" else r for r in runs]
    d = decide_sweep(sweep_doc(runs=7, k=3, parallelism=6), runs)
    assert [(r["metadata"]["name"], pack_of_run(r)) for r in d.create] == [("mix-006", "mix-p002")]


def test_a_pack_half_created_before_a_restart_is_completed_first_whatever_the_slots_say():
    first = created(decide_sweep(sweep_doc(runs=7, k=3, parallelism=3), []).create)
    assert len(first) == 3
    partial = first[:2]  # the operator stopped between two creates
    d = decide_sweep(sweep_doc(runs=7, k=3, parallelism=3), partial)
    assert [r["metadata"]["name"] for r in d.create] == ["mix-002"]


def test_the_status_carries_the_top_rows_and_the_whole_leaderboard_goes_to_storage():
    doc = sweep_doc(runs=30, k=10, parallelism=30, rankBy="eval.average")
    doc["spec"]["template"]["eval"] = {"atEnd": True, "tasks": [{"name": "hellaswag"}]}
    runs = created(decide_sweep(doc, []).create)
    runs = [with_phase(r, "Succeeded", average=i / 100) for i, r in enumerate(runs)]
    d = decide_sweep(doc, runs)
    assert len(d.status.leaderboard) == STATUS_LEADERBOARD_ROWS
    assert d.status.leaderboard[0].run == "mix-029" and d.status.best.run == "mix-029"
    assert [r["run"] for r in d.leaderboard["rows"]][:2] == ["mix-029", "mix-028"] and len(d.leaderboard["rows"]) == 30
    status_bytes = len(json.dumps(d.status.model_dump(by_alias=True, exclude_none=True, mode="json")))
    assert status_bytes < 16_000
    same = full_leaderboard_doc("mix", "eval.average", d.status.leaderboard)
    assert same["digest"] != d.leaderboard["digest"]  # the digest names the content


def test_the_whole_leaderboard_is_rewritten_on_change_at_most_every_interval_and_at_the_end():
    from trainkit.spec.sweep_status import FullLeaderboard

    prev = FullLeaderboard(uri="s3://b/x/leaderboard.json", rows=3, digest="aaa", written_at="2026-12-01T10:00:00Z")
    assert not leaderboard_write_due(prev, "aaa", "2026-12-01T11:00:00Z", final=True)  # unchanged
    assert not leaderboard_write_due(prev, "bbb", "2026-12-01T10:00:10Z", final=False)  # changed, too soon
    assert leaderboard_write_due(prev, "bbb", "2026-12-01T10:00:31Z", final=False)
    assert leaderboard_write_due(prev, "bbb", "2026-12-01T10:00:01Z", final=True)  # the sweep ended
    assert leaderboard_write_due(None, "bbb", "2026-12-01T10:00:01Z", final=False)


# ------------------------------------------------------------------------------------ the packs
def test_a_pack_is_built_only_once_all_its_runs_exist_with_their_uids():
    doc = sweep_doc(runs=7, k=3, parallelism=6)
    runs = created(decide_sweep(doc, []).create)
    packs = decide_packs(doc, parse(doc), planned(doc), runs[:5], [], CONFIG).create  # mix-p001 has 2 of its 3 runs
    assert [p.name for p in packs] == ["mix-p000"]


def planned(doc):
    """The packs the sweep's plan stands for (SweepDecision.packs: what the reconcile hands decide_packs)."""
    return decide_sweep(doc, []).packs


def built_packs(doc=None):
    doc = doc or sweep_doc(runs=7, k=3, parallelism=6)
    runs = created(decide_sweep(doc, []).create)
    return doc, runs, decide_packs(doc, parse(doc), planned(doc), runs, [], CONFIG).create


def test_pack_objects_are_owned_by_the_sweep_and_name_each_member_with_its_uid_and_spec():
    doc, runs, packs = built_packs()
    assert [p.name for p in packs] == ["mix-p000", "mix-p001"]
    pack = packs[0]
    for obj in (pack.configmap, pack.rayjob, pack.network_policy):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "trainkit.dev/v1alpha1",
            "kind": "TrainingSweep",
            "name": "mix",
            "uid": "sweep-uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert obj["metadata"]["namespace"] == "team-a"
    digest = pack.rayjob["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    assert pack.configmap["metadata"]["name"] == f"mix-p000-spec-{digest}"  # immutable, named by its content
    assert pack.configmap["immutable"] is True
    cluster = pack.rayjob["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    mounted = {v["configMap"]["name"] for p in pods for v in p["spec"]["volumes"] if "configMap" in v}
    assert mounted == {pack.configmap["metadata"]["name"]}
    document = TrainingPack.model_validate(json.loads(pack.configmap["data"][SPEC_KEY]))
    assert [(m.name, m.uid) for m in document.spec.runs] == [
        (r["metadata"]["name"], r["metadata"]["uid"]) for r in runs[:3]
    ]
    assert document.spec.runs[1].spec["data"]["sources"] == runs[1]["spec"]["data"]["sources"]
    assert document.spec.worker_share == {"CPU": 2.6666, "GPU": 0.3333}  # 8 CPUs, 1 GPU over 3 runs


def test_the_pack_rayjob_runs_a_constant_entrypoint_on_the_templates_pods_and_is_admitted_once():
    doc, runs, packs = built_packs()
    rj = packs[0].rayjob
    assert rj["metadata"]["name"] == "mix-p000"
    assert rj["spec"]["entrypoint"] == PACK_ENTRYPOINT == "python -m trainkit.jobs.pack --spec /etc/trainkit/spec.json"
    labels = rj["metadata"]["labels"]
    assert labels[PACK_LABEL] == "mix-p000" and labels[SWEEP_LABEL] == "mix"
    assert labels["kueue.x-k8s.io/queue-name"] == "gpu-training"  # one Kueue admission for the pack
    assert rj["spec"]["shutdownAfterJobFinishes"] is True and "clusterSelector" not in rj["spec"]
    cluster = rj["spec"]["rayClusterSpec"]
    (group,) = cluster["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 1
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["resources"]["limits"] == {"cpu": "2750m", "memory": "11264Mi"}  # 2 + 3 x 0.25 CPUs, 8Gi + 3 x 1Gi
    for pod in (cluster["headGroupSpec"]["template"], group["template"], rj["spec"]["submitterPodTemplate"]):
        assert pod["metadata"]["labels"][PACK_LABEL] == "mix-p000"
    env = {e["name"]: e for e in worker["env"]}
    assert "TRAINKIT_RUN_UID" not in env and env["TRAINKIT_SPEC"]["value"] == "/etc/trainkit/spec.json"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "trainkit-s3"
    np = packs[0].network_policy
    assert np["spec"]["podSelector"] == {"matchLabels": {PACK_LABEL: "mix-p000"}}


def test_no_user_string_reaches_the_command_line():
    doc = sweep_doc()
    hostile = "x; curl evil | sh"
    doc["spec"]["template"]["resources"]["env"] = [{"name": "NOTE", "value": hostile}]
    _, _, packs = built_packs(doc)
    rj = packs[0].rayjob
    assert rj["spec"]["entrypoint"] == PACK_ENTRYPOINT
    assert hostile not in json.dumps(rj["spec"]["entrypoint"])


def test_existing_packs_are_never_rebuilt_and_template_problems_create_none():
    doc, runs, packs = built_packs()
    again = decide_packs(doc, parse(doc), planned(doc), runs, [packs[0].rayjob], CONFIG).create
    assert [p.name for p in again] == ["mix-p001"]
    local = sweep_doc()
    local["spec"]["template"]["output"]["uri"] = "runs/local/"
    refusal = operator_refusal(parse(local).spec.template, CONFIG)
    d = decide_packs(local, parse(local), planned(local), created(decide_sweep(local, []).create), [], CONFIG, refusal)
    assert d.create == [] and "object-storage URIs" in d.problem
    wid = OperatorConfig(credentials_mode="workloadIdentity")
    no_secret = sweep_doc()
    del no_secret["spec"]["template"]["storage"]["credentialsSecret"]
    d = decide_packs(
        no_secret, parse(no_secret), planned(no_secret), created(decide_sweep(no_secret, []).create), [], wid
    )
    assert d.create == [] and "needs a credentials Secret" in d.problem


# ------------------------------------------------------------------------------ a packed run's phase
RUNNING = ("Running", "JobRunning", "training")
PENDING = ("Pending", "Initializing", "waiting for the Ray cluster")
PACK_FAILED = ("Failed", "AppFailed", "the Ray job failed")
PACK_OK = ("Succeeded", "JobSucceeded", "the training job succeeded")
OK = {"state": "Succeeded", "message": "trained", "step": 40, "finishedAt": "t"}
BAD = {"state": "Failed", "message": "training failed: RuntimeError: boom", "step": None, "finishedAt": "t"}


@pytest.mark.parametrize(
    "base, view, exists, expected",
    [
        (PENDING, PackView("p"), False, ("Pending", "WaitingForPack")),
        (PENDING, PackView("p"), True, ("Pending", "Initializing")),
        (RUNNING, PackView("p", None, True), True, ("Running", "JobRunning")),
        # The run's own outcome decides, while the pack still runs and whatever the pack's end says:
        (RUNNING, PackView("p", OK, True), True, ("Succeeded", "RunSucceeded")),
        (RUNNING, PackView("p", BAD, True), True, ("Failed", "RunFailed")),
        (PACK_FAILED, PackView("p", OK, True), True, ("Succeeded", "RunSucceeded")),
        (PACK_OK, PackView("p", BAD, True), True, ("Failed", "RunFailed")),
        # The pack ended and this run has no outcome: Failed, but only once the read went through.
        (PACK_FAILED, PackView("p", None, True), True, ("Failed", "PackEndedWithoutOutcome")),
        (PACK_FAILED, PackView("p", None, False), True, ("Running", "ReadingOutcome")),
        # The pack's RayJob was deleted: an outcome still decides.
        (("Failed", "RayJobDeleted", "gone"), PackView("p", OK, True), False, ("Succeeded", "RunSucceeded")),
        (("Failed", "RayJobDeleted", "gone"), PackView("p", None, True), False, ("Failed", "RayJobDeleted")),
    ],
)
def test_packed_phase(base, view, exists, expected):
    assert packed_phase(base, view, exists)[:2] == expected


def test_a_packed_run_refuses_a_pack_rayjob_its_own_sweep_does_not_control():
    doc, runs, packs = built_packs()
    run, rj = runs[0], packs[0].rayjob
    run["metadata"]["ownerReferences"] = [{**run["metadata"]["ownerReferences"][0]}]
    assert packed_decision(run, rj, None).action == "none"
    other = copy.deepcopy(rj)
    other["metadata"]["ownerReferences"][0]["uid"] = "another-sweep"
    assert packed_decision(run, other, None).action == "conflict"
    assert packed_decision(run, None, None).action == "none"


@pytest.mark.parametrize("tag", ["v1.4.2", "v1.7.0"])
def test_the_pack_rayjob_is_stored_whole_by_kuberays_own_schema(tag):
    """Pruned and type-checked by KubeRay's RayJob CRD (tests/data/kuberay: trimmed from the upstream
    ray.io_rayjobs.yaml of each supported version): nothing dropped, nothing refused."""
    from support import kuberay_schema, openapi

    config = OperatorConfig(trainer_image="img", ray_token_auth=kuberay_schema.has_token_auth(tag))
    doc = sweep_doc(runs=4, k=2, parallelism=4)
    doc["spec"]["template"]["resources"]["env"] = [{"name": "HF_HUB_OFFLINE", "value": "1"}]
    runs = created(decide_sweep(doc, []).create)
    (pack, _) = decide_packs(doc, parse(doc), planned(doc), runs, [], config).create
    schema = kuberay_schema.load(tag)
    kept, dropped = openapi.prune(schema, pack.rayjob)
    assert dropped == [] and kept == pack.rayjob
    assert openapi.validate_schema(schema, openapi.apply_defaults(schema, kept)) == []
    # Kueue's RayJob webhook: shutdownAfterJobFinishes, no clusterSelector, at most 8 pod sets (head + groups).
    spec = pack.rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and "clusterSelector" not in spec
    assert 1 + len(spec["rayClusterSpec"]["workerGroupSpecs"]) <= 8


# ------------------------------------------------------------------ packing with search rounds (issue 15 A + B)
def test_each_search_round_is_packed_on_its_own_and_the_confirmation_run_never_is():
    """Round 0's 5 runs make packs p000 (3) and p001 (2); round 1's 3 runs, planned only once round 0 ended,
    make p002; packs already made never change. The confirmation run (full scale) gets no pack label: it runs
    on a RayJob of its own. A packed run's held-out loss reaches the leaderboard from its status as any run's."""
    doc = sweep_doc(runs=5, k=3, parallelism=6, rankBy="val.mean")
    doc["spec"]["template"]["eval"]["validationTokens"] = 1024
    doc["spec"].update(search={"rounds": 2, "runsPerRound": 3, "stopWhenMovedBelow": 0}, confirm={})
    doc["spec"]["recommend"] = {"model": "linear"}
    first = decide_sweep(doc, [])
    assert first.packs == {"mix-p000": ["mix-000", "mix-001", "mix-002"], "mix-p001": ["mix-003", "mix-004"]}
    assert [r["metadata"]["labels"][PACK_LABEL] for r in first.create] == ["mix-p000"] * 3 + ["mix-p001"] * 2

    def done(run: dict, i: int) -> dict:
        run = with_phase(run, "Succeeded")
        run["status"]["validation"] = {"step": 10, "mean": 3.0 + i / 10, "sources": {}}
        run["metadata"]["ownerReferences"] = [{"kind": "TrainingSweep", "uid": "sweep-uid-1", "name": "mix"}]
        return run

    runs = [done(r, i) for i, r in enumerate(created(first.create))]
    second = decide_sweep(doc, runs)
    assert {k: v for k, v in second.packs.items() if k != "mix-p002"} == first.packs
    assert second.packs["mix-p002"] == ["mix-005", "mix-006", "mix-007"]
    assert [r["metadata"]["labels"][PACK_LABEL] for r in second.create] == ["mix-p002"] * 3
    assert [row.value for row in second.status.leaderboard[:2]] == [3.0, 3.1]
    assert second.status.packs.total == 3 and second.status.packs.created == 2

    runs += [done(r, 5 + i) for i, r in enumerate(created(second.create))]
    third = decide_sweep(doc, runs)
    assert [r["metadata"]["name"] for r in third.create] == ["mix-target"]
    assert PACK_LABEL not in third.create[0]["metadata"]["labels"]
    assert third.packs == second.packs


def test_an_outcome_carries_the_runs_last_held_out_loss_and_a_bad_copy_is_dropped_not_the_outcome():
    from trainkit import artifacts
    from trainkit_operator.observe import ended_observation

    line = {"step": 6, "tokens": 768, "sources": {"web": {"loss": 3.5, "tokens": 512}}, "mean": 3.5}
    doc = artifacts.outcome_doc("Succeeded", "trained", 6, "2026-12-06T10:00:00Z", "k8s:a/b/c", validation=line)
    parsed = artifacts.parse_outcome(json.loads(json.dumps(doc)), "outcome.json")
    assert parsed["validation"] == line
    assert ended_observation("s3://bucket/run", parsed).validation == line
    bad = artifacts.parse_outcome({**doc, "validation": {"step": "x", "sources": []}}, "outcome.json")
    assert "validation" not in bad and bad["state"] == "Succeeded"
