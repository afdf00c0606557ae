"""PNG plots of an eval: tasks as bars (with random and reference marks), and scores against step."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from trainkit.eval.report import Table
from trainkit.eval.suite import REFERENCE_NAME
from trainkit.untrusted_text import plain_text_figure


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


@plain_text_figure
def tasks_bar_chart(table: Table) -> bytes:
    plt = _figure()
    labels = [r.label for r in table.rows] + ["Average"]
    ours = [r.percent for r in table.rows] + [100.0 * table.average]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels)), 4.0))
    xs = range(len(labels))
    ax.bar(xs, ours, color="#3b6ea8", label="this checkpoint")
    for i, r in enumerate(table.rows):
        if r.random is not None:
            ax.hlines(
                r.random, i - 0.4, i + 0.4, colors="#999999", linestyles="dashed", label="random" if i == 0 else None
            )
        if r.reference is not None:
            ax.plot(i, r.reference, "D", color="#d9822b", label=REFERENCE_NAME if i == 0 else None)
    ax.set_xticks(list(xs), labels, rotation=20, ha="right")
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"eval at step {table.step}" if table.step is not None else "eval")
    ax.legend(loc="upper right", fontsize="small")
    return _png(plt, fig)


@plain_text_figure
def scores_by_step(history: Sequence[Mapping[str, Any]]) -> bytes:
    """`history`: summary dicts (any order); one line per task plus the average."""
    plt = _figure()
    history = sorted(history, key=lambda s: s["step"])
    steps = [s["step"] for s in history]
    tasks = sorted({t for s in history for t in s["tasks"]})
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for task in tasks:
        pts = [(s["step"], 100.0 * s["tasks"][task]) for s in history if task in s["tasks"]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=task)
    ax.plot(steps, [100.0 * s["average"] for s in history], marker="s", color="black", linewidth=2, label="average")
    ax.set_xlabel("step")
    ax.set_ylabel("score (%)")
    ax.legend(loc="best", fontsize="small")
    return _png(plt, fig)


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
