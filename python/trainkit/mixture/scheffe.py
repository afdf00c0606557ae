"""Scheffé mixture regressions: the metric as a function of the weights with no intercept (weights sum to
1, so an intercept is implied). Terms:

- linear: w_i (linear blending);
- quadratic: w_i and the pairwise products w_i*w_j (interactions: synergy or redundancy of two sources);
- roots: w_i and sqrt(w_i) (diminishing returns: the first tokens of a source help most, as data-mixing
  laws find), fitted as a linear model in these terms;
- roots_quadratic: w_i, sqrt(w_i) and the pairwise products w_i*w_j (diminishing returns AND interactions;
  one ridge over all terms, so with few runs per term the leave-one-out choice shrinks it toward roots').

Ridge on the terms with the metric centred (shrinks toward "every mixture scores the mean"); the ridge
strength is chosen per fit by exact leave-one-out error (the hat-matrix shortcut, one SVD). A linear
model's optimum always sits at a vertex or edge of the simplex: it extrapolates, which is why the
recommender only ever asks a model about candidates from the prior."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

TERMS = ("linear", "quadratic", "roots", "roots_quadratic")
RIDGE_GRID = tuple(float(x) for x in np.logspace(-6, 2, 17))


def _pairs(W: np.ndarray) -> list[np.ndarray]:
    return [W[:, i] * W[:, j] for i, j in itertools.combinations(range(W.shape[1]), 2)]


def features(W, terms: str = "linear") -> np.ndarray:
    W = np.atleast_2d(np.asarray(W, dtype=float))
    if terms == "linear":
        return W
    if terms == "quadratic":
        return np.column_stack([W, *_pairs(W)])
    if terms == "roots":
        return np.column_stack([W, np.sqrt(np.clip(W, 0.0, None))])
    if terms == "roots_quadratic":
        return np.column_stack([W, np.sqrt(np.clip(W, 0.0, None)), *_pairs(W)])
    raise ValueError(f"terms must be one of {', '.join(TERMS)}, got {terms!r}")


def n_terms(k: int, terms: str) -> int:
    pairs = k * (k - 1) // 2
    return {"linear": k, "quadratic": k + pairs, "roots": 2 * k, "roots_quadratic": 2 * k + pairs}[terms]


@dataclass(frozen=True)
class Fit:
    coef: np.ndarray
    offset: float
    terms: str
    ridge: float

    def predict(self, W) -> np.ndarray:
        return self.offset + features(W, self.terms) @ self.coef


def loo_ridge(X: np.ndarray, yc: np.ndarray, grid=RIDGE_GRID) -> float:
    """The ridge strength with the smallest exact leave-one-out error: with X = U S V', the hat matrix of
    ridge lambda is U diag(s^2 / (s^2 + lambda)) U', and run i's left-out residual is r_i / (1 - h_ii)."""
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    Uy = U.T @ yc
    best, best_err = grid[0], np.inf
    for lam in grid:
        shrink = s**2 / (s**2 + lam)
        resid = yc - U @ (shrink * Uy)
        h = np.einsum("ij,j,ij->i", U, shrink, U)
        err = float(np.mean((resid / np.clip(1.0 - h, 1e-9, None)) ** 2))
        if err < best_err - 1e-15:
            best, best_err = lam, err
    return best


def fit(W, y, terms: str = "linear", ridge: float | None = None) -> Fit:
    """Ridge on the terms; `ridge` None: chosen by leave-one-out error."""
    X = features(W, terms)
    y = np.asarray(y, dtype=float)
    offset = float(y.mean())
    yc = y - offset
    lam = loo_ridge(X, yc) if ridge is None and len(y) >= 3 else (1e-4 if ridge is None else ridge)
    A = X.T @ X + lam * np.eye(X.shape[1])
    coef = np.linalg.solve(A, X.T @ yc)
    return Fit(coef=coef, offset=offset, terms=terms, ridge=lam)
