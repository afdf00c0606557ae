"""The RegMix-style recommendation on synthetic sweeps whose true optimum is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainkit.compare import recommend, recommend_from, run_result_from
from trainkit.compare.recommend import features, fit, simplex_candidates

SOURCES = ("manuals", "web", "edu")
TRUE_EVAL = np.array([34.0, 37.0, 41.0])  # edu is best: the optimum is the edu vertex, value 41
TRUE_LOSS = np.array([3.30, 3.15, 2.95])  # edu lowest


def sweep(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(3), size=n)


def test_linear_truth_lands_on_the_best_vertex_and_is_trusted():
    W = sweep(10)
    y = W @ TRUE_EVAL + np.random.default_rng(1).normal(0, 0.2, len(W))
    rec = recommend_from(W, y, SOURCES, metric="eval.average", higher_is_better=True)
    assert rec.trusted, rec.reasons
    assert rec.weights["edu"] > 0.95 and rec.weights["manuals"] < 0.05
    assert rec.predicted == pytest.approx(41.0, abs=0.6)
    lo, hi = rec.predicted_interval
    assert lo <= rec.predicted <= hi and hi - lo < 2.0
    assert max(rec.weights_std.values()) <= 0.15
    assert rec.r2 > 0.9 and rec.loo_rmse < rec.metric_std
    assert sum(rec.weights.values()) == pytest.approx(1.0)


def test_loss_is_minimised():
    W = sweep(9, seed=3)
    y = W @ TRUE_LOSS + np.random.default_rng(4).normal(0, 0.005, len(W))
    rec = recommend_from(W, y, SOURCES, metric="loss", higher_is_better=False)
    assert rec.trusted, rec.reasons
    assert rec.weights["edu"] > 0.95
    assert rec.predicted == pytest.approx(2.95, abs=0.03)


def test_two_runs_are_never_trusted():
    W = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    rec = recommend_from(W, W @ TRUE_EVAL, SOURCES)
    assert not rec.trusted
    assert any("only 2 finished runs" in r and "at least 5" in r for r in rec.reasons)
    assert "NOT TRUSTED" in "\n".join(rec.lines())


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_runs_give_no_mixture_at_all(n):
    W = sweep(n) if n else np.zeros((0, 3))
    rec = recommend_from(W, W @ TRUE_EVAL, SOURCES)
    assert rec.weights is None and not rec.trusted
    assert f"only {n} finished run(s)" in rec.reasons[0]
    assert "no recommendation" in "\n".join(rec.lines())


def test_metric_unrelated_to_weights_is_not_trusted():
    W = sweep(12, seed=5)
    y = np.random.default_rng(6).normal(37.0, 1.0, len(W))
    rec = recommend_from(W, y, SOURCES)
    assert not rec.trusted
    assert any("explain little" in r or "unstable" in r for r in rec.reasons)


def test_noisy_sweep_reports_a_wide_spread_and_refuses_trust():
    W = sweep(6, seed=7)
    y = W @ TRUE_EVAL + np.random.default_rng(8).normal(0, 4.0, len(W))
    rec = recommend_from(W, y, SOURCES)
    assert not rec.trusted
    assert max(rec.weights_std.values()) > 0.15 or rec.loo_rmse >= rec.metric_std


def test_same_mixture_everywhere_cannot_be_trusted():
    W = np.tile([0.5, 0.3, 0.2], (6, 1))
    rec = recommend_from(W, np.linspace(36, 37, 6), SOURCES)
    assert not rec.trusted and any("same mixture" in r for r in rec.reasons)


def test_quadratic_model_finds_an_interior_optimum():
    best = np.array([0.2, 0.3, 0.5])
    W = sweep(24, seed=9)
    y = 40.0 - 30.0 * np.sum((W - best) ** 2, axis=1) + np.random.default_rng(10).normal(0, 0.05, len(W))
    rec = recommend_from(W, y, SOURCES, degree=2)
    assert rec.trusted, rec.reasons
    got = np.array([rec.weights[s] for s in SOURCES])
    assert np.abs(got - best).max() < 0.07, got
    assert rec.predicted == pytest.approx(40.0, abs=0.3)


def test_deterministic_for_a_seed():
    W = sweep(8)
    y = W @ TRUE_EVAL
    a, b = recommend_from(W, y, SOURCES, seed=3), recommend_from(W, y, SOURCES, seed=3)
    assert a.weights == b.weights and a.predicted_interval == b.predicted_interval


def test_fit_is_exact_on_a_noiseless_linear_blend_and_candidates_cover_the_simplex():
    W = sweep(8)
    m = fit(W, W @ TRUE_EVAL, ridge=1e-9)
    assert np.allclose(m.predict(np.eye(3)), TRUE_EVAL, atol=1e-3)
    C = simplex_candidates(3, 500)
    assert np.allclose(C.sum(axis=1), 1.0) and (C >= 0).all()
    assert any(np.allclose(c, [0, 0, 1]) for c in C)
    assert features(W, 2).shape == (8, 6)


def test_recommend_uses_only_finished_runs_that_report_the_metric():
    def result(name, w, avg, finished=True):
        doc = {"data": {"sources": [{"name": s, "weight": x} for s, x in zip(SOURCES, w)]}}
        progress = {"step": 200 if finished else 20, "totalSteps": 200, "loss": 3.0}
        ev = {"step": 200, "average": avg, "tasks": {}} if avg is not None else None
        return run_result_from(f"s3://b/{name}", doc, progress, None, ev)

    W = sweep(7, seed=11)
    results = [result(f"r{i}", w, float(w @ TRUE_EVAL)) for i, w in enumerate(W)]
    results += [result("running", [1, 0, 0], 99.0, finished=False), result("no-eval", [1, 0, 0], None)]
    rec = recommend(results, "eval.average")
    assert rec.n_runs == 7 and rec.trusted
    assert rec.weights["edu"] > 0.95  # the unfinished run's 99 at the manuals vertex was ignored
    json.dumps(rec.weights)  # plain floats, ready for report.json
