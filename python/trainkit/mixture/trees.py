"""Gradient-boosted regression trees on the mixture weights (RegMix fits LightGBM; this is scikit-learn's
HistGradientBoostingRegressor, the same family). Trees cannot extrapolate: outside the runs' region they
predict the nearest leaf's value, never a fantasy corner.

Deterministic: a fixed random_state, no early stopping (its validation split would be random), and one
thread while fitting and predicting, so a parallel sum never reorders (the operator recomputes a round's
mixtures after a restart and must get the very same ones)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Many shallow trees (depth 2: each source's effect and pairwise interactions), as boosting on a few hundred
# runs of up to 20 sources does best on the bench's surfaces (`trainkit bench mixture`).
MAX_ITER = 300
LEARNING_RATE = 0.1
MAX_DEPTH = 2


def min_leaf(n: int) -> int:
    """Samples per leaf: scikit-learn's 20 would leave a 30-run sweep a single split."""
    return int(np.clip(n // 50, 2, 5))


@dataclass(frozen=True)
class TreesFit:
    model: Any

    def predict(self, W) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return self.model.predict(np.atleast_2d(np.asarray(W, dtype=float)))


def fit(W, y, seed: int = 0) -> TreesFit:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    W = np.atleast_2d(np.asarray(W, dtype=float))
    model = HistGradientBoostingRegressor(
        max_iter=MAX_ITER,
        learning_rate=LEARNING_RATE,
        max_depth=MAX_DEPTH,
        min_samples_leaf=min_leaf(len(W)),
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )
    with threadpool_limits(1):
        model.fit(W, np.asarray(y, dtype=float))
    return TreesFit(model)
