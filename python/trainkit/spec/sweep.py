"""The TrainingSweep spec: one base run, the mixtures to try, and how to rank them.

`expand_sweep` (pure) turns a sweep into the TrainingRuns it stands for; the operator, `trainkit sweep`
and `trainkit sweep --local` all create exactly these.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from trainkit.mixture import prior as priors
from trainkit.mixture.prior import NATURAL_TEMPERATURE, Prior
from trainkit.spec.models import (
    MAX_RUN_NAME_LENGTH,
    MAX_SOURCES,
    SEED_SUITE_TASKS,
    ObjectMeta,
    SpecModel,
    TrainingRunSpec,
)
from trainkit.spec.packing import MAX_PACKING_SWEEP_NAME_LENGTH, PackingSpec, packing_problems
from trainkit.spec.search import CONFIRMATION_SUFFIX, ConfirmSpec, RecommenderSpec, SearchSpec, with_mixture

# Run names are "<sweep>-<index:03d>", so the sweep's own name leaves room for the suffix.
MAX_SWEEP_NAME_LENGTH = MAX_RUN_NAME_LENGTH - 4
METRIC_PATTERN = r"^(loss|val\.[A-Za-z0-9_.\-]+|eval\.average|eval\.[A-Za-z0-9_.\-]+)$"


class Mixture(SpecModel):
    # One weight per source of the template; bounded (maxProperties) because a CEL rule iterates it.
    weights: Annotated[dict[str, Annotated[float, Field(ge=0)]], Field(min_length=1, max_length=MAX_SOURCES)]


MIN_GRID_STEP = 1e-4


class GridSpec(SpecModel):
    step: Annotated[
        float, Field(gt=0, le=0.5, description="Every weight is a multiple of step; 1/step must be an integer")
    ]
    min_weight: Annotated[float, Field(ge=0, lt=1)] = 0.0

    @field_validator("step")
    @classmethod
    def divides_one(cls, step: float) -> float:
        if step < MIN_GRID_STEP:  # 1/5e-324 is inf: round() of it would raise OverflowError, not a clear error
            raise ValueError(f"step {step:.3g} is below {MIN_GRID_STEP} (at most {round(1 / MIN_GRID_STEP)} units)")
        if abs(1 / step - round(1 / step)) > 1e-9:
            raise ValueError(f"step {step} does not divide 1 (1/step must be an integer)")
        return step


class DirichletSpec(SpecModel):
    samples: Annotated[int, Field(ge=1, le=10000)]
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    alpha: Annotated[
        float,
        Field(
            gt=0,
            le=1000,
            description="Concentration per source: the Dirichlet's parameters are alpha x sources x the prior's "
            "share (alpha each for the uniform prior); small values give spiky mixtures, large ones mixtures "
            "close to the prior's centre",
        ),
    ] = 1.0
    prior: Literal["uniform", "natural"] = Field(
        "uniform",
        description="natural: centred on each source's share of the tokens (from its index.json), as RegMix samples",
    )
    temperature: Annotated[
        float,
        Field(
            gt=0,
            le=1,
            description="natural prior only: its centre is the token shares raised to this power and renormalised "
            "(RegMix samples at 0.5, flattening a skewed corpus so small sources are explored too; 1: the shares)",
        ),
    ] = NATURAL_TEMPERATURE


class MixturesSpec(SpecModel):
    explicit: Annotated[list[Mixture], Field(min_length=1, max_length=10000)] | None = None
    grid: GridSpec | None = None
    dirichlet: DirichletSpec | None = None

    @model_validator(mode="after")
    def exactly_one(self):
        given = [k for k in ("explicit", "grid", "dirichlet") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of explicit, grid or dirichlet (got {', '.join(given) or 'none'})")
        return self


class SweepOverrides(SpecModel):
    """Applied to every run of the sweep, e.g. small proxy runs of a few million tokens."""

    total_tokens: Annotated[int, Field(ge=1)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    eval_limit: Annotated[float, Field(gt=0)] | None = Field(None, description="Examples per eval task in every run")


class TrainingSweepSpec(SpecModel):
    template: TrainingRunSpec
    mixtures: MixturesSpec
    overrides: SweepOverrides = Field(default_factory=SweepOverrides)
    parallelism: Annotated[int, Field(ge=1, le=1000)] = 2
    max_runs: Annotated[int, Field(ge=1, le=1000)] = 100
    rank_by: Annotated[
        str,
        Field(
            pattern=METRIC_PATTERN,
            description="val.mean or val.<source> (held-out validation loss, lower is better), eval.average, "
            "eval.<task>, or loss (training loss: each run measures it on different data)",
        ),
    ] = "eval.average"
    # Mixture search (trainkit.spec.search): rounds around the recommendation, the recommender, a confirmation run.
    search: SearchSpec | None = None
    recommend: RecommenderSpec = Field(default_factory=RecommenderSpec)
    confirm: ConfirmSpec | None = Field(
        None, description="When the search ends, run the template at full scale with the recommended mixture"
    )
    packing: PackingSpec | None = Field(
        None,
        description="Train runsPerCluster runs at once in one Ray cluster (one RayJob) instead of one cluster each",
    )

    @model_validator(mode="after")
    def packable(self):
        if self.packing is None:
            return self
        k = self.packing.runs_per_cluster
        if self.parallelism < k:
            raise ValueError(
                f"parallelism {self.parallelism} is below packing.runsPerCluster {k}: packs start whole, so "
                "parallelism must allow at least one pack"
            )
        problems = packing_problems(self.template, k)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def consistent(self):
        names = [s.name for s in self.template.data.sources]
        if self.mixtures.explicit:
            for i, mixture in enumerate(self.mixtures.explicit):
                unknown = sorted(set(mixture.weights) - set(names))
                if unknown:
                    raise ValueError(
                        f"mixtures.explicit[{i}]: unknown source(s) {', '.join(unknown)}; the template has {', '.join(names)}"
                    )
                if not any(w > 0 for w in mixture.weights.values()):
                    raise ValueError(f"mixtures.explicit[{i}]: weights cannot be normalised (none is > 0)")
        count = mixture_count(self.mixtures, len(names))
        if count > self.max_runs:
            raise ValueError(f"the mixtures give {count} runs, above maxRuns {self.max_runs}")
        most = planned_runs_at_most(self)
        if most > self.max_runs:
            raise ValueError(
                f"the sweep may create {most} runs ({count} mixtures, {most - count} more from search rounds and "
                f"the confirmation run), above maxRuns {self.max_runs}"
            )
        if self.rank_by.startswith("val."):
            source = self.rank_by[len("val.") :]
            if source != "mean" and source not in names:
                raise ValueError(f"rankBy {self.rank_by}: unknown source; the template has {', '.join(names)}")
            if self.template.eval.validation_tokens == 0:
                raise ValueError(
                    f"rankBy {self.rank_by}: the template measures no validation loss (eval.validationTokens 0)"
                )
        if self.rank_by.startswith("eval."):
            tasks = evaluated_tasks(self.template)
            if not tasks:
                raise ValueError(f"rankBy {self.rank_by}: the template evaluates nothing (set template.eval)")
            task = self.rank_by[len("eval.") :]
            if task != "average" and task not in tasks:
                raise ValueError(f"rankBy {self.rank_by}: unknown metric; the runs evaluate {', '.join(sorted(tasks))}")
        return self


class TrainingSweep(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    api_version: Literal["trainkit.dev/v1alpha1"]
    kind: Literal["TrainingSweep"]
    metadata: ObjectMeta
    spec: TrainingSweepSpec
    status: dict | None = None

    @field_validator("metadata")
    @classmethod
    def room_for_run_suffix(cls, meta: ObjectMeta) -> ObjectMeta:
        if len(meta.name) > MAX_SWEEP_NAME_LENGTH:
            raise ValueError(
                f"sweep name '{meta.name}' is longer than {MAX_SWEEP_NAME_LENGTH} characters (runs add '-NNN')"
            )
        return meta

    @model_validator(mode="after")
    def room_for_pack_suffix(self):
        if self.spec.packing is not None and len(self.metadata.name) > MAX_PACKING_SWEEP_NAME_LENGTH:
            raise ValueError(
                f"metadata.name: sweep name '{self.metadata.name}' is longer than {MAX_PACKING_SWEEP_NAME_LENGTH} "
                "characters, the most a packing sweep may have (its packs add '-pNNN')"
            )
        return self

    @model_validator(mode="after")
    def room_for_confirmation_suffix(self):
        longest = MAX_RUN_NAME_LENGTH - len(CONFIRMATION_SUFFIX)
        if self.spec.confirm is not None and len(self.metadata.name) > longest:
            raise ValueError(
                f"metadata.name: sweep name '{self.metadata.name}' is longer than {longest} characters "
                f"(its confirmation run adds '{CONFIRMATION_SUFFIX}')"
            )
        return self


def evaluated_tasks(spec: TrainingRunSpec) -> set[str]:
    tasks = {t.name for t in spec.eval.tasks}
    if spec.eval.suite == "seed-suite":
        tasks |= set(SEED_SUITE_TASKS)
    return tasks


# ------------------------------------------------------------------------------ mixture algebra
def grid_size(sources: int, step: float, min_weight: float) -> int:
    """Weight vectors of `sources` multiples of `step` summing to 1, each >= min_weight (stars and bars)."""
    units = round(1 / step)
    floor_units = math.ceil(min_weight / step - 1e-9)
    free = units - sources * floor_units
    return 0 if free < 0 else math.comb(free + sources - 1, sources - 1)


def mixture_count(mixtures: MixturesSpec, sources: int) -> int:
    if mixtures.explicit is not None:
        return len(mixtures.explicit)
    if mixtures.grid is not None:
        return grid_size(sources, mixtures.grid.step, mixtures.grid.min_weight)
    assert mixtures.dirichlet is not None  # the model's validator requires exactly one kind of mixture
    return mixtures.dirichlet.samples


def grid_points(sources: int, step: float, min_weight: float) -> list[tuple[float, ...]]:
    units = round(1 / step)
    floor_units = math.ceil(min_weight / step - 1e-9)

    def rec(k: int, left: int) -> list[tuple[int, ...]]:
        if k == 1:
            return [(left,)] if left >= floor_units else []
        return [
            (u, *rest)
            for u in range(left - floor_units * (k - 1), floor_units - 1, -1)
            for rest in rec(k - 1, left - u)
        ]

    return [tuple(round(u * step, 10) for u in point) for point in rec(sources, units)]


def planned_runs_at_most(spec: TrainingSweepSpec) -> int:
    """Every run the sweep may create: its mixtures, each later search round's, and the confirmation run."""
    count = mixture_count(spec.mixtures, len(spec.template.data.sources))
    if spec.search is not None:
        count += (spec.search.rounds - 1) * spec.search.runs_per_round
    return count + (1 if spec.confirm is not None else 0)


