"""A sweep of six mixtures end to end on the embedded default: demo English text -> parquet on a real S3
server (moto) -> `trainkit prepare` -> `trainkit sweep --local` (six tiny proxy runs through Ray Train,
each evaluated by the real lm-evaluation-harness on local copies of the seed suite's tasks) -> the
comparison report, which must rank the runs by their held-out validation loss."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from trainkit import storage
from trainkit.cli import main
from trainkit.data.prepare import run_prepare
from trainkit.artifacts import read_eval_summaries, read_validation

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "tests" / "data" / "lm_eval_tasks"


@pytest.fixture(scope="module")
def sweep_file(s3_endpoint, ray_session, tmp_path_factory):
    bucket = f"tk-sweep-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    assert main(["demo-data", f"s3://{bucket}/text", "--max-chars", "120000"]) == 0
    doc = yaml.safe_load((REPO / "jobs" / "sweep-quickstart.yaml").read_text())
    template = doc["spec"]["template"]
    for source in template["data"]["sources"]:
        uri = f"s3://{bucket}/shards/{source['name']}"
        # 20% held out: at 120k characters a source has 6-57 documents, and 2% would leave some with none.
        run_prepare(
            f"s3://{bucket}/text/{source['name']}", uri, shard_tokens=32_768, holdout_fraction=0.2, log=lambda _: None
        )
        source["uri"] = uri
    template["output"]["uri"] = f"s3://{bucket}/sweeps/quickstart-mix/"
    for task in template["eval"]["tasks"]:
        task["path"] = str(TASKS / task["name"])
    doc["spec"]["overrides"]["totalTokens"] = 20 * 8 * 128  # 20 steps: the ranking, not the model, is tested
    path = tmp_path_factory.mktemp("sweep") / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, f"s3://{bucket}/sweeps/quickstart-mix"


def test_six_mixtures_train_evaluate_and_rank(sweep_file, capsys):
    path, base = sweep_file
    assert main(["sweep", "--local", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[6/6] quickstart-mix-005" in out

    averages, validation = {}, {}
    for i in range(6):
        run = f"{base}/quickstart-mix-{i:03d}"
        history = read_eval_summaries(run)
        assert history, f"{run} was not evaluated"
        summary = history[-1]
        assert set(summary["tasks"]) == {"tk_piqa", "tk_arc_challenge", "tk_winogrande"}
        averages[f"quickstart-mix-{i:03d}"] = summary["average"]
        lines = read_validation(run)
        assert set(lines[-1]["sources"]) == {"manuals", "web", "edu"} and lines[-1]["step"] == 20
        validation[f"quickstart-mix-{i:03d}"] = lines[-1]["mean"]
        spec = storage.read_json(f"{run}/spec.json")
        assert len(spec["data"]["sources"]) == 3 and abs(sum(s["weight"] for s in spec["data"]["sources"]) - 1) < 1e-6

    report = storage.read_json(f"{base}/compare/report.json")
    ranked = [(row["run"], row["value"]) for row in report["leaderboard"] if row["rank"] is not None]
    assert len(ranked) == 6
    # The report's values are the runs' own held-out losses, in rank order (lowest first), with no ties
    # (the eval averages over 6-8 items tie in pairs).
    assert report["rankBy"] == "val.mean"
    assert {name: value for name, value in ranked} == pytest.approx(validation)
    assert [v for _, v in ranked] == sorted(validation.values()) and len(set(validation.values())) == 6
    assert storage.exists(f"{base}/compare/report.html") and storage.exists(f"{base}/compare/loss_curves.png")

    # Re-running the command trains nothing again: every run is already done.
    assert main(["sweep", "--local", str(path)]) == 0
    assert capsys.readouterr().out.count("already done") == 6
