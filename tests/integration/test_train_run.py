"""The trainer on real parts: local Ray Train (2 workers, DDP over gloo), a moto S3 server, the real GPT-2
tokenizer and English text (Python's own documentation) in token shards.

One module, a few fits shared by the tests (each fit costs ~10 s of Ray start-up here):
  A  2 workers, uninterrupted                       -> the reference
  B  2 workers, rank 1 raises at step 6, max_failures=1 -> resumes from step 4, must equal A bit for bit
  C  A's step-8 checkpoint + an interrupted upload of step 12, re-run with 1 worker
                                                    -> resumes from step 8, continues A's exact stream
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from trainkit import artifacts, storage
from trainkit.spec import parse_spec
from trainkit.train import checkpoint
from trainkit.train.launch import PreflightError, preflight, run_training

pytestmark = pytest.mark.slow

STEPS, LOG_EVERY, CKPT_EVERY = 12, 2, 4


def write_source(uri: str, docs: list[str], shard_tokens: int = 8192) -> None:
    """A minimal `trainkit-tokens-v1` source via the data plane's own format functions."""
    from trainkit.data import load_tokenizer
    from trainkit.data.shards import dtype_for_vocab, encode_shard, index_document

    tok = load_tokenizer("gpt2")
    ids: list[int] = []
    for d in tok.encode_batch(docs):
        ids += d + [tok.eos_id]
    arr, dtype, shards = np.asarray(ids), dtype_for_vocab(tok.vocab_size), []
    for i, start in enumerate(range(0, len(arr), shard_tokens)):
        part = arr[start : start + shard_tokens]
        data, crc = encode_shard(part, dtype)
        storage.write_bytes(storage.join(uri, f"shards/{i:05d}.bin"), data)
        shards.append(
            {
                "file": f"shards/{i:05d}.bin",
                "tokens": len(part),
                "bytes": len(data),
                "crc32": crc,
                "documents": int((part == tok.eos_id).sum()),
            }
        )
    storage.write_json(
        storage.join(uri, "index.json"),
        index_document(dtype=dtype, tokenizer=tok, shards=shards, source_files=[], shard_tokens=shard_tokens),
    )


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    import boto3

    name = f"tk-train-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def sources(bucket):
    from pydoc_data.topics import topics

    docs = [topics[k] for k in sorted(topics)]
    uris = {}
    for i, name in enumerate(("manuals", "web", "edu")):
        uris[name] = f"{bucket}/shards/{name}"
        write_source(uris[name], docs[i::3][:12])
    return uris


def make_spec(sources: dict, output: str, workers: int = 2, data: dict | None = None, **training):
    doc = {
        "model": {"preset": "tiny"},
        "data": {
            "seqLength": 32,
            "totalTokens": STEPS * 4 * 32,
            "whenExhausted": "repeat",
            "sources": [{"name": n, "uri": u, "weight": w} for (n, u), w in zip(sources.items(), (0.5, 0.3, 0.2))],
            **(data or {}),
        },
        "training": {
            "microBatchSize": 2,
            "globalBatchSize": 4,
            "precision": "fp32",
            "seed": 7,
            "dropout": 0.1,
            "learningRate": {"peak": 3e-3, "final": 3e-4, "warmupSteps": 2},
            "logEverySteps": LOG_EVERY,
            **training,
        },
        "checkpoint": {"everySteps": CKPT_EVERY, "keep": 2},
        "resources": {"workers": workers, "gpusPerWorker": 0, "cpusPerWorker": 1, "memoryPerWorker": "4Gi"},
        "output": {"uri": output},
    }
    return parse_spec(doc)[0]


def metrics(output: str) -> list[dict]:
    return [json.loads(x) for x in storage.read_bytes(storage.join(output, "metrics.jsonl")).decode().splitlines()]


def weights(output: str, step: int) -> bytes:
    return storage.read_bytes(storage.join(artifacts.checkpoint_uri(output, step), "model.safetensors"))


class FaultEnv:
    def __init__(self, **env):
        self.env = {f"TEST_FAULT_{k.upper()}": str(v) for k, v in env.items()}

    def __enter__(self):
        os.environ.update(self.env)

    def __exit__(self, *exc):
        for k in self.env:
            os.environ.pop(k, None)


