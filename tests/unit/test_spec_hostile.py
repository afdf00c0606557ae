"""Hostile spec files: bounded reading (alias bombs, huge or deeply nested documents), no OverflowError from a
tiny grid step (in the CLI and in the operator's sweep parse), bad values echoed with a bounded length."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from trainkit.cli import main
from trainkit.spec.load import MAX_SHOWN, SpecError, read_documents

REPO = Path(__file__).resolve().parents[2]


def alias_bomb(levels: int = 9) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghijk"[: levels - 1]:
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text


def test_a_yaml_alias_bomb_is_refused_in_bounded_time_and_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert len(path.read_bytes()) < 600
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", f"import re, sys; from trainkit.cli import main; rc = main(['validate', {str(path)!r}]);"
         " hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1);"
         " print('maxrss_kb', hwm, file=sys.stderr); sys.exit(rc)"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "alias bomb" in proc.stderr and len(proc.stdout) + len(proc.stderr) < 2000
    # VmHWM is this process's own peak; ru_maxrss would carry over the forking pytest's peak
    rss_kb = int(proc.stderr.rsplit("maxrss_kb", 1)[1])
    assert rss_kb < 400_000, rss_kb  # the old safe_load walked 387M strings (2 GB) for this file


def test_many_aliases_are_refused_even_when_shallow(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text("a: &a 1\nb: [" + ",".join(["*a"] * 500) + "]\n")
    with pytest.raises(SpecError, match="more than 100 aliases"):
        read_documents(path)


def test_ordinary_anchors_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("a: &a {x: 1}\nb: *a\n")
    assert read_documents(path) == [{"a": {"x": 1}, "b": {"x": 1}}]


def test_oversized_and_deeply_nested_files(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * (2 << 20))
    with pytest.raises(SpecError, match="a spec may have at most"):
        read_documents(big)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SpecError, match="nested too deeply"):
        read_documents(deep)
    deep_yaml = tmp_path / "deep.yaml"
    deep_yaml.write_text("a: " + "[" * 50_000 + "]" * 50_000)
    with pytest.raises(SpecError, match="nested too deeply|invalid YAML"):
        read_documents(deep_yaml)


def tiny_step_sweep(tmp_path) -> Path:
    doc = yaml.safe_load((REPO / "jobs" / "sweep-50-30-20-neighbourhood.yaml").read_text())
    doc["spec"]["mixtures"]["grid"]["step"] = 5e-324
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_denormal_grid_step_is_a_clear_error_in_the_cli(tmp_path, capsys):
    assert main(["validate", str(tiny_step_sweep(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert "spec.mixtures.grid.step" in err and "below 0.0001" in err and "Traceback" not in err


def test_a_denormal_grid_step_fails_the_sweep_in_the_operator_not_a_retry(tmp_path):
    from trainkit_operator import sweeps

    doc = yaml.safe_load(tiny_step_sweep(tmp_path).read_text())
    doc["metadata"]["namespace"] = "default"
    decision = sweeps.decide_sweep(doc, [])  # before the fix: OverflowError, a kopf retry forever
    assert decision.status.phase == "Failed" and "below 0.0001" in (decision.status.message or "")


def test_echoed_bad_values_are_bounded(tmp_path, capsys):
    doc = yaml.safe_load((REPO / "jobs" / "quickstart.yaml").read_text())
    doc["spec"]["training"]["precision"] = "x" * 100_000
    doc["spec"]["training"]["learningRate"] = "y" * 100_000
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "spec.training.precision" in err and "spec.training.learningRate" in err
    assert "x" * (MAX_SHOWN + 1) not in err and "y" * (MAX_SHOWN + 1) not in err and len(err) < 3000


def test_a_recursive_alias_is_a_clear_error_not_a_hang(tmp_path):
    # Found by `trainkit bench safety`: `&a [*a]` made the alias-bomb check loop forever.
    import time

    from trainkit.spec.load import SpecError, read_documents

    for text in ("spec: &a [*a]\n", "a: &a {b: [1, *a]}\n"):
        path = tmp_path / "r.yaml"
        path.write_text(text)
        started = time.monotonic()
        with pytest.raises(SpecError, match="recursive alias"):
            read_documents(path)
        assert time.monotonic() - started < 5


# ---------------------------------------------------------------------- issue 13 hole 9: credentials in env
@pytest.mark.parametrize("name", ["WANDB_API_KEY", "HF_AUTH", "DB_PASS", "OPENAI_APIKEY", "MY_PASSWORD", "HF_TOKEN"])
def test_credential_looking_env_values_are_refused_and_secret_refs_accepted(name):
    """WANDB_API_KEY, HF_AUTH and DB_PASS passed the old filter and landed in the ConfigMap and RayJob in clear."""
    from trainkit.spec.load import parse_spec

    spec = yaml.safe_load((REPO / "jobs" / "gpt2-70m-50-30-20.yaml").read_text())["spec"]
    spec["resources"]["env"] = [{"name": name, "value": "sk-live-0123456789"}]
    with pytest.raises(SpecError) as refused:
        parse_spec(spec)
    (issue,) = refused.value.issues
    assert issue.path == "spec.resources.env[0]" and f"env var '{name}' looks like a credential" in issue.message
    assert "sk-live" not in issue.render("run.yaml")  # the value is never echoed
    spec["resources"]["env"] = [{"name": name, "secretKeyRef": {"name": "team-secrets", "key": "token"}}]
    parsed, _ = parse_spec(spec)
    assert parsed.resources.env[0].secret_key_ref.name == "team-secrets"


def test_harmless_env_names_still_pass():
    from trainkit.spec.load import parse_spec

    spec = yaml.safe_load((REPO / "jobs" / "gpt2-70m-50-30-20.yaml").read_text())["spec"]
    spec["resources"]["env"] = [{"name": n, "value": "1"} for n in ("NCCL_DEBUG", "KEYBOARD", "AUTHOR", "PASSES")]
    assert len(parse_spec(spec)[0].resources.env) == 4


def test_periodic_evals_are_capped():
    """Issue 13 hole 11: eval.everySteps 1 on a long run asked for an eval (the whole suite) at every step."""
    from trainkit.spec.load import parse_spec
    from trainkit.spec.plan import MAX_PERIODIC_EVALS

    spec = yaml.safe_load((REPO / "jobs" / "gpt2-70m-50-30-20.yaml").read_text())["spec"]
    spec["eval"]["everySteps"] = 1
    with pytest.raises(SpecError, match=rf"eval.everySteps 1 asks for 8138 evals .* at most {MAX_PERIODIC_EVALS}: "
                                        r"set it to at least 82"):  # fmt: skip
        parse_spec(spec)
    spec["eval"]["everySteps"] = 82
    assert parse_spec(spec)[1].total_steps == 8138
