"""The recommender's trust rules and filters, pinned: each reason on its own, NaN metrics and all-zero
weights dropped, the total-variation distance, sources a run did not use, and the printed summary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainkit.compare import recommend, recommend_from, run_result_from
from trainkit.compare.recommend import Recommendation, best_index, features, fit, fmt, loo_rmse, n_terms

SOURCES = ("a", "b", "c")
# Six mixtures around the centre; none at a vertex.
GRID = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6], [0.4, 0.4, 0.2], [0.4, 0.2, 0.4], [0.2, 0.4, 0.4]])
NAMES = [f"r{i}" for i in range(len(GRID))]


def linear_in_a(W: np.ndarray) -> np.ndarray:
    return 30.0 + 10.0 * W[:, 0]  # source a is worth 10 points, b and c nothing


def test_a_clean_linear_sweep_is_trusted_with_literal_figures():
    rec = recommend_from(GRID, linear_in_a(GRID), SOURCES, run_names=NAMES)
    assert rec.trusted and rec.reasons == ()
    assert rec.weights == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert rec.predicted == pytest.approx(40.0, abs=0.01)
    assert (rec.n_runs, rec.min_runs, rec.degree) == (6, 5, 1)
    assert rec.r2 == pytest.approx(1.0, abs=1e-5)
    assert rec.metric_std == pytest.approx(float(np.std(linear_in_a(GRID), ddof=1)))
    assert rec.loo_rmse < 0.01
    # Total-variation distance from (1, 0, 0) to the nearest tried mixture (0.6, 0.2, 0.2): (0.4 + 0.2 + 0.2) / 2.
    assert (rec.nearest_run, rec.nearest_distance) == ("r0", pytest.approx(0.4))
    assert rec.notes[0] == (
        "the recommended mixture is far from every tried one (total-variation distance 0.40): "
        "confirm it with a run before relying on it"
    )
    assert rec.notes[1].startswith("a linear mixture model always puts the best at a corner")


def test_a_tried_mixture_at_the_best_point_is_distance_zero_and_not_far():
    W = np.vstack([GRID, [[1.0, 0.0, 0.0]]])
    rec = recommend_from(W, linear_in_a(W), SOURCES, run_names=[*NAMES, "vertex"])
    assert (rec.nearest_run, rec.nearest_distance) == ("vertex", 0.0)
    assert not any("far from every tried one" in n for n in rec.notes)


def test_lower_is_better_picks_the_other_end():
    rec = recommend_from(GRID, linear_in_a(GRID), SOURCES, higher_is_better=False)
    assert rec.weights["a"] == 0.0 and rec.predicted == pytest.approx(30.0, abs=0.01)
    assert best_index(np.array([3.0, 1.0, 2.0]), True) == 0 and best_index(np.array([3.0, 1.0, 2.0]), False) == 1


def test_weights_that_explain_little_is_a_reason_on_its_own():
    W = np.random.default_rng(5).dirichlet(np.ones(3), size=12)
    y = np.random.default_rng(6).normal(37.0, 1.0, 12)
    rec = recommend_from(W, y, SOURCES, max_weight_spread=1.0)  # the stability rule cannot fire
    assert not rec.trusted
    assert len(rec.reasons) == 1
    assert rec.reasons[0] == (
        f"the weights explain little: leave-one-out error {fmt(rec.loo_rmse)} is not below "
        f"the metric's own spread {fmt(rec.metric_std)}"
    )
    assert rec.loo_rmse >= rec.metric_std


def test_an_unstable_best_mixture_is_a_reason_on_its_own():
    W = np.random.default_rng(5).dirichlet(np.ones(3), size=12)
    y = np.random.default_rng(6).normal(37.0, 1.0, 12)
    rec = recommend_from(W, y, SOURCES)
    assert any(r.startswith("the best mixture is unstable: resampling the runs moves the") for r in rec.reasons)
    assert max(rec.weights_std.values()) > 0.15


def test_too_few_runs_and_equal_metrics_are_reasons():
    rec = recommend_from(GRID[:4], linear_in_a(GRID[:4]), SOURCES)
    assert rec.reasons[0] == "only 4 finished runs for 3 sources: at least 5 are needed to trust a degree-1 fit"
    flat = recommend_from(GRID, np.full(6, 37.0), SOURCES)
    assert "every run has the same eval.average: nothing to rank mixtures by" in flat.reasons
    assert flat.r2 is None and not flat.trusted


def test_nan_metrics_and_all_zero_weights_are_left_out_of_the_fit():
    W = np.vstack([GRID, [[0.0, 0.0, 0.0]], [[0.5, 0.5, 0.0]], [[np.nan, 0.5, 0.5]]])
    y = np.append(linear_in_a(GRID), [99.0, np.nan, 35.0])
    rec = recommend_from(W, y, SOURCES, run_names=[*NAMES, "zero", "nan-metric", "nan-weight"])
    clean = recommend_from(GRID, linear_in_a(GRID), SOURCES, run_names=NAMES)
    assert rec.n_runs == 6
    assert (rec.weights, rec.predicted, rec.nearest_run) == (clean.weights, clean.predicted, clean.nearest_run)
    assert rec.trusted


def test_unnormalised_rows_are_normalised():
    rec = recommend_from(GRID * 5.0, linear_in_a(GRID), SOURCES, run_names=NAMES)
    assert rec.nearest_distance == pytest.approx(0.4) and rec.predicted == pytest.approx(40.0, abs=0.01)


def test_one_source_and_shape_mismatch():
    rec = recommend_from(np.ones((4, 1)), np.arange(4.0), ("only",))
    assert rec.reasons == ("only one source: there is no mixture to choose",) and rec.weights is None
    with pytest.raises(ValueError, match="6 mixtures but 5 metric values"):
        recommend_from(GRID, np.arange(5.0), SOURCES)


def result(name: str, weights: dict[str, float], average: float, finished: bool = True):
    doc = {"data": {"sources": [{"name": s, "weight": w} for s, w in weights.items()]}}
    progress = {"step": 200 if finished else 20, "totalSteps": 200, "loss": 3.0}
    return run_result_from(f"s3://b/{name}", doc, progress, None, {"step": 200, "average": average, "tasks": {}})


def test_a_source_a_run_did_not_use_has_weight_zero():
    rows = [dict(zip(SOURCES, w)) for w in GRID.tolist()]
    for row in rows[:3]:
        row["a"] += row.pop("c")  # three runs never used c: their c share is 0, not missing or negative
    W = np.array([[row.get(s, 0.0) for s in SOURCES] for row in rows])
    results = [result(f"r{i}", row, float(30 + 10 * row["a"])) for i, row in enumerate(rows)]
    results.append(result("unfinished", {"a": 1.0}, 0.0, finished=False))
    rec = recommend(results)
    direct = recommend_from(W, linear_in_a(W), SOURCES, run_names=NAMES)
    assert rec.sources == SOURCES and rec.n_runs == 6
    assert rec.nearest_run == direct.nearest_run and rec.nearest_distance == pytest.approx(direct.nearest_distance)
    assert rec.predicted == pytest.approx(direct.predicted) and rec.weights == direct.weights


def test_model_helpers():
    assert [n_terms(k, 1) for k in (2, 3, 4)] == [2, 3, 4]
    assert [n_terms(k, 2) for k in (2, 3, 4)] == [3, 6, 10]
    assert features(np.array([[0.5, 0.3, 0.2]]), 2).round(6).tolist() == [[0.5, 0.3, 0.2, 0.15, 0.1, 0.06]]
    assert features(np.array([[1.0]]), 2).tolist() == [[1.0]]
    with pytest.raises(ValueError, match="degree must be 1 or 2, got 3"):
        features(GRID, 3)
    assert loo_rmse(GRID[:2], np.array([1.0, 2.0]), 1, 1e-4) is None
    assert loo_rmse(GRID, linear_in_a(GRID), 1, 1e-9) == pytest.approx(0.0, abs=1e-3)


def test_fmt_table():
    assert [fmt(v) for v in (None, math.nan, math.inf, 0.12345, -0.5, 1.0, 9.9994, 10.0, 123.456)] == [
        "-",
        "-",
        "-",
        "0.1235",
        "-0.5000",
        "1.000",
        "9.999",
        "10.00",
        "123.46",
    ]


def test_printed_summary():
    rec = Recommendation(
        metric="eval.average",
        higher_is_better=True,
        sources=("a", "b"),
        n_runs=6,
        min_runs=4,
        degree=1,
        trusted=False,
        reasons=("r1", "r2"),
        weights={"a": 0.75, "b": 0.25},
        predicted=0.4,
        predicted_interval=(0.3, 0.5),
        weights_std={"a": 0.1},
        r2=0.5,
        loo_rmse=0.02,
        metric_std=0.05,
        nearest_run="r3",
        nearest_distance=0.125,
        notes=("n1",),
        display_scale=100.0,
    )
    assert rec.lines() == [
        "Recommended mixture by eval.average (higher is better), degree-1 mixture regression over 6 finished run(s):",
        "  a 0.75 ±0.10, b 0.25",
        "  predicted eval.average: 40.00 (bootstrap 5-95%: 30.00 to 50.00)",
        "  fit: R² 0.50, leave-one-out error 2.000 vs metric spread 5.000",
        "  closest tried run: r3 (distance 0.12)",
        "  note: n1",
        "  NOT TRUSTED: r1; r2",
    ]
    bare = Recommendation(
        metric="loss",
        higher_is_better=False,
        sources=("a", "b"),
        n_runs=1,
        min_runs=4,
        degree=1,
        trusted=False,
        reasons=("too few",),
    )
    assert bare.lines()[0].startswith("Recommended mixture by loss (lower is better)")
    assert bare.lines()[1:] == ["no recommendation: too few"]
    trusted = Recommendation(
        metric="loss",
        higher_is_better=False,
        sources=("a",),
        n_runs=9,
        min_runs=4,
        degree=1,
        trusted=True,
        reasons=(),
        weights={"a": 1.0},
        predicted=3.0,
        r2=None,
        loo_rmse=0.1,
        metric_std=0.2,
    )
    assert trusted.lines()[2:] == [
        "  predicted loss: 3.000",
        "  fit: R² -, leave-one-out error 0.1000 vs metric spread 0.2000",
        "  trusted: yes (enough runs, stable under resampling)",
    ]


def test_term_counts_are_integers_and_candidates_have_a_fixed_layout():
    assert isinstance(n_terms(3, 2), int) and isinstance(n_terms(4, 2), int)
    from trainkit.compare.recommend import simplex_candidates

    two = simplex_candidates(2, 10)
    assert two.shape == (2 + 1 + 10 + 1, 2)  # vertices, centre, samples, the one edge midpoint
    assert two[2].tolist() == [0.5, 0.5] and two[-1].tolist() == [0.5, 0.5]
    assert simplex_candidates(3, 5)[3].tolist() == pytest.approx([1 / 3] * 3)
    assert simplex_candidates(1, 10).shape == (3, 1)  # one source: nothing to sample


def test_the_fit_line_needs_both_figures():
    rec = Recommendation(
        metric="loss",
        higher_is_better=False,
        sources=("a",),
        n_runs=9,
        min_runs=4,
        degree=1,
        trusted=True,
        reasons=(),
        weights={"a": 1.0},
        predicted=3.0,
        loo_rmse=0.1,
        metric_std=None,
    )
    assert not any(line.startswith("  fit:") for line in rec.lines())


def test_boundaries_two_sources_three_runs_and_exactly_min_runs():
    two = recommend_from(np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]]), np.array([1.0, 2.0, 3.0]), ("a", "b"))
    assert two.weights is not None and two.weights["a"] == 1.0  # two sources are a mixture
    assert two.loo_rmse is not None  # three runs are enough for leave-one-out
    assert not recommend_from(np.ones((4, 1)), np.arange(4.0), ("only",)).trusted
    exact = recommend_from(GRID[:5], linear_in_a(GRID[:5]), SOURCES)
    assert exact.min_runs == 5 and not any(r.startswith("only 5 finished runs") for r in exact.reasons)


# ------------------------------------------------------------------ the fit, the trust rules' boundaries
TWO = ("a", "b")


def test_the_ridge_is_added_to_the_normal_equations():
    # X = I (two runs at the vertices), y - mean = (1, -1); (I + 1*I) c = (1, -1) gives c = (0.5, -0.5).
    # Subtracting the ridge would leave a singular matrix.
    model = fit(np.eye(2), np.array([1.0, -1.0]), 1, ridge=1.0)
    assert model.offset == 0.0
    assert model.coef.tolist() == pytest.approx([0.5, -0.5])


def test_r2_by_hand_for_a_small_spread():
    # Weights of a = 0, 0.5, 1; y = 0, 1, 0.5. Least squares on a with an intercept: slope 0.5, fitted
    # 0.25, 0.5, 0.75; residual sum of squares 0.375, total 0.5 (below 1), so R² = 1 - 0.375/0.5 = 0.25.
    W = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    rec = recommend_from(W, np.array([0.0, 1.0, 0.5]), TWO, ridge=1e-9)
    assert rec.r2 == pytest.approx(0.25, abs=1e-6)


def test_two_runs_have_a_metric_spread():
    rec = recommend_from(np.array([[0.2, 0.8], [0.8, 0.2]]), np.array([1.0, 3.0]), TWO)
    assert rec.n_runs == 2
    assert rec.metric_std == pytest.approx(math.sqrt(2.0))  # sample std of (1, 3)


def test_no_sources_and_no_runs_is_the_one_source_answer_not_a_shape_error():
    rec = recommend_from(np.zeros((0, 0)), np.zeros(0), ())
    assert rec.reasons == ("only one source: there is no mixture to choose",) and rec.n_runs == 0


def test_mixtures_equal_to_six_decimals_are_the_same_mixture():
    W = np.array([[0.5, 0.5]] * 3 + [[0.5000004, 0.4999996]] * 3)
    rec = recommend_from(W, np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), TWO)
    assert "every run used the same mixture: the weights cannot explain anything" in rec.reasons
    assert "too few distinct runs to bootstrap the uncertainty" in rec.reasons


def test_two_distinct_mixtures_are_enough_to_fit_and_to_bootstrap():
    W = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)
    rec = recommend_from(W, np.array([3.0, 3.2, 2.8, 3.1, 1.0, 1.2, 0.8, 1.1]), TWO)
    assert "every run used the same mixture: the weights cannot explain anything" not in rec.reasons
    assert "too few distinct runs to bootstrap the uncertainty" not in rec.reasons
    assert set(rec.weights_std) == {"a", "b"}


def test_the_bootstrap_draws_every_run_including_the_first():
    # Only run 0 differs; a resample that never draws it holds one mixture and is skipped.
    W = np.array([[1.0, 0.0]] + [[0.0, 1.0]] * 5)
    rec = recommend_from(W, np.array([5.0, 1.0, 1.2, 0.8, 1.1, 0.9]), TWO)
    assert "too few distinct runs to bootstrap the uncertainty" not in rec.reasons
    assert rec.weights_std and rec.predicted_interval is not None


def test_ten_bootstrap_refits_are_enough_and_nine_are_not():
    ten = recommend_from(GRID, linear_in_a(GRID), SOURCES, n_bootstrap=10)
    assert ten.weights_std == {"a": 0.0, "b": 0.0, "c": 0.0} and ten.trusted
    nine = recommend_from(GRID, linear_in_a(GRID), SOURCES, n_bootstrap=9)
    assert nine.reasons == ("too few distinct runs to bootstrap the uncertainty",)
    assert nine.weights_std == {} and nine.predicted_interval is None


def test_a_spread_equal_to_the_limit_is_still_stable():
    # Perfectly linear data: every refit picks vertex a, the spread is exactly 0.
    rec = recommend_from(GRID, linear_in_a(GRID), SOURCES, max_weight_spread=0.0)
    assert rec.weights_std == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert rec.trusted and rec.reasons == ()


def test_a_tried_mixture_exactly_a_quarter_away_is_not_far():
    W = np.array([[0.75, 0.25], [0.5, 0.5], [0.25, 0.75]])
    rec = recommend_from(W, 30.0 + 10.0 * W[:, 0], TWO)
    assert rec.weights == {"a": 1.0, "b": 0.0}
    assert rec.nearest_distance == 0.25  # (0.25 + 0.25) / 2, exact in binary
    assert not any("far from every tried one" in n for n in rec.notes)


def test_equal_metrics_are_one_reason_not_also_an_unexplained_spread():
    flat = recommend_from(GRID, np.full(6, 37.0), SOURCES)
    assert flat.metric_std == 0.0
    assert flat.reasons == ("every run has the same eval.average: nothing to rank mixtures by",)


def test_weights_that_explain_little_on_a_metric_spread_below_one():
    W = np.random.default_rng(5).dirichlet(np.ones(3), size=12)
    y = 0.37 + 0.01 * np.random.default_rng(6).normal(0.0, 1.0, 12)
    rec = recommend_from(W, y, SOURCES, max_weight_spread=1.0)
    assert 0 < rec.metric_std < 1
    assert len(rec.reasons) == 1 and rec.reasons[0].startswith("the weights explain little")
