"""The prepare job of a TrainingData (`trainkit.jobs.prepare`) on real Ray and real files: several inputs into
one content-addressed source, the document filter, a re-run that re-tokenizes nothing, and a filter that drops
everything failing clearly with nothing presented as Ready."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainkit.data.prepare import PrepareError
from trainkit.data.shards import read_index
from trainkit.jobs.prepare import prepare_data
from trainkit.spec.data import TrainingDataSpec, resolved_uri


def write_inputs(root):
    (root / "web").mkdir(parents=True)
    (root / "books").mkdir(parents=True)
    web = ["short", "a long enough web document about rivers", "a long enough web document about rivers", "x" * 50]
    pq.write_table(pa.table({"body": web, "lang": ["en", "en", "en", "fr"]}), root / "web" / "part-0.parquet")
    with open(root / "books" / "b.jsonl", "w") as f:
        for text, lang in [
            ("a long enough book chapter one", "en"),
            ("tiny", "en"),
            ("ein langes Kapitel zwei!", "de"),
        ]:
            f.write(json.dumps({"body": text, "lang": lang}) + "\n")


def test_inputs_filter_and_rerun(ray_session, tmp_path):
    write_inputs(tmp_path)
    spec = TrainingDataSpec.model_validate(
        {
            "inputs": [str(tmp_path / "web"), str(tmp_path / "books")],
            "textColumn": "body",
            "filter": {"minLength": 10, "languageField": "lang", "language": "en", "dedup": "exact"},
            "shardTokens": 64,
            "output": {"uri": str(tmp_path / "out")},
        }
    )
    logs: list[str] = []
    doc = prepare_data(spec, log=logs.append)
    uri = resolved_uri(spec)
    assert uri.startswith(str(tmp_path / "out") + "/") and len(uri.rstrip("/").rsplit("/", 1)[1]) == 16
    # kept: the web doc once (dedup), the English book chapter; dropped: short, French, German, tiny
    assert doc["totalDocuments"] == 2
    assert read_index(uri).total_documents == 2
    progress = json.loads(open(uri + "prepare-progress.json").read())
    assert progress == {"filesDone": 2, "filesTotal": 2, "tokens": doc["totalTokens"], "documents": 2}
    logs.clear()
    again = prepare_data(spec, log=logs.append)
    assert again["shards"] == doc["shards"] and sum("already done" in line for line in logs) == 2


def test_filter_dropping_everything_fails_clearly_without_an_index(ray_session, tmp_path):
    write_inputs(tmp_path)
    spec = TrainingDataSpec.model_validate(
        {
            "inputs": [str(tmp_path / "web")],
            "textColumn": "body",
            "filter": {"minLength": 100000},
            "output": {"uri": str(tmp_path / "out")},
        }
    )
    with pytest.raises(PrepareError, match="the filter dropped every one of 4 documents"):
        prepare_data(spec, log=lambda _: None)
    uri = resolved_uri(spec)
    assert not (tmp_path / "out" / uri.rstrip("/").rsplit("/", 1)[1] / "index.json").exists()
    assert "filter dropped" in json.loads(open(uri + "prepare-progress.json").read())["error"]


def test_missing_column_is_named(ray_session, tmp_path):
    write_inputs(tmp_path)
    spec = TrainingDataSpec.model_validate({"inputs": [str(tmp_path / "web")], "output": {"uri": str(tmp_path / "o")}})
    with pytest.raises(PrepareError, match="no 'text' column \\(columns: body, lang\\)"):
        prepare_data(spec, log=lambda _: None)
