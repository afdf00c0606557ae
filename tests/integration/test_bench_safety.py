"""The bad-input campaign (`trainkit bench safety`) as a test: every generated hostile spec and every damaged
artifact gets a clear error, is skipped, or is read; none raises, prints a traceback or runs long. (The
hostile-storage group is tests/integration/test_operator_hostile_storage.py's, through the operator.)"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_hostile_specs_and_damaged_artifacts_are_all_handled():
    from trainkit.bench.safety import BAD_OUTCOMES, run_campaign

    tallies = run_campaign(specs=300, cli_sample=3, seed=13, with_storage=False)
    assert tallies["specs"].cases >= 300 and tallies["artifacts"].cases >= 100
    for name, tally in tallies.items():
        bad = {o: n for o, n in tally.outcomes.items() if o in BAD_OUTCOMES}
        assert not bad, (name, bad, tally.bad[:10])
    assert tallies["specs"].outcomes["clear error"] > 250  # the mutations really are hostile
    assert tallies["artifacts"].outcomes["clear error"] + tallies["artifacts"].outcomes["ignored (skipped)"] > 60
