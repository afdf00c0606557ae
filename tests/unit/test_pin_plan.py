"""The derived plan, pinned with literal numbers: multi-worker geometry, one-step runs, warmup,
the largest-remainder split, tokens and FLOPs, tied and untied embeddings."""

from __future__ import annotations

from typing import Any

import pytest

from trainkit.spec.models import TrainingRunSpec
from trainkit.spec.plan import PlanError, derive_plan, flops_per_token, parameter_count

TINY = dict(n_layer=2, n_embd=64, n_head=2, n_positions=256, vocab_size=50257)


def spec(
    *,
    total_tokens: int = 204_800,
    micro: int = 8,
    global_batch: int = 8,
    workers: int = 1,
    weights: tuple[float, ...] = (0.5, 0.3, 0.2),
    lr: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate(
        {
            "model": {"preset": "tiny", "overrides": overrides or {}},
            "tokenizer": "gpt2",
            "data": {
                "seqLength": 128,
                "totalTokens": total_tokens,
                "whenExhausted": "repeat",
                "sources": [{"name": f"s{i}", "uri": f"shards/s{i}", "weight": w} for i, w in enumerate(weights)],
            },
            "training": {
                "microBatchSize": micro,
                "globalBatchSize": global_batch,
                "learningRate": {"peak": 1e-3, "final": 1e-4, **(lr or {})},
            },
            "resources": {"workers": workers, "gpusPerWorker": 0},
            "output": {"uri": "runs/pin"},
        }
    )


def test_two_workers_split_the_global_batch_and_accumulate():
    plan = derive_plan(spec(micro=2, global_batch=8, workers=2, total_tokens=8 * 128 * 10))
    assert plan.sequences_per_worker_step == 4  # 8 sequences / 2 workers
    assert plan.gradient_accumulation == 2  # 4 per worker / micro-batch 2
    assert plan.tokens_per_step == 8 * 128  # the global batch, all workers together


def test_four_workers_without_accumulation():
    plan = derive_plan(spec(micro=4, global_batch=16, workers=4, total_tokens=16 * 128 * 3))
    assert (plan.sequences_per_worker_step, plan.gradient_accumulation) == (4, 1)
    assert plan.total_steps == 3 and plan.total_sequences == 48


def test_a_one_step_run():
    plan = derive_plan(spec(total_tokens=8 * 128))
    assert (plan.total_steps, plan.total_sequences, plan.tokens_trained) == (1, 8, 1024)
    assert plan.warmup_steps == 0


def test_less_than_one_step_is_refused_with_the_numbers():
    with pytest.raises(
        PlanError,
        match=r"data.totalTokens 1023 is less than one step of 1024 tokens "
        r"\(globalBatchSize 8 x seqLength 128\)",
    ):
        derive_plan(spec(total_tokens=1023))


def test_whole_steps_only_tokens_trained_rounds_down():
    plan = derive_plan(spec(total_tokens=204_800 + 1000))
    assert plan.total_steps == 200
    assert plan.tokens_trained == 204_800
    assert plan.total_sequences == 1600


def test_warmup_default_fraction_and_steps():
    assert derive_plan(spec()).warmup_steps == 0
    assert derive_plan(spec(lr={"warmupFraction": 0.05})).warmup_steps == 10  # 0.05 x 200
    assert derive_plan(spec(lr={"warmupFraction": 0.059})).warmup_steps == 11  # floor(11.8)
    assert derive_plan(spec(lr={"warmupSteps": 7})).warmup_steps == 7


def test_warmup_as_long_as_the_run_is_refused_unless_the_rate_is_constant():
    with pytest.raises(PlanError, match=r"warmup \(200 steps\) is not shorter than the run \(200 steps\)"):
        derive_plan(spec(lr={"warmupSteps": 200}))
    assert derive_plan(spec(lr={"warmupSteps": 199})).warmup_steps == 199
    assert derive_plan(spec(lr={"warmupSteps": 200, "schedule": "constant"})).warmup_steps == 200


def test_source_shares_are_normalised():
    plan = derive_plan(spec(weights=(2.0, 1.0, 1.0), total_tokens=10 * 1024))
    assert [(s.name, s.weight) for s in plan.sources] == [("s0", 0.5), ("s1", 0.25), ("s2", 0.25)]


def test_tiny_parameters_and_flops_by_hand():
    d, layers, vocab, ctx = 64, 2, 50257, 256
    per_layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d + 4 * d * d + d)
    tied = vocab * d + ctx * d + layers * per_layer + 2 * d
    assert tied == 3_332_928
    arch = dict(TINY, tie_word_embeddings=True)
    assert parameter_count(arch) == tied
    assert parameter_count(dict(TINY)) == tied  # tied is the default
    fpt = flops_per_token(arch, 128)
    assert fpt == 6.0 * (layers * per_layer + 2 * d + vocab * d) + 12.0 * layers * 128 * d == 20_095_872.0
    plan = derive_plan(spec())
    assert plan.parameters == tied
    assert plan.flops_per_token == fpt
    assert plan.total_flops == fpt * 200 * 1024


