"""`dist-sqz compare`: the main job. Trains each model at each worker count and compares.

Each multi-worker run is a torchrun multi-node job on an emulated cluster (one host per
worker, every link shaped to `link`), so bytes cross a real network stack and `wire_bytes`
comes from the kernel's counters. Where namespaces are not permitted, runs fall back to
local processes on loopback, and the report says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dist_sqz.cluster import Cluster, namespaces_permitted, parse_rate
from dist_sqz.errors import UsageError
from dist_sqz.models import MODELS

RESULT_FIELDS = (
    "payload_bytes",
    "sent_bytes",
    "wire_bytes",
    "wire_over_sent",
    "step_time_s",
    "comm_time_s",
    "exposed_comm_s",
    "compute_time_s",
    "images_per_s",
    "final_loss",
    "replicas_consistent",
    "emulation_late_s",
)


def _train_args(
    model: str, out: Path, steps: int, warmup: int, image_size: int, batch_size: int
) -> list[str]:
    return [
        "-m",
        "dist_sqz",
        "train",
        "--model",
        model,
        "--steps",
        str(steps),
        "--warmup-steps",
        str(warmup),
        "--image-size",
        str(image_size),
        "--batch-size",
        str(batch_size),
        "--out",
        str(out),
        "--log-every",
        str(steps),
    ]


def shaped_link(link: str, dilation: float) -> str:
    """The link that is actually shaped under time dilation D: D times slower (tc units)."""
    return f"{parse_rate(link) / dilation:.0f}bit"


def run_job(
    args: list[str], n: int, emulate: bool, link: str, delay: str, logs: Path, timeout_s: float
) -> bool:
    logs.mkdir(parents=True, exist_ok=True)
    if emulate and n > 1:
        with Cluster(n, link, delay) as cluster:
            codes = cluster.run(args, timeout_s=timeout_s, log_dir=logs)
        return all(c == 0 for c in codes)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={n}",
        *args,
    ]
    with (logs / "host0.log").open("w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
    return proc.returncode == 0


def analytic_efficiency(compute_s: float, sent_bytes: float, link_bps: float) -> float:
    """compute / (compute + sent / link): ring all-reduce with no overlap, bandwidth-bound."""
    return compute_s / (compute_s + sent_bytes * 8 / link_bps)


def compare(
    models: list[str],
    workers: list[int],
    steps: int,
    link: str,
    out: Path,
    warmup: int = 2,
    image_size: int = 64,
    batch_size: int = 8,
    delay: str = "",
    timeout_s: float = 900,
    wandb: tuple[str, str, str] = ("off", "", ""),
    emulated: tuple[str, str, int, float] | None = None,
) -> dict[str, Any]:
    """`emulated` = (profile, precision, profile batch size, dilation D): compute is padded to
    the profile's GPU times x D, links run at `link` / D, reported times are divided by D."""
    for m in models:
        MODELS.get(m)
    if not workers or any(n < 1 for n in workers):
        raise UsageError("--workers takes positive integers, e.g. 1,2,4")
    if steps <= warmup:
        raise UsageError(f"--steps must exceed the {warmup} warm-up steps")
    link_bps = parse_rate(link)
    dilation = emulated[3] if emulated else 1.0
    shaped = shaped_link(link, dilation) if emulated else link
    wandb_mode, wandb_project, wandb_group = wandb
    if wandb_mode != "off":
        from dist_sqz.wandb_sink import import_wandb

        import_wandb()
    if (out / "results.json").exists():
        raise UsageError(f"{out} already holds a comparison; choose another --out")
    emulate, why = namespaces_permitted()
    note = (
        ""
        if emulate
        else (
            f"Emulated hosts unavailable ({why}); ran local processes over loopback, "
            "links unshaped."
        )
    )
    if note:
        print(f"dist-sqz compare: note: {note}", flush=True)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for model in models:
        for n in workers:
            run_dir = out / "runs" / f"{model}-n{n}"
            t0 = time.perf_counter()
            print(
                f"dist-sqz compare: {model} on {n} worker(s) "
                f"({'emulated hosts, ' + link if emulate and n > 1 else 'local'}) ...",
                end="",
                flush=True,
            )
            args = _train_args(model, run_dir, steps, warmup, image_size, batch_size)
            if emulated:
                profile, precision, profile_batch, d = emulated
                args += ["--compute-profile", profile, "--compute-precision", precision]
                args += ["--compute-batch-size", str(profile_batch), "--dilation", str(d)]
            if wandb_mode != "off":
                args += ["--wandb", wandb_mode, "--wandb-project", wandb_project]
                args += ["--wandb-group", wandb_group]
            ok = run_job(args, n, emulate, shaped, delay, out / "logs" / f"{model}-n{n}", timeout_s)
            if not ok or not (run_dir / "summary.json").exists():
                print(" failed", flush=True)
                raise RuntimeError(
                    f"run {model} x {n} failed; see {out / 'logs' / f'{model}-n{n}'}"
                )
            s = json.loads((run_dir / "summary.json").read_text())
            row = {"model": model, "world_size": n, "params": s["params"]}
            row.update({k: s.get(k) for k in RESULT_FIELDS})
            rows.append(row)
            print(
                f" {s['step_time_s'] * 1e3:.0f} ms/step, {s['images_per_s']:.1f} img/s "
                f"({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
    for row in rows:
        base = next((r for r in rows if r["model"] == row["model"] and r["world_size"] == 1), None)
        row["scaling_efficiency"] = (
            row["images_per_s"] / (row["world_size"] * base["images_per_s"]) if base else None
        )
        row["analytic_efficiency"] = (
            analytic_efficiency(base["step_time_s"], row["sent_bytes"], link_bps)
            if base and emulate
            else None
        )
    result = {
        "models": models,
        "workers": workers,
        "steps": steps,
        "warmup_steps": warmup,
        "link": link if emulate else "loopback",
        "emulated_hosts": emulate,
        "note": note,
        "image_size": image_size,
        "batch_size": batch_size,
        "emulated_compute": (
            dict(zip(("profile", "precision", "batch_size", "dilation"), emulated, strict=True))
            if emulated
            else None
        ),
        "shaped_link": shaped if emulate else None,
        "rows": rows,
        "elapsed_s": time.perf_counter() - t_start,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    from dist_sqz.report import write_compare_report

    write_compare_report(result, out)
    if wandb_mode != "off":
        from dist_sqz.report import PLOTS
        from dist_sqz.wandb_sink import WandbSink

        meta = {k: v for k, v in result.items() if k != "rows"}
        sink = WandbSink(wandb_mode, wandb_project, wandb_group, "compare", meta, out)
        sink.log_table("results", rows)
        sink.log_images([out / p for p in PLOTS if (out / p).exists()])
        sink.close()
    return result
