"""matplotlib's pyplot on the file-only Agg backend, imported when a plot is drawn (the
commands that draw none do not pay for the import, and no display is ever needed)."""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
