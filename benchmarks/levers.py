"""The two levers head to head, measured on emulated hosts: a smaller model (squeezenet1_1) or
a big one (alexnet) with compressed gradients, in time on the network.

Method (`dist-sqz compare` on emulated hosts, local compute: each worker one core of this
machine, padded to the times measured here; a compressor's encoding and decoding padded the
same way from their CPU time):

- **sweep**: step time at N = 4 over link rates (100 Mbit/s to 10 Gbit/s), synthetic data,
  batch 8 at 64 px, 4 steps a run (1 warm-up; medians of 3), for alexnet uncompressed / topk /
  dgc / powersgd rank 2 and squeezenet1_1 uncompressed / topk (topk and dgc at their default
  density, 0.01). One comparison per link rate, all padded to one shared local profile
  (measured once, with every compressor's encoding). D = 3 (1.5 x 4 workers / 2 cores;
  doubled where a row overran) up to 3 Gbit/s; 10 at 10 Gbit/s, so the shaped link stays at
  1 Gbit/s. The measured break-even of a compressor is the link rate at which its step time
  equals the uncompressed one (log-log interpolation between the two rates around the sign
  change, with simulate's 1% margin); beside it `dist-sqz simulate --break-even` fed the
  same profile, the same N and the emulated hosts' TCP links.
- **tta**: time to 0.95 held-out accuracy on digits at 1 Gbit/s, N = 4, each arm with its
  recipe: squeezenet1_1, alexnet, alexnet + powersgd rank 2 (plain all-reduce during the
  recipe's 100-step lr warm-up, as benchmarks/compression.py runs it), alexnet + topk
  (density 0.01, as in the sweep). One seed (the recipes' seed 0): an AlexNet arm takes
  15-60 minutes here. The uncompressed rows come from benchmarks/results/time_to_accuracy
  (same recipes, link, N, seed and padding profile; no encoding to pad) unless
  `--rerun-baselines`.

Every comparison resumes where it stopped (`dist-sqz compare --resume`): run this again to
continue. Results: benchmarks/results/levers.{md,json}, levers_step_time.png and
levers_accuracy.png; `--report` rewrites them from levers.json alone.

    python benchmarks/levers.py [--part sweep,tta] [--links 100mbit,...] [--work runs/levers]
        [--rerun-baselines] [--report]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from dist_sqz.units import parse_rate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BASELINES = RESULTS / "time_to_accuracy"

LINKS = ["100mbit", "300mbit", "1gbit", "3gbit", "10gbit"]
SWEEP_ARMS = [
    "alexnet",
    "alexnet+topk",
    "alexnet+dgc",
    "alexnet+powersgd:rank=2",
    "squeezenet1_1",
    "squeezenet1_1+topk",
]
TTA_ARMS = ["squeezenet1_1", "alexnet", "alexnet+powersgd:rank=2:start_step=100", "alexnet+topk"]
N = 4
MARGIN = 0.01  # as simulate's break-even: "shortens the step by more than 1%"


def dilation(link: str) -> float | None:
    """Fixed D where the shaped link would exceed 1 Gbit/s at the adaptive D (3)."""
    rate = parse_rate(link)
    return rate / 1e9 if rate > 3e9 else None


def prepare(folder: Path, settings: dict[str, Any], profile: Path | None) -> None:
    """A comparison folder `dist-sqz compare --resume` continues: its config, and the local
    profile its runs pad to (where one is shared)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "compare.yaml").exists():
        keep = {**settings, "out": str(folder), "resume": ""}
        (folder / "compare.yaml").write_text(yaml.safe_dump(keep, sort_keys=False))
    if profile is not None and profile.exists() and not (folder / "profile.json").exists():
        shutil.copy(profile, folder / "profile.json")


def run_compare(folder: Path) -> None:
    print(f"levers: dist-sqz compare --resume {folder}", flush=True)
    proc = subprocess.run(["dist-sqz", "compare", "--resume", str(folder)], check=False)
    if proc.returncode not in (0, 1):  # 1: some row failed, recorded in its results
        sys.exit(f"levers: compare in {folder} exited {proc.returncode}; rerun to resume")


def rows_of(folder: Path, errors: bool = False) -> list[dict[str, Any]]:
    path = folder / "results.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    return [r for r in rows if errors or not r.get("error")]


