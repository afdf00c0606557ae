"""The recommended mixture across compared runs: `trainkit.mixture.recommend` (model chosen by k-fold
cross-validated Spearman, top-k average of candidates from the sweep's prior, a distance bound, a
bootstrap) on the finished runs that report the ranking metric."""

from __future__ import annotations

import numpy as np

from trainkit.compare.results import RunResult
from trainkit.mixture.prior import Blend, Prior
from trainkit.mixture.recommend import Recommendation, Settings, fmt, recommend_mixture

__all__ = ["Recommendation", "Settings", "fmt", "recommend", "recommend_from"]

recommend_from = recommend_mixture  # W, y, sources: the pure entry point, for sweep runners


def recommend(
    results: list[RunResult],
    rank_by: str = "eval.average",
    prior: Prior | Blend | None = None,
    settings: Settings | None = None,
    display_scale: float = 1.0,
) -> Recommendation:
    """The recommendation from RunResults: finished runs that report `rank_by`, weights over the union
    of their sources (a source a run did not use has weight 0). `prior`: what the sweep sampled from
    (None: a Dirichlet fitted to the runs' mixtures)."""
    from trainkit.compare.leaderboard import parse_metric

    metric = parse_metric(rank_by, list(results))
    used = [r for r in results if r.finished and metric.value(r) is not None]
    sources: list[str] = []
    for r in results:
        sources += [s for s in r.weights if s not in sources]
    if prior is not None and set(prior.sources) == set(sources):
        sources = list(prior.sources)
    elif prior is not None:
        prior = None  # the runs use other sources than the sweep's prior names: fit one to them instead
    W = [[r.weights.get(s, 0.0) for s in sources] for r in used]
    y = [metric.value(r) for r in used]
    return recommend_mixture(
        np.array(W, dtype=float).reshape(len(used), len(sources)),
        np.array(y, dtype=float),
        sources,
        prior,
        metric=metric.key,
        higher_is_better=metric.higher_is_better,
        run_names=[r.name for r in used],
        settings=settings or Settings(),
        display_scale=display_scale,
    )


def sweep_recommender(
    sweep, results: list[RunResult], token_counts=None
) -> tuple[Prior | Blend | None, Settings, str | None]:
    """What a sweep's recommendation is made from, given its runs' results: the prior its runs were drawn
    from (with every search round's), its recommender settings, and its confirmation run's name (the plan of
    `trainkit.spec.search.plan_sweep`, rebuilt from the results, so the report matches the sweep)."""
    from trainkit.compare.leaderboard import parse_metric
    from trainkit.spec.search import RunOutcome, plan_sweep

    metric = parse_metric(sweep.spec.rank_by)
    outcomes = {r.name: RunOutcome(finished=r.finished, value=metric.value(r)) for r in results}
    plan = plan_sweep(sweep, outcomes, token_counts)
    target = plan.confirmation["metadata"]["name"] if plan.confirmation else None
    return plan.candidates_prior, plan.settings, target if any(r.name == target for r in results) else None