@pytest.fixture(scope="module")
def run_a(ray_session, bucket, sources):
    out = f"{bucket}/runs/a"
    run_training(make_spec(sources, out), name=f"a-{uuid.uuid4().hex[:6]}")
    return out


@pytest.fixture(scope="module")
def run_b(ray_session, bucket, sources, tmp_path_factory):
    out = f"{bucket}/runs/b"
    marker = tmp_path_factory.mktemp("fault") / "b"
    with FaultEnv(at_step=6, rank=1, marker=marker):
        run_training(make_spec(sources, out), name=f"b-{uuid.uuid4().hex[:6]}", max_failures=1)
    assert marker.exists(), "the fault never fired"
    return out


def test_uninterrupted_run_writes_the_layout(run_a):
    assert artifacts.latest_complete_checkpoint(run_a) == STEPS
    listing, manifests = artifacts.list_checkpoints(run_a)
    assert sorted(artifacts.parse_checkpoint_listing(listing)) == [8, 12]  # keep: 2
    progress = storage.read_json(storage.join(run_a, "progress.json"))
    assert progress["step"] == progress["totalSteps"] == STEPS and progress["tokens"] == STEPS * 4 * 32
    assert progress["mfu"] is None and progress["tokensPerSecond"] > 0  # CPU: no MFU
    lines = metrics(run_a)
    assert [m["step"] for m in lines] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert lines[-1]["loss"] < lines[0]["loss"]
    # Exact mixture: 48 sequences split 50/30/20 within one sequence per source.
    final = lines[-1]["sourceSequences"]
    assert sum(final.values()) == STEPS * 4
    assert all(abs(final[n] - STEPS * 4 * w) <= 1 for n, w in (("manuals", 0.5), ("web", 0.3), ("edu", 0.2)))
    assert storage.read_json(storage.join(run_a, "spec.json"))["output"]["uri"] == run_a


def test_worker_fault_resumes_bit_for_bit(run_a, run_b):
    lines = metrics(run_b)
    # Resumed from step 4: every log step exactly once, the later ones from the second attempt.
    assert [m["step"] for m in lines] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert [m["startStep"] for m in lines] == [0, 0, 4, 4, 4, 4]
    assert weights(run_b, STEPS) == weights(run_a, STEPS)  # fp32 CPU: bitwise equal
    a, b = metrics(run_a), lines
    assert [m["sourceSequences"] for m in b] == [m["sourceSequences"] for m in a]  # nothing repeated or skipped
    assert b[-1]["streamDigest"] == a[-1]["streamDigest"]  # the very same sequences, in the same order
    assert [m["loss"] for m in b] == [m["loss"] for m in a]


def copy_checkpoint(src_out: str, dst_out: str, step: int, dst_step: int | None = None, commit: bool = True) -> None:
    src, dst = artifacts.checkpoint_uri(src_out, step), artifacts.checkpoint_uri(dst_out, dst_step or step)
    files = storage.read_json(storage.join(src, "checkpoint.json"))["files"]
    for rel in files:
        storage.write_bytes(storage.join(dst, rel), storage.read_bytes(storage.join(src, rel)))
    if commit:
        storage.write_bytes(
            storage.join(dst, "checkpoint.json"), storage.read_bytes(storage.join(src, "checkpoint.json"))
        )


def test_interrupted_uploads_are_never_picked(run_a, bucket):
    out = f"{bucket}/runs/torn"
    copy_checkpoint(run_a, out, 8)
    copy_checkpoint(run_a, out, 12, commit=False)  # cut before the commit marker
    copy_checkpoint(run_a, out, 12, dst_step=16)  # committed, then a listed file lost
    storage.filesystem(out)[0].rm(artifacts.checkpoint_uri(out, 16)[5:] + "/trainer/optimizer.pt")
    copy_checkpoint(run_a, out, 12, dst_step=20)  # committed, a listed file cut short
    storage.write_bytes(storage.join(artifacts.checkpoint_uri(out, 20), "model.safetensors"), b"torn")
    assert artifacts.latest_complete_checkpoint(out) == 8
    assert checkpoint.prune(out, keep=1) == [12, 16, 20]
    assert artifacts.latest_complete_checkpoint(out) == 8


