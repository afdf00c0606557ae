"""hf:// inputs through huggingface_hub's HfFileSystem, against a local Hub stand-in (tests/support/hub_server.py: the
routes HfFileSystem calls, read from huggingface_hub 2.4.0's source) serving real parquet of English text (the demo
`edu` source: the Python 3.11 documentation).

The good path runs the prepare RayJob's own entrypoint (`python -m trainkit.jobs.prepare --spec FILE`) in a subprocess
with the token in HF_TOKEN, as the RayJob's secretKeyRef gives it, on its own local Ray: the session's Ray workers run
with HF_HUB_OFFLINE=1 (tests/conftest.py). Bad inputs fail while the inputs are listed, before any Ray work, so they
run in this process with huggingface_hub's offline switch turned off for the test.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from support.hub_server import HubServer
from trainkit.data.prepare import prepare_errors, run_prepare
from trainkit.jobs.prepare import prepare_data
from trainkit.spec.data import INDEX_FILE, PROGRESS_FILE, TrainingDataSpec, resolved_uri

TOKEN = "hf_plantedHubTokenDoNotLeak0123456789"
# What the stand-in's docstring lists (and nothing else is called).
DOCUMENTED_ROUTES = {"agent_harnesses", "repo_info", "tree", "paths_info", "resolve"}


@pytest.fixture(scope="module")
def hub(demo_text):
    edu = {f"data/{p.name}": p.read_bytes() for p in sorted((Path(demo_text) / "edu" / "data").glob("*.parquet"))}
    body = io.BytesIO()
    pq.write_table(pa.table({"body": ["a document under the wrong column name"] * 3}), body)
    # Two entries per listing page: the listing must follow the Link header's cursor pages.
    with HubServer(page_size=2) as server:
        server.add_dataset(
            "acme/edu-text", {**edu, "README.md": b"---\nlicense: psf-2.0\n---\n", ".gitattributes": b"*.parquet lfs\n"}
        )
        server.add_dataset("acme/private-edu", edu, private=True, readers=(TOKEN,))
        server.add_dataset("acme/no-text-column", {"data/train-00000-of-00001.parquet": body.getvalue()})
        yield server


def data_document(inputs: list[str], out: Path, **spec) -> dict:
    return {
        "apiVersion": "trainkit.dev/v1alpha1",
        "kind": "TrainingData",
        "metadata": {"name": "edu"},
        "spec": {"inputs": inputs, "output": {"uri": str(out)}, "shardTokens": 4096, **spec},
    }


def subprocess_env(hub_url: str, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "RAY_ADDRESS")}
    env.update(HF_ENDPOINT=hub_url, HF_HUB_OFFLINE="0", PYTHONUNBUFFERED="1")
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_hub_input_gives_the_same_shards_as_a_local_copy(ray_session, demo_text, hub, tmp_path):
    local = run_prepare(str(Path(demo_text) / "edu"), str(tmp_path / "local"), shard_tokens=4096, log=lambda _: None)

    doc = data_document(["hf://datasets/acme/private-edu"], tmp_path / "out")
    (tmp_path / "edu.yaml").write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "trainkit.jobs.prepare", "--spec", str(tmp_path / "edu.yaml")],
        env=subprocess_env(hub.url, TOKEN),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = Path(resolved_uri(TrainingDataSpec.model_validate(doc["spec"])))
    index = json.loads((out / INDEX_FILE).read_text())

    # The same tokens, shard by shard and byte by byte, as the local copy of the same parquet files.
    def without_input(shards):
        return [{k: v for k, v in s.items() if k != "input"} for s in shards]

    assert without_input(index["shards"]) == without_input(local["shards"])
    assert without_input(index["validation"]["shards"]) == without_input(local["validation"]["shards"])
    assert (index["totalTokens"], index["totalDocuments"]) == (local["totalTokens"], local["totalDocuments"])
    assert index["totalTokens"] > 10_000 and index["tokenizer"] == local["tokenizer"]
    for shard in index["shards"] + index["validation"]["shards"]:
        assert (out / shard["file"]).read_bytes() == (tmp_path / "local" / shard["file"]).read_bytes()
    # Every file was read at the commit `main` named when the prepare began, and the index says which.
    commit = hub.datasets["acme/private-edu"].commit
    assert [f["uri"] for f in index["sourceFiles"]] == [
        f"hf://datasets/acme/private-edu@{commit}/data/{p.name}"
        for p in sorted((Path(demo_text) / "edu" / "data").glob("*.parquet"))
    ]
    # The token went with every request for the private dataset, and nowhere else: not printed, not written.
    private = [r for r in hub.requests if "private-edu" in r["path"]]
    assert private and all(r["token"] for r in private)
    assert TOKEN not in proc.stdout + proc.stderr
    assert not [name for name, data in files_under(tmp_path / "out").items() if TOKEN.encode() in data]
    assert {"repo_info", "tree", "resolve"} <= hub.routes_called() <= DOCUMENTED_ROUTES


@pytest.fixture
def online(hub, monkeypatch):
    """This process, online against the stand-in (the session is offline: tests/conftest.py), with no token."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", os.environ["HF_HOME"])  # no saved login token there
    return hub


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "source, words",
    [
        (
            "hf://datasets/acme/private-edu",
            "the hub answered 401 for hub dataset acme/private-edu at {hub} and no token was sent: the dataset is "
            "private, gated or does not exist (a TrainingData names a Secret with key HF_TOKEN in spec.hfTokenSecret",
        ),
        ("hf://datasets/acme/edu-text@v2.0", "revision 'v2.0' does not exist in hub dataset acme/edu-text at {hub}"),
        ("hf://datasets/acme/no-text-column", "train-00000-of-00001.parquet: no 'text' column (columns: body)"),
        ("hf://datasets/acme/edu-text/data/missing", "no such file or folder in hub dataset acme/edu-text at {hub}"),
        ("unreachable", "the hub at {hub} is unreachable (ConnectError: "),
    ],
    ids=["private-without-token", "unknown-revision", "missing-column", "missing-path", "unreachable-hub"],
)
def test_bad_hub_inputs_fail_clearly_and_nothing_is_ready(online, monkeypatch, tmp_path, source, words):
    if source == "unreachable":
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        source = "hf://datasets/acme/edu-text"
    words = words.format(hub=os.environ["HF_ENDPOINT"])
    spec = TrainingDataSpec.model_validate(data_document([source], tmp_path / "out")["spec"])
    with pytest.raises(prepare_errors()) as failed:
        prepare_data(spec, log=lambda _: None)
    assert words in str(failed.value)
    out = Path(resolved_uri(spec))
    assert not (out / INDEX_FILE).exists() and not (out / "shards").exists()
    assert words in json.loads((out / PROGRESS_FILE).read_text())["error"]  # what the TrainingData's status shows


def test_cli_names_a_refused_token_without_printing_it(hub, tmp_path):
    wrong = "hf_wrongTokenNeverPrinted42"
    proc = subprocess.run(
        [sys.executable, "-m", "trainkit.cli", "prepare", "hf://datasets/acme/private-edu", str(tmp_path / "out")],
        env=subprocess_env(hub.url, wrong),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.startswith(
        f"trainkit prepare: error: hf://datasets/acme/private-edu: the hub answered 401 for hub dataset "
        f"acme/private-edu at {hub.url} with the token given: the token is invalid"
    ), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and wrong not in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / INDEX_FILE).exists()
