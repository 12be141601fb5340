"""`dist-sqz report RUN_DIR...`: Markdown and PNG report of finished runs and comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dist_sqz.compare.report import claim_lines, write_compare_report
from dist_sqz.observe.markdown import ms, num
from dist_sqz.observe.metrics import scaling_efficiency
from dist_sqz.observe.plotting import pyplot
from dist_sqz.observe.step_view import step_section


def _load_runs(dirs: list[Path]) -> tuple[list[dict[str, Any]], list[tuple[Path, dict]]]:
    """Train runs (summary + per-step metrics) and compare folders (results.json)."""
    import json

    from dist_sqz.errors import UsageError
    from dist_sqz.observe.metrics import read_jsonl

    runs, compares = [], []
    for d in dirs:
        if (d / "results.json").is_file():
            compares.append((d, json.loads((d / "results.json").read_text())))
        elif (d / "summary.json").is_file() and (d / "metrics.jsonl").is_file():
            summary = json.loads((d / "summary.json").read_text())
            runs.append({"dir": d, "summary": summary, "steps": read_jsonl(d / "metrics.jsonl")})
        else:
            raise UsageError(
                f"{d} is not a finished run (no summary.json + metrics.jsonl) nor a compare "
                "folder (no results.json)"
            )
    return runs, compares


def write_runs_report(dirs: list[Path], out: Path) -> Path:
    """report.md + PNGs for finished train runs and compare folders; returns report.md."""
    from dist_sqz.errors import UsageError

    runs, compares = _load_runs(dirs)
    if (out / "report.md").exists():
        raise UsageError(f"{out} already holds a report; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    md = ["# dist_sqz report", ""]
    if runs:
        md += [
            "## Runs",
            "",
            "| run | model | backend | compression | N | payload B/step | sent B/step | step ms "
            "| comm ms | img/s | ratio | final loss | accuracy | replicas |",
            "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in runs:
            s = r["summary"]
            md.append(
                f"| {r['dir'].name} | {s['model']} | {s['backend']} | {s['compression']} "
                f"| {s['world_size']} | {s.get('payload_bytes', 0):,.0f} "
                f"| {s.get('sent_bytes', 0):,.0f} | {s['step_time_s'] * 1e3:.1f} "
                f"| {num(ms(s.get('comm_time_s')), '.1f')} | {s['images_per_s']:.1f} "
                f"| {num(s.get('compression_ratio'), '.1f')} | {num(s.get('final_loss'), '.3f')} "
                f"| {num(s.get('accuracy'), '.3f')} | {s.get('replicas_consistent')} |"
            )
        md += ["", *_compression_section(runs), *_scaling_section(runs, out)]
        md += step_section(runs, out)
        _step_plots(runs, out)
        md += [
            "## Per step",
            "",
            "![steps_bytes](steps_bytes.png)",
            "",
            "![steps_time](steps_time.png)",
            "",
        ]
    for d, result in compares:
        sub = out / f"compare-{d.name}"
        sub.mkdir(exist_ok=True)
        write_compare_report(result, sub)
        md += [
            f"## Comparison {d.name}",
            "",
            *claim_lines(result["rows"], result),
            "",
            f"Full table and plots: [{sub.name}/report.md]({sub.name}/report.md)",
            "",
        ]
    (out / "report.md").write_text("\n".join(md))
    return out / "report.md"


def _compression_section(runs: list[dict[str, Any]]) -> list[str]:
    if len({r["summary"]["compression"] for r in runs}) < 2:
        return []
    lines = [
        "## Compression",
        "",
        "| model | N | compression | ratio | payload B/step | step ms | final loss "
        "| Δ loss vs none |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["summary"]["model"], r["summary"]["world_size"])):
        s = r["summary"]
        base = next(
            (
                b["summary"]
                for b in runs
                if b["summary"]["compression"] == "none"
                and (b["summary"]["model"], b["summary"]["world_size"])
                == (s["model"], s["world_size"])
            ),
            None,
        )
        delta = (
            s["final_loss"] - base["final_loss"]
            if base and s.get("final_loss") is not None and base.get("final_loss") is not None
            else None
        )
        lines.append(
            f"| {s['model']} | {s['world_size']} | {s['compression']} "
            f"| {num(s.get('compression_ratio'), '.1f')} | {s.get('payload_bytes', 0):,.0f} "
            f"| {s['step_time_s'] * 1e3:.1f} | {num(s.get('final_loss'), '.3f')} "
            f"| {num(delta, '+.3f')} |"
        )
    return [*lines, ""]


def _scaling_section(runs: list[dict[str, Any]], out: Path) -> list[str]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        s = r["summary"]
        groups.setdefault((s["model"], s["backend"], s["compression"]), []).append(s)
    rows = []
    for (model, backend, comp), ss in groups.items():
        one = next((s for s in ss if s["world_size"] == 1), None)
        if not one or len(ss) < 2:
            continue
        for s in sorted(ss, key=lambda s: s["world_size"]):
            eff = scaling_efficiency(s["images_per_s"], s["world_size"], one["images_per_s"])
            rows.append(
                {
                    "model": f"{model}/{backend}/{comp}",
                    "world_size": s["world_size"],
                    "images_per_s": s["images_per_s"],
                    "scaling_efficiency": eff,
                }
            )
    if not rows:
        return []
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["model"] for r in rows):
        pts = [(r["world_size"], r["scaling_efficiency"]) for r in rows if r["model"] == name]
        ax.plot(*zip(*pts, strict=True), marker="o", label=name)
    ax.set_xticks(sorted({r["world_size"] for r in rows}))
    ax.set_xlabel("workers N")
    ax.set_ylabel("scaling efficiency")
    ax.set_ylim(0, 1.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=110)
    plt.close(fig)
    lines = ["## Scaling", "", "| run group | N | img/s | efficiency |", "|---|---|---:|---:|"]
    lines += [
        f"| {r['model']} | {r['world_size']} | {r['images_per_s']:.1f} "
        f"| {r['scaling_efficiency']:.3f} |"
        for r in rows
    ]
    return [*lines, "", "![scaling](scaling.png)", ""]


def _step_plots(runs: list[dict[str, Any]], out: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        steps = r["steps"]
        ax.plot(
            [m["step"] for m in steps],
            [max(m["sent_bytes"], 1) for m in steps],
            marker=".",
            label=f"{r['dir'].name} sent",
        )
        ax.plot(
            [m["step"] for m in steps],
            [max(m["payload_bytes"], 1) for m in steps],
            linestyle="--",
            label=f"{r['dir'].name} payload",
        )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("bytes per step per rank (log)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "steps_bytes.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        steps = r["steps"]
        ax.plot(
            [m["step"] for m in steps],
            [m["step_time_s"] * 1e3 for m in steps],
            marker=".",
            label=f"{r['dir'].name} step",
        )
        ax.plot(
            [m["step"] for m in steps],
            [m["comm_time_s"] * 1e3 for m in steps],
            linestyle="--",
            label=f"{r['dir'].name} comm",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("ms")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "steps_time.png", dpi=110)
    plt.close(fig)