def sweep_prior(spec: TrainingSweepSpec, token_counts: Mapping[str, int] | None = None) -> Prior | None:
    """The prior the sweep's mixtures are drawn from (trainkit.mixture.prior): the Dirichlet's, uniform for a
    grid (it covers the simplex evenly), None for explicit mixtures (the recommender then fits one to them).
    The natural prior needs each source's token count; ValueError names what is missing."""
    names = [s.name for s in spec.template.data.sources]
    d = spec.mixtures.dirichlet
    if d is None:
        return priors.uniform(names) if spec.mixtures.grid is not None else None
    if d.prior == "uniform":
        return priors.uniform(names, d.alpha)
    if token_counts is None:
        raise ValueError("mixtures.dirichlet.prior natural needs each source's token count (its index.json)")
    return priors.natural(token_counts, d.alpha, names, d.temperature)


def dirichlet_points(prior: Prior, spec: DirichletSpec) -> list[tuple[float, ...]]:
    import numpy as np

    samples = prior.sample(spec.samples, np.random.default_rng(spec.seed))
    return [tuple(round(float(w), 6) for w in row) for row in samples]


def mixtures_of(spec: TrainingSweepSpec, token_counts: Mapping[str, int] | None = None) -> list[dict[str, float]]:
    """The sweep's mixtures in a fixed order, each {source: normalised weight} with zero weights dropped."""
    names = [s.name for s in spec.template.data.sources]
    m = spec.mixtures
    raw: Sequence[Sequence[float]]
    if m.explicit is not None:
        raw = [[mix.weights.get(n, 0.0) for n in names] for mix in m.explicit]
    elif m.grid is not None:
        raw = grid_points(len(names), m.grid.step, m.grid.min_weight)
    else:
        assert m.dirichlet is not None  # the model's validator requires exactly one kind of mixture
        prior = sweep_prior(spec, token_counts)
        assert prior is not None
        raw = dirichlet_points(prior, m.dirichlet)
    out = []
    for weights in raw:
        total = sum(weights)
        out.append({n: round(w / total, 10) for n, w in zip(names, weights) if w > 0})
    return out


