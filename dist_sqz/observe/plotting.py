"""matplotlib's pyplot on the file-only Agg backend, imported when a plot is drawn (the
commands that draw none do not pay for the import, and no display is ever needed)."""

from __future__ import annotations

from types import ModuleType
from typing import Any


def pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fit_title(where: Any, text: str, fontsize: float = 10) -> Any:
    """Set `text` as a figure's suptitle (`where` a Figure) or an axes' title (an Axes),
    each of its lines wrapped until the title, as the renderer draws it, fits the figure's
    width (an axes': its own width). A character count cannot promise that: 84 characters
    ran past both edges of a 6-inch figure at 10 pt."""
    import textwrap

    from matplotlib.figure import Figure

    figure = where if isinstance(where, Figure) else where.figure
    renderer = figure.canvas.get_renderer()
    if isinstance(where, Figure):
        put, limit = where.suptitle, 0.96 * figure.bbox.width
    else:
        put, limit = where.set_title, 0.96 * where.get_window_extent(renderer).width
    lines = text.split("\n")
    chars = max(len(line) for line in lines)
    while True:
        shown = put("\n".join(textwrap.fill(line, chars) for line in lines), fontsize=fontsize)
        if chars <= 12 or shown.get_window_extent(renderer).width <= limit:
            return shown
        chars = max(12, int(chars * 0.9))
