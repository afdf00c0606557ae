"""`trainkit bench mixture`: the mixture recommender on synthetic response surfaces whose optimum is known.

Each surface is a validation loss over mixtures of k sources (3 to 20), smooth, with diminishing
returns per source and pairwise interactions (synergy and redundancy), observed with Gaussian noise:

    loss(w) = c - sum_i a_i log(1 + w_i / tau) + sum_{i<j} b_ij w_i w_j + noise

Runs are drawn as a sweep draws them: from the natural-distribution prior (skewed token shares, RegMix's
prior) with the sweep's concentration. For each configuration the bench prints
- the cross-validated Spearman of each model (5-fold, the sweep's own runs), as `trainkit compare` reports it;
- the regret of the recommended mixture (true loss there minus the true optimum over the simplex) for the
  recommender (model chosen by cross-validation, top-k average of prior candidates, distance bound) and
  for trainkit 0.1's fit (linear Scheffé ridge, best point of the whole simplex), in units of the noise;
- an adaptive sweep (explore N/4, then rounds of N/8 around the recommendation) against the one-shot
  N-run sweep: the runs it needs to reach the one-shot regret.
Figures are medians over `--repeats` surfaces; everything is seeded, so a run reproduces exactly.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np

from trainkit.mixture import prior as priors
from trainkit.mixture import scheffe
from trainkit.mixture.crossval import cross_validate
from trainkit.mixture.models import MODELS
from trainkit.mixture.recommend import Settings, recommend_mixture
from trainkit.mixture.search import SearchSettings, Tried, round_mixtures, run_search

TAU = 0.05
NOISE_FRACTION = 0.1  # noise std as a fraction of the true loss's spread over the prior


@dataclass(frozen=True)
class Surface:
    k: int
    c: float
    a: np.ndarray
    b: np.ndarray  # symmetric, zero diagonal
    noise: float  # std of the observation noise
    prior: priors.Prior

    def true(self, W) -> np.ndarray:
        W = np.atleast_2d(np.asarray(W, dtype=float))
        gain = np.log1p(W / TAU) @ self.a
        inter = 0.5 * np.einsum("ni,ij,nj->n", W, self.b, W)
        return self.c - gain + inter

    def observe(self, W, rng: np.random.Generator) -> np.ndarray:
        y = self.true(W)
        return y + rng.normal(0.0, self.noise, len(y))


def make_surface(k: int, seed: int, noise_fraction: float = NOISE_FRACTION, alpha: float = 1.0) -> Surface:
    rng = np.random.default_rng([k, seed])
    tokens = np.exp(rng.normal(0.0, 1.0, k)) * 1e9  # skewed token counts, as real sources are
    prior = priors.natural({f"s{i}": int(t) for i, t in enumerate(tokens)}, alpha)
    a = rng.uniform(0.01, 0.05, k)
    b = rng.normal(0.0, 0.15, (k, k))
    b = np.triu(b, 1) + np.triu(b, 1).T
    draft = Surface(k, 3.5, a, b, 0.0, prior)
    spread = float(draft.true(prior.sample(4000, np.random.default_rng(seed))).std())
    return Surface(k, 3.5, a, b, noise_fraction * spread, prior)


def true_optimum(s: Surface, seed: int = 0) -> tuple[np.ndarray, float]:
    """The surface's minimum over the simplex: SLSQP from the best of many random starts."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    starts = np.vstack([rng.dirichlet(np.ones(s.k), 20000), s.prior.sample(20000, rng), np.eye(s.k)])
    values = s.true(starts)
    best_w, best_v = starts[np.argmin(values)], float(values.min())
    for x0 in starts[np.argsort(values)[:8]]:
        res = minimize(
            lambda w: float(s.true(w)[0]),
            x0,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * s.k,
            constraints=[{"type": "eq", "fun": lambda w: float(np.sum(w) - 1.0)}],
            options={"maxiter": 300, "ftol": 1e-12},
        )
        w = np.clip(res.x, 0.0, None)
        w = w / w.sum()
        v = float(s.true(w)[0])
        if v < best_v:
            best_w, best_v = w, v
    return best_w, best_v


