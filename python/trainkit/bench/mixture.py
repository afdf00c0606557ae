"""`trainkit bench mixture`: the mixture recommender on synthetic response surfaces whose optimum is known.

Each surface is a validation loss over mixtures of k sources (3 to 20), smooth, with diminishing
returns per source and pairwise interactions (synergy and redundancy), observed with Gaussian noise:

    loss(w) = c - sum_i a_i log(1 + w_i / tau) + sum_{i<j} b_ij w_i w_j + noise

Runs are drawn as a sweep draws them: from the natural-distribution prior (skewed token shares at RegMix's
temperature 0.5) with the sweep's concentration. The noise is a fraction of the loss's spread over the
untempered shares' Dirichlet, a property of the surface that no change of the prior moves. For each configuration the bench prints
- the cross-validated Spearman of each model (5-fold, the sweep's own runs), as `trainkit compare` reports it;
- the regret of the recommended mixture (true loss there minus the true optimum over the simplex) for the
  recommender (model chosen by cross-validation, top-k average of prior candidates, distance bound) and
  for trainkit 0.1's fit (linear Scheffé ridge, best point of the whole simplex), in units of the noise;
- an adaptive sweep with half the runs (explore N/4 from the prior, then rounds of N/16 around each
  recommendation) against the one-shot N-run sweep: the runs it needed to reach the one-shot regret, and
  its regret at the end.
Figures are medians over `--repeats` surfaces; everything is seeded, so a run reproduces exactly.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np

from trainkit.mixture import prior as priors
from trainkit.mixture import scheffe
from trainkit.mixture.crossval import cross_validate
from trainkit.mixture.models import MODELS
from trainkit.mixture.recommend import Settings, recommend_mixture
from trainkit.mixture.search import SearchSettings, Tried, round_mixtures

TAU = 0.05
NOISE_FRACTION = 0.1  # noise std as a fraction of the true loss's spread over the untempered natural Dirichlet


@dataclass(frozen=True)
class Surface:
    k: int
    c: float
    a: np.ndarray
    b: np.ndarray  # symmetric, zero diagonal
    noise: float  # std of the observation noise
    prior: priors.Prior

    def true(self, W) -> np.ndarray:
        W = np.atleast_2d(np.asarray(W, dtype=float))
        gain = np.log1p(W / TAU) @ self.a
        inter = 0.5 * np.einsum("ni,ij,nj->n", W, self.b, W)
        return self.c - gain + inter

    def observe(self, W, rng: np.random.Generator) -> np.ndarray:
        y = self.true(W)
        return y + rng.normal(0.0, self.noise, len(y))


def make_surface(k: int, seed: int, noise_fraction: float = NOISE_FRACTION, alpha: float = 1.0) -> Surface:
    rng = np.random.default_rng([k, seed])
    tokens = np.exp(rng.normal(0.0, 1.0, k)) * 1e9  # skewed token counts, as real sources are
    counts = {f"s{i}": int(t) for i, t in enumerate(tokens)}
    prior = priors.natural(counts, alpha)
    a = rng.uniform(0.01, 0.05, k)
    b = rng.normal(0.0, 0.15, (k, k))
    b = np.triu(b, 1) + np.triu(b, 1).T
    draft = Surface(k, 3.5, a, b, 0.0, prior)
    # The noise unit is the surface's, not the sweep's: measured over the token shares' own Dirichlet
    # (temperature 1), so a change of the sweep's prior changes neither the surfaces nor the noise.
    reference = priors.natural(counts, alpha, temperature=1.0)
    spread = float(draft.true(reference.sample(4000, np.random.default_rng(seed))).std())
    return Surface(k, 3.5, a, b, noise_fraction * spread, prior)


def true_optimum(s: Surface, seed: int = 0) -> tuple[np.ndarray, float]:
    """The surface's minimum over the simplex: SLSQP from the best of many random starts."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    starts = np.vstack([rng.dirichlet(np.ones(s.k), 20000), s.prior.sample(20000, rng), np.eye(s.k)])
    values = s.true(starts)
    best_w, best_v = starts[np.argmin(values)], float(values.min())
    for x0 in starts[np.argsort(values)[:8]]:
        res = minimize(
            lambda w: float(s.true(w)[0]),
            x0,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * s.k,
            constraints=[{"type": "eq", "fun": lambda w: float(np.sum(w) - 1.0)}],
            options={"maxiter": 300, "ftol": 1e-12},
        )
        w = np.clip(res.x, 0.0, None)
        w = w / w.sum()
        v = float(s.true(w)[0])
        if v < best_v:
            best_w, best_v = w, v
    return best_w, best_v


