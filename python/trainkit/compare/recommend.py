"""A RegMix-style mixture recommendation. Pure functions (numpy only).

Across finished runs, fit a small regression of the ranking metric on the mixture weights (a Scheffé
mixture model: no intercept, because weights sum to 1; degree 1 = linear blending, degree 2 adds the
pairwise products w_i*w_j), predict it over a dense sample of the weight simplex and take the best
point. Uncertainty comes from a bootstrap over runs: refit on resampled runs, and report the spread
of the best mixture's weights and of the predicted metric. The recommendation says plainly when it is
not to be trusted: too few runs for the model, a best mixture that moves around under resampling, or
weights that explain the metric no better than its mean.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

MAX_WEIGHT_SPREAD = 0.15  # bootstrap std of any source's best weight above this: not trusted
N_CANDIDATES = 8192
N_BOOTSTRAP = 200


@dataclass(frozen=True)
class Recommendation:
    metric: str
    higher_is_better: bool
    sources: tuple[str, ...]
    n_runs: int  # finished runs with the metric, used in the fit
    min_runs: int  # runs needed before the fit can be trusted
    degree: int
    trusted: bool
    reasons: tuple[str, ...]  # why not trusted (empty when trusted)
    weights: dict[str, float] | None = None  # predicted best mixture
    predicted: float | None = None  # the metric predicted there (full fit)
    predicted_interval: tuple[float, float] | None = None  # bootstrap 5%-95% of the prediction there
    best_value_interval: tuple[float, float] | None = None  # bootstrap 5%-95% of each refit's own best value
    weights_std: dict[str, float] = field(default_factory=dict)  # bootstrap std of the best weights
    weights_interval: dict[str, tuple[float, float]] = field(default_factory=dict)  # 5%-95%
    r2: float | None = None  # in-sample
    loo_rmse: float | None = None  # leave-one-out prediction error
    metric_std: float | None = None  # spread of the observed metric, for scale
    nearest_run: str | None = None  # the tried mixture closest to the recommendation
    nearest_distance: float | None = None  # total-variation distance to it (0 = same mixture, 1 = disjoint)
    notes: tuple[str, ...] = ()
    display_scale: float = 1.0  # metric values are shown multiplied by this (100: fractions as percent)

    def _f(self, v: float | None) -> str:
        return fmt(None if v is None else v * self.display_scale)

    def lines(self) -> list[str]:
        """Plain-language summary, one statement a line."""
        out = [
            f"Recommended mixture by {self.metric} ({'higher' if self.higher_is_better else 'lower'} is better), "
            f"degree-{self.degree} mixture regression over {self.n_runs} finished run(s):"
        ]
        if self.weights is None:
            out.append("no recommendation: " + "; ".join(self.reasons))
            return out
        out.append(
            "  "
            + ", ".join(
                f"{s} {self.weights[s]:.2f}" + (f" ±{self.weights_std[s]:.2f}" if s in self.weights_std else "")
                for s in self.sources
            )
        )
        pred = f"  predicted {self.metric}: {self._f(self.predicted)}"
        if self.predicted_interval:
            pred += (
                f" (bootstrap 5-95%: {self._f(self.predicted_interval[0])} to {self._f(self.predicted_interval[1])})"
            )
        out.append(pred)
        if self.loo_rmse is not None and self.metric_std is not None:
            r2 = "-" if self.r2 is None else f"{self.r2:.2f}"
            out.append(
                f"  fit: R² {r2}, leave-one-out error {self._f(self.loo_rmse)} vs metric spread {self._f(self.metric_std)}"
            )
        if self.nearest_run is not None:
            out.append(f"  closest tried run: {self.nearest_run} (distance {self.nearest_distance:.2f})")
        out += [f"  note: {n}" for n in self.notes]
        if self.trusted:
            out.append("  trusted: yes (enough runs, stable under resampling)")
        else:
            out.append("  NOT TRUSTED: " + "; ".join(self.reasons))
        return out


def fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if abs(v) < 1:
        return f"{v:.4f}"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


# ------------------------------------------------------------------------------------- the model
def features(W: np.ndarray, degree: int = 1) -> np.ndarray:
    """Scheffé terms: w_i (degree 1), plus w_i*w_j for i<j (degree 2)."""
    W = np.atleast_2d(np.asarray(W, dtype=float))
    if degree == 1:
        return W
    if degree == 2:
        pairs = [W[:, i] * W[:, j] for i, j in itertools.combinations(range(W.shape[1]), 2)]
        return np.column_stack([W, *pairs]) if pairs else W
    raise ValueError(f"degree must be 1 or 2, got {degree}")


def n_terms(k: int, degree: int) -> int:
    return k if degree == 1 else k + k * (k - 1) // 2


@dataclass(frozen=True)
class Fit:
    coef: np.ndarray
    offset: float
    degree: int

    def predict(self, W: np.ndarray) -> np.ndarray:
        return self.offset + features(W, self.degree) @ self.coef


def fit(W: np.ndarray, y: np.ndarray, degree: int = 1, ridge: float = 1e-4) -> Fit:
    """Ridge on the Scheffé terms with the metric centred: shrinks toward 'every mixture scores the
    mean' (an intercept is implied, since the weights sum to 1)."""
    X = features(W, degree)
    y = np.asarray(y, dtype=float)
    offset = float(y.mean())
    A = X.T @ X + ridge * np.eye(X.shape[1])
    coef = np.linalg.solve(A, X.T @ (y - offset))
    return Fit(coef=coef, offset=offset, degree=degree)


