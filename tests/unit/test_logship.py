"""Log shipping's pure rules (segments, cap, follow) and the shipper on real local storage."""

from __future__ import annotations

import os
import subprocess
import sys

from trainkit import artifacts, storage
from trainkit.commands.logs import new_text
from trainkit.train import logship
from trainkit.train.logship import LogPolicy, LogShipper, segments_over_cap, split_into_segments


def test_split_into_segments_seals_full_segments_only():
    assert split_into_segments(b"ab", b"cdefg", 3) == ([b"abc", b"def"], b"g")
    assert split_into_segments(b"", b"abc", 3) == ([], b"abc")  # exactly full stays open
    assert split_into_segments(b"a", b"", 3) == ([], b"a")


def test_segments_over_cap_are_the_oldest():
    assert segments_over_cap([4, 2, 3, 1], 2) == [1, 2]
    assert segments_over_cap([1, 2], 2) == [] and segments_over_cap([], 0) == []


def test_parse_log_listing_orders_driver_then_workers_by_rank():
    names = [
        "worker-10.00000.log",
        "worker-2.00001.log",
        "driver.00000.log",
        "worker-2.00000.log",
        "x.log",
        "driver.1.log",
    ]
    assert artifacts.parse_log_listing(names) == {"driver": [0], "worker-2": [0, 1], "worker-10": [0]}
    assert artifacts.log_segment_name("worker-3", 7) == "worker-3.00007.log"
    assert artifacts.log_segment_uri("s3://b/run", "driver", 0) == "s3://b/run/logs/driver.00000.log"


def test_shipper_rotates_caps_and_continues_numbering_after_a_restart(tmp_path):
    out = str(tmp_path / "run")
    policy = LogPolicy(flush_seconds=60, segment_bytes=10, max_segments=3)
    s = LogShipper(out, "worker-0", None, policy, err_fd=2)
    s.write(b"0123456789abcdefghij" * 3 + b"tail")  # 6 full segments and an open one
    assert len(s.sealed) == 3  # the ones the cap deletes anyway are not kept in memory
    s.flush()
    assert artifacts.list_log_segments(out) == {"worker-0": [4, 5, 6]}
    assert storage.read_bytes(artifacts.log_segment_uri(out, "worker-0", 6)) == b"tail"
    again = LogShipper(out, "worker-0", None, policy, err_fd=2)  # a restarted worker appends
    again.write(b"second")
    again.flush()
    assert artifacts.list_log_segments(out) == {"worker-0": [5, 6, 7]}
    assert storage.read_bytes(artifacts.log_segment_uri(out, "worker-0", 7)) == b"second"


def test_shipper_keeps_data_while_storage_fails_and_retries(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r, w = os.pipe()
    s = LogShipper(str(blocker / "run"), "driver", None, LogPolicy(60, 100, 2), err_fd=w)
    s.write(b"kept")
    s.flush()  # cannot write under a file: complains once, keeps the bytes
    s.flush()
    os.close(w)
    assert os.read(r, 4096).decode().count("cannot ship logs") == 1
    assert s.dirty and s.current == b"kept"


def test_new_text_prints_only_what_grew():
    store = {("driver", 0): b"a\n", ("worker-0", 0): b"x\n"}
    seen: dict = {}
    headed: set = {*()}
    first = new_text({"driver": [0], "worker-0": [0]}, lambda st, i: store[(st, i)], seen, headed)
    assert first == "==> driver <==\na\n==> worker-0 <==\nx\n"
    store[("driver", 0)] = b"a\nb\n"
    store[("driver", 1)] = b"c\n"
    assert new_text({"driver": [0, 1], "worker-0": [0]}, lambda st, i: store[(st, i)], seen, headed) == "b\nc\n"
    capped = new_text({"worker-1": [3]}, lambda st, i: b"z\n", {}, set())
    assert "segments before 3 were removed (size cap)" in capped


def test_capture_tees_fds_of_the_process_and_its_children(tmp_path):
    out = tmp_path / "run"
    code = (
        "import os, sys\n"
        "from trainkit.train import logship\n"
        f"with logship.capture({str(out)!r}, 'driver', None, logship.LogPolicy(0.1, 1 << 20, 4)):\n"
        "    print('py stdout', flush=True)\n"
        "    sys.stderr.write('py stderr\\n')\n"
        "    os.system('echo child')\n"
        "print('after')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert got.returncode == 0, got.stderr
    assert "py stdout" in got.stdout and "child" in got.stdout and "after" in got.stdout  # still on the terminal
    assert "py stderr" in got.stderr
    shipped = storage.read_bytes(artifacts.log_segment_uri(str(out), "driver", 0)).decode()
    assert "py stdout" in shipped and "py stderr" in shipped and "child" in shipped and "after" not in shipped
    assert shipped.startswith("[trainkit] driver: pid ") and " log started " in shipped.splitlines()[0]
    assert logship.LogPolicy.from_config(LogPolicy(1, 2, 3).as_config()) == LogPolicy(1, 2, 3)


def test_a_process_killed_outright_still_has_its_stream(tmp_path):
    # Ray kills the healthy workers of a failed group with SIGKILL: no finally, no last flush.
    out = tmp_path / "run"
    code = (
        "import os, signal\n"
        "from trainkit.train import logship\n"
        f"with logship.capture({str(out)!r}, 'worker-0', None, logship.LogPolicy(60.0, 1 << 20, 4)):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert got.returncode == -9
    assert artifacts.list_log_segments(str(out)) == {"worker-0": [0]}
    first = storage.read_bytes(artifacts.log_segment_uri(str(out), "worker-0", 0)).decode()
    assert first.startswith("[trainkit] worker-0: pid ") and "log started" in first
