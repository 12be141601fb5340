"""A comparison's arms: a model, with a gradient compressor where it has one
(`alexnet+powersgd:rank=2`). Rows of `compare` are (arm, N)."""

from __future__ import annotations

from typing import Any


def arm_name(model: str, compression: str) -> str:
    """One arm of a comparison: a model, with a compressor where it has one
    (`alexnet+powersgd:rank=2`); rows are (arm, N)."""
    return model if compression == "none" else f"{model}+{compression}"


def row_arm(row: dict[str, Any]) -> str:
    """A row's arm (rows written before compressors were an axis have none: uncompressed)."""
    return row.get("arm") or row["model"]


def split_arm(arm: str) -> tuple[str, str]:
    """(model, compression) of an arm (model names hold no '+')."""
    model, _, compression = arm.partition("+")
    return model, compression or "none"
