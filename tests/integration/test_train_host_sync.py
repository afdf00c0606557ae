"""The step loop never waits for the device except at log steps (the GPU path, checked on CPU).

A host synchronisation is any call that needs a device tensor's value on the host: `.item()`,
`float(t)`, `bool(t)`, `.tolist()`, `.numpy()`, `.cpu()`, `nonzero`... On a GPU each one stalls the
host until the queued kernels finish. `torch.cuda.set_sync_debug_mode` reports them only on CUDA, so
this test runs the real training loop (`trainkit.train.loop.train`, fused AdamW and bf16 autocast as on
a GPU) under a `TorchFunctionMode` that records every such call on a tensor that would live on the
device (the loader's host batches are not), with the step it happened in. Only log steps (and set-up
and the end) may have them; the one exception is the model's own eager forward: transformers 5 checks
GPT-2's position ids for packed sequences (`masking_utils.find_packed_sequence_indices`) with a host
sync, which torch.compile, on by default on CUDA, traces away.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from trainkit import storage
from trainkit.data import load_tokenizer
from trainkit.data.shards import index_document, shard_record
from trainkit.spec import parse_spec
from trainkit.train import loop

STEPS, LOG_EVERY = 5, 3
SYNCS = {"item", "__float__", "__int__", "__bool__", "__index__", "tolist", "numpy", "cpu", "nonzero", "unique"}
# The model's eager forward (see the module docstring); compiled, it has none.
EAGER_FORWARD = {"transformers/masking_utils.py:find_packed_sequence_indices"}


class HostSyncs(TorchFunctionMode):
    """Records (step, call site) of every host-sync call on a non-host tensor."""

    def __init__(self):
        super().__init__()
        self.step = 0
        self.host_storages: set[int] = set()
        self.seen: dict[int, set[str]] = defaultdict(set)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        target = args[0] if args and isinstance(args[0], torch.Tensor) else None
        # (`.to(device)` is not looked at: here the stand-in for the GPU is the CPU itself.)
        if name in SYNCS and target is not None and target.untyped_storage().data_ptr() not in self.host_storages:
            site = call_site()
            if not site.startswith("trainkit/data/"):  # the loader fills host tensors; it never sees the device
                self.seen[self.step].add(site)
        return func(*args, **(kwargs or {}))


def call_site() -> str:
    """The innermost caller outside torch's dispatch and this file, as 'path-tail:function'."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if not (path.endswith("torch/overrides.py") or path == __file__ or "/torch/_tensor" in path):
            tail = path.split("site-packages/")[-1].split("python/")[-1]
            return f"{tail}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "?"


def write_source(uri: str, docs: list[str]) -> None:
    tok = load_tokenizer("gpt2")
    ids = np.array([t for d in docs for t in tok.encode(d) + [tok.eos_id]], dtype=np.uint16)
    data, entry = shard_record("shards/00000.bin", ids, np.dtype("<u2"), len(docs))
    storage.write_bytes(f"{uri}/{entry['file']}", data)
    doc = index_document(dtype=np.dtype("<u2"), tokenizer=tok, shards=[entry], source_files=[], shard_tokens=len(ids))
    storage.write_json(f"{uri}/index.json", doc)


def test_the_step_loop_syncs_with_the_device_only_at_log_steps(tmp_path, monkeypatch):
    from pydoc_data.topics import topics

    docs = [topics[k] for k in sorted(topics)]
    sources = []
    for i, (name, weight) in enumerate((("manuals", 0.5), ("web", 0.3), ("edu", 0.2))):
        write_source(str(tmp_path / name), docs[i::3][:20])
        sources.append({"name": name, "uri": str(tmp_path / name), "weight": weight})
    spec, _ = parse_spec(
        {
            "model": {"preset": "tiny"},
            "data": {"seqLength": 32, "totalTokens": STEPS * 4 * 32, "whenExhausted": "repeat", "sources": sources},
            "training": {
                "microBatchSize": 2,
                "globalBatchSize": 4,
                "precision": "bf16",
                "optimizer": {"fused": True},  # as on a GPU (the default there)
                "logEverySteps": LOG_EVERY,
                "learningRate": {"peak": 1e-3, "final": 1e-4, "warmupSteps": 2},
            },
            "checkpoint": {"everySteps": 1000, "keep": 1},
            "resources": {"workers": 1, "gpusPerWorker": 0, "cpusPerWorker": 1, "memoryPerWorker": "4Gi"},
            "output": {"uri": str(tmp_path / "out")},
        }
    )
    mode = HostSyncs()
    make_loader = loop.make_loader

    def counting_loader(*args, **kwargs):
        loader = make_loader(*args, **kwargs)
        next_step = loader.next_step

        def step(*a, **k):
            batches = next_step(*a, **k)
            mode.step += 1
            mode.host_storages |= {x.untyped_storage().data_ptr() for x in batches}
            return batches

        loader.next_step = step
        return loader

    monkeypatch.setattr(loop, "make_loader", counting_loader)
    with mode:
        result = loop.train({"spec": spec.model_dump(mode="json", by_alias=True)}, loop.WorkerContext())
    assert result["step"] == STEPS

    log_steps = {s for s in range(1, STEPS + 1) if s % LOG_EVERY == 0 or s == STEPS}
    between = {s: sites - EAGER_FORWARD for s, sites in mode.seen.items() if s not in log_steps | {0}}
    assert not any(between.values()), f"host syncs between log steps: {between}"
    # The recorder works: the log steps read the loss (and grad norm) from the device.
    assert all(any("trainkit/train/loop.py" in site for site in mode.seen[s]) for s in log_steps), dict(mode.seen)
    # And the model's eager forward has exactly the one known sync, on every step.
    assert all(mode.seen[s] & EAGER_FORWARD == EAGER_FORWARD for s in range(1, STEPS + 1))
