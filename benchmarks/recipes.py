"""Do the digits recipes reach their target? Each model x worker count x seed, for real.

Method: for each (model, N, seed), `torchrun --standalone --nproc-per-node N -m dist_sqz
train --config configs/digits_<model>.yaml --seed S --target-accuracy T` (same per-worker
batch at every N; the recipe says how lr scales). A run stops at the first evaluation with
held-out accuracy >= T, or at the recipe's step budget. Writes, after every run,
benchmarks/results/recipes.{json,md}: per (model, N) steps_to_accuracy as median and range
over seeds, runs that reached T, and the accuracy each run ended at.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from dist_sqz import runs
from dist_sqz.observe.metrics import eta_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ["squeezenet1_1", "squeezenet1_0", "alexnet"]


def one_run(model: str, n: int, seed: int, target: float, work: Path) -> dict:
    out = work / f"{model}-n{n}-s{seed}"
    args = ["--config", str(ROOT / "configs" / f"digits_{model}.yaml"), "--seed", str(seed)]
    args += ["--target-accuracy", str(target), "--out", str(out)]
    t0 = time.perf_counter()
    code, why = runs.run_captured(runs.train_command(*args, nproc=n))
    row = {"model": model, "world_size": n, "seed": seed, "wall_s": time.perf_counter() - t0}
    if code != 0:
        row["error"] = why
        return row
    s = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [(m["step"], m["accuracy"]) for m in metrics if "accuracy" in m]
    row.update(
        steps_to_accuracy=s["steps_to_accuracy"],
        accuracy=s["accuracy"],
        best_accuracy=max(a for _, a in curve),
        steps_run=metrics[-1]["step"],
        time_to_accuracy_s=s["time_to_accuracy_s"],
        curve=curve,
    )
    return row


def write(rows: list[dict], target: float) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recipes.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        f"# Digits recipes: steps to {target} held-out accuracy",
        "",
        "`torchrun --nproc-per-node N -m dist_sqz train --config configs/digits_<model>.yaml "
        f"--seed S --target-accuracy {target}`; 64 px, per-worker batch 32; lr as each recipe "
        "says (squeezenets: 0.003 x sqrt(N); alexnet: 0.03 at any N, gradients clipped to "
        "global norm 3). steps_to_accuracy is "
        "the first evaluation (every 100 steps, or as the recipe says) at or above the target;"
        " held-out: 297 images, so 0.95 takes 283 right.",
        "",
        "| model | N | seeds | reached | steps_to_accuracy median (range) | accuracy at end, "
        "per seed | wall s, per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in sorted(rows, key=lambda r: (MODELS.index(r["model"]), r["world_size"], r["seed"])):
        groups.setdefault((r["model"], r["world_size"]), []).append(r)
    for (model, n), rs in groups.items():
        hit = [r["steps_to_accuracy"] for r in rs if r.get("steps_to_accuracy")]
        steps = f"{statistics.median(hit):.0f} ({min(hit)}-{max(hit)})" if hit else "–"
        accs = ", ".join(
            f"{r['accuracy']:.3f}" if "accuracy" in r else f"error: {r['error'][:60]}" for r in rs
        )
        walls = ", ".join(f"{r['wall_s']:.0f}" for r in rs)
        seeds = ",".join(str(r["seed"]) for r in rs)
        lines.append(
            f"| {model} | {n} | {seeds} | {len(hit)}/{len(rs)} | {steps} | {accs} | {walls} |"
        )
    (RESULTS / "recipes.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="squeezenet1_1,squeezenet1_0,alexnet")
    ap.add_argument("--workers", default="1,4")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--fresh", action="store_true", help="drop results already written")
    ap.add_argument(
        "--keep-runs",
        default="",
        metavar="DIR",
        help="keep each run's directory under DIR (e.g. for dist-sqz deep-compress)",
    )
    args = ap.parse_args()
    plan = [
        (m, int(n), int(s))
        for m in args.models.split(",")
        for n in args.workers.split(",")
        for s in args.seeds.split(",")
    ]
    # Runs of other (model, N, seed) already in the results stay: a run of part of the
    # matrix (after a recipe change, or to finish it) updates its rows and keeps the rest.
    saved = RESULTS / "recipes.json"
    redo = set(plan)
    rows = [
        r
        for r in (json.loads(saved.read_text()) if saved.exists() and not args.fresh else [])
        if (r["model"], r["world_size"], r["seed"]) not in redo
    ]
    with tempfile.TemporaryDirectory(prefix="dsqz-recipes-") as tmp:
        work = Path(args.keep_runs or tmp)
        for k, (model, n, seed) in enumerate(plan):
            row = one_run(model, n, seed, args.target, work)
            rows.append(row)
            write(rows, args.target)
            # Each run left at its model's mean time so far (an AlexNet run takes several
            # SqueezeNet runs' time).
            eta = eta_text(
                [(r["model"], r["wall_s"]) for r in rows], [m for m, _, _ in plan[k + 1 :]]
            )
            what = row.get("error") or (
                f"steps_to_accuracy {row['steps_to_accuracy']}, accuracy {row['accuracy']:.3f}"
            )
            print(
                f"[{k + 1}/{len(plan)}] {model} N={n} seed {seed}: {what} "
                f"({row['wall_s']:.0f}s{eta})",
                flush=True,
            )
    print(f"wrote {RESULTS / 'recipes.md'}")


if __name__ == "__main__":
    main()
