"""How text that comes from data is shown: run, source and task names and URIs read from a spec or from object
storage, where another team may write. The one owner of both rules, used by every report and plot writer:

- in markdown (report.md of `trainkit compare` and of an eval) it is escaped: no HTML (`<script>` shows as text),
  no table-breaking `|`, no line breaks, and never longer than MAX_SHOWN characters;
- in a plot it is drawn as plain text: matplotlib would parse `$...$` as mathtext and raise on an unknown macro
  (`$\\badmacro$`), so one hostile name would crash the report.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from typing import ParamSpec, TypeVar

MAX_SHOWN = 2000  # far above any real cell (64 sources' weights), far below a megabyte-long name

P = ParamSpec("P")
R = TypeVar("R")


def markdown_text(value: object) -> str:
    """`value` as plain text inside markdown (a table cell or prose)."""
    text = " ".join(str(value).split())
    if len(text) > MAX_SHOWN:
        text = text[: MAX_SHOWN - 3] + "..."
    return html.escape(text, quote=False).replace("|", "\\|")


def markdown_code(value: object) -> str:
    """`value` inside a markdown code span (a URI): no backtick to close it early."""
    return markdown_text(value).replace("`", "'")


def plain_text_figure(draw: Callable[P, R]) -> Callable[P, R]:
    """Run a function that builds a matplotlib figure with mathtext off: every label, title and legend entry
    it makes is drawn as the characters it holds."""

    @functools.wraps(draw)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> R:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return draw(*args, **kwargs)

    return drawn
