"""Scheffé mixture regressions: the metric as a function of the weights with no intercept (weights sum to
1, so an intercept is implied). Terms:

- linear: w_i (linear blending);
- quadratic: w_i and the pairwise products w_i*w_j (interactions: synergy or redundancy of two sources);
- roots: w_i, w_i^(1/2) and w_i^(1/4) (diminishing returns: the first tokens of a source help most, as
  data-mixing laws find), fitted as a linear model in these terms. Two fractional powers, not one: the
  laws disagree on the curve (power law, log), and a blend of the two roots spans curves from gently
  concave to nearly logarithmic near 0 (`DIMINISHING_POWERS`), so the fit learns the shape instead of
  assuming it;
- roots_quadratic: the roots terms and the pairwise products w_i*w_j (diminishing returns AND interactions;
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
# The exponents of the diminishing-returns terms. √w alone left the recommendation 1.1 noise units from
# the optimum at 17 sources x 512 runs (`trainkit bench mixture`), most of it the curve's shape; with ∜w
# beside it 0.8 (docs/compare.md). A third, w^(1/8), gained nothing more.
DIMINISHING_POWERS = (0.5, 0.25)


def _pairs(W: np.ndarray) -> list[np.ndarray]:
    return [W[:, i] * W[:, j] for i, j in itertools.combinations(range(W.shape[1]), 2)]


def _roots(W: np.ndarray) -> list[np.ndarray]:
    Wc = np.clip(W, 0.0, None)
    return [Wc**p for p in DIMINISHING_POWERS]


def features(W, terms: str = "linear") -> np.ndarray:
    W = np.atleast_2d(np.asarray(W, dtype=float))
    if terms == "linear":
        return W
    if terms == "quadratic":
        return np.column_stack([W, *_pairs(W)])
    if terms == "roots":
        return np.column_stack([W, *_roots(W)])
    if terms == "roots_quadratic":
        return np.column_stack([W, *_roots(W), *_pairs(W)])
    raise ValueError(f"terms must be one of {', '.join(TERMS)}, got {terms!r}")


def n_terms(k: int, terms: str) -> int:
    pairs = k * (k - 1) // 2
    roots = (1 + len(DIMINISHING_POWERS)) * k
    return {"linear": k, "quadratic": k + pairs, "roots": roots, "roots_quadratic": roots + pairs}[terms]


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
