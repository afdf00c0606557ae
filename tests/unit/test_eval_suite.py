"""The seed-suite preset, task resolution, lm-eval call grouping, manifests and local task rewriting."""

from pathlib import Path

import pytest

from trainkit.eval.checkpoint import model_manifest
from trainkit.eval.errors import CheckpointError
from trainkit.eval.harness import merge_outputs
from trainkit.eval.local_tasks import rewrite_config
from trainkit.eval.suite import SEED_SUITE, TaskRequest, group_into_calls, parse_task_arg, resolve_tasks
from trainkit.spec.models import EvalSpec


def test_seed_suite_is_the_cards_six_tasks_with_its_few_shot_counts():
    assert [t.name for t in SEED_SUITE] == [
        "mmlu",
        "hellaswag",
        "arc_challenge",
        "piqa",
        "winogrande",
        "truthfulqa_mc2",
    ]
    assert {t.name: t.num_fewshot for t in SEED_SUITE} == {
        "mmlu": 5,
        "hellaswag": 0,
        "arc_challenge": 0,
        "piqa": 0,
        "winogrande": 0,
        "truthfulqa_mc2": 0,
    }
    assert {t.name for t in SEED_SUITE if t.metric == "acc_norm"} == {"hellaswag", "arc_challenge"}
    # the card's Random and GPT-2 column averages
    assert round(sum(t.random for t in SEED_SUITE) / 6, 2) == 33.33
    assert round(sum(t.reference for t in SEED_SUITE) / 6, 2) == 39.00


def test_spec_tasks_extend_and_override_the_preset():
    spec = EvalSpec.model_validate(
        {
            "suite": "seed-suite",
            "tasks": [
                {"name": "hellaswag", "limit": 100},
                {"name": "mmlu", "numFewshot": 0},
                {"name": "lambada_openai", "path": "s3://b/tasks"},
            ],
        }
    )
    got = resolve_tasks(spec)
    assert [r.name for r in got] == [
        "mmlu",
        "hellaswag",
        "arc_challenge",
        "piqa",
        "winogrande",
        "truthfulqa_mc2",
        "lambada_openai",
    ]
    by = {r.name: r for r in got}
    assert by["hellaswag"] == TaskRequest("hellaswag", 0, 100, None)  # keeps the preset's 0-shot
    assert by["mmlu"].num_fewshot == 0
    assert by["lambada_openai"].path == "s3://b/tasks"
    assert resolve_tasks(EvalSpec()) == []


def test_calls_group_by_limit_and_few_shot():
    rs = [TaskRequest("a", 0, None), TaskRequest("b", 5, None), TaskRequest("c", 0, None), TaskRequest("d", 0, 10)]
    assert [(l, s, [r.name for r in g]) for l, s, g in group_into_calls(rs)] == [
        (None, 0, ["a", "c"]),
        (None, 5, ["b"]),
        (10, 0, ["d"]),
    ]


def test_merged_outputs_keep_every_tasks_results():
    a = {
        "results": {"x": {"acc,none": 0.1}},
        "n-shot": {"x": 0},
        "config": {"limit": None},
        "trainkit_call": {"tasks": ["x"]},
    }
    b = {
        "results": {"y": {"acc,none": 0.2}},
        "n-shot": {"y": 5},
        "config": {"limit": 3},
        "trainkit_call": {"tasks": ["y"]},
    }
    m = merge_outputs([a, b])
    assert m["results"] == {"x": {"acc,none": 0.1}, "y": {"acc,none": 0.2}} and m["n-shot"] == {"x": 0, "y": 5}
    assert m["config"] == {"limit": None} and m["trainkit_calls"] == [{"tasks": ["x"]}, {"tasks": ["y"]}]


def test_task_arguments():
    assert parse_task_arg("mmlu:5") == TaskRequest("mmlu", 5)
    assert parse_task_arg("piqa") == TaskRequest("piqa", None)
    with pytest.raises(ValueError, match="whole number"):
        parse_task_arg("mmlu:five")


def test_manifest_checks_name_the_uri_and_field():
    ok = b'{"step": 7, "files": {"config.json": 10, "model.safetensors": 20}}'
    manifest = model_manifest(ok, "s3://b/r/checkpoints/step-00000007")
    assert (manifest.step, manifest.files) == (7, {"config.json": 10, "model.safetensors": 20})
    with pytest.raises(CheckpointError, match=r"s3://b/c/checkpoint.json: field 'step'"):
        model_manifest(b'{"step": "7", "files": {}}', "s3://b/c")
    with pytest.raises(CheckpointError, match="lists no model weights"):
        model_manifest(b'{"step": 1, "files": {"config.json": 3}}', "s3://b/c")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        model_manifest(b"{", "s3://b/c")


def test_relative_data_files_are_resolved_next_to_the_yaml():
    cfg = {
        "task": "t",
        "dataset_kwargs": {
            "data_files": {"test": "t.jsonl", "dev": ["a.jsonl", "/abs/b.jsonl"], "x": "s3://b/x.jsonl"}
        },
    }
    new = rewrite_config(cfg, Path("/tasks/t"))
    assert new["dataset_kwargs"]["data_files"] == {
        "test": "/tasks/t/t.jsonl",
        "dev": ["/tasks/t/a.jsonl", "/abs/b.jsonl"],
        "x": "s3://b/x.jsonl",
    }
    assert cfg["dataset_kwargs"]["data_files"]["test"] == "t.jsonl"  # input untouched
    assert rewrite_config({"task": "u"}, Path("/x")) == {"task": "u"}


def test_bench_extrapolates_per_request_time_to_the_suites_request_counts():
    from trainkit.bench.eval import MIRRORS, SEED_SUITE_REQUESTS, default_task_folder, estimate

    names = [t.name for t in SEED_SUITE]
    assert list(SEED_SUITE_REQUESTS) == names and list(MIRRORS) == names
    assert all((default_task_folder() / MIRRORS[n]).is_dir() for n in names)  # the mirrors it times are shipped
    got = estimate({"mmlu": 0.01, "piqa": 0.5})
    assert got == {"mmlu": pytest.approx(0.01 * 14_042 * 4), "piqa": pytest.approx(0.5 * 1_838 * 2)}