def old_fit_choice(W: np.ndarray, y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """trainkit 0.1's recommendation, as it was configured: a linear Scheffé ridge (1e-4) and the best point
    of the simplex among its vertices, centre, edge midpoints and 8192 uniform samples."""
    eye = np.eye(k)
    mids = [(eye[i] + eye[j]) / 2 for i, j in itertools.combinations(range(k), 2)]
    cands = np.vstack([eye, np.full((1, k), 1.0 / k), np.random.default_rng(seed).dirichlet(np.ones(k), 8192), *mids])
    pred = scheffe.fit(W, y, "linear", ridge=1e-4).predict(cands)
    return cands[int(np.argmin(pred))]


@dataclass
class Figures:
    k: int
    runs: int
    noise: float
    spearman: dict[str, float]  # model -> median cross-validated Spearman
    regret_new: float  # median, in units of the noise std
    regret_old: float
    regret_best_draw: float  # the best of 10,000 prior draws: what a sweep from this prior could find at most
    distance_new: float  # median total-variation distance of the recommendation to the nearest run
    distance_old: float
    adaptive_runs: float | None  # median runs an adaptive sweep needed to reach the one-shot regret (inf: never)
    adaptive_regret: float | None  # its median regret with half the runs
    seconds: float


def recommend_settings(seed: int, candidates: int = 20_000) -> Settings:
    # The bench measures the choice, not its uncertainty: no bootstrap refits.
    return Settings(seed=seed, candidates=candidates, n_bootstrap=0)


def adaptive(s: Surface, budget: int, seed: int, settings: Settings) -> list[tuple[int, float]]:
    """An adaptive sweep of at most `budget` runs: explore budget/2 from the prior, then rounds of budget/8
    around each recommendation. Returns (runs so far, true loss at the recommendation) after every round."""
    from trainkit.mixture.search import next_round_result

    rng = np.random.default_rng([seed, 2])
    explore, per_round = max(8, budget // 2), max(4, budget // 8)
    rounds = 1 + max(0, budget - explore) // per_round
    search = SearchSettings(rounds=rounds, runs_per_round=per_round, stop_moved_below=0.0)
    sources = s.prior.sources
    W0 = s.prior.sample(explore, rng)
    tried = [Tried(f"r{i}", 0, tuple(w), float(v)) for i, (w, v) in enumerate(zip(W0, s.observe(W0, rng)))]
    results: list = []
    out = []
    for r in range(rounds):
        result = next_round_result(
            tried, sources, s.prior, search, settings, results, metric="loss", higher_is_better=False
        )
        results.append(result)
        rec = result.recommendation
        assert rec.weights is not None  # the bench's runs always fit
        centre = [rec.weights[x] for x in sources]
        out.append((len(tried), float(s.true(centre)[0])))
        if result.stop:
            break
        Wr = round_mixtures(centre, sources, per_round, search.concentration, seed, r + 1)
        tried += [
            Tried(f"r{len(tried) + i}", r + 1, tuple(w), float(v))
            for i, (w, v) in enumerate(zip(Wr, s.observe(Wr, rng)))
        ]
    return out


def measure(k: int, runs: int, repeats: int, noise_fraction: float, with_adaptive: bool, seed: int = 0) -> Figures:
    started = time.monotonic()
    spearman: dict[str, list[float]] = {m: [] for m in MODELS}
    regret_new, regret_old, regret_draw, dist_new, dist_old = [], [], [], [], []
    adaptive_runs, adaptive_regret = [], []
    for rep in range(repeats):
        s = make_surface(k, seed + rep, noise_fraction)
        _, optimum = true_optimum(s, seed + rep)
        rng = np.random.default_rng([seed + rep, 1])
        W = s.prior.sample(runs, rng)
        y = s.observe(W, rng)
        for name, model in MODELS.items():
            if runs >= model.min_runs(k):
                cv = cross_validate(model, W, y, seed + rep)
                spearman[name].append(np.nan if cv.spearman is None else cv.spearman)
        settings = recommend_settings(seed + rep)
        rec = recommend_mixture(
            W, y, s.prior.sources, s.prior, metric="loss", higher_is_better=False, settings=settings
        )
        assert rec.weights is not None
        new_w = np.array([rec.weights[x] for x in s.prior.sources])
        old_w = old_fit_choice(W, y, k, seed + rep)
        one_shot = float(s.true(new_w)[0])
        regret_new.append((one_shot - optimum) / s.noise)
        regret_old.append((float(s.true(old_w)[0]) - optimum) / s.noise)
        draws = s.prior.sample(10_000, np.random.default_rng([seed + rep, 3]))
        regret_draw.append((float(s.true(draws).min()) - optimum) / s.noise)
        dist_new.append(float(rec.nearest_distance or 0.0))
        dist_old.append(float(0.5 * np.abs(W - old_w).sum(axis=1).min()))
        if with_adaptive:
            trace = adaptive(s, runs // 2, seed + rep, settings)
            reached = [n for n, v in trace if v <= one_shot]
            adaptive_runs.append(float(reached[0]) if reached else float("inf"))
            adaptive_regret.append((trace[-1][1] - optimum) / s.noise)

    def med(xs: list[float]) -> float:
        return float(np.nanmedian(xs)) if xs else float("nan")

    return Figures(
        k=k,
        runs=runs,
        noise=noise_fraction,
        spearman={m: med(v) for m, v in spearman.items() if v},
        regret_new=med(regret_new),
        regret_old=med(regret_old),
        regret_best_draw=med(regret_draw),
        distance_new=med(dist_new),
        distance_old=med(dist_old),
        adaptive_runs=med(adaptive_runs) if adaptive_runs else None,
        adaptive_regret=med(adaptive_regret) if adaptive_regret else None,
        seconds=time.monotonic() - started,
    )


# ------------------------------------------------------------------------------------------ the CLI
DEFAULT_CONFIGS = ("3:64", "8:128", "17:512", "20:512")
GOAL_CONFIG = (17, 512)
GOAL_SPEARMAN = 0.95


def add_arguments(p) -> None:
    p.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_CONFIGS),
        metavar="SOURCES:RUNS",
        help=f"surfaces of SOURCES sources swept with RUNS runs (default: {' '.join(DEFAULT_CONFIGS)})",
    )
    p.add_argument("--repeats", type=int, default=3, help="surfaces per configuration (medians are printed)")
    p.add_argument(
        "--noise",
        type=float,
        default=NOISE_FRACTION,
        help="noise std as a fraction of the loss spread over the token shares' Dirichlet",
    )
    p.add_argument("--no-adaptive", action="store_true", help="skip the adaptive sweeps (the slowest part)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def parse_configs(items: list[str]) -> list[tuple[int, int]]:
    out = []
    for item in items:
        k, _, n = item.partition(":")
        if not (k.isdigit() and n.isdigit()) or not 2 <= int(k) <= 64 or int(n) < 8:
            raise ValueError(f"--configs {item!r}: expected SOURCES:RUNS with 2-64 sources and at least 8 runs")
        out.append((int(k), int(n)))
    return out


def _f(v: float | None, spec: str = ".2f") -> str:
    if v is None or not np.isfinite(v):
        return "-" if v is None or np.isnan(v) else "never"
    return format(v, spec)


def report_lines(figures: list[Figures], repeats: int, noise: float) -> list[str]:
    """The table and the goals, from measured figures (pure)."""
    models = list(MODELS)
    head = (
        f"{'sources':>7} {'runs':>5} | "
        + " ".join(f"{m:>{max(9, len(m))}}" for m in models)
        + " | regret: recommender  trainkit-0.1  best-prior-draw | TV to a run: rec  0.1"
        + " | adaptive (half the runs): runs to one-shot regret, regret"
    )
    out = [
        "trainkit bench mixture: the recommender on synthetic validation-loss surfaces (diminishing returns per",
        "source + pairwise interactions), runs drawn from the natural-distribution prior (RegMix's, temperature 0.5),",
        f"observation noise {noise:.0%} of the loss spread over the token shares' Dirichlet. Cross-validated",
        "Spearman (5-fold) per model; regret of the recommended mixture = its true loss minus the true optimum",
        "over the whole simplex, in units of the noise std. Peer: trainkit 0.1's fit (linear Scheffé ridge, best",
        f"point of the simplex). Medians over {repeats} surface(s).",
        "",
        head,
        "-" * len(head),
    ]
    for f in figures:
        out.append(
            f"{f.k:>7} {f.runs:>5} | "
            + " ".join(f"{_f(f.spearman.get(m), '.3f'):>{max(9, len(m))}}" for m in models)
            + f" | {_f(f.regret_new, '.1f'):>19}  {_f(f.regret_old, '.1f'):>12}  {_f(f.regret_best_draw, '.1f'):>15}"
            + f" | {_f(f.distance_new):>16}  {_f(f.distance_old):>3}"
            + f" | {_f(f.adaptive_runs, '.0f'):>27}, {_f(f.adaptive_regret, '.1f')}"
            + f"   ({f.seconds:.0f} s)"
        )
    out.append("")
    goal = next((f for f in figures if (f.k, f.runs) == GOAL_CONFIG), None)
    if goal is None:
        out.append(f"goals: not measured (they are stated for {GOAL_CONFIG[0]} sources and {GOAL_CONFIG[1]} runs)")
        return out
    best_model = max(goal.spearman, key=lambda m: goal.spearman[m])
    best = goal.spearman[best_model]
    out.append(
        f"goal Spearman >= {GOAL_SPEARMAN} at {goal.runs} runs over {goal.k} sources: {best_model} {best:.3f} "
        f"(gbt {_f(goal.spearman.get('gbt'), '.3f')}): {'met' if best >= GOAL_SPEARMAN else 'NOT met'}"
    )
    out.append(
        f"goal regret within the noise level (<= 1 noise std): recommender {goal.regret_new:.1f}, trainkit 0.1 "
        f"{goal.regret_old:.1f} ({goal.regret_old / max(goal.regret_new, 1e-9):.1f}x the recommender's): "
        f"{'met' if goal.regret_new <= 1.0 else 'NOT met'}"
        + ("" if goal.regret_new <= 1.0 else f"; the best of 10,000 prior draws is itself {goal.regret_best_draw:.1f}")
    )
    if goal.adaptive_runs is not None:
        met = goal.adaptive_runs <= goal.runs // 2
        out.append(
            f"goal adaptive sweep reaches the one-shot {goal.runs}-run regret with at most half the runs: "
            f"{_f(goal.adaptive_runs, '.0f')} runs (median): {'met' if met else 'NOT met'}"
        )
    return out


def run(args) -> int:
    import sys

    try:
        configs = parse_configs(args.configs)
    except ValueError as e:
        print(f"trainkit bench mixture: {e}", file=sys.stderr)
        return 2
    if args.repeats < 1 or not 0 < args.noise < 10:
        print("trainkit bench mixture: --repeats must be >= 1 and --noise in (0, 10)", file=sys.stderr)
        return 2
    figures = []
    for k, n in configs:
        figures.append(measure(k, n, args.repeats, args.noise, not args.no_adaptive, args.seed))
        print(f"  measured {k} sources x {n} runs in {figures[-1].seconds:.0f} s", file=sys.stderr, flush=True)
    print("\n".join(report_lines(figures, args.repeats, args.noise)))
    return 0
