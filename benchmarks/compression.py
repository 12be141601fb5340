"""Gradient compression on real data: every compressor, 2 workers, scikit-learn's digits.

For each model and compressor, trains the same number of steps from the same seed on local
processes and reports compression ratio (fp32 payload / payload), payload bytes per step,
final training loss and held-out accuracy next to the uncompressed run. Step time is then
measured separately, `--link-steps` steps on a 2-host emulated cluster with `--link` links
when network namespaces are permitted (root); else the table says so and leaves it out.

    python benchmarks/compression.py [--models squeezenet1_1,alexnet] [--steps 300]
        [--compressors none,fp16,bf16,int8,topk,dgc,powersgd] [--density 0.001]

Writes benchmarks/results/compression.json and compression.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from dist_sqz.cluster import namespaces_permitted
from dist_sqz.compare import run_job

# Per model: learning rate and image size that train from scratch on digits in a few
# hundred steps (SqueezeNet's last ReLU dies at larger rates).
SETUP = {"squeezenet1_1": (0.001, 32), "alexnet": (0.01, 64)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="squeezenet1_1,alexnet")
    ap.add_argument("--compressors", default="none,fp16,bf16,int8,topk,dgc,powersgd")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16, help="per worker")
    ap.add_argument("--density", type=float, default=0.001, help="topk/dgc density")
    ap.add_argument("--link", default="1gbit")
    ap.add_argument("--link-steps", type=int, default=6, help="timed steps on the link")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    emulate, why = namespaces_permitted()
    where = (
        f"step time on 2 emulated hosts, {args.link} links"
        if emulate
        else f"no step time on a link ({why})"
    )
    print(f"compression benchmark: {where}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="dsqz-compression-"))
    rows = []
    try:
        for model in args.models.split(","):
            lr, size = SETUP.get(model, (0.01, 64))
            for comp in args.compressors.split(","):
                run_dir = work / f"{model}-{comp}"
                train = ["-m", "dist_sqz", "train", "--model", model, "--data", "digits"]
                train += ["--image-size", str(size), "--batch-size", str(args.batch_size)]
                train += ["--steps", str(args.steps), "--warmup-steps", "5", "--lr", str(lr)]
                train += ["--compression", comp, "--compression-density", str(args.density)]
                train += ["--dgc-warmup-steps", str(args.steps // 5), "--out", str(run_dir)]
                train += ["--log-every", str(args.steps), "--compute-probe-steps", "0"]
                t0 = time.perf_counter()
                logs = work / "logs" / run_dir.name
                if not run_job(train, 2, False, args.link, "", logs, 3600):
                    raise SystemExit(f"{model} {comp} failed; logs in {logs}")
                s = json.loads((run_dir / "summary.json").read_text())
                link_step = None
                if emulate:
                    timed = [a if a != str(run_dir) else str(run_dir) + "-link" for a in train]
                    timed[timed.index("--steps") + 1] = str(args.link_steps + 2)
                    timed[timed.index("--warmup-steps") + 1] = "2"
                    if not run_job(timed, 2, True, args.link, "", logs, 3600):
                        raise SystemExit(f"{model} {comp} on the link failed; logs in {logs}")
                    link = json.loads((Path(str(run_dir) + "-link") / "summary.json").read_text())
                    link_step = link["step_time_s"]
                rows.append(
                    {
                        "model": model,
                        "compression": comp,
                        "compression_ratio": s["compression_ratio"],
                        "payload_bytes": s["payload_bytes"],
                        "sent_bytes": s["sent_bytes"],
                        "step_time_s": link_step,
                        "final_loss": s["final_loss"],
                        "accuracy": s["accuracy"],
                        "replicas_consistent": s["replicas_consistent"],
                    }
                )
                print(
                    f"  {model:14s} {comp:9s} ratio {s['compression_ratio']:8.1f}x  "
                    f"step {(link_step or 0) * 1e3:7.1f} ms  loss {s['final_loss']:.3f}  "
                    f"acc {s['accuracy']:.3f}  ({time.perf_counter() - t0:.0f}s)",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        base = next(b for b in rows if b["model"] == r["model"] and b["compression"] == "none")
        r["accuracy_vs_none"] = r["accuracy"] - base["accuracy"]
        r["step_time_vs_none"] = (
            r["step_time_s"] / base["step_time_s"] if r["step_time_s"] else None
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "where": where,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "density": args.density,
        "workers": 2,
        "data": "digits",
    }
    (out / "compression.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [
        f"Compression on digits, 2 workers, {args.steps} steps, batch {args.batch_size}/worker, "
        f"{where}; topk/dgc density {args.density}.",
        "",
        "| model | compression | ratio | payload B/step | link step ms | vs none | final loss "
        "| accuracy | Δ acc | replicas |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ms = f"{r['step_time_s'] * 1e3:.1f}" if r["step_time_s"] else "–"
        vs = f"{r['step_time_vs_none']:.2f}x" if r["step_time_vs_none"] else "–"
        lines.append(
            f"| {r['model']} | {r['compression']} | {r['compression_ratio']:.1f}x "
            f"| {r['payload_bytes']:,.0f} | {ms} | {vs} | {r['final_loss']:.3f} "
            f"| {r['accuracy']:.3f} "
            f"| {r['accuracy_vs_none'] * 100:+.1f} pt | {r['replicas_consistent']} |"
        )
    (out / "compression.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