def finished(folder: Path, arms: list[str]) -> bool:
    done = {(r.get("arm") or r["model"], r["world_size"]) for r in rows_of(folder)}
    return all((a, N) in done for a in arms)


def sweep(work: Path, links: list[str]) -> None:
    shared = work / "profile.json"  # measured by the first comparison, padded to by all
    for link in links:
        folder = work / f"sweep-{link}"
        settings = {"arms": SWEEP_ARMS, "workers": [N], "steps": 4, "warmup_steps": 1}
        settings |= {"link": link} | ({"dilation": dilation(link)} if dilation(link) else {})
        prepare(folder, settings, shared)
        if not finished(folder, SWEEP_ARMS):
            run_compare(folder)
        if not shared.exists() and (folder / "profile.json").exists():
            shutil.copy(folder / "profile.json", shared)


def tta(work: Path, rerun_baselines: bool) -> None:
    folder = work / "tta"
    settings = {
        "arms": TTA_ARMS,
        "workers": [N],
        "link": "1gbit",
        "data": "digits",
        "target_accuracy": 0.95,
    }
    fresh = not (folder / "compare.yaml").exists()
    prepare(folder, settings, None if rerun_baselines else BASELINES / "profile.json")
    if fresh and not rerun_baselines:
        old = json.loads((BASELINES / "results.json").read_text())
        keep = [
            {**r, "reused_from": str(BASELINES.relative_to(ROOT))}
            for r in old["rows"]
            if r["world_size"] == N and (r.get("arm") or r["model"]) in TTA_ARMS
        ]
        (folder / "results.json").write_text(json.dumps({**old, "rows": keep}, indent=1))
    if not finished(folder, TTA_ARMS):
        run_compare(folder)


def crossing(points: list[tuple[float, float]]) -> tuple[float | None, str]:
    """The rate at which f = step(none) / step(compressed) - 1 - MARGIN turns from > 0
    (compression wins, below) to <= 0, from (rate, f) sorted by rate: log-log interpolation
    between the two rates around the highest sign change. (rate, '') or a bound: (lowest
    rate, '<') if it never wins, (highest, '>') if it always does."""
    if not points:
        return None, ""
    if points[-1][1] > 0:
        return points[-1][0], ">"
    last = max((i for i, (_, f) in enumerate(points) if f > 0), default=None)
    if last is None:
        return points[0][0], "<"
    (r0, f0), (r1, f1) = points[last], points[last + 1]
    t = f0 / (f0 - f1)
    return math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0))), ""


def collect(work: Path, links: list[str]) -> dict[str, Any]:
    """levers.json's content from the comparisons' folders."""
    keep = ("step_time_s", "comm_time_s", "exposed_comm_s", "compress_time_s", "sent_bytes")
    keep += ("payload_bytes", "images_per_s", "dilation", "emulation_late_s", "overran_padding")
    sweep_rows, failed = [], []  # failed: (arm, link, its error) of rows that did not finish
    for link in links:
        for r in rows_of(work / f"sweep-{link}", errors=True):
            arm = r.get("arm") or r["model"]
            if r.get("error"):
                failed.append((arm, link, r["error"]))
            else:
                sweep_rows.append({"arm": arm, "link": link, **{k: r.get(k) for k in keep}})
    tta_rows = [{k: v for k, v in r.items() if k != "config"} for r in rows_of(work / "tta")]
    profile = work / "profile.json"
    return {
        "n": N,
        "links": links,
        "sweep": sweep_rows,
        "tta": tta_rows,
        "failed": failed,
        "profile": json.loads(profile.read_text()) if profile.exists() else None,
    }


