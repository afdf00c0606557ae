"""How well a model ranks runs it was not fitted on: k-fold out-of-fold predictions, their Spearman rank
correlation with what the runs measured, and a bootstrap interval of that correlation.

Rank correlation, not R² or RMSE, because a recommendation only needs the ORDER of mixtures to be
right (RegMix's criterion), and it compares across metrics of any scale."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainkit.mixture.models import Model

FOLDS = 5
N_INTERVAL = 400  # bootstrap resamples of the (prediction, measurement) pairs


@dataclass(frozen=True)
class CvScore:
    model: str
    spearman: float | None  # out-of-fold predictions vs measured (None: too few runs or no spread)
    interval: tuple[float, float] | None  # bootstrap 5%-95% of the correlation
    rmse: float | None  # out-of-fold prediction error, in the metric's units
    folds: int


def fold_of(n: int, k: int, seed: int) -> np.ndarray:
    """Each run's fold (0..k-1): a seeded permutation cut into k near-equal parts."""
    order = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=int)
    fold[order] = np.arange(n) % k
    return fold


def out_of_fold(model: Model, W: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    fold = fold_of(len(y), folds, seed)
    pred = np.empty(len(y))
    for f in range(folds):
        test = fold == f
        pred[test] = model.fit(W[~test], y[~test], seed).predict(W[test])
    return pred


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks, 1-based (ties share the mean of their positions, as scipy's rankdata): numpy only,
    because the interval ranks hundreds of resamples that are full of ties."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    edges = np.flatnonzero(np.concatenate(([True], xs[1:] != xs[:-1], [True])))
    mean_rank = (edges[:-1] + edges[1:] - 1) / 2.0 + 1.0
    out = np.empty(len(x))
    out[order] = np.repeat(mean_rank, np.diff(edges))
    return out


def spearman(a, b) -> float | None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def spearman_interval(a, b, seed: int, n: int = N_INTERVAL) -> tuple[float, float] | None:
    """Bootstrap 5%-95% of Spearman over resampled pairs (no refits: the predictions are fixed)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 5:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(a), len(a))
        r = spearman(a[idx], b[idx])
        if r is not None:
            values.append(r)
    if len(values) < n // 2:
        return None
    return float(np.percentile(values, 5)), float(np.percentile(values, 95))


def cross_validate(model: Model, W, y, seed: int = 0, folds: int = FOLDS) -> CvScore:
    """k-fold (leave-one-out below k*2 runs) cross-validation of one model on the sweep's own runs."""
    W, y = np.asarray(W, dtype=float), np.asarray(y, dtype=float)
    n = len(y)
    if n < 3:
        return CvScore(model.name, None, None, None, 0)
    k = folds if n >= 2 * folds else n
    pred = out_of_fold(model, W, y, k, seed)
    return CvScore(
        model=model.name,
        spearman=spearman(pred, y),
        interval=spearman_interval(pred, y, seed),
        rmse=float(np.sqrt(np.mean((pred - y) ** 2))),
        folds=k,
    )
