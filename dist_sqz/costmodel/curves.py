"""Measured all-reduce bus bandwidth -> a cluster spec's `busbw_curve`.

Reads what people measure with: nccl-tests' `all_reduce_perf` (its text table, or the JSON
that `-J FILE.json` writes: results[].size and .out_of_place.bus_bw, GB/s) and `dist-sqz
cluster bench --format json` (points[].bytes and their time, at one host count: the most
measured unless `hosts` names one; the fastest all-reduce's busbw, or the median's).
busBw is nccl-tests' definition: algbw x 2(N-1)/N, algbw = size / time.
"""

from __future__ import annotations

import json
import math

from dist_sqz.errors import UsageError


def _from_text(text: str) -> dict[int, float]:
    """nccl-tests' table: the header row names the columns; the first busbw is out-of-place."""
    columns: list[str] = []
    out: dict[int, float] = {}
    for line in text.splitlines():
        words = line.split()
        if line.lstrip().startswith("#"):
            names = [w.lower() for w in line.lstrip("# ").split()]
            if "size" in names and "busbw" in names:
                columns = names
            continue
        if columns and len(words) >= columns.index("busbw") + 1 and words[0].isdigit():
            try:
                out[int(words[0])] = float(words[columns.index("busbw")]) * 1e9
            except ValueError:
                continue
    return out


def bench_busbw(data: dict, hosts: int | None, statistic: str) -> dict[int, float]:
    """{bytes: busbw} of a `cluster bench` record at `hosts` hosts (default: the most
    measured), from each size's fastest or median all-reduce."""
    counts = sorted({p["world_size"] for p in data["points"]})
    if not counts:
        return {}
    n = counts[-1] if hosts is None else hosts
    if n not in counts:
        raise UsageError(f"cluster bench measured {', '.join(map(str, counts))} hosts, not {n}")
    mine = [p for p in data["points"] if p["world_size"] == n]
    if statistic == "fastest":  # the busbw cluster bench reports: the fastest's
        return {int(p["bytes"]): float(p["busbw_Bps"]) for p in mine}
    if any("time_median_s" not in p for p in mine):
        raise UsageError("this cluster bench output has no median times; rerun cluster bench")
    return {int(p["bytes"]): 2 * (n - 1) / n * p["bytes"] / p["time_median_s"] for p in mine}


def _from_json(data: object, hosts: int | None, statistic: str) -> dict[int, float]:
    if isinstance(data, dict) and isinstance(data.get("results"), list):  # nccl-tests -J
        return {
            int(r["size"]): float(r["out_of_place"]["bus_bw"]) * 1e9
            for r in data["results"]
            if isinstance(r, dict) and isinstance(r.get("out_of_place"), dict)
        }
    if isinstance(data, dict) and isinstance(data.get("points"), list):  # cluster bench
        return bench_busbw(data, hosts, statistic)
    return {}


def read_busbw(
    text: str, where: str = "input", hosts: int | None = None, statistic: str = "fastest"
) -> dict[int, float]:
    """{bytes: bus bandwidth in bytes/s} from nccl-tests or cluster bench output. For cluster
    bench: the points of `hosts` hosts (default: the most) and the `statistic` (fastest or
    median) of each size's all-reduces; nccl-tests' own busbw otherwise."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    try:
        points = _from_json(data, hosts, statistic)
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from None
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        points = {}
    if data is None:
        points = _from_text(text)
    points = {s: b for s, b in points.items() if s > 0 and b > 0}
    if not points:
        raise UsageError(
            f"{where}: no all-reduce sizes with a bus bandwidth found (expected all_reduce_perf's "
            "table or -J JSON, or dist-sqz cluster bench --format json)"
        )
    return dict(sorted(points.items()))


def _size(n: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


def _rate(bytes_per_s: float) -> str:
    """tc's units, four significant figures: GB/s from 1 GB/s up, MB/s below."""
    value, unit = (bytes_per_s / 1e9, "gbps") if bytes_per_s >= 1e9 else (bytes_per_s / 1e6, "mbps")
    decimals = max(0, 3 - math.floor(math.log10(value))) if value > 0 else 0
    return f"{value:.{decimals}f}{unit}"


def curve_yaml(points: dict[int, float], level: str, min_bytes: int = 2**16) -> str:
    """The spec lines: `intra:` or `inter:` with `busbw_curve:` (sizes from min_bytes up)."""
    lines = [f"{level}:", "  busbw_curve:"]
    for size, busbw in points.items():
        if size >= min_bytes:
            lines.append(f"    {_size(size)}: {_rate(busbw)}")
    return "\n".join(lines)
