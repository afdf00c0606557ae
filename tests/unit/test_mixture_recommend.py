"""The mixture recommender (trainkit.mixture.recommend) on synthetic sweeps whose truth is known: model
choice by cross-validation, candidates from the prior, the top-k average, the distance bound, the
bootstrap, and plain words when not to trust it."""

from __future__ import annotations

import json

from dataclasses import replace

import numpy as np
import pytest

from trainkit.compare import recommend, run_result_from
from trainkit.mixture import prior as priors
from trainkit.mixture.recommend import MAX_DISTANCE, Recommendation, Settings, fmt, recommend_mixture, top_k_average
from trainkit.mixture.simplex import nearest, tv_distance

SOURCES = ("manuals", "web", "edu")
TRUE_LOSS = np.array([3.30, 3.15, 2.95])  # edu lowest: a linear truth's best is the edu vertex
FAST = Settings(candidates=3000, n_bootstrap=12)


def sweep(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(3), size=n)


def interior(W: np.ndarray, best=(0.2, 0.3, 0.5)) -> np.ndarray:
    """A validation loss with an interior optimum at `best` (value 3.0)."""
    return 3.0 + 2.0 * np.sum((W - np.asarray(best)) ** 2, axis=1)


def test_linear_truth_moves_toward_the_best_source_but_stays_within_the_bound():
    W = sweep(10)
    y = W @ TRUE_LOSS + np.random.default_rng(1).normal(0, 0.002, len(W))
    rec = recommend_mixture(W, y, SOURCES, priors.uniform(SOURCES), settings=FAST)
    assert rec.trusted, rec.reasons
    assert rec.model == "linear" and rec.cv[0].model == "linear"
    got = np.array([rec.weights[s] for s in SOURCES])
    best_run = W[np.argmin(y)]
    assert got[2] > best_run[2]  # more edu than the best run had
    assert rec.nearest_distance <= MAX_DISTANCE + 1e-9  # but never farther than the bound from a tried mixture
    assert float(got @ TRUE_LOSS) < float(y.min())  # and better than every run, by the truth
    assert rec.predicted < y.min()
    assert sum(rec.weights.values()) == pytest.approx(1.0)


def test_lifting_the_bound_lets_a_linear_fit_go_to_the_edge_of_the_prior():
    W = np.random.default_rng(2).dirichlet([6.0, 6.0, 6.0], size=10)  # runs near the centre only
    y = W @ TRUE_LOSS
    bounded = recommend_mixture(W, y, SOURCES, priors.uniform(SOURCES), settings=FAST)
    free = recommend_mixture(
        W, y, SOURCES, priors.uniform(SOURCES), settings=Settings(candidates=3000, n_bootstrap=0, max_distance=1.0)
    )
    assert free.weights["edu"] > 0.85 and free.weights["edu"] > bounded.weights["edu"] + 0.15
    assert not free.held_at_bound and bounded.held_at_bound
    assert any("held within that bound" in n for n in bounded.notes)
    assert "no bound" in "\n".join(free.lines())


def test_candidates_come_from_the_prior_not_the_whole_simplex():
    # A prior concentrated around (0.5, 0.3, 0.2): even unbounded, a linear fit that loves edu cannot leave it.
    prior = priors.natural({"manuals": 5, "web": 3, "edu": 2}, alpha=100.0)
    W = prior.sample(12, np.random.default_rng(3))
    y = W @ TRUE_LOSS
    settings = Settings(candidates=3000, n_bootstrap=0, max_distance=1.0)
    first = recommend_mixture(W, y, SOURCES, prior, settings=replace(settings, refine=()))
    got = np.array([first.weights[s] for s in SOURCES])
    assert float(tv_distance(got, prior.centre)) < 0.15
    assert "natural Dirichlet" in first.prior
    # refining follows the model toward edu, but only within its radius of the prior candidates' average
    refined = recommend_mixture(W, y, SOURCES, prior, settings=settings)
    moved = float(tv_distance([refined.weights[s] for s in SOURCES], got))
    assert 0.05 < moved <= settings.refine_radius + 1e-9 and refined.weights["edu"] > first.weights["edu"]


def test_top_k_average_smooths_the_single_best_candidate():
    W = sweep(40, seed=4)
    y = interior(W) + np.random.default_rng(5).normal(0, 0.01, len(W))
    one = recommend_mixture(
        W,
        y,
        SOURCES,
        priors.uniform(SOURCES),
        settings=Settings(candidates=3000, n_bootstrap=0, top_k=1, model="quadratic"),
    )
    many = recommend_mixture(
        W,
        y,
        SOURCES,
        priors.uniform(SOURCES),
        settings=Settings(candidates=3000, n_bootstrap=0, top_k=100, model="quadratic"),
    )
    assert many.top_k == 100 and one.top_k == 1
    best = np.array([0.2, 0.3, 0.5])
    for rec in (one, many):
        assert np.abs(np.array([rec.weights[s] for s in SOURCES]) - best).max() < 0.08


