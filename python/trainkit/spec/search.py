"""A TrainingSweep that searches: its `search`, `recommend` and `confirm` blocks, and `plan_sweep`, the
ONE pure function that says which runs the sweep stands for so far (the operator's sweep controller and
`trainkit sweep --local` both create exactly these).

Round 0 is the sweep's `mixtures` (`expand_sweep`). Once every run of round r has finished, the
recommendation is fitted on rounds 0..r (`trainkit.mixture.search`); unless a stopping rule fires, round
r+1's mixtures are drawn around it with the seed `[mixtures seed, r+1]` and appended with the next
indices. When the search stops, a sweep with `confirm` adds its confirmation run: the template at full
scale with the recommended mixture. Every input is a run's final result, so the plan never changes once
made: an operator restart re-derives the very same runs, and existing names are never created twice.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from trainkit.mixture import prior as priors
from trainkit.mixture.models import MODEL_CHOICES
from trainkit.mixture.recommend import MAX_DISTANCE, TOP_K, Settings
from trainkit.mixture.search import (
    ROUND_CONCENTRATION,
    STOP_MOVED_BELOW,
    RoundResult,
    SearchSettings,
    Tried,
    sweep_blend,
)
from trainkit.spec.models import ModelSpec, ResourcesSpec, SpecModel

if TYPE_CHECKING:
    from trainkit.spec.sweep import TrainingSweep

ROUND_LABEL = "trainkit.dev/round"
ROLE_LABEL = "trainkit.dev/role"
CONFIRMATION_ROLE = "confirmation"
CONFIRMATION_SUFFIX = "-target"


class SearchSpec(SpecModel):
    rounds: Annotated[
        int,
        Field(
            ge=1,
            le=20,
            description="Rounds in all: the first tries `mixtures`; each later one fits every finished run and "
            "tries runsPerRound mixtures around the recommendation",
        ),
    ] = 1
    runs_per_round: Annotated[int, Field(ge=1, le=1000)] = 8
    concentration: Annotated[
        float,
        Field(gt=0, le=1e5, description="Of the Dirichlet around the recommendation: larger samples closer to it"),
    ] = ROUND_CONCENTRATION
    stop_when_moved_below: Annotated[
        float,
        Field(
            ge=0,
            le=1,
            description="Stop once a round moves the recommendation less than this (total-variation distance)",
        ),
    ] = STOP_MOVED_BELOW
    stop_at_spearman: (
        Annotated[
            float,
            Field(
                gt=0,
                le=1,
                description="Stop once the recommendation is trusted and its cross-validated Spearman reaches this",
            ),
        ]
        | None
    ) = None


class RecommenderSpec(SpecModel):
    model: Annotated[
        Literal[MODEL_CHOICES],  # type: ignore[valid-type]
        Field(description="auto: the model with the best cross-validated rank correlation on the sweep's runs"),
    ] = "auto"
    top_k: Annotated[
        int, Field(ge=1, le=10000, description="The recommendation is the average of the top-k predicted candidates")
    ] = TOP_K
    max_distance: Annotated[
        float,
        Field(
            gt=0,
            le=1,
            description="Never recommend farther than this (total variation) from the nearest tried mixture; 1: no bound",
        ),
    ] = MAX_DISTANCE


class ConfirmSpec(SpecModel):
    """The confirmation run: the template (not the proxies' overrides) with the recommended mixture."""

    model: ModelSpec | None = Field(None, description="The target model (default: the template's)")
    total_tokens: Annotated[int, Field(ge=1)] | None = Field(
        None, description="The target's token budget (default: the template's data.totalTokens)"
    )
    resources: ResourcesSpec | None = None


def search_settings(spec: SearchSpec | None) -> SearchSettings:
    s = spec or SearchSpec()
    return SearchSettings(s.rounds, s.runs_per_round, s.concentration, s.stop_when_moved_below, s.stop_at_spearman)


def recommender_settings(spec: RecommenderSpec, seed: int) -> Settings:
    return Settings(model=spec.model, top_k=spec.top_k, max_distance=spec.max_distance, seed=seed)


def confirmation_name(sweep_name: str) -> str:
    return sweep_name + CONFIRMATION_SUFFIX


# ------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class RunOutcome:
    """What the planner needs of an existing run: has it finished (succeeded or failed), and its value
    of the sweep's rankBy metric (None: failed, or it does not report the metric)."""

    finished: bool
    value: float | None = None


@dataclass
class SweepPlan:
    runs: list[dict]  # the proxy runs planned so far (every round up to the current one), in index order
    rounds: list[RoundResult] = field(default_factory=list)  # the recommendation after each finished round
    round: int = 0  # the current round (0-based)
    max_rounds: int = 1
    stopped: str | None = None  # why the search ended (None: still searching, or not a searching sweep)
    confirmation: dict | None = None  # the target run's manifest, once the search has ended
    settings: Settings = field(default_factory=Settings)  # the recommender's, from spec.recommend
    # What the runs so far were sampled from (the recommender's candidates); None: explicit mixtures,
    # for which the recommender fits a Dirichlet to the runs themselves.
    candidates_prior: priors.Prior | priors.Blend | None = None

    @property
    def all_runs(self) -> list[dict]:
        return self.runs + ([self.confirmation] if self.confirmation else [])

    @property
    def recommendation(self):
        return self.rounds[-1].recommendation if self.rounds else None


def searches(sweep: TrainingSweep) -> bool:
    """Does the sweep fit a recommendation of its own (rounds, or a confirmation run)?"""
    s = sweep.spec
    return (s.search is not None and s.search.rounds > 1) or s.confirm is not None


def plan_sweep(
    sweep: TrainingSweep,
    outcomes: Mapping[str, RunOutcome],
    token_counts: Mapping[str, int] | None = None,
) -> SweepPlan:
    """The runs the sweep stands for, given the outcomes of the runs that exist (by name)."""
    from trainkit.spec.ranking import higher_is_better
    from trainkit.spec.sweep import expand_sweep, sweep_prior

    spec = sweep.spec
    first = expand_sweep(sweep, token_counts)
    for m in first:
        m["metadata"]["labels"][ROUND_LABEL] = "0"
    search = search_settings(spec.search)
    names = [s.name for s in spec.template.data.sources]
    prior = sweep_prior(spec, token_counts)
    settings = recommender_settings(spec.recommend, seed_of(sweep))
    plan = SweepPlan(runs=first, max_rounds=search.rounds, settings=settings, candidates_prior=prior)
    if not searches(sweep):
        return plan
    tried: list[Tried] = []
    while True:
        current = [m for m in plan.runs if m["metadata"]["labels"][ROUND_LABEL] == str(plan.round)]
        done = [outcomes.get(m["metadata"]["name"]) for m in current]
        if not all(o is not None and o.finished for o in done):
            return plan
        tried += [
            Tried(m["metadata"]["name"], plan.round, weights_vector(m, names), o.value)
            for m, o in zip(current, done)
            if o is not None
        ]
        result = round_result_cached(
            tried, names, prior, search, settings, spec.rank_by, higher_is_better(spec.rank_by), plan.rounds
        )
        plan.candidates_prior = sweep_blend(tried, names, prior, search, plan.rounds, plan.round)
        plan.rounds.append(result)
        if result.stop:
            plan.stopped = result.stop
            rec = result.recommendation.weights
            if spec.confirm is not None and rec is not None:
                plan.confirmation = confirmation_run(sweep, rec)
            return plan
        plan.round += 1
        plan.runs += round_runs(sweep, plan.round, len(plan.runs), result, search)


def seed_of(sweep: TrainingSweep) -> int:
    d = sweep.spec.mixtures.dirichlet
    return d.seed if d is not None else 0


def weights_vector(manifest: dict, names: Sequence[str]) -> tuple[float, ...]:
    weights = {s["name"]: s["weight"] for s in manifest["spec"]["data"]["sources"]}
    total = sum(weights.values())
    return tuple(weights.get(n, 0.0) / total for n in names)


def round_runs(
    sweep: TrainingSweep, round_index: int, start: int, result: RoundResult, search: SearchSettings
) -> list[dict]:
    from trainkit.mixture.search import round_mixtures
    from trainkit.spec.sweep import run_manifest

    names = [s.name for s in sweep.spec.template.data.sources]
    rec = result.recommendation.weights
    assert rec is not None  # stop_reason ends the search when there is no recommendation
    mixtures = round_mixtures(
        [rec[n] for n in names], names, search.runs_per_round, search.concentration, seed_of(sweep), round_index
    )
    runs = []
    for i, row in enumerate(mixtures):
        manifest = run_manifest(sweep, start + i, {n: float(w) for n, w in zip(names, row) if w > 0})
        manifest["metadata"]["labels"][ROUND_LABEL] = str(round_index)
        runs.append(manifest)
    return runs


def with_mixture(template_data: dict, weights: Mapping[str, float]) -> dict:
    """A sweep run's `data`: the template's sources with these weights; a template source the mixture
    leaves out (weight 0) is still measured, as a validation target counted in `mean`, so every run of
    the sweep reports val.<source> for every template source and its val.mean over the same sources (pure)."""
    data = copy.deepcopy(template_data)
    kept = [s for s in data["sources"] if s["name"] in weights]
    left_out = [s for s in data["sources"] if s["name"] not in weights]
    data["sources"] = [{**s, "weight": weights[s["name"]]} for s in kept]
    if left_out:
        targets = [{k: v for k, v in s.items() if k != "weight"} | {"countInMean": True} for s in left_out]
        data["validationTargets"] = [*data.get("validationTargets", []), *targets]
    return data


def confirmation_run(sweep: TrainingSweep, weights: Mapping[str, float]) -> dict:
    """The target TrainingRun: the template at full scale (confirm's model, tokens, resources; none of the
    proxies' overrides) with the recommended mixture, owned by the sweep like its proxies."""
    spec = sweep.spec
    confirm = spec.confirm
    assert confirm is not None
    name = confirmation_name(sweep.metadata.name)
    base = spec.template.model_dump(by_alias=True, exclude_none=True, mode="json")
    run_spec = copy.deepcopy(base)
    kept = {s: round(w, 6) for s, w in weights.items() if round(w, 6) > 0}
    run_spec["data"] = with_mixture(base["data"], kept)
    run_spec["output"]["uri"] = base["output"]["uri"].rstrip("/") + f"/{name}/"
    if confirm.model is not None:
        run_spec["model"] = confirm.model.model_dump(by_alias=True, exclude_none=True, mode="json")
    if confirm.total_tokens is not None:
        run_spec["data"]["totalTokens"] = confirm.total_tokens
    if confirm.resources is not None:
        run_spec["resources"] = confirm.resources.model_dump(by_alias=True, exclude_none=True, mode="json")
    metadata: dict = {
        "name": name,
        "labels": {**sweep.metadata.labels, "trainkit.dev/sweep": sweep.metadata.name, ROLE_LABEL: CONFIRMATION_ROLE},
    }
    if sweep.metadata.namespace:
        metadata["namespace"] = sweep.metadata.namespace
    return {"apiVersion": "trainkit.dev/v1alpha1", "kind": "TrainingRun", "metadata": metadata, "spec": run_spec}


# A round's recommendation is a pure function of its inputs; the operator asks for it on every reconcile of
# the sweep, so the last few are kept (by a digest of everything they depend on).
# The operator reconciles several sweeps at once (kopf's thread pool): the cache is shared behind a lock.
_CACHE: OrderedDict[str, RoundResult] = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 64


def round_result_cached(
    tried: list[Tried],
    names: list[str],
    prior: priors.Prior | None,
    search: SearchSettings,
    settings: Settings,
    metric: str,
    higher: bool,
    previous: list[RoundResult],
) -> RoundResult:
    from trainkit.mixture.search import next_round_result

    key = hashlib.sha256(
        json.dumps(
            [
                [(t.name, t.round, t.weights, t.value) for t in tried],
                names,
                None if prior is None else (prior.kind, prior.alphas),
                search.__dict__,
                settings.__dict__,
                metric,
                higher,
            ],
            default=str,
        ).encode()
    ).hexdigest()
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    result = next_round_result(tried, names, prior, search, settings, previous, metric=metric, higher_is_better=higher)
    with _CACHE_LOCK:
        _CACHE[key] = result
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return result


# ----------------------------------------------------------------------------------------- status
def _finite(v: float | None, digits: int = 6) -> float | None:
    import math

    return None if v is None or not math.isfinite(v) else round(float(v), digits)


def search_status(plan: SweepPlan):
    """The sweep status's `search` block: the round, the current recommendation and its cross-validated
    quality, and one line per finished round (bounded: at most 20 rounds, 5 reasons of 500 characters)."""
    from trainkit.spec.sweep_status import (
        MAX_REASON_CHARS,
        MAX_SHOWN_REASONS,
        RecommendationStatus,
        RoundStatus,
        SearchStatus,
    )

    rec_status = None
    rec = plan.recommendation
    if rec is not None:
        cv = rec.chosen_cv
        rec_status = RecommendationStatus(
            weights={s: round(w, 6) for s, w in (rec.weights or {}).items()},
            predicted=_finite(rec.predicted),
            model=rec.model,
            cv_spearman=_finite(cv.spearman if cv else None, 4),
            cv_interval=[round(x, 4) for x in cv.interval] if cv and cv.interval else None,
            runs=rec.n_runs,
            trusted=rec.trusted,
            reasons=[r[:MAX_REASON_CHARS] for r in rec.reasons[:MAX_SHOWN_REASONS]],
            nearest_run=rec.nearest_run,
            nearest_distance=_finite(rec.nearest_distance, 4),
        )
    history = [
        RoundStatus(
            round=r.round + 1,
            runs=r.runs,
            model=r.recommendation.model,
            cv_spearman=_finite(r.recommendation.chosen_cv.spearman if r.recommendation.chosen_cv else None, 4),
            moved=_finite(r.moved, 4),
        )
        for r in plan.rounds
    ]
    return SearchStatus(
        round=plan.round + 1,
        rounds=plan.max_rounds,
        stopped=plan.stopped[:MAX_REASON_CHARS] if plan.stopped else None,
        recommendation=rec_status,
        history=history,
    )


def confirmation_status(
    plan: SweepPlan, phase: str, value: float | None, proxy_values: Sequence[float | None], higher_is_better: bool
):
    """The sweep status's `confirmation` block: predicted vs realised, and where the target lands among the
    proxies (by the same ranking rule as the leaderboard)."""
    from trainkit.spec.ranking import rank_among
    from trainkit.spec.sweep_status import ConfirmationStatus

    if plan.confirmation is None:
        return None
    rec = plan.recommendation
    sources = plan.confirmation["spec"]["data"]["sources"]
    values = [v for v in proxy_values if v is not None]
    return ConfirmationStatus(
        run=plan.confirmation["metadata"]["name"],
        phase=phase,
        weights={s["name"]: s["weight"] for s in sources},
        predicted=_finite(rec.predicted if rec else None),
        value=_finite(value),
        rank_among_proxies=rank_among(_finite(value), list(values), higher_is_better),
        proxies=len(values),
    )
