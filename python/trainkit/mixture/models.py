"""The regression models a recommendation may use, by name, with the runs each needs before its fit
can be trusted. `auto` (the default) lets cross-validation choose among those that have enough runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from trainkit.mixture import scheffe, trees

AUTO = "auto"
MIN_TREE_RUNS = 12  # fewer runs than this and a tree has nothing to split


class Predictor(Protocol):
    def predict(self, W) -> np.ndarray: ...


@dataclass(frozen=True)
class Model:
    name: str
    label: str  # for reports
    min_runs: Callable[[int], int]  # sources -> runs needed to trust it
    fit: Callable[[np.ndarray, np.ndarray, int], Predictor]  # (W, y, seed)


MODELS: dict[str, Model] = {
    "linear": Model(
        "linear",
        "linear mixture regression (Scheffé, ridge)",
        lambda k: scheffe.n_terms(k, "linear") + 2,
        lambda W, y, seed: scheffe.fit(W, y, "linear"),
    ),
    "quadratic": Model(
        "quadratic",
        "quadratic mixture regression (Scheffé with pairwise terms, ridge)",
        lambda k: scheffe.n_terms(k, "quadratic") + 2,
        lambda W, y, seed: scheffe.fit(W, y, "quadratic"),
    ),
    "roots": Model(
        "roots",
        "mixture regression with diminishing returns (w, √w and ∜w terms, ridge)",
        lambda k: scheffe.n_terms(k, "roots") + 2,
        lambda W, y, seed: scheffe.fit(W, y, "roots"),
    ),
    "roots_quadratic": Model(
        "roots_quadratic",
        "mixture regression with diminishing returns and interactions (w, √w, ∜w and pairwise terms, ridge)",
        lambda k: scheffe.n_terms(k, "roots_quadratic") + 2,
        lambda W, y, seed: scheffe.fit(W, y, "roots_quadratic"),
    ),
    "gbt": Model(
        "gbt",
        "gradient-boosted trees (HistGradientBoostingRegressor)",
        lambda k: max(MIN_TREE_RUNS, k + 2),
        lambda W, y, seed: trees.fit(W, y, seed),
    ),
}
MODEL_CHOICES = (AUTO, *MODELS)


def model_label(name: str) -> str:
    return MODELS[name].label if name in MODELS else name


def eligible(n_runs: int, k: int, asked: str = AUTO) -> list[Model]:
    """The models cross-validation chooses among: the one asked for, or (auto) each with enough runs;
    the linear model when none has (its fit is then reported as not trusted)."""
    if asked != AUTO:
        return [MODELS[asked]]
    enough = [m for m in MODELS.values() if n_runs >= m.min_runs(k)]
    return enough or [MODELS["linear"]]
