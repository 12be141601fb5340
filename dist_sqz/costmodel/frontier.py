"""The accuracy-per-byte frontier: for a set of models, published ImageNet top-1 beside the
bytes each exchanges per step and the cost model's cluster throughput at each N, with the
Pareto set (no other model both more accurate and faster at that N). The SqueezeNet paper's
claim made general: which small model reaches which accuracy soonest on this cluster."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dist_sqz.observe.plotting import pyplot


def frontier_rows(
    facts: dict[str, dict[str, Any]], predicted: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per (model, compression, N): the model's facts (params, GFLOPs, top-1 and its
    source) and the cost model's row, `pareto` where no other row at that N has both a
    higher top-1 and more images/s (rows without a top-1 are never on it)."""
    rows = [facts[r["model"]] | r for r in predicted]
    for r in rows:
        r["pareto"] = r["top1"] is not None and not any(
            o is not r
            and o["world_size"] == r["world_size"]
            and o["top1"] is not None
            and o["top1"] >= r["top1"]
            and o["images_per_s"] >= r["images_per_s"]
            and (o["top1"] > r["top1"] or o["images_per_s"] > r["images_per_s"])
            for o in rows
        )
    return rows


def format_markdown(rows: list[dict[str, Any]], header: str, notes: list[str]) -> str:
    workers = sorted({r["world_size"] for r in rows})
    arms = list(dict.fromkeys(_arm(r) for r in rows))
    by = {(_arm(r), r["world_size"]): r for r in rows}
    cols = " | ".join(f"img/s N={n} | eff N={n}" for n in workers)
    lines = [
        "# Accuracy per byte: the frontier",
        "",
        header,
        "",
        "`top-1`: published ImageNet top-1 (%), its source below; `img/s`: the cost model's "
        "cluster throughput, `eff` its scaling efficiency; **bold**: on the Pareto set at that "
        "N (no other model both more accurate and faster).",
        "",
        f"| model | params | MB/step | GFLOPs | top-1 | {cols} |",
        "|---|---|---|---|---|" + "---|---|" * len(workers),
    ]
    for arm in arms:
        first = by[arm, workers[0]]
        top1 = "unknown" if first["top1"] is None else f"{first['top1']:.1f}"
        cells = []
        for n in workers:
            r = by[arm, n]
            ips = f"{r['images_per_s']:,.0f}"
            cells.append(f"**{ips}**" if r["pareto"] else ips)
            cells.append(f"{r['scaling_efficiency']:.3f}")
        lines.append(
            f"| {arm} | {first['params']:,} | {first['payload_bytes'] / 1e6:.2f} | "
            f"{first['gflops']:.2f} | {top1} | " + " | ".join(cells) + " |"
        )
    lines += ["", "## Pareto set", ""]
    for n in workers:
        on = sorted((r for r in rows if r["world_size"] == n and r["pareto"]), key=_top1)
        lines.append(f"- N = {n}: " + ", ".join(f"{_arm(r)} ({r['top1']:.1f})" for r in on))
    lines += ["", "## Sources of top-1", ""]
    for arm in arms:
        lines.append(f"- {arm}: {by[arm, workers[0]]['source']}")
    if notes:
        lines += ["", "## Notes", "", *[f"- {x}" for x in notes]]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Top-1 against bytes per step (log), and against projected throughput at each N (one
    panel per N, the Pareto set joined)."""
    plt = pyplot()
    known = [r for r in rows if r["top1"] is not None]
    workers = sorted({r["world_size"] for r in rows})
    first = [r for r in known if r["world_size"] == workers[0]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    placed: list[tuple[float, float]] = []
    for r in sorted(first, key=lambda r: -r["top1"]):
        x, y = r["payload_bytes"] / 1e6, r["top1"]
        ax.scatter(x, y, color="C0")
        ax.annotate(_arm(r), (x, y), fontsize=7, xytext=(3, _label_dy(placed, x, y)),
                    textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("gradient bytes per step (MB, log)")
    ax.set_ylabel("published ImageNet top-1 (%)")
    ax.set_title("Accuracy against bytes each step exchanges")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    paths = [out / "frontier_bytes.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(workers), figsize=(4.2 * len(workers), 4.2), squeeze=False)
    for ax, n in zip(axes[0], workers, strict=True):
        mine = [r for r in known if r["world_size"] == n]
        placed = []
        for r in sorted(mine, key=lambda r: -r["top1"]):
            x, y = r["images_per_s"], r["top1"]
            ax.scatter(x, y, color="C3" if r["pareto"] else "C0")
            ax.annotate(_arm(r), (x, y), fontsize=6, xytext=(3, _label_dy(placed, x, y)),
                        textcoords="offset points")  # fmt: skip
        edge = sorted((r for r in mine if r["pareto"]), key=lambda r: r["images_per_s"])
        ax.plot([r["images_per_s"] for r in edge], [r["top1"] for r in edge], "C3-", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # decades only: labels never collide
        ax.set_xlabel("projected cluster images/s (log)")
        ax.set_title(f"N = {n}")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("published ImageNet top-1 (%)")
    fig.suptitle("Accuracy against projected throughput (red: the Pareto set)")
    fig.tight_layout()
    paths.append(out / "frontier_throughput.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def _label_dy(placed: list[tuple[float, float]], x: float, y: float) -> float:
    """A label's vertical offset (points): below the point where an earlier label sits
    within a tenth of a decade and 1.5 points of top-1 of it, so labels do not overprint."""
    near = sum(1 for px, py in placed if abs(math.log10(px / x)) < 0.1 and abs(py - y) < 1.5)
    placed.append((x, y))
    return 3 - 9 * near


def _arm(r: dict[str, Any]) -> str:
    c = r.get("compression", "none")
    return r["model"] if c == "none" else f"{r['model']}+{c}"


def _top1(r: dict[str, Any]) -> float:
    return r["top1"]
