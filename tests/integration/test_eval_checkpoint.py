"""End to end through the real lm-evaluation-harness: a trained tiny GPT-2 checkpoint in a real S3 server
(moto), local tasks shaped like the model card's six (0-shot and 5-shot), reports written back to S3."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from support.checkpoints import tiny_checkpoint_dir, upload_checkpoint
from trainkit import storage
from trainkit.cli import main
from trainkit.eval import evaluate_checkpoint
from trainkit.eval.report import format_percent
from trainkit.spec.models import EvalSpec

pytestmark = pytest.mark.slow

TASKS = Path(__file__).resolve().parents[1] / "data" / "lm_eval_tasks"
MIRRORS = ["tk_mmlu", "tk_hellaswag", "tk_arc_challenge", "tk_piqa", "tk_winogrande", "tk_truthfulqa_mc2"]
HEADLINE = {"tk_hellaswag": "acc_norm", "tk_arc_challenge": "acc_norm"}


@pytest.fixture(scope="module")
def run_uri(s3_endpoint, tmp_path_factory):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="tk-eval-run")
    local = tiny_checkpoint_dir()
    upload_checkpoint(local, "s3://tk-eval-run/runs/demo/checkpoints/step-00000030")
    return "s3://tk-eval-run/runs/demo"


def report_cells(md: str, label: str) -> list[str]:
    line = next(l for l in md.splitlines() if l.startswith(f"| {label}"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_numbers_are_lm_evals_own(run_uri, tmp_path):
    spec = EvalSpec.model_validate(
        {
            "tasks": [
                {"name": n, "path": str(TASKS), "limit": 3, **({"numFewshot": 5} if n == "tk_mmlu" else {})}
                for n in MIRRORS
            ],
            "batchSize": 4,
        }
    )
    ckpt = f"{run_uri}/checkpoints/step-00000030"
    summary = evaluate_checkpoint(ckpt, spec, run_uri, cache_dir=tmp_path)

    out = f"{run_uri}/eval/step-00000030"
    results = storage.read_json(f"{out}/results.json")
    assert storage.read_json(f"{out}/summary.json") == json.loads(json.dumps(summary))
    md = storage.read_bytes(f"{out}/report.md").decode()
    assert storage.read_bytes(f"{out}/tasks.png").startswith(b"\x89PNG")
    assert not storage.exists(f"{run_uri}/eval/scores_by_step.png")  # only one eval so far

    # lm-eval's own output, as written: versions, config, few-shot counts of the real call
    assert results["lm_eval_version"] and results["versions"]["tk_piqa"] is not None
    assert results["config"]["model_num_parameters"] > 0
    assert results["n-shot"]["tk_mmlu_astronomy"] == 5 and results["n-shot"]["tk_piqa"] == 0
    assert results["group_subtasks"]["tk_mmlu"] == ["tk_mmlu_astronomy", "tk_mmlu_world_history"]
    assert results["n-samples"]["tk_piqa"]["effective"] == 3

    scores = []
    for task in MIRRORS:
        r = results["results"][task]
        metric = HEADLINE.get(task, "acc")
        assert summary["tasks"][task] == r[f"{metric},none"], task
        assert summary["metrics"][task]["acc"] == r["acc,none"]
        assert summary["metrics"][task]["acc_norm"] == r.get("acc_norm,none")
        row = report_cells(md, task)
        assert row[1] == metric and row[2] == format_percent(r[f"{metric},none"])
        assert row[3] == format_percent(r["acc,none"]) and row[4] == format_percent(r.get("acc_norm,none"))
        scores.append(r[f"{metric},none"])
    assert summary["average"] == pytest.approx(sum(scores) / len(scores))
    assert report_cells(md, "**Average**")[2] == format_percent(sum(scores) / len(scores))
    assert summary["step"] == 30 and summary["numFewshot"]["tk_mmlu"] == 5
    # MC2 is a probability mass, not a 0/1 accuracy: proves the mc2 scorer ran
    assert 0 < results["results"]["tk_truthfulqa_mc2"]["acc,none"] < 1


def test_cli_eval_then_report_shows_scores_by_step(run_uri, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINKIT_CACHE_DIR", str(tmp_path))
    ckpt = f"{run_uri}/checkpoints/step-00000030/"
    # A corrupt summary left by some old eval: passed over by every reader, it must not fail this eval.
    storage.write_bytes(f"{run_uri}/eval/step-00000005/summary.json", b'{"step": 5, "tasks": ')
    rc = main(
        [
            "eval",
            ckpt,
            "--tasks",
            "tk_piqa",
            "tk_arc_challenge",
            "--include-path",
            str(TASKS),
            "--limit",
            "4",
            "--step",
            "60",
            "--batch-size",
            "4",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0
    out = f"{run_uri}/eval/step-00000060"
    results = storage.read_json(f"{out}/results.json")["results"]
    assert report_cells(printed, "tk_arc_challenge")[2] == format_percent(results["tk_arc_challenge"]["acc_norm,none"])
    assert f"{out}/summary.json" in printed and f"{out}/report.md" in printed
    assert storage.read_bytes(f"{run_uri}/eval/scores_by_step.png").startswith(b"\x89PNG")

    if not storage.exists(f"{run_uri}/eval/step-00000030/summary.json"):
        pytest.skip("needs the first test's eval")
    rc = main(["report", run_uri])
    printed = capsys.readouterr().out
    assert rc == 0
    assert report_cells(printed, "tk_piqa")[2] == format_percent(results["tk_piqa"]["acc,none"])  # latest = step 60
    history = re.findall(r"^\| (\d+) \| ([\d.]+) \|", printed, re.M)
    s30 = storage.read_json(f"{run_uri}/eval/step-00000030/summary.json")
    assert history == [
        ("30", format_percent(s30["average"])),
        ("60", format_percent(storage.read_json(f"{out}/summary.json")["average"])),
    ]
    assert storage.read_bytes(f"{run_uri}/eval/scores_by_step.png").startswith(b"\x89PNG")
