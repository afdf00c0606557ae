"""The bad-input campaign (`trainkit bench safety`) as a test: every generated hostile spec and every damaged
artifact gets a clear error, is skipped, or is read; none raises, prints a traceback, or passes its per-case
time or memory cap; every read the operator makes of a hostile S3 server (silent, slow, 5xx, redirect, huge;
all on 127.0.0.1) ends in a StorageError within its deadline, never followed elsewhere."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def _bad(tally) -> dict:
    from trainkit.bench.safety import BAD_OUTCOMES

    return {o: n for o, n in tally.outcomes.items() if o in BAD_OUTCOMES}


def test_hostile_specs_and_damaged_artifacts_are_all_handled():
    from trainkit.bench.safety import SPEC_MEMORY_MIB, run_campaign

    tallies = run_campaign(specs=300, cli_sample=3, seed=13, with_storage=False)
    assert tallies["specs"].cases >= 300 and tallies["artifacts"].cases >= 100
    for name, tally in tallies.items():
        assert not _bad(tally), (name, _bad(tally), tally.bad[:10])
    assert tallies["specs"].outcomes["clear error"] > 250  # the mutations really are hostile
    assert tallies["artifacts"].outcomes["clear error"] + tallies["artifacts"].outcomes["ignored (skipped)"] > 60
    assert 0 < tallies["specs"].peak_mib < SPEC_MEMORY_MIB  # each case was measured in its own child


def test_a_spec_case_past_its_caps_is_stopped_and_counted():
    """The caps are real: a case that loops is killed at the CPU cap, one that blocks at the wall-time cap, one
    that balloons meets the memory cap."""
    import time

    from trainkit.bench.safety import run_capped

    def spin():
        while True:
            pass

    assert run_capped(spin, cpu_seconds=1, memory_mib=64, seconds=120).stopped == "cpu cap"
    assert run_capped(lambda: time.sleep(60), cpu_seconds=5, memory_mib=64, seconds=0.5).stopped == "time cap"
    assert run_capped(lambda: len(bytearray(256 << 20)), cpu_seconds=5, memory_mib=64).stopped == "memory cap"
    held: list[bytes] = []  # still resident when the child measures, however lazily its kernel tracks the peak
    fine = run_capped(lambda: held.append(b"x" * (16 << 20)) or len(held[0]), cpu_seconds=5, memory_mib=64)
    assert fine.value == 16 << 20 and fine.stopped is None and fine.peak_mib >= 15 and fine.cpu < 5


def test_every_operator_read_of_a_hostile_server_is_a_storage_error():
    """The storage group of the campaign, with a short guard so it stays quick: 5 behaviours x 5 reads (GETs,
    the checkpoints and eval listings, the newest complete checkpoint). On the code before the guarded
    listing went through `_guarded_operation`, 12 of these were botocore errors or a RecursionError."""
    from trainkit import storage
    from trainkit.bench.hostile_s3 import BEHAVIOURS
    from trainkit.bench.safety import Tally, run_storage_group, storage_reads

    tally = Tally()
    run_storage_group(storage.ReadGuard(request_deadline=0.3, connect_timeout=0.3), tally)
    assert tally.cases == len(BEHAVIOURS) * len(storage_reads()) == 25
    assert not _bad(tally), (_bad(tally), tally.bad)
    assert tally.outcomes["storage error"] == 25


def test_the_trainers_and_the_clis_reads_of_a_hostile_server_end_in_a_clear_error():
    """The user's own reads (`own_read_guard`, TRAINKIT_READ_TIMEOUT=1): the trainer's control reads (a source's
    index.json, the owner.json claim, a resume's checkpoint listing) against every behaviour, and every CLI
    command that reads storage (report, compare, logs, eval, validate --explain, sweep --local, run) as a real
    subprocess against a silent, a trickling and a redirecting server: each ends in a StorageError naming the
    object, exit 1 (3 for run's preflight) without a traceback, within two read deadlines and the start-up grace,
    and the redirect's target sees nothing. On the code before (s3fs and botocore with their own timeouts),
    `trainkit report` against the silent server was still waiting after minutes, and s3fs followed redirects."""
    from trainkit.bench.hostile_s3 import BEHAVIOURS
    from trainkit.bench.safety import Tally, run_own_storage_group, trainer_reads

    trainer, cli = Tally(), Tally()
    shown = ("silent", "slow", "redirect")
    run_own_storage_group(1.0, trainer, cli, cli_behaviours=shown)
    assert trainer.cases == len(BEHAVIOURS) * len(trainer_reads()) == 20
    assert not _bad(trainer), (_bad(trainer), trainer.bad)
    # a HEAD has no body: the slow and the huge server answer the existence check honestly
    assert trainer.outcomes == {"storage error": 18, "answered (HEAD)": 2}
    assert cli.cases == len(shown) * 7 == 21
    assert not _bad(cli), (_bad(cli), cli.bad)
    # validate --explain reports a source it cannot read (the cluster may see storage this machine cannot)
    assert cli.outcomes == {"storage error": 18, "reported as not reachable": 3}
