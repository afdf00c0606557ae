"""Bad checkpoints and bad task names: a clear error naming the URI or task, non-zero exit, no report."""

from __future__ import annotations

import time

import pytest

from support.checkpoints import tiny_checkpoint_dir, upload_checkpoint, write_checkpoint
from trainkit import storage
from trainkit.cli import main
from trainkit.eval import CheckpointError, TaskDataError, evaluate_checkpoint
from trainkit.spec.models import EvalSpec

pytestmark = pytest.mark.slow
SPEC = EvalSpec.model_validate({"tasks": [{"name": "tk_piqa", "path": "tests/data/lm_eval_tasks", "limit": 2}]})


def nothing_written(run: str) -> bool:
    return not storage.exists(f"{run}/eval")


def test_missing_checkpoint_manifest(s3_bucket, tmp_path):
    ckpt = f"{s3_bucket}/run/checkpoints/step-00000030"
    # every file but the commit marker: an uncommitted (crashed mid-write) checkpoint
    src = tiny_checkpoint_dir()
    for p in sorted(src.rglob("*")):
        if p.is_file() and p.name != "checkpoint.json":
            storage.write_bytes(f"{ckpt}/{p.relative_to(src).as_posix()}", p.read_bytes())
    with pytest.raises(CheckpointError, match=rf"no checkpoint at {ckpt}: checkpoint.json is missing"):
        evaluate_checkpoint(ckpt, SPEC, f"{s3_bucket}/run", cache_dir=tmp_path)
    assert nothing_written(f"{s3_bucket}/run")


def test_incomplete_checkpoint_names_the_file(s3_bucket, tmp_path, capsys):
    ckpt = upload_checkpoint(tiny_checkpoint_dir(), f"{s3_bucket}/run/checkpoints/step-00000030")
    full = storage.read_bytes(f"{ckpt}/model.safetensors")
    storage.write_bytes(f"{ckpt}/model.safetensors", full[: len(full) // 2])  # truncated upload
    with pytest.raises(
        CheckpointError,
        match=rf"incomplete checkpoint at {ckpt}: model.safetensors has {len(full) // 2} bytes, checkpoint.json says {len(full)}",
    ):
        evaluate_checkpoint(ckpt, SPEC, f"{s3_bucket}/run", cache_dir=tmp_path)
    # the same through the CLI: exit 1, the URI on stderr, nothing on stdout
    assert main(["eval", ckpt, "--tasks", "tk_piqa", "--include-path", "tests/data/lm_eval_tasks"]) == 1
    err = capsys.readouterr()
    assert ckpt in err.err and "model.safetensors" in err.err and err.out == ""
    assert nothing_written(f"{s3_bucket}/run")


def test_not_a_causal_lm(s3_bucket, tmp_path):
    from transformers import BertConfig, BertModel

    from support.checkpoints import gpt2_tokenizer

    folder = write_checkpoint(
        BertModel(
            BertConfig(vocab_size=128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
        ),
        gpt2_tokenizer(),
        tmp_path / "bert" / "step-00000005",
        5,
    )
    ckpt = upload_checkpoint(folder, f"{s3_bucket}/run/checkpoints/step-00000005")
    with pytest.raises(
        CheckpointError, match=rf"{ckpt} is not a causal language model \(config.json: model_type='bert'"
    ):
        evaluate_checkpoint(ckpt, SPEC, f"{s3_bucket}/run", cache_dir=tmp_path / "cache")
    assert nothing_written(f"{s3_bucket}/run")


def test_unknown_task_is_named_with_a_suggestion(tmp_path):
    run = tmp_path / "run"
    t0 = time.monotonic()
    spec = EvalSpec.model_validate({"tasks": [{"name": "tk_piqaa", "path": "tests/data/lm_eval_tasks"}]})
    with pytest.raises(TaskDataError, match=r"unknown lm-eval task\(s\): 'tk_piqaa' \(did you mean tk_piqa"):
        evaluate_checkpoint(str(tiny_checkpoint_dir()), spec, str(run), cache_dir=tmp_path / "cache")
    assert not (run / "eval").exists()
    assert time.monotonic() - t0 < 120


def test_report_of_a_run_without_evals_fails_clearly(tmp_path, capsys):
    assert main(["report", str(tmp_path / "run")]) == 1
    assert f"no eval under {tmp_path / 'run'}/eval" in capsys.readouterr().err


def test_a_failed_write_leaves_no_partial_report(tmp_path):
    from trainkit.eval.runner import write_eval_files

    out = tmp_path / "run" / "eval" / "step-00000001"
    out.mkdir(parents=True)
    (out / "summary.json").mkdir()  # summary.json cannot be written: a folder is in the way
    with pytest.raises(OSError):
        write_eval_files(str(out), {"results.json": b"{}", "report.md": b"| x |"}, {"step": 1})
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]  # results.json and report.md removed
