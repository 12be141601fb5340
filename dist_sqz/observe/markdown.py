"""Markdown tables and the number formats the reports share ('–' where a value is missing)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    """A GitHub Markdown table, one line each: `align` has one letter per column, 'l' or
    'r' (default: all left)."""
    rule = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def ms(x: float | None) -> float | None:
    """Seconds as milliseconds (None stays None)."""
    return None if x is None else x * 1e3


def mb(x: float | None) -> str:
    """Bytes as MB (10^6), two decimals."""
    return "–" if x is None else f"{x / 1e6:,.2f}"
