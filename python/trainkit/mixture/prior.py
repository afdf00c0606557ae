"""The prior a sweep samples its mixtures from: ONE owner for the sweep's Dirichlet sampling and the
recommender's candidates (which must come from the same distribution, so the recommendation never
leans on what no run explored).

A prior is a Dirichlet over the sources, given by its parameters `alphas`: centre (mean mixture)
`alphas / sum(alphas)`, concentration `sum(alphas)` (large: mixtures close to the centre; small:
spiky mixtures that favour few sources).

- `uniform(sources, alpha)`: every parameter `alpha` (the sweep's `dirichlet.alpha`, prior `uniform`).
- `natural(token_counts, alpha, temperature)`: RegMix's natural distribution: the centre is each
  source's share of the tokens (read from its index.json by the caller) raised to `temperature` and
  renormalised, the parameters `alpha * k * centre`, so `alpha` means the same per-source concentration
  as for `uniform`. RegMix samples its proxies' mixtures around the shares at temperature 0.5
  (sail-sg/regmix, mixture_config/synthesize_mixture.py: `TEMP = 0.5`, `prior_dist ** TEMP`): a skewed
  corpus's centre is flattened, so small sources are explored too. Temperature 1 is the shares themselves.
- `fitted(W)`: the Dirichlet whose moments match mixtures already tried, for a comparison of runs whose
  sweep is unknown.
- `Blend`: several priors with the share of runs each produced; a sweep that searches in rounds has
  sampled from its first prior and then from one Dirichlet around each round's recommendation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MIN_ALPHA = 1e-3  # a parameter at 0 is not a Dirichlet; this keeps a vanishing source barely possible
MAX_FITTED_CONCENTRATION = 1e4
NATURAL_TEMPERATURE = 0.5  # RegMix's TEMP (mixture_config/synthesize_mixture.py)


@dataclass(frozen=True)
class Prior:
    sources: tuple[str, ...]
    alphas: tuple[float, ...]
    kind: str = "uniform"  # uniform | natural | fitted | around (a round's recommendation)

    @property
    def centre(self) -> np.ndarray:
        a = np.asarray(self.alphas, dtype=float)
        return a / a.sum()

    @property
    def concentration(self) -> float:
        return float(sum(self.alphas))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if len(self.sources) == 1:
            return np.ones((n, 1))
        return rng.dirichlet(np.asarray(self.alphas, dtype=float), size=n)

    def describe(self) -> str:
        centre = ", ".join(f"{s} {c:.2f}" for s, c in zip(self.sources, self.centre))
        return f"{self.kind} Dirichlet, concentration {self.concentration:.3g}, centre {centre}"


def uniform(sources: Sequence[str], alpha: float = 1.0) -> Prior:
    return Prior(tuple(sources), tuple(float(alpha) for _ in sources), "uniform")


def natural_shares(token_counts: Mapping[str, int]) -> dict[str, float]:
    """Each source's share of all tokens. ValueError naming a source without tokens."""
    empty = [s for s, n in token_counts.items() if not n or n <= 0]
    if empty:
        raise ValueError(f"source(s) {', '.join(empty)} hold no tokens: the natural distribution needs every share > 0")
    total = float(sum(token_counts.values()))
    return {s: n / total for s, n in token_counts.items()}


def tempered(shares: Mapping[str, float], temperature: float) -> dict[str, float]:
    """Shares raised to `temperature` (0 < t <= 1) and renormalised: below 1, closer to even."""
    if not 0 < temperature <= 1:
        raise ValueError(f"temperature {temperature!r} must be in (0, 1]")
    powered = {s: v**temperature for s, v in shares.items()}
    total = sum(powered.values())
    return {s: v / total for s, v in powered.items()}


def natural(
    token_counts: Mapping[str, int],
    alpha: float = 1.0,
    sources: Sequence[str] | None = None,
    temperature: float = NATURAL_TEMPERATURE,
) -> Prior:
    """RegMix's prior: centred on the sources' token shares at `temperature`, parameters alpha * k * centre."""
    names = tuple(sources) if sources is not None else tuple(token_counts)
    missing = [s for s in names if s not in token_counts]
    if missing:
        raise ValueError(f"no token count for source(s) {', '.join(missing)}")
    centre = tempered(natural_shares({s: token_counts[s] for s in names}), temperature)
    k = len(names)
    return Prior(names, tuple(max(MIN_ALPHA, alpha * k * centre[s]) for s in names), "natural")


def around(centre: Sequence[float], sources: Sequence[str], concentration: float) -> Prior:
    """A Dirichlet centred on a mixture (a round's recommendation) with the given concentration."""
    c = np.maximum(np.asarray(centre, dtype=float), 0.0)
    c = c / c.sum()
    return Prior(tuple(sources), tuple(max(MIN_ALPHA, float(x)) for x in concentration * c), "around")


def fitted(W, sources: Sequence[str]) -> Prior:
    """Method of moments: the Dirichlet with the tried mixtures' mean, and the concentration that matches
    their per-source variances (averaged over sources that vary)."""
    W = np.atleast_2d(np.asarray(W, dtype=float))
    m = W.mean(axis=0)
    v = W.var(axis=0, ddof=1) if len(W) > 1 else np.zeros_like(m)
    varies = (v > 1e-12) & (m > 0) & (m < 1)
    if not varies.any():
        s = MAX_FITTED_CONCENTRATION
    else:
        s = float(np.clip(np.mean(m[varies] * (1 - m[varies]) / v[varies] - 1), 0.1, MAX_FITTED_CONCENTRATION))
    return Prior(tuple(sources), tuple(max(MIN_ALPHA, float(x)) for x in s * m), "fitted")


@dataclass(frozen=True)
class Blend:
    """Several priors, each with the share of the sweep's runs it produced."""

    parts: tuple[tuple[float, Prior], ...]

    @property
    def sources(self) -> tuple[str, ...]:
        return self.parts[0][1].sources

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        shares = np.array([w for w, _ in self.parts], dtype=float)
        counts = np.floor(n * shares / shares.sum()).astype(int)
        counts[np.argmax(shares)] += n - counts.sum()
        return np.vstack([p.sample(int(c), rng) for c, (_, p) in zip(counts, self.parts) if c > 0])

    def describe(self) -> str:
        if len(self.parts) == 1:
            return self.parts[0][1].describe()
        total = sum(w for w, _ in self.parts)
        return "; ".join(f"{w / total:.0%} {p.describe()}" for w, p in self.parts)


def blend(*parts: tuple[float, Prior]) -> Blend:
    kept = tuple((float(w), p) for w, p in parts if w > 0)
    if not kept:
        raise ValueError("a blend needs at least one prior with a positive share")
    return Blend(kept)


def candidates(prior: Prior | Blend, n: int, seed: int = 0) -> np.ndarray:
    """The recommender's candidate mixtures: `n` draws from the sweep's own prior (seeded)."""
    return prior.sample(n, np.random.default_rng(seed))
