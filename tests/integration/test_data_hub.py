"""hf:// inputs through huggingface_hub's HfFileSystem, against a local Hub stand-in (tests/support/hub_server.py: the
routes HfFileSystem calls, read from huggingface_hub 2.4.0's source) serving real parquet of English text (the demo
`edu` source: the Python 3.11 documentation).

The good path goes through the operator (kopf against the API test server, the chart's RBAC, moto S3): a
TrainingData naming a private hub dataset and the Secret holding its token. KubeRay is SIMULATED, as in
test_operator_training_data.py: the prepare RayJob's head pod's entrypoint (`python -m trainkit.jobs.prepare --spec
FILE`, FILE its ConfigMap) runs with the env the kubelet would give that pod (HF_TOKEN from the Secret by secretKeyRef,
HF_ENDPOINT from the operator's hub setting), in a subprocess on its own local Ray: the session's Ray workers run with
HF_HUB_OFFLINE=1 (tests/conftest.py). Bad hub inputs fail while the inputs are listed, before any Ray work, so they
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

from support.hub_server import HubServer
from test_operator_support import (
    RAYJOBS,
    apply,
    assert_no_credentials,
    condition,
    data_doc,
    data_status,
    dataset_run_doc,
    get,
    kuberay_sets_status,
    operator_config,
    prepare_pod,
    run_prepare_job,
    running_operator,
    secret_doc,
    serve_training_data,
    status_of,
    wait_for,
)
from trainkit import storage
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


@pytest.fixture
def data_cluster(cluster):
    """The API test server serving TrainingData; the chart's RBAC lets the operator check the hub token's Secret."""
    return serve_training_data(cluster, secret_names=("hf-token",))


def test_hub_input_through_the_operator_gives_the_same_shards_as_a_local_copy(
    data_cluster, s3_endpoint, s3_bucket, ray_session, demo_text, hub, tmp_path
):
    local = run_prepare(str(Path(demo_text) / "edu"), str(tmp_path / "local"), shard_tokens=4096, log=lambda _: None)

    data_cluster.create(secret_doc("hf-token", HF_TOKEN=TOKEN))
    doc = data_doc("hub-edu", ["hf://datasets/acme/private-edu"], s3_bucket, s3_endpoint, hfTokenSecret="hf-token")
    # The platform's hub (the chart's hub.endpoint): this stand-in.
    with running_operator(data_cluster, operator_config(hf_endpoint=hub.url)):
        apply(data_cluster, tmp_path, doc)
        rj = wait_for(lambda: get(data_cluster, RAYJOBS, "data-hub-edu"), what="the prepare RayJob")
        head = rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        env_of = {e["name"]: e for e in head["env"]}
        assert env_of["HF_TOKEN"]["valueFrom"] == {
            "secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN", "optional": False}
        }
        assert env_of["HF_ENDPOINT"] == {"name": "HF_ENDPOINT", "value": hub.url}
        assert TOKEN not in json.dumps(rj)
        env, spec_file = prepare_pod(
            data_cluster, tmp_path, rj
        )  # SIMULATED kubelet: the Secret's token, by secretKeyRef
        assert env["HF_TOKEN"] == TOKEN and env["HF_ENDPOINT"] == hub.url
        kuberay_sets_status(data_cluster, "data-hub-edu", jobStatus="RUNNING", jobDeploymentStatus="Running")
        proc = subprocess.run(
            [sys.executable, "-m", "trainkit.jobs.prepare", "--spec", str(spec_file)],
            env=pod_process_env(env),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        kuberay_sets_status(data_cluster, "data-hub-edu", jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
        st = wait_for(
            lambda: (
                data_status(data_cluster, "hub-edu").get("phase") == "Ready" and data_status(data_cluster, "hub-edu")
            )
        )
    out = st["uri"]
    assert out == resolved_uri(TrainingDataSpec.model_validate(doc["spec"]))
    index = storage.read_json(out + INDEX_FILE)
    assert (st["totalTokens"], st["shards"], st["fingerprint"]) == (
        index["totalTokens"],
        len(index["shards"]),
        index["tokenizer"]["fingerprint"],
    )

    # The same tokens, shard by shard and byte by byte, as the local copy of the same parquet files.
    def without_input(shards):
        return [{k: v for k, v in s.items() if k != "input"} for s in shards]

    assert without_input(index["shards"]) == without_input(local["shards"])
    assert without_input(index["validation"]["shards"]) == without_input(local["validation"]["shards"])
    assert (index["totalTokens"], index["totalDocuments"]) == (local["totalTokens"], local["totalDocuments"])
    assert index["totalTokens"] > 10_000 and index["tokenizer"] == local["tokenizer"]
    for shard in index["shards"] + index["validation"]["shards"]:
        assert storage.read_bytes(out + shard["file"]) == (tmp_path / "local" / shard["file"]).read_bytes()
    # Every file was read at the commit `main` named when the prepare began, and the index says which.
    commit = hub.datasets["acme/private-edu"].commit
    assert [f["uri"] for f in index["sourceFiles"]] == [
        f"hf://datasets/acme/private-edu@{commit}/data/{p.name}"
        for p in sorted((Path(demo_text) / "edu" / "data").glob("*.parquet"))
    ]
    # The token went with every request for the private dataset, and nowhere else: not printed, not written, not in
    # any object of the API server but its Secret.
    private = [r for r in hub.requests if "private-edu" in r["path"]]
    assert private and all(r["token"] for r in private)
    assert TOKEN not in proc.stdout + proc.stderr
    assert not [uri for uri in storage.find(out) if TOKEN.encode() in storage.read_bytes(uri)]
    for resource in ("trainingdatas.trainkit.dev", RAYJOBS, "configmaps", "events"):
        assert TOKEN not in json.dumps(data_cluster.list(resource, "default"))
    assert {"repo_info", "tree", "resolve"} <= hub.routes_called() <= DOCUMENTED_ROUTES


def pod_process_env(pod_env: dict[str, str]) -> dict[str, str]:
    """This machine's environment (Python, paths) with the pod's env on top; HF_HUB_OFFLINE=0 undoes this test
    session's offline switch (tests/conftest.py), which a real pod never has."""
    base = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT", "RAY_ADDRESS")}
    return {**base, **pod_env, "HF_HUB_OFFLINE": "0", "PYTHONUNBUFFERED": "1"}


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


