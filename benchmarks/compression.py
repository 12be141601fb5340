"""Gradient compression at equal accuracy: each compressor on the digits recipes, 2 workers,
3 seeds.

Method: for each model, compressor variant and seed, `torchrun --standalone --nproc-per-node
2 -m dist_sqz train --config configs/digits_<model>.yaml --seed S --compression C ...` runs
the recipe's whole step budget (no early stop), evaluating every `eval_every` steps. Per
model the threshold is the uncompressed runs' median final accuracy minus 1 point; each
run's steps_to_accuracy is its first evaluation at or above it. Reported per (model,
variant): compression ratio (fp32 payload / payload), final accuracy (median and range over
seeds) and its difference to uncompressed, steps to the threshold (median, runs that got
there). The goal (the DGC paper reports 270-600x within accuracy, with 4 of 90 epochs of
warm-up): topk and dgc at >= 250x, powersgd at rank 2 and 4, all within 1 point.

Variants: none; topk (error feedback) and dgc (momentum correction with the recipe's
momentum, Nesterov included, momentum factor masking, density warm-up over the first 4.4% of
steps, as 4 of 90 epochs) at `--density`; powersgd2 and powersgd4 (plain all-reduce during the
lr warm-up, then rank 2 or 4); dgc-nomask, DGC without momentum factor masking (on AlexNet the
masking costs the most; see README). Not run by default: dgc-heavyball (plain momentum).

Results are rewritten after every run, and a rerun skips the runs already in them (`--fresh`
starts over). Run directories live under `--work` (default runs/compression, kept): a run
stopped part-way (a session's end; its checkpoint is written every 10 minutes and on SIGTERM)
goes on from its last checkpoint when the benchmark is run again.

    python benchmarks/compression.py [--models squeezenet1_1,alexnet] [--seeds 0,1,2]
        [--variants none,topk,dgc,dgc-nomask,powersgd2,powersgd4[,dgc-heavyball]]
        [--density 0.001] [--work DIR]
        [--report]

Also writes the median accuracy curves (a table at five points of the budget, and
compression_curves.png); `--report` rewrites the tables and plot from compression.json alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import yaml

from dist_sqz import runs
from dist_sqz.observe import metrics
from dist_sqz.observe.plotting import pyplot

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


# DGC as the paper (the recipe's momentum, Nesterov where it has it, momentum factor masking),
# and two ablations: without the masking, and heavy-ball momentum.
DGC_VARIANTS = {
    "dgc": [],
    "dgc-nomask": ["--no-dgc-momentum-masking"],
    "dgc-heavyball": ["--no-nesterov"],
}
NAMED_VARIANTS = ["none", "topk", *DGC_VARIANTS]  # and powersgd<rank>


def powersgd_rank(variant: str) -> int | None:
    """The rank of a `powersgd<rank>` variant; None for any other name."""
    rank = variant[len("powersgd") :]
    return int(rank) if variant.startswith("powersgd") and rank.isdigit() else None


def variant_flags(variant: str, recipe: dict, density: float) -> list[str]:
    if variant == "none":
        return ["--compression", "none"]
    if variant == "topk":
        return ["--compression", "topk", "--compression-density", str(density)]
    if variant in DGC_VARIANTS:
        warmup = max(1, round(recipe["steps"] * 4 / 90))
        flags = ["--compression", "dgc", "--compression-density", str(density)]
        return [*flags, "--dgc-warmup-steps", str(warmup), *DGC_VARIANTS[variant]]
    rank = powersgd_rank(variant)
    if rank is not None:
        return [
            "--compression",
            "powersgd",
            "--powersgd-rank",
            str(rank),
            "--powersgd-start-step",
            str(recipe.get("lr_warmup_steps", 0)),
        ]
    raise SystemExit(f"unknown variant {variant!r}")


def run_dir(work: Path, model: str, variant: str, seed: int, density: float) -> Path:
    return work / f"{model}-{variant}-s{seed}-d{density:g}"


def run_command(model: str, variant: str, seed: int, density: float, out: Path) -> list[str]:
    """torchrun's command for one run: fresh, or from `out`'s last checkpoint when a run
    there was stopped part-way (a directory with no checkpoint yet is started over)."""
    config = ROOT / "configs" / f"digits_{model}.yaml"
    recipe = yaml.safe_load(config.read_text())
    start = ["--config", str(config), "--seed", str(seed)]
    start += [*variant_flags(variant, recipe, density), "--out", str(out)]
    args = runs.resume_or_start(out, *start)
    if args == start and out.exists():
        shutil.rmtree(out)
    return runs.train_command(*args, nproc=2)


def one_run(model: str, variant: str, seed: int, density: float, work: Path) -> dict:
    out = run_dir(work, model, variant, seed, density)
    if (out / "summary.json").exists():  # finished, but stopped before it was recorded
        return finished_row(model, variant, seed, 0.0, out)
    cmd = run_command(model, variant, seed, density, out)
    resumed = "--resume" in cmd
    if resumed:
        print(f"    {out.name}: resuming from its last checkpoint", flush=True)
    t0 = time.perf_counter()
    code, error = runs.run_logged(cmd, work / f"{out.name}.log")
    wall_s = time.perf_counter() - t0
    if code != 0:
        return {"model": model, "variant": variant, "seed": seed, "wall_s": wall_s, "error": error}
    row = finished_row(model, variant, seed, wall_s, out)
    if resumed:
        row["resumed"] = True  # wall_s is the last part's alone
    return row


def eta_text(rows: list[dict], todo: list[tuple[str, str, int]]) -> str:
    """The progress line's "; ETA N min" for the runs in `todo`, each at its model's mean wall
    time among `rows` (an AlexNet run takes ~4x a SqueezeNet one)."""
    # A resumed run's wall_s is its last part's alone.
    done = [(r["model"], r["wall_s"]) for r in rows if not r.get("resumed")]
    return metrics.eta_text(done, [model for model, _, _ in todo])


def finished_row(model: str, variant: str, seed: int, wall_s: float, out: Path) -> dict:
    row = {"model": model, "variant": variant, "seed": seed, "wall_s": wall_s}
    s = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    row.update(
        compression_ratio=s["compression_ratio"],
        payload_bytes=s["payload_bytes"],
        accuracy=s["accuracy"],
        replicas_consistent=s["replicas_consistent"],
        curve=[(m["step"], m["accuracy"]) for m in metrics if "accuracy" in m],
    )
    return row


def ordered(variants) -> list[str]:
    """Variants in the table's order (none, topk, the dgcs, the powersgds by rank), whatever
    order their runs were made in."""

    def key(v: str) -> tuple:
        if v in NAMED_VARIANTS:
            return (0, NAMED_VARIANTS.index(v), "")
        rank = powersgd_rank(v)
        return (1, rank, "") if rank is not None else (2, 0, v)

    return sorted(variants, key=key)


def summarize(rows: list[dict]) -> list[dict]:
    """Per (model, variant): ratio, final accuracy, steps to the model's threshold."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        base = [
            r["accuracy"]
            for r in rows
            if r["model"] == model and r["variant"] == "none" and "accuracy" in r
        ]
        threshold = statistics.median(base) - 0.01 if base else None
        for variant in ordered({r["variant"] for r in rows if r["model"] == model}):
            rs = [r for r in rows if r["model"] == model and r["variant"] == variant]
            ok = [r for r in rs if "accuracy" in r]
            accs = [r["accuracy"] for r in ok]
            hits = (
                [next((s for s, a in r["curve"] if a >= threshold), None) for r in ok]
                if threshold is not None
                else []
            )
            reached = [h for h in hits if h is not None]
            out.append(
                {
                    "model": model,
                    "variant": variant,
                    "runs": len(rs),
                    "failed": [r["error"] for r in rs if "error" in r],
                    "compression_ratio": ok[0]["compression_ratio"] if ok else None,
                    "threshold": threshold,
                    "accuracy_median": statistics.median(accs) if accs else None,
                    "accuracy_range": (min(accs), max(accs)) if accs else None,
                    "accuracy_vs_none": (
                        statistics.median(accs) - statistics.median(base) if accs and base else None
                    ),
                    "reached": len(reached),
                    "steps_to_accuracy_median": statistics.median(reached) if reached else None,
                }
            )
    return out


