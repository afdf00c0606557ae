"""The run layout's pure rules, pinned with literal values: every path helper, the step-folder and
checkpoint-URI rules, and each parser's exact message and edge (bools are not numbers, 0 is a step)."""

from __future__ import annotations

import pytest

from trainkit import artifacts
from trainkit.artifacts import (
    ArtifactError,
    CheckpointManifest,
    checkpoint_problems,
    complete_steps,
    parse_checkpoint_listing,
    parse_eval_summary,
    parse_json,
    parse_manifest,
    parse_metrics,
    parse_progress,
    step_of,
)

RUN = "s3://b/runs/r1"


def test_every_path_helper_literally():
    assert artifacts.run_file(RUN, artifacts.PROGRESS) == "s3://b/runs/r1/progress.json"
    assert artifacts.checkpoints_uri(RUN) == "s3://b/runs/r1/checkpoints"
    assert artifacts.checkpoint_uri(RUN, 30) == "s3://b/runs/r1/checkpoints/step-00000030"
    assert artifacts.eval_root(RUN) == "s3://b/runs/r1/eval"
    assert artifacts.eval_dir(RUN, 30) == "s3://b/runs/r1/eval/step-00000030"
    assert artifacts.eval_report_uri(RUN, 30) == "s3://b/runs/r1/eval/step-00000030/report.md"
    assert artifacts.scores_by_step_uri(RUN) == "s3://b/runs/r1/eval/scores_by_step.png"
    assert artifacts.logs_uri(RUN) == "s3://b/runs/r1/logs"


def test_step_folder_edges():
    assert step_of("step-00000000") == 0
    assert step_of("a/b/step-00000012/") == 12
    assert step_of("step-00000012x") is None and step_of("xstep-00000012") is None


def test_a_checkpoint_needs_a_run_above_its_checkpoints_folder():
    assert artifacts.run_uri_of_checkpoint("checkpoints/step-00000030") is None  # no run part
    assert artifacts.run_uri_of_checkpoint("runs/r/checkpoints/step-00000030") == "runs/r"
    assert artifacts.run_uri_of_checkpoint("runs/r/checkpoints/step-30") is None


def test_manifest_json_puts_step_and_files_over_the_extras():
    m = CheckpointManifest(step=4, files={"a": 1}, extra={"tokens": 9, "step": 99})
    assert m.to_json() == {"tokens": 9, "step": 4, "files": {"a": 1}}
    assert CheckpointManifest(step=1, files={"a": 1}).to_json() == {"step": 1, "files": {"a": 1}}


def test_parse_json_names_the_object():
    assert parse_json(b'{"a": 1}', "x") == {"a": 1}
    with pytest.raises(ArtifactError, match=r"^obj/summary.json: not valid JSON \("):
        parse_json(b"{", "obj/summary.json")
    with pytest.raises(ArtifactError, match=r"^m: not valid JSON"):
        parse_json(b"\xff\xfe\xfa", "m")


def test_manifest_parser_messages_and_edges():
    assert parse_manifest({"step": 0, "files": {"a": 0}}, "m") == CheckpointManifest(0, {"a": 0}, {})
    with pytest.raises(ArtifactError, match=r"^m: expected an object with 'step' and 'files'$"):
        parse_manifest([], "m")
    with pytest.raises(ArtifactError, match=r"^m: field 'step' must be a non-negative integer, got -1$"):
        parse_manifest({"step": -1, "files": {"a": 1}}, "m")
    files_msg = r"^m: field 'files' must map relative paths to sizes in bytes \(and list at least one\)$"
    for files in ({"a": True}, {1: 1}, ["a"], {"a": 1.0}):
        with pytest.raises(ArtifactError, match=files_msg):
            parse_manifest({"step": 1, "files": files}, "m")


def test_problems_are_listed_in_path_order():
    m = CheckpointManifest(step=2, files={"z": 1, "a": 1, "m": 3})
    assert checkpoint_problems(2, m, {"m": 4}) == [
        "a is missing",
        "m has 4 bytes, checkpoint.json says 3",
        "z is missing",
    ]


def test_listing_needs_a_file_inside_a_top_level_step_folder():
    listing = {"step-00000004/": 0, "x/step-00000004/a": 1, "step-00000004/a/b": 2, "step-00000006/c": 3}
    assert parse_checkpoint_listing(listing) == {4: {"a/b": 2}, 6: {"c": 3}}


def test_a_step_without_its_manifest_file_is_not_complete_even_with_a_parsed_manifest():
    listing = {"step-00000004/a": 1, "step-00000008/a": 1, "step-00000008/checkpoint.json": 5}
    manifests = {4: CheckpointManifest(4, {"a": 1}), 8: CheckpointManifest(8, {"a": 1})}
    assert complete_steps(listing, manifests) == [8]
    assert complete_steps(listing, {}) == []


def test_progress_parser():
    assert parse_progress({"step": 0, "extra": "kept"}, "p") == {"step": 0, "extra": "kept"}
    with pytest.raises(ArtifactError, match=r"^p: expected an object, got list$"):
        parse_progress([], "p")
    with pytest.raises(ArtifactError, match=r"^p: field 'step' must be an integer, got True$"):
        parse_progress({"step": True}, "p")
    with pytest.raises(ArtifactError, match=r"^p: field 'step' must be an integer, got None$"):
        parse_progress({}, "p")


def test_metrics_parser_counts_only_real_bad_lines():
    text = '\n   \n[1, 2]\n{"step": true}\n{"step": 3, "loss": 2.0}\n{"step": 0}\n'
    lines, bad = parse_metrics(text)
    assert lines == [{"step": 0}, {"step": 3, "loss": 2.0}]
    assert bad == 2  # the list and the boolean step; blank lines are not bad
    assert parse_metrics("") == ([], 0)


def test_eval_summary_parser_messages_and_edges():
    assert parse_eval_summary({"step": 7, "tasks": {}}, "s", step=40) == {"step": 7, "tasks": {}}
    assert parse_eval_summary({"tasks": {"a": 1}, "average": 1}, "s", step=0)["step"] == 0
    assert parse_eval_summary({"step": 3, "tasks": {"a": 0.5}, "average": None}, "s")["average"] is None
    with pytest.raises(ArtifactError, match=r"^s: expected an object, got str$"):
        parse_eval_summary("x", "s")
    tasks_msg = r"^s: field 'tasks' must map task names to scores$"
    for tasks in (None, {"a": True}, {1: 0.5}, [0.5]):
        with pytest.raises(ArtifactError, match=tasks_msg):
            parse_eval_summary({"step": 1, "tasks": tasks}, "s")
    with pytest.raises(ArtifactError, match=r"^s: field 'average' must be a number, got True$"):
        parse_eval_summary({"step": 1, "tasks": {}, "average": True}, "s")
    with pytest.raises(ArtifactError, match=r"^s: field 'step' must be an integer, got 'x'$"):
        parse_eval_summary({"step": "x", "tasks": {}}, "s")
    with pytest.raises(ArtifactError, match=r"^s: field 'step' must be an integer, got True$"):
        parse_eval_summary({"step": True, "tasks": {}}, "s")