def test_resume_with_fewer_workers_continues_the_exact_stream(ray_session, bucket, sources, run_a):
    """Step 8 of the 2-worker run A (and its metrics up to there), an interrupted upload of step 12 beside
    it, then the same run with 1 worker: it resumes from 8 and trains on exactly A's remaining sequences."""
    out = f"{bucket}/runs/c"
    copy_checkpoint(run_a, out, 8)
    copy_checkpoint(run_a, out, 12, commit=False)
    lines = [m for m in metrics(run_a) if m["step"] <= 8]
    storage.write_bytes(storage.join(out, "metrics.jsonl"), "".join(json.dumps(m) + "\n" for m in lines).encode())

    run_training(make_spec(sources, out, workers=1), name=f"c-{uuid.uuid4().hex[:6]}")
    lines, ref = metrics(out), metrics(run_a)
    assert [(m["step"], m["startStep"]) for m in lines] == [(2, 0), (4, 0), (6, 0), (8, 0), (10, 8), (12, 8)]
    assert [m["sourceSequences"] for m in lines] == [m["sourceSequences"] for m in ref]
    assert lines[-1]["streamDigest"] == ref[-1]["streamDigest"]
    import torch
    from safetensors.torch import load

    mine, theirs = load(weights(out, STEPS)), load(weights(run_a, STEPS))
    # Same data, same dropout masks (drawn per micro-batch); only the gradient reduction order differs.
    assert all(torch.allclose(mine[k], theirs[k], rtol=0, atol=1e-5) for k in theirs)


