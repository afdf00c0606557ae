"""The recommended mixture, RegMix-style, with its uncertainty and plain words on when not to trust it.

1. Each model that has enough runs (`models`) is cross-validated on the sweep's own runs (k-fold
   Spearman of out-of-fold predictions, `crossval`); the best-ranking one is chosen (ties: the simpler).
2. It is refitted on every run and asked about candidates drawn from the prior the sweep sampled from
   (`prior`), never the whole simplex: a regression is only believed where runs were.
3. The recommendation is the AVERAGE of the top-k predicted candidates (RegMix), which smooths the
   model's noise instead of betting on its single best point.
   The average is then refined in a few steps (`refine`): candidates drawn from ever tighter Dirichlets
   around it (concentrations `REFINE_CONCENTRATIONS`), the top-k average again, never farther than
   `REFINE_RADIUS` from the first average. With many sources, prior draws are sparse around any one
   mixture (at 17 sources the best of 10,000 lies several noise levels above the optimum), and these
   local draws let the model's own shape finish the search where the prior put it.
4. It is held within `max_distance` (total variation) of the nearest tried mixture: candidates farther
   than that are not considered, and an average that still lands farther is pulled back onto the bound.
   `max_distance` 1.0 lifts the bound (total variation is at most 1).
5. A bootstrap over runs (refit, recommend again) gives the spread of the weights and of the prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from trainkit.mixture import prior as priors
from trainkit.mixture.crossval import CvScore, cross_validate
from trainkit.mixture.models import AUTO, MODELS, Predictor, eligible, model_label
from trainkit.mixture.simplex import distinct_count, nearest, normalise, tv_distance

TOP_K = 30
CANDIDATES = 20_000
REFINE_CONCENTRATIONS = (100.0, 300.0, 1000.0, 3000.0)  # each step's Dirichlet around the current average
REFINE_CANDIDATES = 4_000  # drawn per step
REFINE_RADIUS = 0.25  # total variation from the prior candidates' average: refining fills gaps, never wanders
MAX_DISTANCE = 0.30  # total-variation distance to the nearest tried mixture; 1.0: no bound
MIN_SPEARMAN = 0.5  # cross-validated rank correlation below this: the weights explain too little to trust
MAX_WEIGHT_SPREAD = 0.15  # bootstrap std of any source's recommended weight above this: not trusted
N_BOOTSTRAP = 30
MIN_BOOTSTRAP = 10


@dataclass(frozen=True)
class Settings:
    model: str = AUTO  # auto | linear | quadratic | gbt
    top_k: int = TOP_K
    candidates: int = CANDIDATES
    refine: tuple[float, ...] = REFINE_CONCENTRATIONS  # (): the prior candidates' top-k average as it is
    refine_candidates: int = REFINE_CANDIDATES
    refine_radius: float = REFINE_RADIUS
    max_distance: float = MAX_DISTANCE
    min_spearman: float = MIN_SPEARMAN
    max_weight_spread: float = MAX_WEIGHT_SPREAD
    n_bootstrap: int = N_BOOTSTRAP
    seed: int = 0


@dataclass(frozen=True)
class Recommendation:
    metric: str
    higher_is_better: bool
    sources: tuple[str, ...]
    n_runs: int  # finished runs with the metric, used in the fit
    min_runs: int  # runs the chosen model needs before it can be trusted
    trusted: bool
    reasons: tuple[str, ...]  # why not trusted (empty when trusted)
    model: str | None = None  # the model chosen (models.MODELS key)
    cv: tuple[CvScore, ...] = ()  # every model considered, the chosen one first
    weights: dict[str, float] | None = None
    predicted: float | None = None  # the chosen model's prediction at `weights`
    predicted_interval: tuple[float, float] | None = None  # bootstrap 5%-95% of that prediction
    weights_std: dict[str, float] = field(default_factory=dict)  # bootstrap std of the recommended weights
    weights_interval: dict[str, tuple[float, float]] = field(default_factory=dict)  # 5%-95%
    metric_std: float | None = None  # spread of the observed metric, for scale
    nearest_run: str | None = None  # the tried mixture closest to the recommendation
    nearest_distance: float | None = None  # total-variation distance to it
    max_distance: float = MAX_DISTANCE
    held_at_bound: bool = False  # the model's favourites lay beyond max_distance
    top_k: int = 0  # candidates averaged
    n_candidates: int = 0
    prior: str = ""  # what the candidates were drawn from
    notes: tuple[str, ...] = ()
    display_scale: float = 1.0  # metric values are shown multiplied by this (100: fractions as percent)
    fitted: Predictor | None = field(default=None, repr=False, compare=False)  # the chosen model, fitted on all runs

    def predict(self, weights: dict[str, float]) -> float | None:
        """The chosen model's prediction at a mixture (e.g. a confirmation run's); None without a fit."""
        if self.fitted is None:
            return None
        total = sum(weights.get(s, 0.0) for s in self.sources)
        if total <= 0:
            return None
        return float(self.fitted.predict(np.array([[weights.get(s, 0.0) / total for s in self.sources]]))[0])

    @property
    def chosen_cv(self) -> CvScore | None:
        return self.cv[0] if self.cv else None

    def _f(self, v: float | None) -> str:
        return fmt(None if v is None else v * self.display_scale)

    def lines(self) -> list[str]:
        """Plain-language summary, one statement a line."""
        out = [
            f"Recommended mixture by {self.metric} ({'higher' if self.higher_is_better else 'lower'} is better), "
            f"from {self.n_runs} finished run(s):"
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
        if self.cv:
            out.append("  model: " + "; ".join(cv_text(c, i == 0) for i, c in enumerate(self.cv)))
        if self.top_k:
            out.append(
                f"  the average of the top {self.top_k} of {self.n_candidates} candidates drawn from the sweep's "
                f"prior ({self.prior})"
            )
        if self.nearest_run is not None and self.nearest_distance is not None:
            bound = "no bound" if self.max_distance >= 1 else f"bound {self.max_distance:.2f}"
            out.append(f"  closest tried run: {self.nearest_run} (distance {self.nearest_distance:.2f}; {bound})")
        out += [f"  note: {n}" for n in self.notes]
        if self.trusted:
            out.append("  trusted: yes (it ranks held-out runs well, enough runs, stable under resampling)")
        else:
            out.append("  NOT TRUSTED: " + "; ".join(self.reasons))
        return out


def fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if abs(v) < 1:
        return f"{v:.4f}"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


def cv_text(c: CvScore, chosen: bool = False) -> str:
    label = model_label(c.model)
    if c.spearman is None:
        return f"{label}: not cross-validated (too few runs or no spread)"
    interval = f", 5-95% {c.interval[0]:.2f} to {c.interval[1]:.2f}" if c.interval else ""
    head = f"{label}, chosen by {c.folds}-fold cross-validated Spearman" if chosen else f"{label}"
    return f"{head} {c.spearman:.2f}{interval}"


# ---------------------------------------------------------------------------------- the choice
@dataclass(frozen=True)
class Choice:
    weights: np.ndarray
    held_at_bound: bool


def top_k_average(
    pred: np.ndarray,
    candidates: np.ndarray,
    candidate_distance: np.ndarray,
    tried: np.ndarray,
    higher_is_better: bool,
    top_k: int,
    max_distance: float,
) -> Choice:
    """The mean of the `top_k` best-predicted candidates within `max_distance` of a tried mixture; pulled
    back onto the bound (toward its nearest tried mixture) if the mean itself lies farther."""
    order = np.argsort(-pred if higher_is_better else pred, kind="stable")
    inside = order[candidate_distance[order] <= max_distance + 1e-12]
    pool = inside if len(inside) else order[:1]
    top = pool[:top_k]
    held = len(inside) < len(order) and not np.array_equal(top, order[: len(top)])
    mean = candidates[top].mean(axis=0)
    j, d = nearest(mean, tried)
    if d[0] > max_distance:
        anchor = tried[j[0]]
        mean = anchor + (mean - anchor) * (max_distance / d[0])
        held = True
    return Choice(normalise(np.clip(mean, 0.0, None))[0], held)


def refine(
    first: Choice,
    predict,
    sources: Sequence[str],
    tried: np.ndarray,
    higher_is_better: bool,
    settings: Settings,
) -> Choice:
    """Local steps from a top-k average: each draws candidates around the current average (and keeps it as
    one), and takes their top-k average under the same distance bound, among candidates within
    `refine_radius` of the first average (so the prior still decides the region). Seeded: plans repeat."""
    rng = np.random.default_rng([settings.seed, 7])
    choice = first
    for concentration in settings.refine:
        around = priors.around(choice.weights.tolist(), sources, concentration).sample(settings.refine_candidates, rng)
        cands = np.vstack([choice.weights[None, :], around])
        _, dist = nearest(cands, tried)
        dist[1:][tv_distance(around, first.weights) > settings.refine_radius] = np.inf
        step = top_k_average(
            predict(cands), cands, dist, tried, higher_is_better, min(settings.top_k, len(cands)), settings.max_distance
        )
        choice = Choice(step.weights, choice.held_at_bound or step.held_at_bound)
    return choice


def _cv_order(scores: list[CvScore]) -> list[CvScore]:
    """Best cross-validated Spearman first; ties and unscored keep the models' order (simplest first)."""
    rank = {name: i for i, name in enumerate(MODELS)}
    return sorted(scores, key=lambda c: (-(c.spearman if c.spearman is not None else -math.inf), rank.get(c.model, 99)))