def test_interior_optimum_is_found_and_the_model_is_chosen_by_cross_validation():
    W = sweep(40, seed=9)
    y = interior(W) + np.random.default_rng(10).normal(0, 0.005, len(W))
    rec = recommend_mixture(W, y, SOURCES, priors.uniform(SOURCES), settings=FAST)
    assert rec.trusted, rec.reasons
    # Every model with enough runs was cross-validated; the chosen one ranks held-out runs best.
    assert [c.model for c in rec.cv][0] == rec.model
    assert {c.model for c in rec.cv} == {"linear", "quadratic", "roots", "roots_quadratic", "gbt"}
    assert rec.cv[0].spearman == max(c.spearman for c in rec.cv)
    assert rec.model in ("quadratic", "roots", "roots_quadratic") and rec.cv[0].spearman > 0.9
    lo, hi = rec.cv[0].interval
    assert lo <= rec.cv[0].spearman <= hi
    got = np.array([rec.weights[s] for s in SOURCES])
    assert np.abs(got - [0.2, 0.3, 0.5]).max() < 0.07, got
    assert rec.predicted == pytest.approx(3.0, abs=0.02)
    lo, hi = rec.predicted_interval
    assert lo <= rec.predicted <= hi


def test_trees_win_where_the_response_is_a_step():
    W = sweep(60, seed=12)
    y = np.where(W[:, 2] > 0.4, 3.0, 3.5) + np.where(W[:, 0] > 0.3, 0.2, 0.0)
    rec = recommend_mixture(W, y, SOURCES, priors.uniform(SOURCES), settings=Settings(candidates=2000, n_bootstrap=0))
    assert rec.model == "gbt", [(c.model, c.spearman) for c in rec.cv]
    assert rec.weights["edu"] > 0.4 and rec.weights["manuals"] < 0.3


def test_a_model_can_be_asked_for():
    W = sweep(40, seed=9)
    rec = recommend_mixture(W, interior(W), SOURCES, settings=Settings(model="linear", candidates=2000, n_bootstrap=0))
    assert rec.model == "linear" and [c.model for c in rec.cv] == ["linear"]
    assert rec.prior.startswith("fitted to the tried mixtures")  # no prior given


def test_metric_unrelated_to_weights_is_not_trusted_in_plain_words():
    W = sweep(20, seed=5)
    y = np.random.default_rng(6).normal(3.2, 0.05, len(W))
    rec = recommend_mixture(W, y, SOURCES, settings=FAST)
    assert not rec.trusted
    assert any(
        r.startswith("the weights explain little: the") and "ranks held-out runs at Spearman" in r for r in rec.reasons
    )
    assert "NOT TRUSTED: " in rec.lines()[-1]


def test_too_few_runs_same_mixture_same_metric():
    few = recommend_mixture(sweep(4), sweep(4) @ TRUE_LOSS, SOURCES, settings=FAST)
    assert few.reasons[0] == "only 4 finished runs for 3 sources: at least 5 are needed to trust the linear model"
    same = recommend_mixture(np.tile([0.5, 0.3, 0.2], (6, 1)), np.linspace(3, 3.1, 6), SOURCES, settings=FAST)
    assert "every run used the same mixture: the weights cannot explain anything" in same.reasons
    flat = recommend_mixture(sweep(8), np.full(8, 3.2), SOURCES, settings=FAST)
    assert "every run has the same val.mean: nothing to rank mixtures by" in flat.reasons


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_runs_give_no_mixture_at_all(n):
    rec = recommend_mixture(sweep(n) if n else np.zeros((0, 3)), np.full(n, 3.0), SOURCES)
    assert rec.weights is None and not rec.trusted
    assert rec.reasons == (f"only {n} finished run(s) with val.mean; a fit needs at least 2",)
    assert rec.lines()[1] == f"no recommendation: only {n} finished run(s) with val.mean; a fit needs at least 2"


def test_one_source_and_shape_mismatch():
    rec = recommend_mixture(np.ones((4, 1)), np.arange(4.0), ("only",))
    assert rec.reasons == ("only one source: there is no mixture to choose",) and rec.weights is None
    with pytest.raises(ValueError, match="6 mixtures but 5 metric values"):
        recommend_mixture(sweep(6), np.arange(5.0), SOURCES)


def test_nan_metrics_and_all_zero_weights_are_left_out():
    W = sweep(8)
    y = W @ TRUE_LOSS
    dirty_W = np.vstack([W, [[0.0, 0.0, 0.0]], [[0.5, 0.5, 0.0]], [[np.nan, 0.5, 0.5]]])
    dirty_y = np.append(y, [1.0, np.nan, 2.0])
    names = [f"r{i}" for i in range(len(dirty_y))]
    rec = recommend_mixture(dirty_W, dirty_y, SOURCES, run_names=names, settings=FAST)
    clean = recommend_mixture(W, y, SOURCES, run_names=names[:8], settings=FAST)
    assert rec.n_runs == 8 and (rec.weights, rec.predicted, rec.nearest_run) == (
        clean.weights,
        clean.predicted,
        clean.nearest_run,
    )


