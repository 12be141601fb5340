"""Link rates at which a lever changes sides: below which a compressor shortens the step
(against uncompressed training of the same model), and below which squeezenet1_1
uncompressed reaches more images/s than alexnet with a compressor.

Each is found on the network's rate alone (the flags' link, or the spec's NIC rate): a
log-spaced sweep from 10 Mbit/s to 10 Tbit/s, then bisection inside the step where the sign
changes. "Shortens" means by more than 1%: with encoding times unknown (a profile that did
not measure them) both sides hide their collectives at high rates and tie, and the rates
found are upper bounds (the encoding can only lower them)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from dist_sqz.costmodel import predict
from dist_sqz.costmodel.spec import ClusterSpec
from dist_sqz.units import format_rate

LO, HI, PER_DECADE = 1e7, 1e13, 8
MARGIN = 0.01


def at_rate(spec: ClusterSpec, bits_per_s: float) -> ClusterSpec:
    """`spec` with its network (each NIC) at `bits_per_s`."""
    inter = spec.inter.model_copy(update={"nic_rate": format_rate(bits_per_s), "busbw_curve": {}})
    return spec.model_copy(update={"inter": inter})


def crossing(f: Callable[[float], float]) -> float | None:
    """The highest rate in [LO, HI] at which f goes from > 0 (below) to <= 0; HI if f > 0
    all the way up; None if f <= 0 everywhere."""
    steps = round(math.log10(HI / LO) * PER_DECADE)
    rates = [LO * 10 ** (i / PER_DECADE) for i in range(steps + 1)]
    values = [f(r) for r in rates]
    if values[-1] > 0:
        return HI
    last = max((i for i, v in enumerate(values) if v > 0), default=None)
    if last is None:
        return None
    lo, hi = math.log(rates[last]), math.log(rates[last + 1])
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(math.exp(mid)) > 0 else (lo, mid)
    return math.exp(lo)


def break_even(
    models: list[str],
    variants: list[str],
    workers: list[int],
    spec: ClusterSpec,
    profile: dict[str, Any],
    batch: int,
    precision: str,
) -> dict[str, list[dict[str, Any]]]:
    """{"compression": [{model, compression, world_size, rate_bps, encoding_known}], "levers":
    [{compression, world_size, rate_bps}]} (rate None: never; one node: no network)."""

    def step(model: str, variant: str, n: int, rate: float) -> dict[str, Any]:
        return predict([model], [n], at_rate(spec, rate), profile, batch, precision, variant)[0]

    out: dict[str, list[dict[str, Any]]] = {"compression": [], "levers": []}
    multi = [n for n in workers if n > spec.gpus_per_node]
    for model in models:
        for v in variants:
            if v == "none":
                continue
            for n in multi:
                probe = step(model, v, n, HI)
                rate = crossing(
                    lambda r, m=model, v=v, n=n: (
                        step(m, "none", n, r)["step_time_s"] / step(m, v, n, r)["step_time_s"]
                        - 1
                        - MARGIN
                    )
                )
                out["compression"].append(
                    {
                        "model": model,
                        "compression": v,
                        "world_size": n,
                        "rate_bps": rate,
                        "encoding_known": probe["compress_time_s"] is not None,
                    }
                )
    if {"alexnet", "squeezenet1_1"} <= set(models):
        for v in variants:
            for n in multi:
                rate = crossing(
                    lambda r, v=v, n=n: (
                        step("squeezenet1_1", "none", n, r)["images_per_s"]
                        / step("alexnet", v, n, r)["images_per_s"]
                        - 1
                    )
                )
                out["levers"].append({"compression": v, "world_size": n, "rate_bps": rate})
    return out


DEFAULT_VARIANTS = [
    "none",
    "fp16",
    "int8",
    "topk:density=0.001",
    "dgc:density=0.001",
    "powersgd:rank=2",
    "powersgd:rank=4",
]


def _rate(bps: float | None) -> str:
    if bps is None:
        return "never"
    if bps >= HI:
        return f">{_rate(HI * 0.999)}"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if bps >= scale:
            return f"{bps / scale:.3g}{unit}"
    return f"{bps:.3g}"


def _cells(rows: list[dict[str, Any]], ns: list[int]) -> str:
    """One right-aligned rate per N ('-' where the rows have none)."""
    by_n = {r["world_size"]: r for r in rows}
    return "".join(f"{_rate(by_n[n]['rate_bps']) if n in by_n else '-':>9s}" for n in ns)


def format_break_even(result: dict[str, list[dict[str, Any]]], header: str) -> str:
    """Two tables, one column per N, rates in bit/s (k, M, G, T)."""
    lines = [header]
    rows = result["compression"]
    ns = sorted({r["world_size"] for r in rows} | {r["world_size"] for r in result["levers"]})
    cols = "".join(f"{'N=' + str(n):>9s}" for n in ns)
    if rows:
        unknown = any(not r["encoding_known"] for r in rows)
        lines += [
            "",
            "link rate (bit/s) below which the compressor shortens the step by > 1%"
            + (" (*: encoding time unknown in this profile: an upper bound)" if unknown else ""),
            f"{'model':15s} {'compression':22s}{cols}",
        ]
        keys = dict.fromkeys((r["model"], r["compression"]) for r in rows)
        for model, comp in keys:
            mine = [r for r in rows if (r["model"], r["compression"]) == (model, comp)]
            star = "*" if any(not r["encoding_known"] for r in mine) else ""
            lines.append(f"{model:15s} {comp + star:22s}{_cells(mine, ns)}")
    if result["levers"]:
        lines += [
            "",
            "link rate (bit/s) below which squeezenet1_1 uncompressed reaches more images/s "
            "than alexnet with:",
            f"{'alexnet with':38s}{cols}",
        ]
        for comp in dict.fromkeys(r["compression"] for r in result["levers"]):
            mine = [r for r in result["levers"] if r["compression"] == comp]
            lines.append(f"{comp:38s}{_cells(mine, ns)}")
    if len(lines) == 1:
        lines.append("no worker count above one node: the network never matters")
    return "\n".join(lines)
