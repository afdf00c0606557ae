"""Model presets: plain numbers, so validating a spec never imports torch or transformers.

`trainkit.model` turns a preset plus overrides into a `GPT2Config`.
"""

from __future__ import annotations

GPT2_VOCAB = 50257

# Field names are GPT2Config's own, so overrides map onto them one to one.
MODEL_PRESETS: dict[str, dict[str, int | bool]] = {
    # For tests and the CPU quickstart: the real GPT-2 vocabulary, a very small body.
    "tiny": dict(n_layer=2, n_embd=64, n_head=2, n_positions=256, vocab_size=GPT2_VOCAB, tie_word_embeddings=True),
    # The model card "GPT-2 70M - Optimal Dataset Mixing": 64.09M trainable parameters.
    "gpt2-70m": dict(
        n_layer=12, n_embd=512, n_head=8, n_positions=1024, vocab_size=GPT2_VOCAB, tie_word_embeddings=True
    ),
    # GPT-2 small as OpenAI released it.
    "gpt2-124m": dict(
        n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=GPT2_VOCAB, tie_word_embeddings=True
    ),
}


def resolved_architecture(
    preset: str, overrides: dict[str, int | bool | float | str]
) -> dict[str, int | bool | float | str]:
    """The preset's numbers with the user's overrides applied (overrides win)."""
    arch: dict[str, int | bool | float | str] = dict(MODEL_PRESETS[preset])
    arch.update({k: v for k, v in overrides.items() if v is not None})
    return arch