def test_checkpoint_loads_with_transformers_and_generates(run_a, tmp_path):
    """The model card's usage snippet, on a downloaded checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = checkpoint.download(run_a, STEPS, tmp_path / "ckpt")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    inputs = tokenizer("The future of AI is", return_tensors="pt")
    outputs = model.generate(
        **inputs, max_length=20, do_sample=True, temperature=0.8, top_p=0.9, pad_token_id=tokenizer.eos_token_id
    )
    assert outputs.shape[1] > inputs["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(outputs[0]), str)


# ------------------------------------------------------------------------------------ bad input
def test_missing_shards_fail_before_training_naming_the_source(sources, bucket):
    bad = dict(sources, web=f"{bucket}/shards/nowhere")
    out = f"{bucket}/runs/missing"
    spec = make_spec(bad, out)
    with pytest.raises(PreflightError, match=r"spec\.data\.sources\[1\]\.uri \(web\).*index\.json"):
        run_training(spec)
    assert not storage.exists(out)  # nothing written


def test_spec_that_does_not_fit_memory_fails_before_training(sources, bucket):
    out = f"{bucket}/runs/oom"
    spec = make_spec(
        sources, out, data={"seqLength": 256, "totalTokens": 10**6}, microBatchSize=64, globalBatchSize=128
    )
    spec = parse_spec(
        {
            **spec.model_dump(mode="json", by_alias=True),
            "resources": {"workers": 2, "gpusPerWorker": 0, "cpusPerWorker": 1, "memoryPerWorker": "2Gi"},
        }
    )[0]
    with pytest.raises(PreflightError, match=r"resources\.memoryPerWorker 2Gi is too small"):
        run_training(spec)
    assert not storage.exists(out)


def test_unreachable_output_fails_before_training(sources, tmp_path):
    spec = make_spec(sources, "s3://tk-no-such-bucket-4242/runs/x")
    with pytest.raises(PreflightError, match=r"spec\.output\.uri s3://tk-no-such-bucket-4242/runs/x is not writable"):
        preflight(
            spec, __import__("trainkit.spec", fromlist=["derive_plan"]).derive_plan(spec), storage.StorageOptions()
        )


def test_end_of_training_eval_hook_reads_our_checkpoint(ray_session, run_a, bucket, sources):
    """spec.eval with a task: the hook evaluates the final checkpoint as its own Ray task (trainkit.eval)."""
    from trainkit.train.launch import TrainedRun, run_eval_hook

    tasks = Path(__file__).resolve().parents[1] / "data" / "lm_eval_tasks" / "tk_winogrande"
    storage.upload_dir(tasks, f"{bucket}/tasks/winogrande-like")
    doc = make_spec(sources, run_a).model_dump(mode="json", by_alias=True)
    doc["eval"] = {
        "tasks": [{"name": "tk_winogrande", "path": f"{bucket}/tasks/winogrande-like", "limit": 4}],
        "batchSize": 2,
    }
    spec = parse_spec(doc)[0]
    summary = run_eval_hook(spec, TrainedRun(run_a, STEPS, artifacts.checkpoint_uri(run_a, STEPS)))
    assert summary is not None and "error" not in summary, summary
    assert summary["step"] == STEPS and 0.0 <= summary["tasks"]["tk_winogrande"] <= 1.0
    assert storage.read_json(storage.join(run_a, f"eval/step-{STEPS:08d}/summary.json")) == summary


def test_evals_every_n_steps_run_beside_training(ray_session, bucket, sources):
    """spec.eval.everySteps: rank 0 evaluates checkpoints of steps 4 and 8 as Ray tasks while it trains on
    (their checkpoints are kept until their eval is done, whatever checkpoint.keep says); the driver
    evaluates the final step."""
    tasks = Path(__file__).resolve().parents[1] / "data" / "lm_eval_tasks" / "tk_winogrande"
    storage.upload_dir(tasks, f"{bucket}/tasks/winogrande-periodic")
    out = f"{bucket}/runs/periodic-eval"
    doc = make_spec(sources, out, workers=1).model_dump(mode="json", by_alias=True)
    doc["checkpoint"] = {"everySteps": 100, "keep": 1}  # evals force their own checkpoints
    doc["eval"] = {
        "everySteps": 4,
        "batchSize": 2,
        "tasks": [{"name": "tk_winogrande", "path": f"{bucket}/tasks/winogrande-periodic", "limit": 4}],
    }
    result = run_training(parse_spec(doc)[0], name=f"e-{uuid.uuid4().hex[:6]}")
    steps = [storage.read_json(storage.join(out, f"eval/step-{s:08d}/summary.json"))["step"] for s in (4, 8, STEPS)]
    assert steps == [4, 8, STEPS]
    assert result.eval["step"] == STEPS
    assert artifacts.latest_complete_checkpoint(out) == STEPS


def test_fsdp2_sharded_run_resumes_and_matches_ddp(ray_session, run_a, bucket, sources, tmp_path_factory):
    """training.parallelism: fsdp (PyTorch FSDP2 over 2 workers): a fault at step 6 resumes from the
    FSDP-written step-4 checkpoint (full weights + name-keyed optimizer state), and the final weights
    equal the DDP reference run's up to the order of floating-point reductions."""
    from safetensors.torch import load as load_safetensors

    out = f"{bucket}/runs/fsdp"
    marker = tmp_path_factory.mktemp("fault") / "fsdp"
    with FaultEnv(at_step=6, rank=1, marker=marker):
        run_training(make_spec(sources, out, parallelism="fsdp"), name=f"f-{uuid.uuid4().hex[:6]}", max_failures=1)
    assert marker.exists(), "the fault never fired"
    assert metrics(out)[-1]["startStep"] == 4  # the second attempt resumed from the FSDP checkpoint
    ours, ddp = load_safetensors(weights(out, STEPS)), load_safetensors(weights(run_a, STEPS))
    assert ours.keys() == ddp.keys()
    # Adam turns reduction-order noise in near-zero gradients into differences of ~5e-5 on a few
    # embedding rows; a lost optimizer state or a missed gradient would differ by ~lr (3e-3) per step.
    for name in ddp:
        np.testing.assert_allclose(ours[name].numpy(), ddp[name].numpy(), rtol=0, atol=2e-4, err_msg=name)
    assert [round(m["loss"], 3) for m in metrics(out)[-3:]] == [round(m["loss"], 3) for m in metrics(run_a)[-3:]]
    assert metrics(out)[-1]["streamDigest"] == metrics(run_a)[-1]["streamDigest"]
