"""The loss curve of a run, from its metrics.jsonl lines, as PNG bytes (matplotlib, no display)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from trainkit.untrusted_text import plain_text_figure


@plain_text_figure
def loss_curve_png(lines: Sequence[Mapping[str, Any]], title: str = "training loss") -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in lines]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, [m["loss"] for m in lines], marker="." if len(lines) < 60 else None, label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if lines and "lr" in lines[0]:
        lr_ax = ax.twinx()
        lr_ax.plot(steps, [m["lr"] for m in lines], color="tab:orange", alpha=0.5, label="learning rate")
        lr_ax.set_ylabel("learning rate")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