def test_bad_inputs_through_the_operator_fail_the_data_and_the_runs_naming_it(
    data_cluster, online, s3_endpoint, s3_bucket, demo_text, ray_session, monkeypatch, tmp_path
):
    """A private hub dataset without a token, a revision that does not exist, a filter that drops every document:
    each TrainingData Failed with the prepare's own message, no index.json, and the run naming them Failed saying
    which source and why. SIMULATED KubeRay (module docstring): each prepare pod's entrypoint runs in this process
    with the pod's env (the hub cases fail while listing; the filter case runs on this session's Ray)."""
    storage.upload_dir(Path(demo_text) / "edu", f"{s3_bucket}/raw/edu")
    cases = {
        "no-token": (
            ["hf://datasets/acme/private-edu"],
            {},
            f"the hub answered 401 for hub dataset acme/private-edu at {online.url} and no token was sent",
        ),
        "no-revision": (
            ["hf://datasets/acme/edu-text@v2.0"],
            {},
            f"revision 'v2.0' does not exist in hub dataset acme/edu-text at {online.url}",
        ),
        "all-filtered": (
            [f"{s3_bucket}/raw/edu/"],
            {"filter": {"minLength": 10_000_000}},
            f"input {s3_bucket}/raw/edu/: the filter dropped every one of ",
        ),
    }
    docs = [data_doc(name, inputs, s3_bucket, s3_endpoint, **spec) for name, (inputs, spec, _) in cases.items()]
    with running_operator(data_cluster, operator_config(hf_endpoint=online.url)):
        apply(
            data_cluster,
            tmp_path,
            *docs,
            dataset_run_doc("bad-mix", s3_bucket, {"edu": "no-token", "web": "all-filtered"}),
        )
        for name, (_, _, words) in cases.items():
            rj = wait_for(lambda n=name: get(data_cluster, RAYJOBS, f"data-{n}"), what=f"the prepare RayJob of {name}")
            assert run_prepare_job(data_cluster, monkeypatch, tmp_path, rj) == 1
            st = wait_for(
                lambda n=name: data_status(data_cluster, n).get("phase") == "Failed" and data_status(data_cluster, n)
            )
            assert st["reason"] == "PrepareFailed" and words in st["message"], st["message"]
            assert words in condition(st, "Failed")["message"]
            assert not storage.exists(st["uri"] + INDEX_FILE)  # nothing half-written presented as a source
        filtered = data_status(data_cluster, "all-filtered")["message"]
        assert '"minLength": 10000000' in filtered and filtered.endswith("; nothing to prepare")
        # Failed from the first failed source on; the message names every failed one as they fail.
        st = wait_for(
            lambda: "'all-filtered' Failed" in (s := status_of(data_cluster, "bad-mix")).get("message", "") and s
        )
        assert st["phase"] == "Failed"
        assert st["reason"] == "DataFailed" and not get(data_cluster, RAYJOBS, "bad-mix")
        assert "source edu: TrainingData 'no-token' Failed: prepare failed: " in st["message"]
        assert "source web: TrainingData 'all-filtered' Failed: prepare failed: " in st["message"]
        assert cases["no-token"][2] in st["message"] and cases["all-filtered"][2] in st["message"]
    assert_no_credentials(data_cluster)


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
