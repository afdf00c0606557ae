"""The test-only pause points of the trainer (TEST_PAUSE_AT_STEPS, docs/training.md): the real-Ray fault tests
rely on rank 0 waiting at a listed step until it is released, and on a released step never waiting again."""

from __future__ import annotations

import threading
import time

from trainkit.train import loop


def test_rank_0_waits_at_a_listed_step_until_released_and_never_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_PAUSE_AT_STEPS", "3, 5")
    monkeypatch.setenv("TEST_PAUSE_DIR", str(tmp_path))
    loop.maybe_pause(4, 0)  # not listed
    loop.maybe_pause(3, 1)  # other ranks wait in the step's collective instead
    assert not list(tmp_path.iterdir())
    waiter = threading.Thread(target=loop.maybe_pause, args=(3, 0))
    waiter.start()
    deadline = time.monotonic() + 10
    while not (tmp_path / "paused-3").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "paused-3").read_text().strip().isdigit()  # the pid of the waiting process
    assert [p.name for p in tmp_path.iterdir()] == ["paused-3"]  # written whole and renamed: no partial left
    time.sleep(0.3)
    assert waiter.is_alive()
    (tmp_path / "resume-3").touch()
    waiter.join(5)
    assert not waiter.is_alive()
    (tmp_path / "paused-3").unlink()
    loop.maybe_pause(3, 0)  # a resumed attempt passes a released step
    assert not (tmp_path / "paused-3").exists()


def test_without_the_variables_nothing_waits(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_PAUSE_AT_STEPS", raising=False)
    monkeypatch.setenv("TEST_PAUSE_DIR", str(tmp_path))
    loop.maybe_pause(3, 0)
    assert not list(tmp_path.iterdir())
