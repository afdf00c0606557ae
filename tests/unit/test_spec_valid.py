"""Valid specs: the examples in jobs/, the seed run's derived plan, the CLI's exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainkit import __version__
from trainkit.cli import main
from trainkit.spec import derive_plan, load_run
from trainkit.spec.plan import flops_per_token, largest_remainder, parameter_count
from trainkit.spec.presets import MODEL_PRESETS

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "jobs" / "gpt2-70m-50-30-20.yaml"


def test_all_examples_validate(capsys):
    files = sorted(str(p) for p in (REPO / "jobs").glob("*.yaml"))
    assert main(["validate", *files]) == 0
    assert "valid" in capsys.readouterr().out


def test_explain_seed_run(capsys):
    assert main(["validate", "--explain", str(SEED)]) == 0
    out = capsys.readouterr().out
    assert "122,880" in out  # tokens per step
    assert "8,138" in out  # steps for 1B tokens
    assert "warmup steps     162" in out
    for share in ("500.0M", "300.0M", "200.0M"):
        assert share in out
    assert "64,085,504" in out


def test_seed_plan_numbers():
    plan = derive_plan(load_run(SEED).spec)
    assert plan.tokens_per_step == 120 * 1024 == 122_880
    assert plan.total_steps == 8_138
    assert plan.gradient_accumulation == 5
    assert plan.warmup_steps == 162
    assert [s.name for s in plan.sources] == ["finepdfs", "dclm-baseline", "fineweb-edu"]
    assert sum(s.sequences for s in plan.sources) == plan.total_sequences == 8_138 * 120
    assert [round(s.tokens / 1e6) for s in plan.sources] == [500, 300, 200]
    # The card: 64.09M trainable parameters; REFERENCES: 4.56e8 FLOP/token.
    assert plan.parameters == 64_085_504
    assert abs(plan.flops_per_token - 4.56e8) / 4.56e8 < 0.005  # 6N (3.81e8) + attention (7.55e7)


def test_warmup_fraction_is_derived_from_steps(tmp_path):
    text = SEED.read_text().replace("warmupSteps: 162", "warmupFraction: 0.02")
    path = tmp_path / "frac.yaml"
    path.write_text(text)
    assert derive_plan(load_run(path).spec).warmup_steps == 162  # floor(0.02 x 8,138)


@pytest.mark.parametrize("preset", sorted(MODEL_PRESETS))
def test_parameter_count_matches_transformers(preset):
    from transformers import GPT2Config, GPT2LMHeadModel

    arch = MODEL_PRESETS[preset]
    model = GPT2LMHeadModel(GPT2Config(**arch))
    assert parameter_count(arch) == sum(p.numel() for p in model.parameters())


def test_flops_grow_with_sequence_length():
    arch = MODEL_PRESETS["gpt2-70m"]
    assert flops_per_token(arch, 2048) > flops_per_token(arch, 1024)


@pytest.mark.parametrize(
    "total,weights",
    [(976_560, [0.5, 0.3, 0.2]), (10, [1, 1, 1]), (7, [0.01, 0.99]), (1, [3, 1]), (100, [1 / 3, 1 / 3, 1 / 3])],
)
def test_largest_remainder_is_exact_and_within_one(total, weights):
    counts = largest_remainder(total, weights)
    assert sum(counts) == total
    s = sum(weights)
    assert all(abs(c - total * w / s) < 1 for c, w in zip(counts, weights))


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert __version__ in capsys.readouterr().out
