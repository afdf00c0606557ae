"""GPT-2 from a run's model spec: preset + overrides + dropout -> `transformers.GPT2LMHeadModel`.

The model knows nothing about parallelism, precision or devices; the trainer wraps it (DDP through
Ray Train's `prepare_model`, autocast, `torch.compile`).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainkit.spec.models import ModelSpec

# GPT-2's end-of-text token: also its BOS and the pad id used for generation.
GPT2_EOS_ID = 50256


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build the network: resolved architecture numbers plus dropout."""

    architecture: dict
    dropout: float = 0.0

    @classmethod
    def from_spec(cls, model: ModelSpec, dropout: float = 0.0) -> "ModelConfig":
        return cls(architecture=model.architecture(), dropout=dropout)


def gpt2_config(cfg: ModelConfig, eos_id: int = GPT2_EOS_ID):
    from transformers import GPT2Config

    arch = dict(cfg.architecture)
    return GPT2Config(
        **arch,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        use_cache=True,  # for generate() after download; the trainer passes use_cache=False
    )


def build_model(cfg: ModelConfig, eos_id: int = GPT2_EOS_ID):
    """A freshly initialised GPT2LMHeadModel (fp32, CPU). Seed torch first for a reproducible init."""
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel(gpt2_config(cfg, eos_id))


def trainable_parameters(model) -> int:
    """Distinct trainable parameters (tied embeddings count once), comparable with `Plan.parameters`."""
    seen, n = set(), 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n
