"""Strict parsers for the units users type: link rates, byte sizes, durations, number lists.

Each raises `UsageError` with an example of the accepted form; nothing is guessed.
"""

from __future__ import annotations

import re

from dist_sqz.errors import UsageError

_NUM = r"(\d+(?:\.\d+)?|\.\d+)"
_RATE = re.compile(rf"^{_NUM}([kmgt]?)(bit|bps)$", re.IGNORECASE)
_SIZE = re.compile(rf"^{_NUM}([kmg]?)b$", re.IGNORECASE)
_DURATION = re.compile(rf"^{_NUM}(s|ms|us|ns)?$")
_DECIMAL = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_BINARY = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def parse_rate(text: str) -> float:
    """'1gbit' -> 1e9 bits/s, in tc's units (kbit, mbit, gbit, tbit; *bps = bytes/s)."""
    m = _RATE.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"link rate {text!r} is not like 100mbit or 1gbit")
    value = float(m.group(1)) * _DECIMAL[m.group(2).lower()]
    return value * (8 if m.group(3).lower() == "bps" else 1)


def format_rate(bits_per_s: float) -> str:
    """A rate in tc's units, whole bits per second (the inverse of `parse_rate`)."""
    return f"{bits_per_s:.0f}bit"


def parse_size(text: str) -> int:
    """'64MB' -> 67108864 bytes (binary units: 1 KB = 1024 B)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise UsageError(f"size {text!r} is not like 4KB, 64MB or 1GB")
    return int(float(m.group(1)) * _BINARY[m.group(2).lower()])


def parse_duration(text: str) -> float:
    """'5us' -> 5e-6 seconds (s, ms, us, ns; a bare number is seconds)."""
    m = _DURATION.match(text.strip())
    if not m:
        raise UsageError(f"duration {text!r} is not like 5us, 1ms or 0.5s")
    return float(m.group(1)) * _SECONDS[m.group(2) or "s"]


def valid_rate(text: str) -> str:
    """`text` itself once it reads as a rate (a config validator's body)."""
    parse_rate(text)
    return text


def valid_duration(text: str) -> str:
    """`text` itself once it reads as a duration (a config validator's body)."""
    parse_duration(text)
    return text


def csv(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_counts(text: str, what: str, minimum: int = 1) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; every value an integer >= minimum, at least one value."""
    try:
        values = [int(x) for x in csv(text)]
    except ValueError:
        values = []
    if not values or min(values) < minimum:
        raise UsageError(
            f"{what} takes integers of at least {minimum}, comma-separated; got {text!r}"
        )
    return values


def slurm_time_s(text: str) -> int | None:
    """Seconds in a Slurm time limit (sbatch --time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S);
    None for UNLIMITED/INFINITE; ValueError for anything else."""
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    days, dash, rest = text.partition("-") if "-" in text else ("", "", text)
    parts = rest.split(":")
    if not all(x.isdigit() for x in [*parts, *([days] if dash else [])]) or len(parts) > 3:
        raise ValueError(f"not a Slurm time limit (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S): {text!r}")
    n = [int(x) for x in parts]
    if dash:  # D-H, D-H:M, D-H:M:S
        h, m, s = (n + [0, 0])[:3]
        return ((int(days) * 24 + h) * 60 + m) * 60 + s
    if len(n) == 3:
        return (n[0] * 60 + n[1]) * 60 + n[2]
    return n[0] * 60 + (n[1] if len(n) == 2 else 0)
