"""A pack's driver on real parts: three packed runs trained AT ONCE by Ray Train on one local Ray (the test
session's), each on 1/3 of the CPUs, from a moto S3 server and real GPT-2 token shards; one member cannot start.

What it shows: each member trains as its own run (its own owner.json, spec.json, progress, metrics, checkpoints,
and logs under its own output) while the others train beside it; the member that fails gets a
Failed outcome under its own output with the cause, and the others still succeed; a second attempt of the pack
(KubeRay retrying its RayJob) runs none of the members that already have an outcome.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from trainkit import artifacts, storage
from trainkit.spec.packing import PackMember, TrainingPack, pack_document, packed_share
from trainkit.train.launch import RunIdentity, output_owner

pytestmark = pytest.mark.slow

STEPS = 6


def member_spec(sources: dict, output: str, weights: tuple[float, ...]) -> dict:
    return {
        "model": {"preset": "tiny"},
        "data": {
            "seqLength": 32,
            "totalTokens": STEPS * 4 * 32,
            "whenExhausted": "repeat",
            "sources": [{"name": n, "uri": u, "weight": w} for (n, u), w in zip(sources.items(), weights)],
        },
        "training": {
            "microBatchSize": 4,
            "globalBatchSize": 4,
            "precision": "fp32",
            "seed": 3,
            "learningRate": {"peak": 3e-3, "final": 3e-4, "warmupSteps": 1},
            "logEverySteps": 3,
        },
        "checkpoint": {"everySteps": STEPS, "keep": 1},
        "eval": {"validationTokens": 0},  # the test shards have no held-out split
        "resources": {"workers": 1, "gpusPerWorker": 0, "cpusPerWorker": 2, "memoryPerWorker": "4Gi"},
        "output": {"uri": output},
    }


def started_at(output: str) -> datetime:
    """When the member's driver started (the header line every log stream begins with)."""
    head = storage.read_bytes(artifacts.log_segment_uri(output, artifacts.DRIVER_LOG, 0)).decode()
    return datetime.fromisoformat(re.search(r"log started (\S+)", head).group(1).replace("Z", "+00:00"))


def finished_at(outcome: dict) -> datetime:
    return datetime.fromisoformat(outcome["finishedAt"].replace("Z", "+00:00"))


def test_a_pack_trains_its_runs_at_once_each_as_its_own_run_and_one_failure_stays_alone(ray_session, bucket, sources):
    from trainkit.train.pack import pack_exit_code, run_pack

    base = f"{bucket}/sweeps/packed"
    missing = {**sources, "edu": f"{bucket}/shards/not-prepared"}  # this member's preflight fails
    members = [
        PackMember(name="mix-000", uid="uid-0", spec=member_spec(sources, f"{base}/mix-000", (0.5, 0.3, 0.2))),
        PackMember(name="mix-001", uid="uid-1", spec=member_spec(sources, f"{base}/mix-001", (0.2, 0.3, 0.5))),
        PackMember(name="mix-002", uid="uid-2", spec=member_spec(missing, f"{base}/mix-002", (0.3, 0.3, 0.4))),
    ]
    share = packed_share(2, 0, 3)
    pack = TrainingPack.model_validate(pack_document("packed-p000", "default", members, share))
    lines: list[str] = []
    outcomes = run_pack(pack, max_failures=0, connect=lambda: None, log=lines.append)

    assert {n: o["state"] for n, o in outcomes.items()} == {
        "mix-000": "Succeeded",
        "mix-001": "Succeeded",
        "mix-002": "Failed",
    }
    assert pack_exit_code(outcomes) == 1
    ok = [f"{base}/mix-000", f"{base}/mix-001"]
    for m, out in zip(members, ok):
        owner = output_owner(parse(m.spec), RunIdentity(m.uid, "default", m.name)).owner
        assert json.loads(storage.read_bytes(artifacts.run_file(out, artifacts.OWNER)))["owner"] == owner
        outcome = artifacts.read_outcome(out)
        assert outcome["owner"] == owner == f"k8s:default/{m.name}/{m.uid}"
        assert outcome["step"] == STEPS and artifacts.latest_complete_checkpoint(out) == STEPS
        assert outcome["progress"]["step"] == STEPS and outcome["progress"] == artifacts.read_progress(out)
        written = json.loads(storage.read_bytes(artifacts.run_file(out, artifacts.SPEC)))
        assert [s["weight"] for s in written["data"]["sources"]] == [s["weight"] for s in m.spec["data"]["sources"]]
        assert set(artifacts.list_log_segments(out)) >= {"driver", "worker-0"}
    # Each trained its own mixture: the runs' data differ.
    digests = [artifacts.read_metrics(out)[-1]["streamDigest"] for out in ok]
    assert digests[0] != digests[1]
    # At once, not one after another: each started before the other finished.
    starts = [started_at(out) for out in ok]
    ends = [finished_at(outcomes[m.name]) for m in members[:2]]
    assert max(starts) < min(ends)

    # The failed member's cause is under its own output (its prefix claimed for it); it wrote nothing else.
    failed = artifacts.read_outcome(f"{base}/mix-002")
    assert "preflight" in failed["message"] and "data.sources[2].uri" in failed["message"]
    left = storage.list_sizes(f"{base}/mix-002")
    assert set(left) == {artifacts.OWNER, artifacts.OUTCOME}

    # KubeRay retrying the pack's RayJob (a new cluster): members with an outcome are not run again.
    again = run_pack(pack, max_failures=0, connect=lambda: None, log=lines.append)
    assert again == outcomes
    assert sum("not run again" in line for line in lines) == 3


def parse(spec: dict):
    from trainkit.spec import parse_spec

    return parse_spec(spec)[0]


def test_the_pack_entrypoint_refuses_a_bad_pack_document_with_the_field_named(tmp_path, capsys):
    from trainkit.jobs.pack import main

    path = tmp_path / "pack.json"
    path.write_text(json.dumps({"apiVersion": "trainkit.dev/v1alpha1", "kind": "TrainingPack", "metadata": {}}))
    assert main(["--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert "metadata.name" in err and "spec" in err and "Traceback" not in err
