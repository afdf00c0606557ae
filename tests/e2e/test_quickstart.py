"""The quickstart, end to end, as a user runs it: `trainkit demo-data` -> `trainkit prepare` x3 ->
`trainkit run jobs/quickstart.yaml`, in a fresh folder, with the shipped quickstart spec shortened to
20 steps (the real one trains 200). Real text, the real GPT-2 tokenizer, a real local Ray."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from trainkit.cli import main

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_quickstart_script_runs_the_three_commands():
    script = (REPO / "scripts/quickstart.sh").read_text()
    assert subprocess.run(["bash", "-n", str(REPO / "scripts/quickstart.sh")]).returncode == 0
    for command in (
        "trainkit demo-data demo-data",
        'trainkit prepare "demo-data/$source" "demo-data/shards/$source"',
        "trainkit run jobs/quickstart.yaml",
    ):
        assert command in script


def test_quickstart_end_to_end(ray_session, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo-data", "demo-data", "--max-chars", "120000", "--files", "1"]) == 0
    for source in ("manuals", "web", "edu"):
        # Absolute paths: the shared test Ray's workers run in another folder than this test's (a user's
        # `trainkit prepare` starts its own Ray in the current folder; the script's relative paths are fine).
        assert main(["prepare", str(tmp_path / "demo-data" / source), str(tmp_path / "demo-data/shards" / source)]) == 0

    run = yaml.safe_load((REPO / "jobs/quickstart.yaml").read_text())
    steps = 20
    run["spec"]["data"]["totalTokens"] = steps * 8 * 128
    run["spec"]["checkpoint"]["everySteps"] = 10
    Path("jobs").mkdir()
    Path("jobs/quickstart.yaml").write_text(yaml.safe_dump(run))
    capsys.readouterr()
    assert main(["run", "jobs/quickstart.yaml"]) == 0
    out = capsys.readouterr().out

    run_dir = tmp_path / "runs/quickstart"
    ckpt = run_dir / "checkpoints" / f"step-{steps:08d}"
    for artifact in (ckpt, run_dir / "progress.json", run_dir / "metrics.jsonl", run_dir / "loss.png"):
        assert str(artifact) in out, out
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"step {steps}/{steps}" in out and "tokens per source" in out

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(ckpt), AutoTokenizer.from_pretrained(ckpt)
    ids = model.generate(
        **tok("The package manager", return_tensors="pt"),
        max_new_tokens=5,
        do_sample=False,
        pad_token_id=tok.eos_token_id,
    )
    assert ids.shape[1] == len(tok("The package manager")["input_ids"]) + 5

    # Running it again resumes from the finished checkpoint: no step is trained twice.
    capsys.readouterr()
    assert main(["run", "jobs/quickstart.yaml"]) == 0
    assert f"resuming from step {steps}" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "demo-data")