def old_fit_choice(W: np.ndarray, y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """trainkit 0.1's recommendation, as it was configured: a linear Scheffé ridge (1e-4) and the best point
    of the simplex among its vertices, centre, edge midpoints and 8192 uniform samples."""
    eye = np.eye(k)
    mids = [(eye[i] + eye[j]) / 2 for i, j in itertools.combinations(range(k), 2)]
    cands = np.vstack([eye, np.full((1, k), 1.0 / k), np.random.default_rng(seed).dirichlet(np.ones(k), 8192), *mids])
    pred = scheffe.fit(W, y, "linear", ridge=1e-4).predict(cands)
    return cands[int(np.argmin(pred))]


@dataclass
class Figures:
    k: int
    runs: int
    noise: float
    spearman: dict[str, float]  # model -> median cross-validated Spearman
    regret_new: float  # median, in units of the noise std
    regret_old: float
    distance_new: float  # median total-variation distance of the recommendation to the nearest run
    distance_old: float
    adaptive_runs: int | None  # median runs the adaptive sweep needed to reach the one-shot regret
    adaptive_regret: float | None  # its median regret at half the runs
    seconds: float


def recommend_settings(seed: int, candidates: int = 10_000) -> Settings:
    # The bench measures the choice, not its uncertainty: no bootstrap refits.
    return Settings(seed=seed, candidates=candidates, n_bootstrap=0)


def adaptive(s: Surface, total: int, seed: int, settings: Settings) -> list[tuple[int, float]]:
    """An adaptive sweep of at most `total` runs: explore total/4 from the prior, then rounds of total/8
    around each recommendation. Returns (runs so far, regret of the recommendation) after every round."""
    rng = np.random.default_rng([seed, 2])
    explore, per_round = max(8, total // 4), max(4, total // 8)
    rounds = 1 + (total - explore) // per_round
    search = SearchSettings(rounds=rounds, runs_per_round=per_round, stop_moved_below=0.0)
    sources = s.prior.sources
    W0 = s.prior.sample(explore, rng)
    tried = [Tried(f"r{i}", 0, tuple(w), float(v)) for i, (w, v) in enumerate(zip(W0, s.observe(W0, rng)))]
    out = []
    for r in range(rounds):
        results = run_search(tried, sources, s.prior, search, settings, metric="loss", higher_is_better=False)
        rec = results[-1].recommendation
        assert rec.weights is not None  # the bench's runs always fit
        out.append((len(tried), float(s.true([rec.weights[x] for x in sources])[0])))
        if results[-1].stop:
            break
        Wr = round_mixtures([rec.weights[x] for x in sources], sources, per_round, search.concentration, seed, r + 1)
        tried += [
            Tried(f"r{len(tried) + i}", r + 1, tuple(w), float(v))
            for i, (w, v) in enumerate(zip(Wr, s.observe(Wr, rng)))
        ]
    return out


def measure(k: int, runs: int, repeats: int, noise_fraction: float, with_adaptive: bool, seed: int = 0) -> Figures:
    started = time.monotonic()
    spearman: dict[str, list[float]] = {m: [] for m in MODELS}
    regret_new, regret_old, dist_new, dist_old = [], [], [], []
    adaptive_runs, adaptive_regret = [], []
    for rep in range(repeats):
        s = make_surface(k, seed + rep, noise_fraction)
        _, optimum = true_optimum(s, seed + rep)
        rng = np.random.default_rng([seed + rep, 1])
        W = s.prior.sample(runs, rng)
        y = s.observe(W, rng)
        for name, model in MODELS.items():
            if runs >= model.min_runs(k):
                cv = cross_validate(model, W, y, seed + rep)
                spearman[name].append(np.nan if cv.spearman is None else cv.spearman)
        settings = recommend_settings(seed + rep)
        rec = recommend_mixture(
            W, y, s.prior.sources, s.prior, metric="loss", higher_is_better=False, settings=settings
        )
        assert rec.weights is not None
        new_w = np.array([rec.weights[x] for x in s.prior.sources])
        old_w = old_fit_choice(W, y, k, seed + rep)
        regret_new.append((float(s.true(new_w)[0]) - optimum) / s.noise)
        regret_old.append((float(s.true(old_w)[0]) - optimum) / s.noise)
        dist_new.append(float(rec.nearest_distance or 0.0))
        dist_old.append(float(0.5 * np.abs(W - old_w).sum(axis=1).min()))
        if with_adaptive:
            trace = adaptive(s, runs, seed + rep, settings)
            goal = float(s.true(new_w)[0])
            reached = [n for n, v in trace if v <= goal + 1e-12]
            adaptive_runs.append(reached[0] if reached else np.inf)
            at_half = [v for n, v in trace if n <= runs // 2]
            adaptive_regret.append((at_half[-1] - optimum) / s.noise if at_half else np.nan)
    med = lambda xs: float(np.nanmedian(xs)) if len(xs) else float("nan")  # noqa: E731
    return Figures(
        k=k,
        runs=runs,
        noise=noise_fraction,
        spearman={m: med(v) for m, v in spearman.items() if v},
        regret_new=med(regret_new),
        regret_old=med(regret_old),
        distance_new=med(dist_new),
        distance_old=med(dist_old),
        adaptive_runs=(
            None if not adaptive_runs else (None if not np.isfinite(med(adaptive_runs)) else int(med(adaptive_runs)))
        ),
        adaptive_regret=med(adaptive_regret) if adaptive_regret else None,
        seconds=time.monotonic() - started,
    )
