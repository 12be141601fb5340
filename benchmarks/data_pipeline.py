"""Data-pipeline cost: wall time per step on a folder of JPEGs (decode + random resized crop
+ flip) against synthetic data, same model, one worker.

Method: generates an ImageFolder of 224 px JPEGs, then runs `dist-sqz train` three times —
synthetic data, the folder with `--data-workers 0` (decoding on the training thread), the
folder with loader workers — and takes each measured step's wall time as step_time_s +
data_time_s (the wait for the batch). Prints mean +- 95% interval (1.96 standard errors)
per run and each folder run's ratio to synthetic with its propagated interval. Target:
<= 1.10x with workers. Writes benchmarks/results/data_pipeline.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def make_folder(root: Path, classes: int, per_class: int, size: int = 224) -> None:
    """Smooth random images (JPEG-compressible like photos), one sub-folder per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class{c:02d}"
        d.mkdir(parents=True)
        for i in range(per_class):
            small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((size, size), Image.BILINEAR)
            img.save(d / f"{i:04d}.jpg", quality=90)


def run(name: str, data_args: list[str], args, work: Path) -> dict:
    out = work / name
    cmd = [sys.executable, "-m", "dist_sqz", "train", "--model", args.model]
    cmd += ["--image-size", "224", "--batch-size", str(args.batch_size)]
    cmd += ["--steps", str(args.steps + args.warmup), "--warmup-steps", str(args.warmup)]
    cmd += ["--compute-probe-steps", "0", "--out", str(out), *data_args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    walls = [r["step_time_s"] + r["data_time_s"] for r in rows if not r["warmup"]]
    mean = statistics.fmean(walls)
    half = 1.96 * statistics.stdev(walls) / math.sqrt(len(walls))
    wait = statistics.fmean(r["data_time_s"] for r in rows if not r["warmup"])
    print(
        f"{name:<24} {mean * 1e3:8.1f} +- {half * 1e3:5.1f} ms/step (data wait "
        f"{wait * 1e3:.1f} ms; {time.perf_counter() - t0:.0f}s)",
        flush=True,
    )
    return {"run": name, "mean_s": mean, "ci95_s": half, "steps": len(walls)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="squeezenet1_1")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30, help="measured steps per run")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="loader workers of the third run")
    ap.add_argument("--images", type=int, default=400)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dsqz-data-") as tmp:
        work = Path(tmp)
        make_folder(work / "images", classes=10, per_class=args.images // 10)
        folder = ["--data", f"imagefolder:{work / 'images'}", "--augment", "standard"]
        n = args.workers
        runs = [
            run("synthetic", ["--data", "synthetic"], args, work),
            run("jpeg, data_workers 0", [*folder, "--data-workers", "0"], args, work),
            run(f"jpeg, data_workers {n}", [*folder, "--data-workers", str(n)], args, work),
        ]
    base = runs[0]
    lines = [
        "# Data pipeline: JPEG folder vs synthetic",
        "",
        f"{args.model}, 224 px, batch {args.batch_size}, 1 worker, {args.steps} measured steps "
        "each; wall per step = step_time_s + data_time_s; mean +- 1.96 standard errors.",
        "",
        "| run | ms/step | ratio to synthetic |",
        "|---|---|---|",
    ]
    for r in runs:
        ratio = r["mean_s"] / base["mean_s"]
        rel = math.hypot(r["ci95_s"] / r["mean_s"], base["ci95_s"] / base["mean_s"])
        r["ratio"], r["ratio_ci95"] = ratio, ratio * rel
        lines.append(
            f"| {r['run']} | {r['mean_s'] * 1e3:.1f} +- {r['ci95_s'] * 1e3:.1f} | "
            f"{ratio:.3f} +- {ratio * rel:.3f} |"
        )
        print(f"{r['run']:<24} ratio {ratio:.3f} +- {ratio * rel:.3f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_pipeline.json").write_text(json.dumps(runs, indent=2) + "\n")
    (RESULTS / "data_pipeline.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'data_pipeline.md'}")


if __name__ == "__main__":
    main()