def test_untied_embeddings_count_the_head_once_more_and_train_the_same_flops():
    untied = dict(TINY, tie_word_embeddings=False)
    assert parameter_count(untied) == 3_332_928 + 50257 * 64 == 6_549_376
    # The LM head costs 6 x vocab x d per token either way; the input embedding is a lookup.
    assert flops_per_token(untied, 128) == flops_per_token(dict(TINY, tie_word_embeddings=True), 128)
    plan = derive_plan(spec(overrides={"tieWordEmbeddings": False}))
    assert plan.parameters == 6_549_376


def test_untied_parameter_count_matches_transformers():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(**TINY, tie_word_embeddings=False))
    assert parameter_count(dict(TINY, tie_word_embeddings=False)) == sum(p.numel() for p in model.parameters())


def test_inner_width_override():
    arch = dict(TINY, n_inner=128)
    d = 64
    per_layer = 4 * d + 4 * d * d + 4 * d + 2 * d * 128 + 128 + d
    assert parameter_count(arch) == 50257 * d + 256 * d + 2 * per_layer + 2 * d


def test_flops_attention_term_scales_with_layers_sequence_and_width():
    arch = dict(TINY, tie_word_embeddings=True)
    assert flops_per_token(arch, 256) - flops_per_token(arch, 128) == 12.0 * 2 * 128 * 64


def test_worker_geometry_is_whole_numbers_of_the_exact_type():
    # A true division would give 2.0 and 4.0, which compare equal; the Plan declares these fields int
    # (they are loop counts and batch sizes), so pin the type as well as the value.
    plan = derive_plan(spec(micro=2, global_batch=8, workers=2, total_tokens=8 * 128 * 10))
    assert type(plan.gradient_accumulation) is int and plan.gradient_accumulation == 2
    assert type(plan.sequences_per_worker_step) is int and plan.sequences_per_worker_step == 4
    single = derive_plan(spec(micro=8, global_batch=8, workers=1))
    assert type(single.gradient_accumulation) is int and single.gradient_accumulation == 1
    assert type(single.sequences_per_worker_step) is int and single.sequences_per_worker_step == 8


def test_flops_default_to_tied_embeddings_when_the_key_is_absent():
    assert flops_per_token(dict(TINY), 128) == 20_095_872.0  # the tied figure worked out by hand above


def test_plan_to_dict_is_plain_data():
    doc = derive_plan(spec(total_tokens=8 * 128)).to_dict()
    assert (doc["total_steps"], doc["total_sequences"], doc["tokens_trained"], doc["warmup_steps"]) == (1, 8, 1024, 0)
    assert doc["sources"][0] == {"name": "s0", "weight": 0.5}