def write(rows: list[dict], density: float) -> None:
    RESULTS.mkdir(exist_ok=True)
    table = summarize(rows)
    (RESULTS / "compression.json").write_text(
        json.dumps({"density": density, "workers": 2, "rows": rows, "summary": table}, indent=1)
        + "\n"
    )
    lines = [
        "# Gradient compression at equal accuracy (digits recipes, 2 workers)",
        "",
        "`torchrun --nproc-per-node 2 -m dist_sqz train --config configs/digits_<model>.yaml "
        "--seed S --compression ...`, the recipe's whole step budget; threshold = the "
        "uncompressed runs' median final accuracy - 1 point; steps = first evaluation at or "
        f"above it. topk/dgc density {density}.",
        "",
        "| model | variant | ratio | final accuracy median (range) | vs none | threshold | "
        "reached | steps to threshold (median) |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for t in table:
        rng = t["accuracy_range"]
        acc = f"{t['accuracy_median']:.3f} ({rng[0]:.3f}-{rng[1]:.3f})" if rng else "–"
        vs = f"{t['accuracy_vs_none'] * 100:+.1f} pt" if t["accuracy_vs_none"] is not None else "–"
        ratio = f"{t['compression_ratio']:.1f}x" if t["compression_ratio"] else "–"
        thr = f"{t['threshold']:.3f}" if t["threshold"] is not None else "–"
        steps = f"{t['steps_to_accuracy_median']:.0f}" if t["steps_to_accuracy_median"] else "–"
        failed = f" ({len(t['failed'])} failed)" if t["failed"] else ""
        lines.append(
            f"| {t['model']} | {t['variant']} | {ratio} | {acc} | {vs} | {thr} | "
            f"{t['reached']}/{t['runs']}{failed} | {steps} |"
        )
    lines += curve_table(rows)
    if plot_curves(rows, table, RESULTS / "compression_curves.png"):
        lines += ["", "![accuracy against step](compression_curves.png)"]
    (RESULTS / "compression.md").write_text("\n".join(lines) + "\n")


def median_curves(rows: list[dict], model: str) -> dict[str, dict[int, list[float]]]:
    """Per variant of `model`: evaluation step -> held-out accuracy of each seed there."""
    out: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        if r["model"] == model and "curve" in r:
            per_step = out.setdefault(r["variant"], {})
            for step, acc in r["curve"]:
                per_step.setdefault(int(step), []).append(acc)
    return {v: out[v] for v in ordered(out)}


def curve_table(rows: list[dict]) -> list[str]:
    """Median held-out accuracy over seeds at five evaluations spread over the budget."""
    lines = ["", "## Accuracy curves", "", "Median held-out accuracy over seeds at the step."]
    for model in dict.fromkeys(r["model"] for r in rows):
        curves = median_curves(rows, model)
        steps = sorted({s for c in curves.values() for s in c})
        if not steps:
            continue
        cols = sorted({steps[len(steps) * k // 5 - 1] for k in range(1, 6)})
        lines += ["", f"| {model} | " + " | ".join(f"step {s}" for s in cols) + " |"]
        lines.append("|---|" + "---:|" * len(cols))
        for variant, c in curves.items():
            cells = [f"{statistics.median(c[s]):.3f}" if s in c else "–" for s in cols]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def plot_curves(rows: list[dict], table: list[dict], path: Path) -> bool:
    """One panel per model: median accuracy against step per variant, the seeds' range shaded,
    the threshold dashed. False (and no file) when no run has a curve."""
    curves = {m: median_curves(rows, m) for m in dict.fromkeys(r["model"] for r in rows)}
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return False
    plt = pyplot()

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False)
    # One colour per variant in every panel.
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    variants = ordered({v for c in curves.values() for v in c})
    color = {v: palette[i % len(palette)] for i, v in enumerate(variants)}
    for ax, (model, per_variant) in zip(axes[0], curves.items(), strict=True):
        for variant, c in per_variant.items():
            steps = sorted(c)
            med = [statistics.median(c[s]) for s in steps]
            ax.plot(steps, med, label=variant, color=color[variant])
            lo, hi = [min(c[s]) for s in steps], [max(c[s]) for s in steps]
            ax.fill_between(steps, lo, hi, color=color[variant], alpha=0.15)
        thr = next((t["threshold"] for t in table if t["model"] == model), None)
        if thr is not None:
            ax.axhline(thr, color="grey", linestyle="--", linewidth=1, label="threshold")
        ax.set(title=f"{model}, 2 workers", xlabel="step", ylabel="held-out accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="squeezenet1_1,alexnet")
    ap.add_argument("--variants", default="none,topk,dgc,dgc-nomask,powersgd2,powersgd4")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--density", type=float, default=0.001, help="topk/dgc: fraction sent")
    ap.add_argument("--fresh", action="store_true", help="ignore results already written")
    ap.add_argument(
        "--work",
        type=Path,
        default=ROOT / "runs" / "compression",
        help="run directories, kept so that a stopped run resumes (default: runs/compression)",
    )
    ap.add_argument(
        "--report", action="store_true", help="only rewrite the tables and plot from the json"
    )
    args = ap.parse_args()
    if args.report:
        saved = json.loads((RESULTS / "compression.json").read_text())
        write(saved["rows"], saved["density"])
        print((RESULTS / "compression.md").read_text())
        return
    unknown = [
        v for v in args.variants.split(",") if v not in NAMED_VARIANTS and powersgd_rank(v) is None
    ]
    if unknown:
        known = ", ".join(NAMED_VARIANTS)
        ap.error(f"unknown variant {unknown[0]!r}; known: {known}, powersgd<rank>")
    done: list[dict] = []
    saved = RESULTS / "compression.json"
    if not args.fresh and saved.exists():
        old = json.loads(saved.read_text())
        if old.get("density") == args.density and "summary" in old:
            done = [r for r in old["rows"] if "error" not in r]
    plan = [
        (m, v, int(s))
        for m in args.models.split(",")
        for s in args.seeds.split(",")
        for v in args.variants.split(",")
    ]
    have = {(r["model"], r["variant"], r["seed"]) for r in done}
    todo = [p for p in plan if p not in have]
    if args.fresh:  # no run picks up a checkpoint from before either
        for model, variant, seed in todo:
            shutil.rmtree(run_dir(args.work, model, variant, seed, args.density), True)
    rows = list(done)
    print(
        f"compression at equal accuracy: {len(todo)} runs to do, {len(have)} kept"
        f"{eta_text(rows, todo)}",
        flush=True,
    )
    for k, (model, variant, seed) in enumerate(todo):
        row = one_run(model, variant, seed, args.density, args.work)
        rows.append(row)
        write(rows, args.density)
        what = row.get("error") or (
            f"ratio {row['compression_ratio']:.1f}x, accuracy {row['accuracy']:.3f}"
        )
        print(
            f"[{k + 1}/{len(todo)}] {model} {variant} seed {seed}: {what} "
            f"({row['wall_s']:.0f}s{eta_text(rows, todo[k + 1 :])})",
            flush=True,
        )
    print((RESULTS / "compression.md").read_text())


if __name__ == "__main__":
    main()
