"""The report's PNG plots, as bytes. No pyplot global state: each plot is its own Agg Figure."""

from __future__ import annotations

import io
import math
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from trainkit.compare.results import RunResult
from trainkit.untrusted_text import plain_text_figure


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


# Above this many curves, the others are drawn as one thin band (a LineCollection: one artist, not hundreds)
# and only the favoured run(s) as lines of their own.
BAND_ABOVE = 50


@plain_text_figure
def loss_curves_png(results: list[RunResult], highlight: frozenset[str] | set[str] = frozenset()) -> bytes:
    """Every run's training loss against step: the whole run, and the second half zoomed in (where
    mixtures separate). The favoured run(s) are drawn thicker; legend in the order given."""
    fig = Figure(figsize=(11, 4.5))
    full, tail = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    curves = [(r, r.loss_curve) for r in results if r.loss_curve]
    last_step = max((c[-1][0] for _, c in curves), default=0)
    band = len(curves) > BAND_ABOVE
    if band:
        others = [c for r, c in curves if r.name not in highlight]
        for ax, part in ((full, others), (tail, [[p for p in c if p[0] >= last_step / 2] for c in others])):
            ax.add_collection(LineCollection([c for c in part if c], linewidths=0.5, alpha=0.35, color="tab:gray"))
            ax.autoscale()
        curves = [(r, c) for r, c in curves if r.name in highlight]
        full.plot([], [], color="tab:gray", linewidth=0.5, label=f"{len(others)} other runs")
    for r, curve in curves:
        steps, losses = zip(*curve)
        best = r.name in highlight
        style: dict[str, Any] = dict(linewidth=2.6 if best else 1.2, zorder=3 if best else 2)
        label = r.name + (" (favoured)" if best else "") if best or len(curves) <= 20 else None
        (line,) = full.plot(steps, losses, label=label, **style)
        half = [(s, x) for s, x in curve if s >= last_step / 2]
        if half:
            tail.plot(*zip(*half), color=line.get_color(), **style)
    if curves or band:
        full.legend(fontsize=8, ncol=2 if len(curves) > 6 else 1, loc="upper right")
    else:
        full.text(
            0.5, 0.5, "no run has a loss curve (metrics.jsonl)", ha="center", va="center", transform=full.transAxes
        )
    full.set_title("Training loss")
    tail.set_title("Second half of training (zoomed)")
    for ax in (full, tail):
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
    return _png(fig)


MAX_NAMED_POINTS = 12


@plain_text_figure
def weights_scatter_png(
    results: list[RunResult],
    sources: list[str],
    values: dict[str, float],
    ylabel: str,
    recommended: dict[str, float] | None = None,
) -> bytes:
    """One panel per source: the metric (`values` by run name) against that source's weight. Points are named
    up to MAX_NAMED_POINTS of them (hundreds of names are unreadable and slow to draw)."""
    k = max(1, len(sources))
    cols = min(k, 3)
    rows = math.ceil(k / cols)
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows))
    for i, src in enumerate(sources):
        ax = fig.add_subplot(rows, cols, i + 1)
        pts = [(r.weights.get(src, 0.0), values[r.name], r.name) for r in results if r.name in values]
        if pts:
            xs, ys, names = zip(*pts)
            many = len(pts) > MAX_NAMED_POINTS
            ax.scatter(xs, ys, s=12 if many else 36, alpha=0.6 if many else 1.0, zorder=3)
            if not many:  # beyond this the names would print over each other
                for x, y, n in pts:
                    ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        else:
            ax.text(0.5, 0.5, f"no run reports {ylabel}", ha="center", va="center", transform=ax.transAxes)
        if recommended and src in recommended:
            ax.axvline(recommended[src], linestyle="--", color="tab:green", label="recommended")
            ax.legend(fontsize=7, loc="best")
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel(f"weight of {src}")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{ylabel} against each source's weight")
    return _png(fig)
