"""TrainingSweep: expansion into runs (pure), rejection of bad sweeps by `trainkit validate`/`trainkit sweep`
and by the generated CRD schema."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from support.openapi import admit
from trainkit.cli import main
from trainkit.spec import parse_run
from trainkit.spec.crd import training_sweep_schema
from trainkit.spec.sweep import TrainingSweep, expand_sweep, grid_points, grid_size

REPO = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((REPO / "jobs" / "sweep-50-30-20-neighbourhood.yaml").read_text())


def sweep_with(**mixtures) -> dict:
    doc = copy.deepcopy(BASE)
    doc["spec"]["mixtures"] = mixtures
    return doc


def test_grid_example_expands_to_36_valid_runs():
    runs = expand_sweep(TrainingSweep.model_validate(BASE))
    assert len(runs) == 36 == grid_size(3, 0.1, 0.1)
    names = [r["metadata"]["name"] for r in runs]
    assert names == [f"seed-mix-grid-{i:03d}" for i in range(36)]
    seen = set()
    for run in runs:
        parsed = parse_run(run)  # every expanded run is itself a valid TrainingRun
        weights = tuple(s.weight for s in parsed.spec.data.sources)
        assert math.isclose(sum(weights), 1.0) and min(weights) >= 0.1 - 1e-9
        assert parsed.spec.data.total_tokens == 49_152_000  # the proxy override
        assert parsed.spec.eval.limit == 500
        assert parsed.spec.output.uri.endswith(f"/{run['metadata']['name']}/")
        assert run["metadata"]["labels"]["trainkit.dev/sweep"] == "seed-mix-grid"
        seen.add(weights)
    assert len(seen) == 36  # no mixture twice


@pytest.mark.parametrize(
    "sources,step,min_weight", [(3, 0.1, 0.0), (3, 0.05, 0.0), (4, 0.25, 0.0), (2, 0.5, 0.5), (3, 0.2, 0.1)]
)
def test_grid_size_formula_matches_enumeration(sources, step, min_weight):
    points = grid_points(sources, step, min_weight)
    assert len(points) == grid_size(sources, step, min_weight)
    assert len(set(points)) == len(points)
    assert all(math.isclose(sum(p), 1.0) and min(p) >= min_weight - 1e-9 for p in points)


def test_explicit_zero_weight_drops_the_source_and_normalises():
    doc = sweep_with(explicit=[{"weights": {"finepdfs": 2, "dclm-baseline": 2, "fineweb-edu": 0}}])
    (run,) = expand_sweep(TrainingSweep.model_validate(doc))
    assert [(s["name"], s["weight"]) for s in run["spec"]["data"]["sources"]] == [
        ("finepdfs", 0.5),
        ("dclm-baseline", 0.5),
    ]


def test_dirichlet_is_deterministic_in_its_seed():
    a = expand_sweep(TrainingSweep.model_validate(sweep_with(dirichlet={"samples": 6, "seed": 7})))
    b = expand_sweep(TrainingSweep.model_validate(sweep_with(dirichlet={"samples": 6, "seed": 7})))
    c = expand_sweep(TrainingSweep.model_validate(sweep_with(dirichlet={"samples": 6, "seed": 8})))
    assert a == b and a != c and len(a) == 6


BAD_SWEEPS = [
    (
        "weights-not-normalisable",
        {"explicit": [{"weights": {"finepdfs": 0, "dclm-baseline": 0}}]},
        "cannot be normalised",
        True,
    ),
    (
        "negative-weight",
        {"explicit": [{"weights": {"finepdfs": -1, "dclm-baseline": 2}}]},
        "greater than or equal to 0",
        True,
    ),
    ("unknown-source", {"explicit": [{"weights": {"wikipedia": 1}}]}, "unknown source(s) wikipedia", False),
    ("grid-too-large", {"grid": {"step": 0.01}}, "5151 runs, above maxRuns 40", False),
    ("step-does-not-divide-one", {"grid": {"step": 0.3}}, "does not divide 1", False),
    (
        "two-kinds",
        {"grid": {"step": 0.5}, "dirichlet": {"samples": 3}},
        "exactly one of explicit, grid or dirichlet",
        True,
    ),
    ("no-kind", {}, "exactly one of explicit, grid or dirichlet", True),
]


@pytest.mark.parametrize("case_id,mixtures,expected,by_schema", BAD_SWEEPS, ids=[c[0] for c in BAD_SWEEPS])
def test_bad_sweeps_rejected(case_id, mixtures, expected, by_schema, tmp_path, capsys):
    path = tmp_path / f"{case_id}.yaml"
    path.write_text(yaml.safe_dump(sweep_with(**mixtures)))
    assert main(["sweep", str(path)]) == 1
    err = capsys.readouterr().err
    assert expected in err and err.startswith(f"{path}: spec")
    _, issues = admit(training_sweep_schema(), sweep_with(**mixtures))
    assert bool(issues) == by_schema, issues


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"rankBy": "accuracy"}, "spec.rankBy"),
        ({"rankBy": "eval.lambada"}, "rankBy eval.lambada: unknown metric"),
        (
            {"overrides": {"totalTokens": 1000}},
            "run seed-mix-grid-000: spec: data.totalTokens 1000 is less than one step",
        ),
    ],
)
def test_bad_metric_and_overrides(change, expected, tmp_path, capsys):
    doc = copy.deepcopy(BASE)
    doc["spec"].update(change)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(path)]) == 1
    assert expected in capsys.readouterr().err


def test_rank_by_eval_needs_eval_in_template(tmp_path, capsys):
    doc = copy.deepcopy(BASE)
    doc["spec"]["template"]["eval"] = {"suite": "none"}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(path)]) == 1
    assert "the template evaluates nothing" in capsys.readouterr().err


def test_sweep_name_leaves_room_for_run_suffix(tmp_path, capsys):
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = "s" * 37
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(path)]) == 1
    assert "longer than 36" in capsys.readouterr().err
    _, issues = admit(training_sweep_schema(), doc)
    assert issues


def test_render_prints_runs_that_validate(tmp_path, capsys):
    assert main(["sweep", str(REPO / "jobs" / "sweep-50-30-20-neighbourhood.yaml")]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert len(docs) == 36
    rendered = tmp_path / "runs.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    assert main(["validate", str(rendered)]) == 0


def test_example_sweep_admitted_by_schema():
    stored, issues = admit(training_sweep_schema(), copy.deepcopy(BASE))
    assert issues == []
    assert TrainingSweep.model_validate(stored).spec == TrainingSweep.model_validate(BASE).spec
