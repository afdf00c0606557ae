"""The pure pieces of trainkit.mixture: simplex helpers, the prior, the Scheffé fits and their ridge, the
cross-validated Spearman, and the rounds of a sweep that searches."""

from __future__ import annotations

import numpy as np
import pytest

from trainkit.mixture import prior as priors
from trainkit.mixture import scheffe
from trainkit.mixture.crossval import cross_validate, fold_of, spearman, spearman_interval
from trainkit.mixture.models import MODELS, eligible
from trainkit.mixture.recommend import Settings
from trainkit.mixture.search import SearchSettings, Tried, round_mixtures, run_search, stop_reason
from trainkit.mixture.simplex import distinct_count, nearest, normalise, rounded, tv_distance

S3 = ("a", "b", "c")


def test_simplex_helpers():
    assert normalise([[2.0, 2.0], [0.0, 0.0]]).tolist() == [[0.5, 0.5], [0.0, 0.0]]
    r = rounded([[1.0, 1.0, 1.0]])
    assert r.sum() == pytest.approx(1.0, abs=1e-9) and r.tolist() == [[0.333334, 0.333333, 0.333333]]
    assert float(tv_distance([1.0, 0.0], [0.0, 1.0])) == 1.0 and float(tv_distance([0.5, 0.5], [0.5, 0.5])) == 0.0
    idx, d = nearest([[0.9, 0.1], [0.1, 0.9]], [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert idx.tolist() == [0, 1] and d.tolist() == pytest.approx([0.1, 0.1])
    assert distinct_count([[0.5, 0.5], [0.5000001, 0.4999999], [0.2, 0.8]]) == 2


def test_uniform_prior_keeps_the_sweeps_old_draws():
    # dirichlet.alpha a for k sources has always meant Dirichlet(a, ..., a): the uniform prior is exactly that.
    p = priors.uniform(S3, 0.7)
    assert p.alphas == (0.7, 0.7, 0.7) and p.concentration == pytest.approx(2.1)
    assert np.array_equal(p.sample(5, np.random.default_rng(3)), np.random.default_rng(3).dirichlet([0.7] * 3, 5))


def test_natural_prior_is_centred_on_token_shares():
    p = priors.natural({"a": 600, "b": 300, "c": 100}, alpha=2.0, temperature=1.0)
    assert p.centre.tolist() == pytest.approx([0.6, 0.3, 0.1])
    assert p.concentration == pytest.approx(2.0 * 3)  # alpha per source, as for the uniform prior
    draws = p.sample(20000, np.random.default_rng(0))
    assert draws.mean(axis=0) == pytest.approx([0.6, 0.3, 0.1], abs=0.01)
    assert priors.natural({"b": 300, "a": 600, "c": 100}, 2.0, sources=S3, temperature=1.0).alphas == p.alphas
    with pytest.raises(ValueError, match="source\\(s\\) b hold no tokens"):
        priors.natural({"a": 5, "b": 0})
    with pytest.raises(ValueError, match="no token count for source\\(s\\) c"):
        priors.natural({"a": 5, "b": 1}, sources=S3)


def test_natural_prior_flattens_skewed_shares_at_regmix_temperature():
    # RegMix samples around shares ** 0.5 (synthesize_mixture.py, TEMP): a 1% source gets 5x its share.
    counts = {"a": 8100, "b": 1800, "c": 100}
    p = priors.natural(counts)
    root = np.sqrt([0.81, 0.18, 0.01])
    assert p.centre.tolist() == pytest.approx((root / root.sum()).tolist())  # 0.6, ~0.32, ~0.07
    assert p.concentration == pytest.approx(3.0)  # alpha per source is unchanged by the temperature
    assert priors.natural(counts, temperature=1.0).centre.tolist() == pytest.approx([0.81, 0.18, 0.01])
    draws = p.sample(20000, np.random.default_rng(0))
    assert (draws[:, 2] > 0.2).mean() > 3 * (
        priors.natural(counts, temperature=1.0).sample(20000, np.random.default_rng(0))[:, 2] > 0.2
    ).mean()
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match="temperature .* must be in \\(0, 1\\]"):
            priors.natural(counts, temperature=bad)


def test_fitted_prior_recovers_mean_and_concentration():
    truth = priors.natural({"a": 5, "b": 3, "c": 2}, alpha=10.0, temperature=1.0)
    W = truth.sample(4000, np.random.default_rng(1))
    got = priors.fitted(W, S3)
    assert got.centre.tolist() == pytest.approx([0.5, 0.3, 0.2], abs=0.01)
    assert got.concentration == pytest.approx(30.0, rel=0.1)
    assert priors.fitted(np.tile([0.2, 0.3, 0.5], (4, 1)), S3).concentration == pytest.approx(1e4)


def test_blend_draws_in_proportion_and_around_is_centred():
    a = priors.around([0.1, 0.1, 0.8], S3, 1000.0)
    b = priors.blend((3.0, priors.uniform(S3)), (1.0, a), (0.0, priors.uniform(S3)))
    assert len(b.parts) == 2 and "75% uniform" in b.describe()
    draws = b.sample(400, np.random.default_rng(0))
    near = np.sum(tv_distance(draws, [0.1, 0.1, 0.8]) < 0.05)
    assert draws.shape == (400, 3) and 90 <= near <= 130  # the quarter from `around`, and few uniform ones
    with pytest.raises(ValueError, match="at least one prior"):
        priors.blend((0.0, a))


def test_loo_ridge_is_small_on_exact_data_and_larger_on_noise():
    W = np.random.default_rng(0).dirichlet(np.ones(4), 30)
    exact = W @ np.array([1.0, 2.0, 3.0, 4.0])
    fit = scheffe.fit(W, exact, "linear")
    assert fit.ridge == scheffe.RIDGE_GRID[0]
    assert np.allclose(fit.predict(np.eye(4)), [1, 2, 3, 4], atol=1e-3)
    noisy = scheffe.fit(W, np.random.default_rng(1).normal(0, 1, 30), "quadratic")
    assert noisy.ridge > 1e-3
    assert scheffe.features([[0.25, 0.25, 0.5]], "roots").tolist() == [
        [0.25, 0.25, 0.5, 0.5, 0.5, 0.5**0.5, 0.25**0.25, 0.25**0.25, 0.5**0.25]
    ]
    assert scheffe.features([[0.5, 0.3, 0.2]], "quadratic").round(6).tolist() == [[0.5, 0.3, 0.2, 0.15, 0.1, 0.06]]
    assert [scheffe.n_terms(4, t) for t in ("linear", "quadratic", "roots", "roots_quadratic")] == [4, 10, 12, 18]
    assert scheffe.features([[0.25, 0.75]], "roots_quadratic").round(6).tolist() == [
        [0.25, 0.75, 0.5, round(0.75**0.5, 6), round(0.25**0.25, 6), round(0.75**0.25, 6), 0.1875]
    ]
    with pytest.raises(ValueError, match="terms must be one of"):
        scheffe.features(W, "cubic")


def test_roots_quadratic_fits_diminishing_returns_with_interactions_better_than_roots():
    # a surface with both: -sum a_i sqrt(w_i) (diminishing returns) + sum b_ij w_i w_j (synergy, redundancy)
    rng = np.random.default_rng(0)
    k = 5
    a = rng.uniform(0.5, 1.5, k)
    b = np.triu(rng.normal(0.0, 2.0, (k, k)), 1)

    def surface(W):
        return -np.sqrt(W) @ a + np.einsum("ni,ij,nj->n", W, b, W)

    W, W_new = rng.dirichlet(np.ones(k), 200), rng.dirichlet(np.ones(k), 500)
    y = surface(W) + rng.normal(0.0, 0.01, len(W))
    error = {
        t: np.sqrt(np.mean((scheffe.fit(W, y, t).predict(W_new) - surface(W_new)) ** 2))
        for t in ("roots", "roots_quadratic")
    }
    assert error["roots_quadratic"] < 0.25 * error["roots"]
    cv = {t: cross_validate(MODELS[t], W, y).spearman for t in ("roots", "roots_quadratic")}
    assert cv["roots_quadratic"] > cv["roots"]


def test_two_roots_learn_a_saturating_curve_that_one_root_cannot(monkeypatch):
    # diminishing returns shaped like log(1 + w/0.1): steeper near 0 than √w, flatter beyond
    rng = np.random.default_rng(0)
    k = 5
    a = rng.uniform(0.5, 1.5, k)

    def surface(W):
        return -np.log1p(W / 0.1) @ a

    W, W_new = rng.dirichlet(np.ones(k), 200), rng.dirichlet(np.ones(k), 500)
    y = surface(W) + rng.normal(0.0, 0.01, len(W))

    def error() -> float:
        return float(np.sqrt(np.mean((scheffe.fit(W, y, "roots").predict(W_new) - surface(W_new)) ** 2)))

    two_roots = error()
    monkeypatch.setattr(scheffe, "DIMINISHING_POWERS", (0.5,))
    assert scheffe.n_terms(k, "roots") == 2 * k
    assert two_roots < 0.5 * error()


def test_eligible_models_by_runs():
    assert [m.name for m in eligible(5, 3)] == ["linear"]
    assert [m.name for m in eligible(8, 3)] == ["linear", "quadratic"]
    assert [m.name for m in eligible(11, 3)] == ["linear", "quadratic", "roots"]  # roots: 9 terms + 2
    assert [m.name for m in eligible(12, 3)] == ["linear", "quadratic", "roots", "gbt"]
    assert [m.name for m in eligible(14, 3)] == ["linear", "quadratic", "roots", "roots_quadratic", "gbt"]
    assert [m.name for m in eligible(3, 3)] == ["linear"]  # too few for any: linear, reported as not trusted
    assert [m.name for m in eligible(3, 3, "gbt")] == ["gbt"]


def test_cross_validation_pieces():
    fold = fold_of(23, 5, 0)
    assert sorted(np.bincount(fold).tolist()) == [4, 4, 5, 5, 5]
    assert np.array_equal(fold, fold_of(23, 5, 0)) and not np.array_equal(fold, fold_of(23, 5, 1))
    from scipy.stats import rankdata

    from trainkit.mixture.crossval import ranks

    ties = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    assert ranks(ties).tolist() == rankdata(ties).tolist() == [5.0, 1.5, 5.0, 3.0, 5.0, 1.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
    x = np.arange(30.0)
    lo, hi = spearman_interval(x, x + np.random.default_rng(0).normal(0, 5, 30), seed=0)
    assert 0.5 < lo < hi <= 1.0
    W = np.random.default_rng(2).dirichlet(np.ones(3), 8)
    loo = cross_validate(MODELS["linear"], W, W @ np.array([1.0, 2.0, 3.0]))
    assert loo.folds == 8 and loo.spearman == pytest.approx(1.0)  # fewer than 2 x 5 runs: leave-one-out
    assert cross_validate(MODELS["linear"], W[:2], np.array([1.0, 2.0])).spearman is None


def test_round_mixtures_start_at_the_centre_and_are_seeded():
    a = round_mixtures([0.2, 0.3, 0.5], S3, 6, 200.0, seed=4, round_index=1)
    assert a.shape == (6, 3) and a[0].tolist() == [0.2, 0.3, 0.5]
    assert np.allclose(a.sum(axis=1), 1.0) and np.all(np.round(a, 6) == a)
    assert np.array_equal(a, round_mixtures([0.2, 0.3, 0.5], S3, 6, 200.0, seed=4, round_index=1))
    assert not np.array_equal(a, round_mixtures([0.2, 0.3, 0.5], S3, 6, 200.0, seed=4, round_index=2))
    assert float(tv_distance(a[1:], [0.2, 0.3, 0.5]).max()) < 0.2  # concentration 200: close around it


def test_rounds_approach_an_interior_optimum_and_stop_by_rule():
    best = np.array([0.15, 0.25, 0.6])
    truth = lambda W: 3.0 + 2.0 * np.sum((np.atleast_2d(W) - best) ** 2, axis=1)  # noqa: E731
    prior = priors.uniform(S3)
    search = SearchSettings(rounds=3, runs_per_round=6, stop_moved_below=0.0)
    settings = Settings(model="quadratic", candidates=2000, n_bootstrap=0)
    W0 = prior.sample(10, np.random.default_rng(0))
    tried = [Tried(f"r{i}", 0, tuple(w), float(truth(w)[0])) for i, w in enumerate(W0)]
    for r in range(3):
        results = run_search(tried, S3, prior, search, settings, metric="val.mean", higher_is_better=False)
        assert len(results) == r + 1
        if results[-1].stop:
            break
        rec = results[-1].recommendation.weights
        Wr = round_mixtures([rec[s] for s in S3], S3, 6, search.concentration, 0, r + 1)
        tried += [Tried(f"x{r}{i}", r + 1, tuple(w), float(truth(w)[0])) for i, w in enumerate(Wr)]
    assert results[-1].stop == "all 3 round(s) done"
    regret = [float(truth([res.recommendation.weights[s] for s in S3])[0]) - 3.0 for res in results]
    # the refinement steps already find this smooth optimum after round 0: later rounds must not lose it
    assert regret[-1] <= regret[0] + 1e-6 and regret[-1] < 0.005
    assert results[1].moved is not None and results[0].moved is None


def test_stop_rules():
    class Rec:
        def __init__(self, weights, trusted=True, spearman=0.97):
            from trainkit.mixture.crossval import CvScore

            self.weights, self.trusted, self.reasons = weights, trusted, ("why",)
            self.chosen_cv = CvScore("gbt", spearman, None, None, 5)

    s = SearchSettings(rounds=4, stop_moved_below=0.02, stop_at_spearman=0.95)
    assert stop_reason(0, s, Rec(None), None, 0.5).startswith("no recommendation to search around: why")
    assert stop_reason(3, s, Rec({"a": 1.0}), 0.5, 0.5) == "all 4 round(s) done"
    assert "moved 0.010" in stop_reason(1, s, Rec({"a": 1.0}, trusted=False), 0.01, 0.5)
    assert stop_reason(1, s, Rec({"a": 1.0}, trusted=False), 0.5, 0.5) is None
    assert "cross-validated Spearman 0.97" in stop_reason(1, s, Rec({"a": 1.0}), 0.5, 0.5)
    assert stop_reason(1, s, Rec({"a": 1.0}, spearman=0.9), 0.5, 0.5) is None
