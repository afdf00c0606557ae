"""The run layout's pure rules: step folders, the one checkpoint completeness rule, record parsers;
and the readers' one behaviour for a bad object (passed over, never an exception)."""

import json
import logging

import pytest

from trainkit import artifacts
from trainkit.artifacts import (
    ArtifactError,
    CheckpointManifest,
    checkpoint_problems,
    complete_steps,
    parse_checkpoint_listing,
    parse_eval_summary,
    parse_manifest,
    parse_metrics,
    parse_progress,
    step_dir_name,
    step_of,
)
from trainkit.train.checkpoint import steps_to_prune


def listing_for(step, files, with_manifest=True):
    d = {f"{step_dir_name(step)}/{k}": v for k, v in files.items()}
    if with_manifest:
        d[f"{step_dir_name(step)}/checkpoint.json"] = 100
    return d


FILES = {"config.json": 10, "model.safetensors": 2000, "trainer/optimizer.pt": 4000, "trainer/state.json": 50}


def manifest(step, files=FILES):
    return CheckpointManifest(step=step, files=files)


def test_step_folder_names_round_trip_and_nothing_else_matches():
    assert step_dir_name(7) == "step-00000007" and step_of("step-00000007") == 7
    assert step_of(step_dir_name(123_456_789)) == 123_456_789  # past 8 digits the name grows
    assert step_of("s3://b/run/eval/step-00000040/") == 40
    assert [step_of(n) for n in ("step-7", "step-0000000x", "steps-00000001", "notes.txt")] == [None] * 4


def test_run_of_a_checkpoint_uri():
    assert artifacts.run_uri_of_checkpoint("s3://b/r/checkpoints/step-00000030/") == "s3://b/r"
    assert artifacts.run_uri_of_checkpoint("s3://b/r/models/step-00000030") is None
    assert artifacts.run_uri_of_checkpoint("s3://b/r/checkpoints/latest") is None


def test_latest_complete_skips_interrupted_uploads():
    listing = {}
    listing |= listing_for(4, FILES)
    listing |= listing_for(8, FILES)
    listing |= listing_for(12, FILES, with_manifest=False)  # upload cut before the commit marker
    short = dict(FILES, **{"model.safetensors": 1000})  # a listed file only half there
    listing |= listing_for(16, short)
    gone = {k: v for k, v in FILES.items() if k != "trainer/optimizer.pt"}  # a listed file missing
    listing |= listing_for(20, gone)
    listing |= listing_for(24, FILES)  # its manifest did not parse
    manifests = {s: manifest(s) for s in (4, 8, 16, 20)} | {24: None}
    assert complete_steps(listing, manifests) == [4, 8]


def test_manifest_must_match_its_folder():
    assert checkpoint_problems(4, manifest(4), FILES) == []
    assert checkpoint_problems(4, manifest(8), FILES) == ["checkpoint.json is for step 8, not 4"]
    assert checkpoint_problems(4, manifest(4, {"a": 1, "b": 2, "c": 3}), {"a": 1, "b": 5}) == [
        "b has 5 bytes, checkpoint.json says 2",
        "c is missing",
    ]


def test_manifest_parser_names_the_field():
    assert parse_manifest({"step": 4, "files": {"a": 1}, "tokens": 9}, "m") == CheckpointManifest(
        4, {"a": 1}, {"tokens": 9}
    )
    for bad, field in (
        ([], "step"),
        ({"step": True, "files": {"a": 1}}, "'step'"),
        ({"step": 1, "files": {}}, "'files'"),
        ({"step": 1, "files": {"a": "1"}}, "'files'"),
    ):
        with pytest.raises(ArtifactError, match=field):
            parse_manifest(bad, "m")


def test_parse_listing_ignores_foreign_names():
    parsed = parse_checkpoint_listing(
        {"step-00000004/a": 1, "step-4/b": 1, "notes.txt": 3, "step-00000008/trainer/x": 2}
    )
    assert parsed == {4: {"a": 1}, 8: {"trainer/x": 2}}


def test_prune_keeps_newest_complete_and_drops_leftovers():
    assert steps_to_prune([4, 8, 12, 16], [4, 8, 16], keep=2) == [4, 12]
    assert steps_to_prune([4], [4], keep=3) == []
    assert steps_to_prune([4, 8], [], keep=1) == [4, 8]


def test_checkpoints_under_eval_are_not_pruned():
    assert steps_to_prune([4, 8, 12], [4, 8, 12], keep=1) == [4, 8]
    assert steps_to_prune([4, 8, 12], [4, 8, 12], keep=1, protect=frozenset({4})) == [8]


def test_record_parsers():
    assert parse_progress({"step": 3, "loss": 1.5}, "p")["loss"] == 1.5
    with pytest.raises(ArtifactError, match="'step'"):
        parse_progress({"step": "3"}, "p")
    lines, bad = parse_metrics('{"step": 2, "loss": 1}\nnot json\n{"loss": 3}\n{"step": 1}\n{"step": 2, "loss": 0.5}\n')
    assert [(m["step"], m.get("loss")) for m in lines] == [(1, None), (2, 0.5)] and bad == 2
    assert parse_eval_summary({"tasks": {"a": 0.5}, "average": 0.5}, "s", step=40)["step"] == 40
    for bad_summary in ({"tasks": {"a": "high"}}, {"tasks": {"a": 0.5}, "average": "x"}, [1]):
        with pytest.raises(ArtifactError):
            parse_eval_summary(bad_summary, "s", step=1)


def test_readers_pass_over_bad_objects_and_say_why(tmp_path, caplog):
    out = str(tmp_path / "run")
    good = {"step": 20, "average": 0.4, "tasks": {"a": 0.4}}
    for step, body in (
        (10, json.dumps(good | {"step": 10}).encode()),
        (20, json.dumps(good).encode()),
        (30, b'{"step": 30, "tasks": '),
        (40, b'{"step": 40, "tasks": {"a": "?"}}'),
    ):
        path = tmp_path / "run" / "eval" / step_dir_name(step)
        path.mkdir(parents=True)
        (path / "summary.json").write_bytes(body)
    (tmp_path / "run" / "eval" / step_dir_name(50)).mkdir()  # an eval still running: no summary yet
    (tmp_path / "run" / "progress.json").write_bytes(b"[]")
    with caplog.at_level(logging.WARNING, logger="trainkit.artifacts"):
        assert [s["step"] for s in artifacts.read_eval_summaries(out)] == [10, 20]
        assert artifacts.read_latest_eval_summary(out) == good
        assert artifacts.read_progress(out) is None
    assert "step-00000030/summary.json: not valid JSON" in caplog.text and "progress.json" in caplog.text
    assert artifacts.read_latest_eval_summary(str(tmp_path / "nothing")) is None
    assert artifacts.read_metrics(out) == [] and artifacts.latest_complete_checkpoint(out) is None
