"""Valid specs: the examples in jobs/, the seed run's derived plan, the CLI's exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainkit import __version__
from trainkit.cli import main
from trainkit.spec import derive_plan, load_run
from trainkit.spec.plan import flops_per_token, parameter_count
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
    assert plan.total_sequences == 8_138 * 120
    assert [s.weight for s in plan.sources] == [0.5, 0.3, 0.2]
    # The card: 64.09M trainable parameters; REFERENCES: 4.56e8 FLOP/token.
    assert plan.parameters == 64_085_504
    assert abs(plan.flops_per_token - 4.56e8) / 4.56e8 < 0.005  # 6N (3.81e8) + attention (7.55e7)


def test_explain_shows_the_streams_own_counts_per_source(tmp_path, capsys):
    """One step of 8 sequences at 50/30/20: a largest-remainder split says 4/2/2, the stream's EDF
    schedule gives 4/3/1, and --explain must say what the stream will actually read."""
    import yaml

    from trainkit.data.schedule import counts_at

    run = yaml.safe_load((REPO / "jobs" / "quickstart.yaml").read_text())
    run["spec"]["data"]["totalTokens"] = 8 * 128
    run["spec"]["training"]["learningRate"] = {"schedule": "constant", "peak": 1e-3, "final": 1e-3}
    path = tmp_path / "one-step.yaml"
    path.write_text(yaml.safe_dump(run))
    main(["validate", "--explain", str(path)])
    out = capsys.readouterr().out
    counts = counts_at([0.5, 0.3, 0.2], 8)
    assert counts == [4, 3, 1]
    for name, n in zip(("manuals", "web", "edu"), counts):
        line = next(x for x in out.splitlines() if x.strip().startswith(name) and "sequences)" in x)
        assert f"; {n:,} sequences)" in line, line


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


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert __version__ in capsys.readouterr().out