def simplex_candidates(k: int, n: int = N_CANDIDATES, seed: int = 0) -> np.ndarray:
    """The vertices, the centre, every edge midpoint, and n uniform (Dirichlet(1)) samples of the simplex."""
    eye = np.eye(k)
    mids = [(eye[i] + eye[j]) / 2 for i, j in itertools.combinations(range(k), 2)]
    rng = np.random.default_rng(seed)
    samples = rng.dirichlet(np.ones(k), size=n) if k > 1 else np.ones((1, 1))
    parts = [eye, np.full((1, k), 1.0 / k), samples] + ([np.array(mids)] if mids else [])
    return np.vstack(parts)


def best_index(pred: np.ndarray, higher_is_better: bool) -> int:
    return int(np.argmax(pred) if higher_is_better else np.argmin(pred))


def loo_rmse(W: np.ndarray, y: np.ndarray, degree: int, ridge: float) -> float | None:
    n = len(y)
    if n < 3:
        return None
    errs = []
    for i in range(n):
        keep = np.arange(n) != i
        errs.append(fit(W[keep], y[keep], degree, ridge).predict(W[i : i + 1])[0] - y[i])
    return float(np.sqrt(np.mean(np.square(errs))))


# ------------------------------------------------------------------------------- recommendation
def recommend_from(
    W,
    y,
    sources,
    *,
    metric: str = "eval.average",
    higher_is_better: bool = True,
    run_names=None,
    degree: int = 1,
    ridge: float = 1e-4,
    n_candidates: int = N_CANDIDATES,
    n_bootstrap: int = N_BOOTSTRAP,
    max_weight_spread: float = MAX_WEIGHT_SPREAD,
    seed: int = 0,
    display_scale: float = 1.0,
) -> Recommendation:
    """Fit, predict over the simplex, bootstrap. W: runs x sources (rows need not be normalised), y: metric."""
    sources = tuple(sources)
    k = len(sources)
    W = np.asarray(W, dtype=float).reshape(-1, k) if k else np.zeros((0, 0))
    y = np.asarray(y, dtype=float).reshape(-1)
    if W.shape[0] != y.shape[0]:
        raise ValueError(f"{W.shape[0]} mixtures but {y.shape[0]} metric values")
    keep = np.isfinite(y) & np.all(np.isfinite(W), axis=1) & (W.sum(axis=1) > 0) if len(y) else np.zeros(0, bool)
    W, y = W[keep], y[keep]
    W = W / W.sum(axis=1, keepdims=True) if len(W) else W
    names = list(run_names) if run_names is not None else [f"run {i + 1}" for i in range(len(keep))]
    names = [n for n, ok in zip(names, keep) if ok]
    n = len(y)
    min_runs = n_terms(k, degree) + 2
    base = dict(
        metric=metric,
        higher_is_better=higher_is_better,
        sources=sources,
        n_runs=n,
        min_runs=min_runs,
        degree=degree,
        display_scale=display_scale,
    )

    if k < 2:
        return Recommendation(**base, trusted=False, reasons=("only one source: there is no mixture to choose",))
    if n < 2:
        return Recommendation(
            **base,
            trusted=False,
            reasons=(
                f"only {n} finished run(s) with {metric}; a fit needs at least 2, "
                f"and at least {min_runs} to be trusted",
            ),
        )

    reasons: list[str] = []
    notes: list[str] = []
    if n < min_runs:
        reasons.append(
            f"only {n} finished runs for {k} sources: at least {min_runs} are needed to trust a degree-{degree} fit"
        )
    distinct = len({tuple(np.round(w, 6)) for w in W})
    if distinct < 2:
        reasons.append("every run used the same mixture: the weights cannot explain anything")

    model = fit(W, y, degree, ridge)
    cands = simplex_candidates(k, n_candidates, seed)
    pred = model.predict(cands)
    bi = best_index(pred, higher_is_better)
    best_w = cands[bi]

    resid = y - model.predict(W)
    sst = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / sst if sst > 0 else None
    metric_std = float(np.std(y, ddof=1)) if n > 1 else None
    loo = loo_rmse(W, y, degree, ridge)
    if loo is not None and metric_std is not None and metric_std > 0 and loo >= metric_std:
        reasons.append(
            f"the weights explain little: leave-one-out error {fmt(loo * display_scale)} is not below the "
            f"metric's own spread {fmt(metric_std * display_scale)}"
        )
    if sst == 0:
        reasons.append(f"every run has the same {metric}: nothing to rank mixtures by")

    rng = np.random.default_rng(seed + 1)
    boot_w, boot_at_best, boot_best = [], [], []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, size=n)
        if len({tuple(np.round(w, 6)) for w in W[idx]}) < 2:
            continue
        m = fit(W[idx], y[idx], degree, ridge)
        p = m.predict(cands)
        j = best_index(p, higher_is_better)
        boot_w.append(cands[j])
        boot_best.append(p[j])
        boot_at_best.append(p[bi])
    weights_std, weights_interval = {}, {}
    predicted_interval = best_value_interval = None
    if len(boot_w) >= 10:
        bw = np.array(boot_w)
        weights_std = {s: float(bw[:, i].std()) for i, s in enumerate(sources)}
        weights_interval = {
            s: (float(np.percentile(bw[:, i], 5)), float(np.percentile(bw[:, i], 95))) for i, s in enumerate(sources)
        }
        predicted_interval = (float(np.percentile(boot_at_best, 5)), float(np.percentile(boot_at_best, 95)))
        best_value_interval = (float(np.percentile(boot_best, 5)), float(np.percentile(boot_best, 95)))
        worst = max(weights_std, key=lambda name: weights_std[name])
        if weights_std[worst] > max_weight_spread:
            reasons.append(
                f"the best mixture is unstable: resampling the runs moves the {worst} weight by "
                f"±{weights_std[worst]:.2f} (more than ±{max_weight_spread:.2f})"
            )
    else:
        reasons.append("too few distinct runs to bootstrap the uncertainty")

    dists = 0.5 * np.abs(W - best_w).sum(axis=1)
    near = int(np.argmin(dists))
    if dists[near] > 0.25:
        notes.append(
            f"the recommended mixture is far from every tried one (total-variation distance "
            f"{dists[near]:.2f}): confirm it with a run before relying on it"
        )
    if degree == 1:
        notes.append(
            "a linear mixture model always puts the best at a corner or edge of the simplex; "
            "its value is the direction, not the exact point"
        )

    return Recommendation(
        **base,
        trusted=not reasons,
        reasons=tuple(reasons),
        weights={s: float(best_w[i]) for i, s in enumerate(sources)},
        predicted=float(pred[bi]),
        predicted_interval=predicted_interval,
        best_value_interval=best_value_interval,
        weights_std=weights_std,
        weights_interval=weights_interval,
        r2=r2,
        loo_rmse=loo,
        metric_std=metric_std,
        nearest_run=names[near],
        nearest_distance=float(dists[near]),
        notes=tuple(notes),
    )


def recommend(results, rank_by: str = "eval.average", **kwargs) -> Recommendation:
    """The recommendation from RunResults: finished runs that report `rank_by`, weights over the union
    of their sources (a source a run did not use has weight 0)."""
    from trainkit.compare.leaderboard import parse_metric

    metric = parse_metric(rank_by, list(results))
    used = [r for r in results if r.finished and metric.value(r) is not None]
    sources: list[str] = []
    for r in results:
        sources += [s for s in r.weights if s not in sources]
    W = [[r.weights.get(s, 0.0) for s in sources] for r in used]
    y = [metric.value(r) for r in used]
    return recommend_from(
        np.array(W, dtype=float).reshape(len(used), len(sources)),
        np.array(y, dtype=float),
        sources,
        metric=metric.key,
        higher_is_better=metric.higher_is_better,
        run_names=[r.name for r in used],
        **kwargs,
    )
