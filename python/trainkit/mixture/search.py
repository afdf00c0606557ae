"""Sweeps that search: explore N mixtures from the prior, fit, then try M mixtures around the current
recommendation, refit on everything, repeat, until a stopping rule says enough.

Everything here is a pure function of the runs' results and the seed: round r+1's mixtures are drawn
with `default_rng([seed, r+1])` around the recommendation fitted on rounds 0..r, so the operator (after
any restart) and `trainkit sweep --local` plan exactly the same runs.

Each later round's first mixture is the recommendation itself (measured, not only predicted); the
other M-1 are drawn from a Dirichlet centred on it. The recommendation after round r draws its
candidates from the blend of every distribution the sweep sampled from so far (the first prior and each
round's Dirichlet, weighted by their runs), so it stays "candidates from the prior the sweep sampled from".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trainkit.mixture import prior as priors
from trainkit.mixture.recommend import Recommendation, Settings, moved, recommend_mixture
from trainkit.mixture.simplex import rounded

ROUND_CONCENTRATION = 100.0
STOP_MOVED_BELOW = 0.02


@dataclass(frozen=True)
class SearchSettings:
    rounds: int = 1  # rounds in all, the first one being the sweep's own mixtures
    runs_per_round: int = 8
    concentration: float = ROUND_CONCENTRATION
    stop_moved_below: float = STOP_MOVED_BELOW  # total variation; 0 never stops early on this rule
    stop_at_spearman: float | None = None  # stop once trusted with a cross-validated Spearman at least this


@dataclass(frozen=True)
class Tried:
    """One run of the sweep: its round, mixture (over all sources) and metric (None: failed / missing)."""

    name: str
    round: int
    weights: tuple[float, ...]
    value: float | None


@dataclass(frozen=True)
class RoundResult:
    round: int
    runs: int  # runs of rounds 0..round with a value (the fit's size)
    recommendation: Recommendation
    moved: float | None  # total variation from the previous round's recommendation
    stop: str | None  # why the search ends after this round (None: another round follows)


def round_mixtures(
    centre: Sequence[float], sources: Sequence[str], runs: int, concentration: float, seed: int, round_index: int
) -> np.ndarray:
    """Round `round_index`'s mixtures: the centre itself, then runs-1 draws around it (rounded as specs store them)."""
    rng = np.random.default_rng([seed, round_index])
    drawn = priors.around(centre, sources, concentration).sample(max(0, runs - 1), rng)
    return rounded(np.vstack([np.asarray(centre, dtype=float)[None, :], drawn]))[:runs]


def stop_reason(
    round_index: int, search: SearchSettings, rec: Recommendation, move: float | None, min_spearman: float
) -> str | None:
    if rec.weights is None:
        return "no recommendation to search around: " + "; ".join(rec.reasons)
    if round_index + 1 >= search.rounds:
        return f"all {search.rounds} round(s) done"
    if move is not None and move < search.stop_moved_below:
        return f"the recommendation moved {move:.3f} (total variation) in round {round_index + 1}, below {search.stop_moved_below:g}"
    cv = rec.chosen_cv
    target = search.stop_at_spearman
    if (
        target is not None
        and rec.trusted
        and cv
        and cv.spearman is not None
        and cv.spearman >= max(target, min_spearman)
    ):
        return f"the recommendation is trusted with cross-validated Spearman {cv.spearman:.2f} (target {target:g})"
    return None


def sweep_blend(
    tried: Sequence[Tried],
    sources: Sequence[str],
    first_prior: priors.Prior | None,
    search: SearchSettings,
    previous: Sequence[RoundResult],
    upto: int,
) -> priors.Blend:
    """What rounds 0..upto sampled from: the first prior (or, for explicit mixtures, a Dirichlet fitted to
    them) and a Dirichlet around each earlier recommendation, weighted by their runs."""
    sources = tuple(sources)
    first = [t.weights for t in tried if t.round == 0]
    base = first_prior if first_prior is not None else priors.fitted(np.array(first, dtype=float), sources)
    parts: list[tuple[float, priors.Prior]] = [(float(len(first)), base)]
    for j in range(1, upto + 1):
        centre = previous[j - 1].recommendation.weights
        assert centre is not None  # a round after one without a recommendation is never planned
        count = sum(1 for t in tried if t.round == j)
        parts.append((float(count), priors.around([centre[s] for s in sources], sources, search.concentration)))
    return priors.blend(*parts)


def next_round_result(
    tried: Sequence[Tried],
    sources: Sequence[str],
    first_prior: priors.Prior | None,
    search: SearchSettings,
    settings: Settings,
    previous: Sequence[RoundResult],
    *,
    metric: str,
    higher_is_better: bool,
    display_scale: float = 1.0,
) -> RoundResult:
    """The recommendation after round r = len(previous), fitted on every run of rounds 0..r that has a
    value, with its move from the previous recommendation and the stopping decision."""
    r = len(previous)
    sources = tuple(sources)
    upto = [t for t in tried if t.round <= r and t.value is not None]
    W = np.array([t.weights for t in upto], dtype=float).reshape(len(upto), len(sources))
    y = np.array([t.value for t in upto], dtype=float)
    rec = recommend_mixture(
        W,
        y,
        sources,
        sweep_blend(tried, sources, first_prior, search, previous, r),
        metric=metric,
        higher_is_better=higher_is_better,
        run_names=[t.name for t in upto],
        settings=settings,
        display_scale=display_scale,
    )
    move = moved(previous[-1].recommendation.weights, rec.weights) if previous else None
    return RoundResult(r, len(upto), rec, move, stop_reason(r, search, rec, move, settings.min_spearman))


def run_search(
    tried: Sequence[Tried],
    sources: Sequence[str],
    first_prior: priors.Prior | None,
    search: SearchSettings,
    settings: Settings,
    *,
    metric: str,
    higher_is_better: bool,
    display_scale: float = 1.0,
) -> list[RoundResult]:
    """The result after each COMPLETE round present in `tried` (the caller passes only rounds whose runs
    all finished), in order, up to the first that stops the search."""
    results: list[RoundResult] = []
    for r in sorted({t.round for t in tried}):
        if r != len(results):  # rounds are planned one after another, never skipped
            break
        result = next_round_result(
            tried,
            sources,
            first_prior,
            search,
            settings,
            results,
            metric=metric,
            higher_is_better=higher_is_better,
            display_scale=display_scale,
        )
        results.append(result)
        if result.stop:
            break
    return results
