"""Derived values of a run: the one place steps, batch geometry, warmup and per-source shares come from.

Pure arithmetic on a validated spec; the trainer, the operator and `trainkit validate --explain` all
read the same `Plan`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from trainkit.spec.models import TrainingRunSpec


def parameter_count(arch: dict) -> int:
    """Trainable parameters of a GPT-2 (tied embeddings count once)."""
    d, layers, vocab, ctx = arch["n_embd"], arch["n_layer"], arch["vocab_size"], arch["n_positions"]
    inner = arch.get("n_inner") or 4 * d
    per_layer = (
        2 * 2 * d  # two LayerNorms
        + d * 3 * d
        + 3 * d  # qkv projection
        + d * d
        + d  # attention output
        + d * inner
        + inner
        + inner * d
        + d  # MLP
    )
    embeddings = vocab * d + ctx * d
    head = 0 if arch.get("tie_word_embeddings", True) else vocab * d
    return embeddings + layers * per_layer + 2 * d + head


def flops_per_token(arch: dict, seq_length: int) -> float:
    """Training FLOPs per token: 6 x (non-embedding params + LM head) + attention (PaLM appendix B).

    For gpt2-70m at 1024 this is 4.56e8, the figure MFU is computed against.
    """
    d, layers, vocab, ctx = arch["n_embd"], arch["n_layer"], arch["vocab_size"], arch["n_positions"]
    non_embedding = parameter_count(arch) - vocab * d - ctx * d
    if not arch.get("tie_word_embeddings", True):
        non_embedding -= vocab * d
    lm_head = vocab * d
    return 6.0 * (non_embedding + lm_head) + 12.0 * layers * seq_length * d


@dataclass(frozen=True)
class SourceShare:
    """A source's share of the run by weight. How many sequences it gives is the stream's schedule's
    (`trainkit.data.loader.sequences_needed`), not a rounding of its own here: one rule, the stream's."""

    name: str
    weight: float  # normalised


@dataclass(frozen=True)
class Plan:
    tokens_per_step: int
    total_steps: int
    total_sequences: int
    tokens_trained: int
    gradient_accumulation: int
    sequences_per_worker_step: int
    warmup_steps: int
    parameters: int
    flops_per_token: float
    total_flops: float
    sources: tuple[SourceShare, ...]

    def to_dict(self) -> dict:
        return asdict(self)


# Evals during training (eval.everySteps): each runs the eval suite and the validation loss on a checkpoint, so a
# run asks for at most this many (eval.everySteps 1 on a long run would evaluate forever).
MAX_PERIODIC_EVALS = 100


class PlanError(ValueError):
    """The spec is valid field by field but describes a run that cannot happen."""


def derive_plan(spec: TrainingRunSpec) -> Plan:
    t, d = spec.training, spec.data
    tokens_per_step = t.global_batch_size * d.seq_length
    # Whole steps only: a run never trains on more than data.totalTokens.
    total_steps = d.total_tokens // tokens_per_step
    if total_steps < 1:
        raise PlanError(
            f"data.totalTokens {d.total_tokens} is less than one step of {tokens_per_step} tokens "
            f"(globalBatchSize {t.global_batch_size} x seqLength {d.seq_length})"
        )
    lr = t.learning_rate
    if lr.warmup_steps is not None:
        warmup = lr.warmup_steps
    elif lr.warmup_fraction is not None:
        warmup = int(lr.warmup_fraction * total_steps)
    else:
        warmup = 0
    if warmup >= total_steps and lr.schedule != "constant":
        raise PlanError(
            f"training.learningRate warmup ({warmup} steps) is not shorter than the run ({total_steps} steps)"
        )
    every = spec.eval.every_steps
    if every is not None and total_steps // every > MAX_PERIODIC_EVALS:
        raise PlanError(
            f"eval.everySteps {every} asks for {total_steps // every} evals over the run's {total_steps} steps; "
            f"at most {MAX_PERIODIC_EVALS}: set it to at least {-(-total_steps // MAX_PERIODIC_EVALS)}"
        )
    total_sequences = total_steps * t.global_batch_size
    total_w = sum(s.weight for s in d.sources)
    arch = spec.model.architecture()
    fpt = flops_per_token(arch, d.seq_length)
    return Plan(
        tokens_per_step=tokens_per_step,
        total_steps=total_steps,
        total_sequences=total_sequences,
        tokens_trained=total_steps * tokens_per_step,
        gradient_accumulation=t.global_batch_size // (t.micro_batch_size * spec.resources.workers),
        sequences_per_worker_step=t.global_batch_size // spec.resources.workers,
        warmup_steps=warmup,
        parameters=parameter_count(arch),
        flops_per_token=fpt,
        total_flops=fpt * total_steps * tokens_per_step,
        sources=tuple(SourceShare(s.name, s.weight / total_w) for s in d.sources),
    )
