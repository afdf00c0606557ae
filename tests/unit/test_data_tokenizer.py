"""The run's tokenizer: the real GPT-2 BPE (offline files), tiktoken encoding equal to Hugging Face's."""

from __future__ import annotations

import json
import shutil

import pytest

from trainkit.data.tokenizer import TokenizerError, gpt2_files, load_tokenizer


def test_gpt2_encodes_hello_world_as_gpt2_does():
    tok = load_tokenizer("gpt2")
    assert tok.encode("Hello world") == [15496, 995]
    assert (tok.eos_id, tok.vocab_size) == (50256, 50257)
    assert tok.decode([15496, 995]) == "Hello world"


def test_tiktoken_encoding_matches_hugging_face_on_real_text():
    from pydoc_data.topics import topics

    tok = load_tokenizer("gpt2")
    texts = [topics[k] for k in sorted(topics)[:40]]
    hf = tok.hf_tokenizer()
    assert tok.encode_batch(texts) == [hf(t)["input_ids"] for t in texts]


def test_documents_cannot_smuggle_an_eos_token():
    tok = load_tokenizer("gpt2")
    assert tok.eos_id not in tok.encode("end of one <|endoftext|> start of another")


def test_save_pretrained_loads_with_autotokenizer_and_back(tmp_path):
    from transformers import AutoTokenizer

    tok = load_tokenizer("gpt2")
    written = tok.save_pretrained(tmp_path / "ckpt")
    assert {"vocab.json", "merges.txt"} <= set(written)
    assert AutoTokenizer.from_pretrained(str(tmp_path / "ckpt"))("Hello world")["input_ids"] == [15496, 995]
    again = load_tokenizer(str(tmp_path / "ckpt"))
    assert again.fingerprint == tok.fingerprint and again.encode("Hello world") == [15496, 995]


def test_a_different_vocabulary_has_a_different_fingerprint(tmp_path):
    vocab_file, merges_file = gpt2_files()
    vocab = json.loads(vocab_file.read_text())
    vocab["Hello"], vocab["world"] = vocab["world"], vocab["Hello"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    shutil.copyfile(merges_file, tmp_path / "merges.txt")
    assert load_tokenizer(str(tmp_path)).fingerprint != load_tokenizer("gpt2").fingerprint


def test_a_folder_without_the_files_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="vocab.json, merges.txt not found"):
        load_tokenizer(str(tmp_path))
