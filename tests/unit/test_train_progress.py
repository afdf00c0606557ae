"""Progress records, MFU and the metrics writer's resume rule."""

import json

from trainkit.train.progress import ProgressWriter, eta_seconds, keep_until, mfu, peak_flops, progress_record


def test_mfu_uses_the_device_peak_and_is_absent_on_cpu():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert peak_flops(None, "bf16") is None
    assert mfu(1e6, 4.56e8, 989e12, 1) == 1e6 * 4.56e8 / 989e12
    assert mfu(1e6, 4.56e8, None, 1) is None


def test_progress_record_has_the_operator_fields():
    rec = progress_record({"step": 10, "loss": 3.5, "tokensPerSecond": 1000.0, "mfu": None}, 100, 1024)
    assert set(rec) == {"step", "totalSteps", "tokens", "loss", "tokensPerSecond", "mfu", "etaSeconds", "updatedAt"}
    assert rec["tokens"] == 10240 and rec["etaSeconds"] == eta_seconds(10, 100, 1024, 1000.0) == 90 * 1.024


def test_resume_drops_lines_past_the_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    w = ProgressWriter(out, 30, 8)
    for s in (5, 10, 15, 20):
        w.log({"step": s, "loss": 1.0, "tokensPerSecond": 1.0})
    assert keep_until(w.lines, 10) == w.lines[:2]
    again = ProgressWriter(out, 30, 8)
    again.resume(10)
    again.log({"step": 15, "loss": 0.5, "tokensPerSecond": 1.0}, final=True)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [5, 10, 15] and lines[-1]["loss"] == 0.5
    assert json.loads((tmp_path / "run" / "progress.json").read_text())["finished"] is True


def test_background_writes_land_in_order_and_a_final_log_waits_for_them(tmp_path):
    out = str(tmp_path / "run")
    w = ProgressWriter(out, 30, 8, background=True)
    for s in (5, 10):
        w.log({"step": s, "loss": 1.0, "tokensPerSecond": 1.0})
    w.flush()
    assert [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [5, 10]
    w.log({"step": 15, "loss": 0.5, "tokensPerSecond": 1.0}, final=True)  # returns once written
    assert json.loads((tmp_path / "run" / "progress.json").read_text()) | {"updatedAt": None} == progress_record(
        {"step": 15, "loss": 0.5, "tokensPerSecond": 1.0}, 30, 8
    ) | {"updatedAt": None, "finished": True}


def test_a_failed_background_write_surfaces_at_the_next_log(tmp_path):
    import pytest

    (tmp_path / "run").write_text("a file where the run folder should be")
    w = ProgressWriter(str(tmp_path / "run"), 30, 8, background=True)
    w.log({"step": 5, "loss": 1.0, "tokensPerSecond": 1.0})  # handed to the writer thread
    with pytest.raises(OSError):
        w.log({"step": 10, "loss": 1.0, "tokensPerSecond": 1.0})
