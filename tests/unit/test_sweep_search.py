"""A TrainingSweep that searches (trainkit.spec.search): its spec, the plan of runs round after round
(pure and deterministic, also in a fresh process), the confirmation run, the natural prior and the status."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from support.openapi import admit
from trainkit.spec import parse_run
from trainkit.spec.crd import training_sweep_schema
from trainkit.spec.search import (
    ROLE_LABEL,
    ROUND_LABEL,
    RunOutcome,
    confirmation_status,
    plan_sweep,
    search_status,
)
from trainkit.spec.sweep import TrainingSweep, expand_sweep, planned_runs_at_most

REPO = Path(__file__).resolve().parents[2]
QUICK = yaml.safe_load((REPO / "jobs" / "sweep-quickstart.yaml").read_text())
NAMES = ("manuals", "web", "edu")
BEST = np.array([0.2, 0.35, 0.45])


def searching(rounds: int = 3, per_round: int = 3, confirm: dict | None = None, **dirichlet) -> dict:
    doc = copy.deepcopy(QUICK)
    doc["spec"]["maxRuns"] = 30
    doc["spec"]["search"] = {"rounds": rounds, "runsPerRound": per_round, "stopWhenMovedBelow": 0}
    doc["spec"]["recommend"] = {"model": "quadratic"}
    doc["spec"]["mixtures"]["dirichlet"].update({"prior": "uniform", **dirichlet})
    doc["spec"].pop("confirm", None)
    if confirm is not None:
        doc["spec"]["confirm"] = confirm
    return doc


def truth(manifest: dict) -> float:
    w = {s["name"]: s["weight"] for s in manifest["spec"]["data"]["sources"]}
    v = np.array([w.get(n, 0.0) for n in NAMES])
    return float(4.0 + 3.0 * np.sum((v - BEST) ** 2))


def run_to_the_end(sweep: TrainingSweep, fail: set[str] = frozenset(), tokens=None):
    """Finish every run the plan asks for, round after round, as the operator would see them finish."""
    outcomes: dict[str, RunOutcome] = {}
    for _ in range(10):
        plan = plan_sweep(sweep, outcomes, tokens)
        new = [m for m in plan.all_runs if m["metadata"]["name"] not in outcomes]
        if not new:
            return plan, outcomes
        for m in new:
            name = m["metadata"]["name"]
            outcomes[name] = RunOutcome(True, None if name in fail else truth(m))
    raise AssertionError("the plan never ended")


def test_spec_blocks_validate_and_bound_the_run_count():
    doc = searching(confirm={"model": {"preset": "gpt2-70m"}, "totalTokens": 409600})
    sweep = TrainingSweep.model_validate(doc)
    assert sweep.spec.search.rounds == 3 and sweep.spec.recommend.max_distance == 0.30
    assert planned_runs_at_most(sweep.spec) == 6 + 2 * 3 + 1
    assert admit(training_sweep_schema(), doc)[1] == []  # the CRD takes it too
    doc["spec"]["maxRuns"] = 12
    with pytest.raises(ValidationError, match="the sweep may create 13 runs \\(6 mixtures, 7 more"):
        TrainingSweep.model_validate(doc)
    long = searching(confirm={})
    long["metadata"]["name"] = "a" * 34
    with pytest.raises(ValidationError, match="longer than 33 characters \\(its confirmation run adds '-target'\\)"):
        TrainingSweep.model_validate(long)
    for bad in ({"rounds": 0}, {"runsPerRound": 0}, {"stopWhenMovedBelow": 2}, {"stopAtSpearman": 0}):
        doc = searching()
        doc["spec"]["search"].update(bad)
        with pytest.raises(ValidationError):
            TrainingSweep.model_validate(doc)
    doc = searching()
    doc["spec"]["recommend"] = {"model": "forest"}
    with pytest.raises(ValidationError, match="auto"):
        TrainingSweep.model_validate(doc)


def test_round_after_round_the_plan_grows_and_never_changes_what_it_planned():
    sweep = TrainingSweep.model_validate(searching())
    first = plan_sweep(sweep, {})
    assert [m["metadata"]["name"] for m in first.runs] == [f"quickstart-mix-{i:03d}" for i in range(6)]
    assert [m["metadata"]["labels"][ROUND_LABEL] for m in first.runs] == ["0"] * 6
    assert first.runs[0]["spec"] == expand_sweep(sweep)[0]["spec"] and first.rounds == [] and first.round == 0
    # Five of six finished: still round 0, nothing more.
    part = {m["metadata"]["name"]: RunOutcome(True, truth(m)) for m in first.runs[:5]}
    assert [m["metadata"]["name"] for m in plan_sweep(sweep, part).runs] == [m["metadata"]["name"] for m in first.runs]
    plan, outcomes = run_to_the_end(sweep)
    assert len(plan.runs) == 12 and plan.round == 2 and plan.stopped == "all 3 round(s) done"
    assert [m["metadata"]["labels"][ROUND_LABEL] for m in plan.runs] == ["0"] * 6 + ["1"] * 3 + ["2"] * 3
    # Each later round starts at the recommendation it searches around.
    for r in (1, 2):
        rec = plan.rounds[r - 1].recommendation.weights
        head = next(m for m in plan.runs if m["metadata"]["labels"][ROUND_LABEL] == str(r))
        assert {s["name"]: s["weight"] for s in head["spec"]["data"]["sources"]} == pytest.approx(rec, abs=2e-6)
    for m in plan.runs:
        parse_run(m)  # every planned run is a valid TrainingRun
    # The search gets closer to the optimum than the best first-round run.
    final = plan.recommendation.weights
    assert np.abs(np.array([final[n] for n in NAMES]) - BEST).max() < 0.06
    # Replanning from the same outcomes gives the same runs, byte for byte.
    again = plan_sweep(sweep, outcomes)
    assert json.dumps(again.runs, sort_keys=True) == json.dumps(plan.runs, sort_keys=True)


def test_a_fresh_process_plans_the_same_runs():
    """What an operator restart does: a new process (no cache) must plan the very same mixtures."""
    sweep = TrainingSweep.model_validate(searching(rounds=2))
    plan, outcomes = run_to_the_end(sweep)
    script = (
        "import json, sys; from trainkit.spec.sweep import TrainingSweep; "
        "from trainkit.spec.search import plan_sweep, RunOutcome; d = json.load(sys.stdin); "
        "p = plan_sweep(TrainingSweep.model_validate(d['sweep']), {k: RunOutcome(True, v) for k, v in d['out'].items()}); "
        "print(json.dumps(p.runs, sort_keys=True))"
    )
    doc = {"sweep": searching(rounds=2), "out": {k: o.value for k, o in outcomes.items()}}
    proc = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(doc), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == json.dumps(plan.runs, sort_keys=True)


def test_failed_runs_finish_a_round_without_a_value():
    sweep = TrainingSweep.model_validate(searching(rounds=2))
    plan, _ = run_to_the_end(sweep, fail={"quickstart-mix-001"})
    assert len(plan.runs) == 9 and plan.rounds[0].runs == 5  # the failed run is left out of the fit


def test_the_confirmation_run_is_the_template_at_full_scale_on_the_recommendation():
    doc = searching(rounds=2, confirm={"model": {"preset": "gpt2-70m"}, "totalTokens": 409600})
    sweep = TrainingSweep.model_validate(doc)
    plan, outcomes = run_to_the_end(sweep)
    target = plan.confirmation
    assert target is not None and plan.all_runs[-1] is target
    assert target["metadata"]["name"] == "quickstart-mix-target"
    assert target["metadata"]["labels"][ROLE_LABEL] == "confirmation"
    assert target["metadata"]["labels"]["trainkit.dev/sweep"] == "quickstart-mix"
    spec = parse_run(target).spec
    assert spec.model.preset == "gpt2-70m" and spec.data.total_tokens == 409600  # not the proxies' 40960
    assert spec.output.uri == "runs/sweep-quickstart/quickstart-mix-target/"
    rec = plan.recommendation.weights
    assert {s.name: s.weight for s in spec.data.sources} == pytest.approx(rec, abs=1e-6)
    # The status: predicted vs realised, and where the target lands among the proxies.
    proxies = [outcomes[m["metadata"]["name"]].value for m in plan.runs]
    st = confirmation_status(plan, "Succeeded", min(proxies) - 0.5, proxies, higher_is_better=False)
    assert (
        st.rank_among_proxies == 1
        and st.proxies == 9
        and st.predicted == pytest.approx(plan.recommendation.predicted, abs=1e-6)
    )
    st = confirmation_status(plan, "Succeeded", sorted(proxies)[3] + 1e-9, proxies, higher_is_better=False)
    assert st.rank_among_proxies == 5
    # Without `confirm`, none.
    plain, _ = run_to_the_end(TrainingSweep.model_validate(searching(rounds=2)))
    assert plain.confirmation is None


def test_search_status_shows_round_recommendation_and_quality():
    sweep = TrainingSweep.model_validate(searching(rounds=2))
    plan, _ = run_to_the_end(sweep)
    st = search_status(plan).model_dump(by_alias=True, exclude_none=True)
    assert st["round"] == 2 and st["rounds"] == 2 and st["stopped"] == "all 2 round(s) done"
    rec = st["recommendation"]
    assert rec["model"] == "quadratic" and set(rec["weights"]) == set(NAMES) and rec["runs"] == 9
    assert -1 <= rec["cvSpearman"] <= 1 and len(rec["cvInterval"]) == 2
    assert [h["round"] for h in st["history"]] == [1, 2] and "moved" in st["history"][1]
    json.dumps(st)  # plain JSON for the API server


def test_natural_prior_needs_token_counts_and_centres_the_draws():
    doc = copy.deepcopy(QUICK)
    doc["spec"]["mixtures"]["dirichlet"].update(prior="natural", samples=400, alpha=20.0)
    doc["spec"]["maxRuns"] = 410
    sweep = TrainingSweep.model_validate(doc)
    with pytest.raises(ValueError, match="prior natural needs each source's token count"):
        expand_sweep(sweep)
    counts = {"manuals": 6_000, "web": 3_000, "edu": 1_000}

    def mean_mixture(sweep: TrainingSweep) -> np.ndarray:
        runs = expand_sweep(sweep, counts)
        rows = [{s["name"]: s["weight"] for s in r["spec"]["data"]["sources"]} for r in runs]
        return np.array([[row.get(n, 0.0) for n in NAMES] for row in rows]).mean(axis=0)

    root = np.sqrt([0.6, 0.3, 0.1])  # RegMix's temperature 0.5 by default
    assert mean_mixture(sweep) == pytest.approx(root / root.sum(), abs=0.02)
    doc["spec"]["mixtures"]["dirichlet"]["temperature"] = 1.0  # the token shares themselves
    assert mean_mixture(TrainingSweep.model_validate(doc)) == pytest.approx([0.6, 0.3, 0.1], abs=0.02)
    # The uniform prior (the default) draws exactly what a Dirichlet(alpha) sweep always drew.
    old = copy.deepcopy(QUICK)
    del old["spec"]["mixtures"]["dirichlet"]["prior"]
    uniform = expand_sweep(TrainingSweep.model_validate(old))
    rng = np.random.default_rng(0).dirichlet([1.0] * 3, 6)
    first = {s["name"]: s["weight"] for s in uniform[0]["spec"]["data"]["sources"]}
    assert [first[n] for n in NAMES] == pytest.approx(rng[0], abs=1e-6)


def test_rendering_a_natural_prior_sweep_reads_index_json_or_says_what_is_missing(tmp_path, capsys):
    from trainkit.cli import main
    from trainkit.spec.data import SHARD_FORMAT

    doc = copy.deepcopy(QUICK)
    for source, tokens in zip(doc["spec"]["template"]["data"]["sources"], (6_000, 3_000, 1_000)):
        source["uri"] = str(tmp_path / source["name"])
        if source["name"] != "edu":
            (tmp_path / source["name"]).mkdir()
            shard = {"file": "shards/0.bin", "tokens": tokens, "documents": 1, "bytes": 2 * tokens, "crc32": 0}
            index = {
                "format": SHARD_FORMAT,
                "dtype": "uint16",
                "tokenizer": {"name": "gpt2", "fingerprint": "f", "vocabSize": 50257, "eosId": 50256},
                "shardTokens": tokens,
                "totalTokens": tokens,
                "totalDocuments": 1,
                "shards": [shard],
                "sourceFiles": [],
            }
            (tmp_path / source["name"] / "index.json").write_text(json.dumps(index))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["sweep", str(path)]) == 1
    err = capsys.readouterr().err
    assert "mixtures.dirichlet.prior natural" in err and "edu/index.json: not found" in err and "Traceback" not in err
    doc["spec"]["template"]["data"]["sources"] = doc["spec"]["template"]["data"]["sources"][:2]
    path.write_text(yaml.safe_dump(doc))
    assert main(["sweep", str(path)]) == 0
    out = capsys.readouterr()
    runs = list(yaml.safe_load_all(out.out))
    assert len(runs) == 6 and "later search rounds and the confirmation run are planned" in out.err
