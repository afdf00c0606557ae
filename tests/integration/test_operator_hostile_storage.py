"""The operator's reads of a run's storage against hostile S3 servers (tests/support/hostile_s3.py): silent,
slow (trickles bytes), 5xx, redirect to another host, huge bodies (200 MiB, no Content-Length).

For each behaviour, each record the operator reads (progress.json GET, the checkpoints listing, the eval
listing) fails within the reconcile's deadline, in the read pool (not the calling thread), with a reason,
memory bounded; a redirect is never followed. Figures: 5 behaviours x 3 records = 15 reads refused.
"""

from __future__ import annotations

import threading
import time
import tracemalloc

import pytest

from trainkit.bench.hostile_s3 import BEHAVIOURS, Hostile, HostileS3
from trainkit import storage
from trainkit.spec.load import parse_spec
from trainkit_operator import decide, observe
from trainkit_operator.config import OperatorConfig

from test_operator_support import seed_doc

KEY = storage.Credentials("AKIATENANTB000000001", "tenant-b-secret")
OUT = "s3://tenant-b/runs/r1"
READ_TIMEOUT, DEADLINE = 1.0, 3.0


def _config(endpoint: str, **kw) -> OperatorConfig:
    return OperatorConfig(
        default_storage_endpoint=endpoint, read_timeout=READ_TIMEOUT, reads_deadline=DEADLINE, read_workers=2, **kw
    )


def _spec():
    spec, _ = parse_spec(seed_doc("r1", bucket="s3://tenant-b")["spec"])
    return spec


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_hostile_storage_reads_end_within_the_deadline_with_a_reason(behaviour):
    honest = Hostile(objects={(KEY.access_key_id, "tenant-b/runs/r1/progress.json"): b'{"step": 5}'})
    with HostileS3(honest) as other_host, HostileS3(Hostile(behaviour=behaviour)) as hostile:
        hostile.state.redirect_to = other_host.endpoint.replace("127.0.0.1", "localhost")
        config = _config(hostile.endpoint)
        options = observe.options_for(_spec(), config, KEY)
        caller = threading.current_thread().name
        storage._guarded_client(options)  # botocore's models (~20 MB, once per process) are not the read's memory
        tracemalloc.start()
        started = time.monotonic()
        seen = observe.read_pool(config).observe("tenant-b", OUT, options, config.reads_deadline)
        took = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert took < DEADLINE + observe.DEADLINE_GRACE_SECONDS + 0.5, took
    assert seen.progress is None and seen.checkpoint is None and seen.eval_summary is None
    assert seen.problems, "a failed read must say why (the StorageReadable condition)"
    assert peak < 16 << 20, f"{behaviour}: {peak} bytes held while reading"
    # the reads ran in the pool: the handler thread only waited
    assert all(name != caller for name in [t.name for t in threading.enumerate() if t.name.startswith("storage-read")])
    # never followed to another host, never sent the key elsewhere
    assert other_host.state.requests == []
    # the hostile server saw only this run's key
    assert {k for k, _, _ in hostile.state.requests} <= {KEY.access_key_id}
    if behaviour == "huge":
        assert any("too large" in p for p in seen.problems), seen.problems
    # the pool is free again for the tenant (the reads ended themselves)
    time.sleep(0.5)
    again = observe.read_pool(config).observe("tenant-b", OUT, options, 0.5)
    assert not any("still running" in p for p in again.problems or ()), again.problems


def test_a_silent_tenant_does_not_hold_another_tenants_reads():
    good_state = Hostile(objects={(KEY.access_key_id, "tenant-b/runs/r1/progress.json"): b'{"step": 7}'})
    with HostileS3(Hostile(behaviour="silent")) as silent, HostileS3(good_state) as good:
        config = _config(silent.endpoint, allowed_endpoints=(good.endpoint,))
        pool = observe.read_pool(config)
        bad = observe.options_for(_spec(), config, KEY)
        stuck = threading.Thread(target=pool.observe, args=("tenant-a", OUT, bad, DEADLINE))
        stuck.start()
        time.sleep(0.2)
        # tenant-a's second reconcile is refused at once (its earlier reads still run) ...
        started = time.monotonic()
        second = pool.observe("tenant-a", OUT, bad, DEADLINE)
        assert time.monotonic() - started < 0.5 and "still running" in second.problems[0]
        # ... while tenant-b reads its own store meanwhile
        ok = storage.StorageOptions(endpoint=good.endpoint, credentials=KEY, guard=observe.read_guard(config))
        seen = pool.observe("tenant-b", OUT, ok, DEADLINE)
        assert seen.progress is not None and seen.progress["step"] == 7
        stuck.join(DEADLINE + 3)
        assert not stuck.is_alive()


def test_a_failed_read_keeps_the_last_status_and_says_why():
    run = {"metadata": {"name": "r1", "namespace": "b", "generation": 1}, "spec": {}}
    spec = _spec()
    rayjob = {"metadata": {"name": "r1"}, "status": {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}}
    good = decide.summarize(
        run,
        decide.Observation(rayjob=rayjob, progress={"step": 40, "loss": 3.0}, storage_problems=()),
        "t1",
        decide.SpecView(spec=spec),
    )
    run["status"] = decide.status_patch(good)
    problem = "s3://tenant-b/runs/r1/progress.json is too large: 209715200 bytes > the 1048576-byte cap"
    later = decide.summarize(
        run, decide.Observation(rayjob=rayjob, storage_problems=(problem,)), "t2", decide.SpecView(spec=spec)
    )
    assert later.progress == good.progress and later.progress is not None and later.progress.step == 40
    (cond,) = [c for c in later.conditions if c.type == "StorageReadable"]
    assert cond.status == "False" and "progress.json is too large" in cond.message
    run["status"] = decide.status_patch(later)
    healed = decide.summarize(
        run,
        decide.Observation(rayjob=rayjob, progress={"step": 41}, storage_problems=()),
        "t3",
        decide.SpecView(spec=spec),
    )
    (cond,) = [c for c in healed.conditions if c.type == "StorageReadable"]
    assert cond.status == "True" and healed.progress is not None and healed.progress.step == 41