def test_unstable_recommendation_is_a_reason():
    W = sweep(12, seed=5)
    y = W @ TRUE_LOSS * 0 + np.random.default_rng(6).normal(3.0, 0.2, 12)
    rec = recommend_mixture(
        W, y, SOURCES, settings=Settings(candidates=2000, n_bootstrap=20, min_spearman=-1.0, max_weight_spread=0.01)
    )
    assert any(r.startswith("the recommendation is unstable: resampling the runs moves the") for r in rec.reasons)


def test_deterministic_for_a_seed():
    W = sweep(14)
    y = interior(W)
    a = recommend_mixture(W, y, SOURCES, settings=FAST)
    b = recommend_mixture(W, y, SOURCES, settings=FAST)
    assert a.weights == b.weights and a.predicted_interval == b.predicted_interval and a.cv == b.cv


def test_top_k_average_is_pulled_back_onto_the_bound():
    tried = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2]])
    cands = np.array([[0.0, 0.0, 1.0], [0.05, 0.05, 0.9], [0.4, 0.4, 0.2]])
    _, dist = nearest(cands, tried)
    pred = np.array([1.0, 1.1, 3.0])  # lower is better: the edu corner is the model's favourite
    free = top_k_average(pred, cands, dist, tried, False, 2, 1.0)
    assert free.weights.tolist() == pytest.approx([0.025, 0.025, 0.95]) and not free.held_at_bound
    held = top_k_average(pred, cands, dist, tried, False, 2, 0.3)
    # Nothing but the middle candidate lies within 0.3 of a run: it alone is the answer.
    assert held.weights.tolist() == pytest.approx([0.4, 0.4, 0.2]) and held.held_at_bound
    # Two candidates each near a different run average to a point far from both: it is pulled back onto
    # the bound, toward its nearest tried mixture.
    corners = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    pair = np.array([[0.8, 0.0, 0.2], [0.0, 0.8, 0.2]])
    _, d2 = nearest(pair, corners)
    pulled = top_k_average(np.array([1.0, 1.0]), pair, d2, corners, False, 2, 0.25)
    assert pulled.weights.tolist() == pytest.approx([1 - 0.6 * 0.25 / 0.6, 0.4 * 0.25 / 0.6, 0.2 * 0.25 / 0.6])
    assert float(nearest(pulled.weights, corners)[1][0]) == pytest.approx(0.25) and pulled.held_at_bound


def test_recommend_uses_only_finished_runs_that_report_the_metric():
    def result(name, w, avg, finished=True):
        doc = {"data": {"sources": [{"name": s, "weight": x} for s, x in zip(SOURCES, w)]}}
        progress = {"step": 200 if finished else 20, "totalSteps": 200, "loss": 3.0}
        ev = {"step": 200, "average": avg, "tasks": {}} if avg is not None else None
        return run_result_from(f"s3://b/{name}", doc, progress, None, ev)

    W = sweep(9, seed=11)
    truth = np.array([34.0, 37.0, 41.0])
    results = [result(f"r{i}", w, float(w @ truth)) for i, w in enumerate(W)]
    results += [result("running", [1, 0, 0], 99.0, finished=False), result("no-eval", [1, 0, 0], None)]
    rec = recommend(results, "eval.average", settings=FAST)
    assert rec.n_runs == 9 and rec.higher_is_better and rec.trusted, rec.reasons
    assert rec.weights["edu"] > 0.8  # toward edu: the unfinished run's 99 at the manuals vertex was ignored
    json.dumps(rec.weights)  # plain floats, ready for report.json
    # A prior over the same sources in another order is used in its own order.
    rec2 = recommend(results, "eval.average", prior=priors.uniform(("edu", "web", "manuals")), settings=FAST)
    assert rec2.sources == ("edu", "web", "manuals") and rec2.prior.startswith("uniform")


def test_printed_summary():
    rec = Recommendation(
        metric="val.mean",
        higher_is_better=False,
        sources=("a", "b"),
        n_runs=6,
        min_runs=4,
        trusted=False,
        reasons=("r1", "r2"),
        weights={"a": 0.75, "b": 0.25},
        predicted=3.1,
        predicted_interval=(3.0, 3.2),
        weights_std={"a": 0.1},
        nearest_run="r3",
        nearest_distance=0.125,
        top_k=100,
        n_candidates=20006,
        prior="uniform Dirichlet, concentration 2, centre a 0.50, b 0.50",
        notes=("n1",),
    )
    assert rec.lines() == [
        "Recommended mixture by val.mean (lower is better), from 6 finished run(s):",
        "  a 0.75 ±0.10, b 0.25",
        "  predicted val.mean: 3.100 (bootstrap 5-95%: 3.000 to 3.200)",
        "  the average of the top 100 of 20006 candidates drawn from the sweep's prior "
        "(uniform Dirichlet, concentration 2, centre a 0.50, b 0.50)",
        "  closest tried run: r3 (distance 0.12; bound 0.30)",
        "  note: n1",
        "  NOT TRUSTED: r1; r2",
    ]
    assert [fmt(v) for v in (None, float("nan"), 0.12345, 9.9994, 123.456)] == ["-", "-", "0.1235", "9.999", "123.46"]
