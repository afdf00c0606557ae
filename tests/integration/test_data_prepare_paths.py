"""`trainkit prepare` with relative local paths on a Ray whose workers run in another working directory:
shards and index.json both land where the caller meant."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from trainkit.data.prepare import run_prepare


def test_relative_paths_resolve_against_the_callers_directory(ray_session, tmp_path, monkeypatch):
    from pydoc_data.topics import topics

    monkeypatch.chdir(tmp_path)  # the session's Ray workers started elsewhere
    (tmp_path / "text" / "data").mkdir(parents=True)
    docs = [topics[k] for k in sorted(topics)[:20]]
    pq.write_table(pa.table({"text": docs}), tmp_path / "text" / "data" / "train-00000-of-00001.parquet")
    index = run_prepare("text", "shards/edu", shard_tokens=4096, log=lambda _: None)
    written = json.loads((tmp_path / "shards" / "edu" / "index.json").read_text())
    assert written["totalDocuments"] == len(docs) == index["totalDocuments"]
    for shard in written["shards"]:
        assert (tmp_path / "shards" / "edu" / shard["file"]).stat().st_size == shard["bytes"]