def run_name(sweep_name: str, index: int) -> str:
    return f"{sweep_name}-{index:03d}"


def expand_sweep(sweep: TrainingSweep, token_counts: Mapping[str, int] | None = None) -> list[dict]:
    """The TrainingRun manifests of a sweep's mixtures, in index order (names and outputs are deterministic).
    A sweep that searches adds later rounds' runs after these (`trainkit.spec.search.plan_sweep`)."""
    return [run_manifest(sweep, index, weights) for index, weights in enumerate(mixtures_of(sweep.spec, token_counts))]


def run_manifest(sweep: TrainingSweep, index: int, weights: Mapping[str, float]) -> dict:
    """Proxy run `index` of the sweep with this mixture: the template, the proxies' overrides, its own output."""
    spec = sweep.spec
    base = spec.template.model_dump(by_alias=True, exclude_none=True, mode="json")
    name = run_name(sweep.metadata.name, index)
    run_spec = copy.deepcopy(base)
    run_spec["data"] = with_mixture(base["data"], weights)
    run_spec["output"]["uri"] = base["output"]["uri"].rstrip("/") + f"/{name}/"
    o = spec.overrides
    if o.total_tokens is not None:
        run_spec["data"]["totalTokens"] = o.total_tokens
    if o.seed is not None:
        run_spec["training"]["seed"] = o.seed
    if o.eval_limit is not None:
        run_spec["eval"]["limit"] = o.eval_limit
    mlflow = run_spec.get("tracking", {}).get("mlflow")
    if mlflow is not None:
        mlflow.setdefault("parentRunName", sweep.metadata.name)  # each proxy is a child of the sweep's run
    metadata = {
        "name": name,
        "labels": {
            **sweep.metadata.labels,
            "trainkit.dev/sweep": sweep.metadata.name,
            "trainkit.dev/mixture-index": str(index),
        },
    }
    if sweep.metadata.namespace:
        metadata["namespace"] = sweep.metadata.namespace
    return {"apiVersion": "trainkit.dev/v1alpha1", "kind": "TrainingRun", "metadata": metadata, "spec": run_spec}


def valid_metric_name(metric: str) -> bool:
    return re.fullmatch(METRIC_PATTERN, metric) is not None