def measured_break_even(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per compressed sweep arm: the measured rate below which it shortens the step."""
    step = {(r["arm"], r["link"]): r["step_time_s"] for r in data["sweep"]}
    out = []
    for arm in SWEEP_ARMS:
        model, _, compression = arm.partition("+")
        if not compression:
            continue
        points = [
            (parse_rate(link), step[model, link] / step[arm, link] - 1 - MARGIN)
            for link in data["links"]
            if (model, link) in step and (arm, link) in step
        ]
        rate, bound = crossing(points)
        out.append(
            {
                "arm": arm,
                "model": model,
                "compression": compression,
                "rate_bps": rate,
                "bound": bound,
            }
        )
    return out


def model_break_even(data: dict[str, Any]) -> dict[tuple[str, str], float | None]:
    """simulate --break-even on the shared profile, at N, on the emulated hosts' TCP links."""
    from dist_sqz.costmodel import from_flags
    from dist_sqz.costmodel.breakeven import break_even

    prof = data["profile"]
    arms = [a.partition("+") for a in SWEEP_ARMS if "+" in a]
    models = list(dict.fromkeys(m for m, _, _ in arms))
    variants = ["none", *dict.fromkeys(c for _, _, c in arms)]
    batch = int(next(iter(prof["models"][models[0]]["fp32"])))
    result = break_even(models, variants, [N], from_flags("1gbit"), prof, batch, "fp32")
    return {(r["model"], r["compression"]): r["rate_bps"] for r in result["compression"]}


def rate_text(bps: float | None, bound: str = "") -> str:
    unit, scale = ("Gbit/s", 1e9) if (bps or 0) >= 1e9 else ("Mbit/s", 1e6)
    return "–" if bps is None else f"{bound}{bps / scale:.3g} {unit}"


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "–"
    enc, late = r.get("compress_time_s") or 0.0, " (!)" if r.get("overran_padding") else ""
    return f"{r['step_time_s'] * 1e3:.0f}" + (f" [{enc * 1e3:.0f}]" if enc else "") + late


def sweep_lines(data: dict[str, Any]) -> list[str]:
    by = {(r["arm"], r["link"]): r for r in data["sweep"]}
    links = data["links"]
    lines = [
        f"### Step time at N = {N} (ms, emulated; encode ms in brackets)",
        "",
        "| arm | " + " | ".join(links) + " |",
        "|---|" + "---:|" * len(links),
    ]
    for arm in SWEEP_ARMS:
        cells = [_cell(by.get((arm, link))) for link in links]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    sent = {r["arm"]: r["sent_bytes"] for r in data["sweep"]}
    lines += [
        "",
        "Bytes each rank sends per step: "
        + ", ".join(f"{a} {sent[a] / 1e6:.2f} MB" for a in SWEEP_ARMS if a in sent)
        + ". (!): real work overran the padding by more than 5% of the step.",
        "",
    ]
    return lines


def break_even_lines(data: dict[str, Any]) -> list[str]:
    measured = measured_break_even(data)
    modelled = model_break_even(data) if data.get("profile") else {}
    lines = [
        f"### Break-even link rate at N = {N}: below it the compressor shortens the step",
        "",
        "| arm | measured | cost model (`simulate --break-even`) | model / measured |",
        "|---|---:|---:|---:|",
    ]
    for m in measured:
        model_rate = modelled.get((m["model"], m["compression"]))
        ratio = "–"
        if model_rate and m["rate_bps"] and not m["bound"]:
            ratio = f"{model_rate / m['rate_bps']:.2f}"
        lines.append(
            f"| {m['arm']} | {rate_text(m['rate_bps'], m['bound'])} | "
            f"{rate_text(model_rate)} | {ratio} |"
        )
    lines += [
        "",
        "Measured: log-log interpolation between the two swept rates around the sign change "
        "of step(uncompressed) / step(compressed) - 1.01; `>`/`<`: it wins (loses) at every "
        "rate swept. Cost model: the shared profile (with its measured encoding), the same N, "
        "TCP links, one worker per host.",
        "",
    ]
    return lines


def tta_lines(data: dict[str, Any]) -> list[str]:
    rows = sorted(data["tta"], key=lambda r: r.get("time_to_accuracy_s") or math.inf)
    if not rows:
        return []
    lines = [
        f"### Time to 0.95 on digits, N = {N}, 1 Gbit/s links",
        "",
        "| arm | steps | time to 0.95 s | step ms | encode ms | sent MB/step | from |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        t = r.get("time_to_accuracy_s")
        lines.append(
            f"| {r.get('arm') or r['model']} | {r.get('steps_to_accuracy') or '–'} | "
            f"{'not reached' if t is None else f'{t:.0f}'} | {r['step_time_s'] * 1e3:.0f} | "
            f"{(r.get('compress_time_s') or 0) * 1e3:.0f} | {r['sent_bytes'] / 1e6:.2f} | "
            f"{r.get('reused_from', 'this run')} |"
        )
    t = [
        (r.get("arm") or r["model"], r["time_to_accuracy_s"])
        for r in rows
        if r.get("time_to_accuracy_s")
    ]
    if t:
        rest = ", ".join(f"{a} {s / t[0][1]:.1f}x as long" for a, s in t[1:])
        lines += ["", f"**First to 0.95: {t[0][0]}**, in {t[0][1]:.0f} s; then {rest}."]
    return lines + [""]


def plot_sweep(data: dict[str, Any], path: Path) -> bool:
    from dist_sqz.observe.plotting import pyplot

    if not data["sweep"]:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {}
    for arm in SWEEP_ARMS:
        pts = sorted(
            (parse_rate(r["link"]), r["step_time_s"]) for r in data["sweep"] if r["arm"] == arm
        )
        if pts:
            x, y = zip(*pts, strict=True)
            style = "-" if arm.startswith("alexnet") else "--"
            (line,) = ax.plot(x, y, style, marker="o", label=arm)
            colors[arm] = line.get_color()
    for m in measured_break_even(data):
        if m["rate_bps"] and not m["bound"] and m["arm"] in colors:
            ax.axvline(m["rate_bps"], color=colors[m["arm"]], ls=":", lw=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("link rate per host (bit/s)")
    ax.set_ylabel("step time (s, emulated)")
    ax.set_title(f"Step time against link rate, N = {N} (dotted: measured break-even)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(data: dict[str, Any], work: Path) -> None:
    (RESULTS / "levers.json").write_text(json.dumps(data, indent=1) + "\n")
    md = [
        "# The two levers head to head: a smaller model or compressed gradients",
        "",
        __doc__.split("\n\n")[1].replace("\n", " ").strip() + " See `benchmarks/levers.py`.",
        "",
        *sweep_lines(data),
        *(break_even_lines(data) if data["sweep"] else []),
        *tta_lines(data),
        *[
            f"- {arm} at {link} failed: {error[:200]}"
            for arm, link, error in data.get("failed", [])
        ],
        "",
    ]
    if plot_sweep(data, RESULTS / "levers_step_time.png"):
        md += ["![step time against link rate](levers_step_time.png)", ""]
    curves = [r for r in data["tta"] if r.get("accuracy_curve")]
    if curves:  # drawn from the rows, as compare draws it (titles fitted to the figure)
        from dist_sqz.compare.report import ACCURACY_PLOT, _accuracy_plot

        with tempfile.TemporaryDirectory() as tmp:
            shown = {"target_accuracy": 0.95, "link": "1gbit", "emulated_hosts": True}
            _accuracy_plot(curves, Path(tmp), shown | {"compute": {"kind": "local"}})
            shutil.copy(Path(tmp) / ACCURACY_PLOT, RESULTS / "levers_accuracy.png")
    if (RESULTS / "levers_accuracy.png").exists() and data["tta"]:
        md += ["![accuracy against time](levers_accuracy.png)", ""]
    (RESULTS / "levers.md").write_text("\n".join(md))
    print(f"levers: wrote {RESULTS / 'levers.md'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="sweep,tta", help="sweep, tta or both (comma-separated)")
    ap.add_argument("--links", default=",".join(LINKS), help="sweep link rates")
    ap.add_argument("--work", default=str(ROOT / "runs" / "levers"), help="comparisons' folder")
    ap.add_argument("--rerun-baselines", action="store_true", help="run tta's uncompressed rows")
    ap.add_argument("--report", action="store_true", help="rewrite results from levers.json")
    args = ap.parse_args()
    work = Path(args.work)
    if args.report:
        write(json.loads((RESULTS / "levers.json").read_text()), work)
        return
    links = [x for x in args.links.split(",") if x]
    for link in links:  # a bad rate fails here, before anything runs
        parse_rate(link)
    parts = set(args.part.split(","))
    if "sweep" in parts:
        sweep(work, links)
        write(collect(work, links), work)
    if "tta" in parts:
        tta(work, args.rerun_baselines)
    write(collect(work, links), work)


if __name__ == "__main__":
    main()
