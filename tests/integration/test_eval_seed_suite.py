"""The seed suite against the real harness's task index, and its fail-fast when the hub is out of reach."""

from __future__ import annotations

import os
import time

import pytest

from support.checkpoints import tiny_checkpoint_dir
from trainkit.eval import TaskDataError, evaluate_checkpoint
from trainkit.eval.suite import SEED_SUITE
from trainkit.spec.models import EvalSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def manager():
    from trainkit.eval.harness import task_manager

    return task_manager([], [])  # lm-eval's full index, cached for the process (the offline test reuses it)


def test_seed_suite_names_metrics_and_shots_match_lm_eval(manager):
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    for t in SEED_SUITE:
        entry = manager.task_index.get(t.name)
        assert entry is not None, f"{t.name} is not an lm-eval task"
        if t.name == "mmlu":
            assert entry.kind == Kind.GROUP
            assert [m["metric"] for m in entry.cfg["aggregate_metric_list"]] == ["acc"]
            # every subject has a dev split to draw the 5 shots from
            subject = load_yaml(manager.task_index["mmlu_anatomy"].yaml_path, resolve_func=False)
            assert subject["fewshot_split"] == "dev"
            continue
        assert entry.kind == Kind.TASK
        cfg = load_yaml(entry.yaml_path, resolve_func=False)
        assert cfg["output_type"] == "multiple_choice"
        assert t.metric in [m["metric"] for m in cfg["metric_list"]], t.name
        assert cfg.get("num_fewshot", 0) == t.num_fewshot  # 0-shot, as the card; truthfulqa pins it in YAML


def test_seed_suite_fails_fast_and_clearly_offline(tmp_path):
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
    run = tmp_path / "run"
    t0 = time.monotonic()
    with pytest.raises(TaskDataError) as err:
        evaluate_checkpoint(
            str(tiny_checkpoint_dir()), EvalSpec(suite="seed-suite"), str(run), cache_dir=tmp_path / "cache"
        )
    elapsed = time.monotonic() - t0
    msg = str(err.value)
    assert "benchmark data for task 'mmlu' cannot be reached" in msg and "HF_DATASETS_OFFLINE" in msg
    assert elapsed < 90, f"took {elapsed:.0f} s"
    assert not (run / "eval").exists()
