"""A run's step, looked at: per-collective statistics (`dist-sqz report --collectives`), the
straggler and overlap figures, and a Gantt chart of one traced step.

Rank 0 logs each step's collectives to `collectives.jsonl` (kind, payload bytes, issue to
completion in emulated seconds). The statistics group them by kind and size class (payload
rounded up to a power of two) and give, as nccl-tests does: count, median and p95 time,
algbw = S / t and busbw = algbw x the collective's factor, with S and the factor as
nccl-tests defines them: all-reduce S = the buffer, factor 2(N-1)/N; all-gather S = the
gathered buffer (N x each rank's payload), factor (N-1)/N; broadcast factor 1. (DeepSpeed's
comms logger calls 2 S / t the "algbw" of an all-reduce: compare busbw with busbw.)
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from dist_sqz.observe.metrics import p95

BUS_FACTOR = {
    "allreduce": lambda n: 2 * (n - 1) / n,
    "allgather": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
}
GATHERED = {"allgather"}  # S = N x each rank's payload


def log_line(step: int, warmup: bool, world_size: int, records: list, dilation: float) -> dict:
    """One collectives.jsonl line: the step's collectives as [kind, payload bytes, seconds]."""
    return {
        "step": step,
        "warmup": warmup,
        "world_size": world_size,
        "c": [[r.collective, r.payload_bytes, r.comm_time_s / dilation] for r in records],
    }


def collective_stats(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows per (kind, size class) over the measured (non-warm-up) steps."""
    groups: dict[tuple[str, int], list[tuple[int, float]]] = {}
    n = 1
    for line in lines:
        if line.get("warmup"):
            continue
        n = line["world_size"]
        for kind, payload, seconds in line["c"]:
            size_class = 1 << max(0, math.ceil(math.log2(max(payload, 1))))
            groups.setdefault((kind, size_class), []).append((payload, seconds))
    rows = []
    for (kind, size_class), items in sorted(groups.items()):
        size = statistics.median(p for p, _ in items)
        t = statistics.median(s for _, s in items)
        s_bytes = size * (n if kind in GATHERED else 1)
        algbw = s_bytes / t if t > 0 else None
        rows.append(
            {
                "collective": kind,
                "size_class_bytes": size_class,
                "size_bytes": size,
                "count": len(items),
                "world_size": n,
                "time_median_s": t,
                "time_p95_s": p95(s for _, s in items),
                "algbw_Bps": algbw,
                "busbw_Bps": None if algbw is None else algbw * BUS_FACTOR[kind](n),
            }
        )
    return rows


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "collectives.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def format_stats(rows: list[dict[str, Any]]) -> str:
    """nccl-tests' columns, one line per (collective, size class)."""
    head = (
        f"{'collective':>10} {'size <=':>10} {'size B':>12} {'count':>6} {'N':>3} "
        f"{'time ms':>9} {'p95 ms':>9} {'algbw GB/s':>11} {'busbw GB/s':>11}"
    )
    out = [head]
    for r in rows:
        bw = [
            f"{x / 1e9:11.4f}" if x is not None else f"{'-':>11}"
            for x in (r["algbw_Bps"], r["busbw_Bps"])
        ]
        out.append(
            f"{r['collective']:>10} {r['size_class_bytes']:>10,} {r['size_bytes']:>12,.0f} "
            f"{r['count']:>6} {r['world_size']:>3} {r['time_median_s'] * 1e3:9.3f} "
            f"{r['time_p95_s'] * 1e3:9.3f} {bw[0]} {bw[1]}"
        )
    return "\n".join(out)


# -- the report's step section --------------------------------------------------------------


def gantt(trace: dict[str, Any], path: Path, step: int | None = None) -> int | None:
    """One traced step as a Gantt chart (a row per rank and track); the step drawn."""
    from dist_sqz.observe.plotting import pyplot

    spans = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    steps = sorted({e["args"]["step"] for e in spans})
    if not steps:
        return None
    step = step if step in steps else steps[0]
    spans = [e for e in spans if e["args"]["step"] == step]
    ranks = sorted({e["pid"] for e in spans})
    tracks = ["compute", "padding", "encode", "collectives"]
    colors = {"forward": "#4c72b0", "backward": "#55a868", "optimizer": "#8172b2"}
    plt = pyplot()
    rows = [
        (r, t) for r in ranks for t in tracks if any(e["pid"] == r and e["cat"] == t for e in spans)
    ]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
    t0 = min(e["ts"] for e in spans)
    for y, (rank, track) in enumerate(rows):
        for e in (e for e in spans if e["pid"] == rank and e["cat"] == track):
            color = {
                "padding": "#cccccc",
                "encode": "#dd8452",
                "collectives": "#c44e52",
            }.get(track, colors.get(e["name"].split()[0], "#4c72b0"))
            ax.barh(y, e["dur"] / 1e3, left=(e["ts"] - t0) / 1e3, color=color, height=0.7)
    ax.set_yticks(range(len(rows)), [f"rank {r} {t}" for r, t in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms from the step's first event (emulated time)")
    ax.set_title(
        f"Step {step}: forward (blue), backward (green), optimizer (purple), "
        "collectives (red), encoding (orange), padding (grey)",
        fontsize=8,
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return step


def step_section(runs: list[dict[str, Any]], out: Path) -> list[str]:
    """report.md's lines on stragglers, overlap, collectives and the traced step."""
    lines = [
        "## Inside the step",
        "",
        "| run | step max ms (p95) | straggler wait ms (p95) | comm overlap (p95) |",
        "|---|---:|---:|---:|",
    ]

    def pair(s: dict, key: str, scale: float, fmt: str) -> str:
        a, b = s.get(key), s.get(f"{key}_p95")
        if a is None:
            return "–"
        return f"{a * scale:{fmt}} ({b * scale:{fmt}})" if b is not None else f"{a * scale:{fmt}}"

    for r in runs:
        s = r["summary"]
        lines.append(
            f"| {r['dir'].name} | {pair(s, 'step_time_max_s', 1e3, '.1f')} "
            f"| {pair(s, 'straggler_wait_s', 1e3, '.2f')} "
            f"| {pair(s, 'comm_overlap_frac', 1, '.2f')} |"
        )
    lines.append("")
    for r in runs:
        stats = collective_stats(read_log(r["dir"]))
        if stats:
            lines += [
                f"Collectives of {r['dir'].name} (nccl-tests' columns):",
                "",
                "```",
                format_stats(stats),
                "```",
                "",
            ]
        trace_file = r["dir"] / "trace.json"
        if trace_file.is_file():
            png = f"gantt-{r['dir'].name}.png"
            step = gantt(json.loads(trace_file.read_text()), out / png)
            if step is not None:
                lines += [
                    f"Step {step} of {r['dir'].name}, every rank:",
                    "",
                    f"![{png}]({png})",
                    "",
                ]
    return lines