def recommend_mixture(
    W,
    y,
    sources: Sequence[str],
    prior: priors.Prior | priors.Blend | None = None,
    *,
    metric: str = "val.mean",
    higher_is_better: bool = False,
    run_names: Sequence[str] | None = None,
    settings: Settings = Settings(),
    display_scale: float = 1.0,
) -> Recommendation:
    """W: runs x sources (rows need not be normalised), y: the metric. `prior`: what the sweep sampled
    from (None: a Dirichlet fitted to the tried mixtures)."""
    sources = tuple(sources)
    k = len(sources)
    W = np.asarray(W, dtype=float).reshape(-1, k) if k else np.zeros((0, 0))
    y = np.asarray(y, dtype=float).reshape(-1)
    if W.shape[0] != y.shape[0]:
        raise ValueError(f"{W.shape[0]} mixtures but {y.shape[0]} metric values")
    keep = np.isfinite(y) & np.all(np.isfinite(W), axis=1) & (W.sum(axis=1) > 0) if len(y) else np.zeros(0, bool)
    names = [n for n, ok in zip(run_names or [f"run {i + 1}" for i in range(len(keep))], keep) if ok]
    W, y = normalise(W[keep]) if keep.any() else np.zeros((0, k)), y[keep]
    n = len(y)
    models = eligible(n, max(k, 1), settings.model)
    base = Recommendation(
        metric=metric,
        higher_is_better=higher_is_better,
        sources=sources,
        n_runs=n,
        min_runs=models[0].min_runs(k),
        trusted=False,
        reasons=(),
        display_scale=display_scale,
        max_distance=settings.max_distance,
    )
    if k < 2:
        return replace(base, reasons=("only one source: there is no mixture to choose",))
    if n < 2:
        return replace(base, reasons=(f"only {n} finished run(s) with {metric}; a fit needs at least 2",))

    reasons: list[str] = []
    notes: list[str] = []
    scores = _cv_order([cross_validate(m, W, y, settings.seed) for m in models])
    chosen = MODELS[scores[0].model]
    min_runs = chosen.min_runs(k)
    if n < min_runs:
        reasons.append(
            f"only {n} finished runs for {k} sources: at least {min_runs} are needed to trust the {chosen.name} model"
        )
    if distinct_count(W) < 2:
        reasons.append("every run used the same mixture: the weights cannot explain anything")
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst == 0:
        reasons.append(f"every run has the same {metric}: nothing to rank mixtures by")
    cv = scores[0]
    if sst > 0 and cv.spearman is not None and cv.spearman < settings.min_spearman:
        interval = f" (5-95% {cv.interval[0]:.2f} to {cv.interval[1]:.2f})" if cv.interval else ""
        reasons.append(
            f"the weights explain little: the {chosen.name} model ranks held-out runs at Spearman "
            f"{cv.spearman:.2f}{interval}, below {settings.min_spearman:.2f}"
        )

    source_prior = prior if prior is not None else priors.fitted(W, sources)
    cands = np.vstack([priors.candidates(source_prior, settings.candidates, settings.seed), W])
    _, cand_dist = nearest(cands, W)
    top_k = max(1, min(settings.top_k, len(cands)))

    def choose(model: Predictor) -> Choice:
        first = top_k_average(model.predict(cands), cands, cand_dist, W, higher_is_better, top_k, settings.max_distance)
        return refine(first, model.predict, sources, W, higher_is_better, settings)

    model = chosen.fit(W, y, settings.seed)
    choice = choose(model)
    best = choice.weights
    predicted = float(model.predict(best[None, :])[0])

    rng = np.random.default_rng(settings.seed + 1)
    boot_w, boot_pred = [], []
    for _ in range(settings.n_bootstrap):
        idx = rng.integers(0, n, size=n)
        if distinct_count(W[idx]) < 2:
            continue
        m = chosen.fit(W[idx], y[idx], settings.seed)
        c = choose(m)
        boot_w.append(c.weights)
        boot_pred.append(float(m.predict(best[None, :])[0]))
    weights_std: dict[str, float] = {}
    weights_interval: dict[str, tuple[float, float]] = {}
    predicted_interval = None
    if len(boot_w) >= MIN_BOOTSTRAP:
        bw = np.array(boot_w)
        weights_std = {s: float(bw[:, i].std()) for i, s in enumerate(sources)}
        weights_interval = {
            s: (float(np.percentile(bw[:, i], 5)), float(np.percentile(bw[:, i], 95))) for i, s in enumerate(sources)
        }
        predicted_interval = (float(np.percentile(boot_pred, 5)), float(np.percentile(boot_pred, 95)))
        worst = max(weights_std, key=lambda name: weights_std[name])
        if weights_std[worst] > settings.max_weight_spread:
            reasons.append(
                f"the recommendation is unstable: resampling the runs moves the {worst} weight by "
                f"±{weights_std[worst]:.2f} (more than ±{settings.max_weight_spread:.2f})"
            )
    elif settings.n_bootstrap > 0:
        reasons.append("too few distinct runs to bootstrap the uncertainty")

    near_index, near_dist = nearest(best, W)
    if choice.held_at_bound:
        notes.append(
            f"the model favours mixtures farther than {settings.max_distance:.2f} (total variation) from every "
            f"tried one; the recommendation is held within that bound: explore further (another round) before "
            f"going there"
        )
    return replace(
        base,
        min_runs=min_runs,
        trusted=not reasons,
        reasons=tuple(reasons),
        model=chosen.name,
        cv=tuple(scores),
        weights={s: float(best[i]) for i, s in enumerate(sources)},
        predicted=predicted,
        predicted_interval=predicted_interval,
        weights_std=weights_std,
        weights_interval=weights_interval,
        metric_std=float(np.std(y, ddof=1)),
        nearest_run=names[int(near_index[0])],
        nearest_distance=float(near_dist[0]),
        held_at_bound=choice.held_at_bound,
        top_k=top_k,
        n_candidates=len(cands),
        prior=("fitted to the tried mixtures: " if prior is None else "") + source_prior.describe(),
        notes=tuple(notes),
        fitted=model,
    )


def moved(a: dict[str, float] | None, b: dict[str, float] | None) -> float | None:
    """Total-variation distance between two recommendations (None when either is missing)."""
    if not a or not b:
        return None
    keys = sorted(set(a) | set(b))
    return float(tv_distance([a.get(s, 0.0) for s in keys], [b.get(s, 0.0) for s in keys]))
