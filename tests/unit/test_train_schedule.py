"""The learning-rate schedule is a pure function of the step."""

import math

import pytest

from trainkit.spec import derive_plan, load_run
from trainkit.train.schedule import Schedule, lr_at


def test_cosine_warms_up_linearly_then_decays_to_final_at_the_last_step():
    s = Schedule(peak=1e-3, final=1e-4, warmup_steps=10, total_steps=110, kind="cosine")
    assert lr_at(0, s) == pytest.approx(1e-4)
    assert lr_at(4, s) == pytest.approx(5e-4)
    assert lr_at(9, s) == pytest.approx(1e-3)
    assert lr_at(10, s) == pytest.approx(1e-3)
    assert lr_at(109, s) == pytest.approx(1e-4)
    mid = 10 + 99 / 2
    assert lr_at(int(mid), s) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi * (int(mid) - 10) / 99)) * 9e-4)
    values = [lr_at(i, s) for i in range(10, 110)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_linear_and_constant():
    lin = Schedule(peak=1.0, final=0.0, warmup_steps=0, total_steps=11, kind="linear")
    assert [round(lr_at(i, lin), 6) for i in (0, 5, 10)] == [1.0, 0.5, 0.0]
    const = Schedule(peak=0.3, final=0.1, warmup_steps=2, total_steps=10, kind="constant")
    assert [lr_at(i, const) for i in (0, 1, 2, 9)] == [pytest.approx(0.15), 0.3, 0.3, 0.3]


def test_seed_run_matches_the_model_card():
    run = load_run("jobs/gpt2-70m-50-30-20.yaml")
    s = Schedule.from_spec(run.spec, derive_plan(run.spec))
    assert (s.warmup_steps, s.total_steps) == (162, 8138)
    assert lr_at(161, s) == pytest.approx(5e-4)
    assert lr_at(8137, s) == pytest.approx(5e-5)
