"""`dist-sqz compare`: the main job. Trains each model at each worker count and compares.

Each multi-worker run is a torchrun multi-node job on an emulated cluster (one host per
worker, every link shaped to `link`), so bytes cross a real network stack and `wire_bytes`
comes from the kernel's counters. Where namespaces are not permitted, runs fall back to
local processes on loopback, and the report says so. Every run's `TrainConfig` is built and
validated here, before anything is launched, and handed to the run as its config file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dist_sqz.cluster import Cluster, namespaces_permitted
from dist_sqz.cluster.launch import run_local
from dist_sqz.config import CompareConfig, TrainConfig
from dist_sqz.errors import UsageError
from dist_sqz.metrics import scaling_efficiency
from dist_sqz.units import format_rate, parse_rate

RESULT_FIELDS = (
    "payload_bytes",
    "sent_bytes",
    "wire_bytes",
    "wire_over_sent",
    "step_time_s",
    "comm_time_s",
    "comm_busy_s",
    "exposed_comm_s",
    "compute_time_s",
    "images_per_s",
    "final_loss",
    "replicas_consistent",
    "emulation_late_s",
)


def shaped_link(link: str, dilation: float) -> str:
    """The link that is actually shaped under time dilation D: D times slower (tc units)."""
    return format_rate(parse_rate(link) / dilation)


def run_config(cfg: CompareConfig, model: str, out: Path) -> TrainConfig:
    """The training config of one compare run (validated: a model that cannot take the
    image size fails here, before anything starts)."""
    emulated: dict[str, Any] = {}
    if cfg.compute_profile:
        emulated = {
            "compute_profile": cfg.compute_profile,
            "compute_precision": cfg.compute_precision,
            "compute_batch_size": cfg.profile_batch_size,
            "dilation": cfg.dilation,
        }
    return TrainConfig.build(
        {
            "model": model,
            "steps": cfg.steps,
            "warmup_steps": cfg.warmup_steps,
            "image_size": cfg.image_size,
            "batch_size": cfg.batch_size,
            "out": str(out),
            "log_every": cfg.steps,
            "wandb": cfg.wandb,
            "wandb_project": cfg.wandb_project,
            "wandb_group": cfg.wandb_group,
            **emulated,
        }
    )


def run_job(
    args: list[str], n: int, emulate: bool, link: str, delay: str, logs: Path, timeout_s: float
) -> bool:
    """One torchrun job of n workers: on n emulated hosts, or as local processes."""
    logs.mkdir(parents=True, exist_ok=True)
    if emulate and n > 1:
        with Cluster(n, link, delay) as cluster:
            codes = cluster.run(args, timeout_s=timeout_s, log_dir=logs)
        return all(c == 0 for c in codes)
    return run_local(args, n, logs / "host0.log", timeout_s) == 0


def analytic_efficiency(compute_s: float, sent_bytes: float, link_bps: float) -> float:
    """compute / (compute + sent / link): ring all-reduce with no overlap, bandwidth-bound."""
    return compute_s / (compute_s + sent_bytes * 8 / link_bps)


def compare(cfg: CompareConfig, out: Path) -> dict[str, Any]:
    """Run every (model, N); write results.json and the report to `out`."""
    if cfg.compute_profile:
        from dist_sqz.profiles import compute_times, load_profile

        prof = load_profile(cfg.compute_profile)
        for m in cfg.models:
            compute_times(prof, m, cfg.profile_batch_size, cfg.compute_precision)
    if cfg.wandb != "off":
        from dist_sqz.wandb_sink import import_wandb

        import_wandb()
    if (out / "results.json").exists():
        raise UsageError(f"{out} already holds a comparison; choose another --out")
    group = cfg.wandb_group or f"compare-{out.name}"
    configs = {
        m: run_config(cfg.model_copy(update={"wandb_group": group}), m, out / "runs")
        for m in cfg.models
    }
    link_bps = parse_rate(cfg.link)
    shaped = shaped_link(cfg.link, cfg.dilation) if cfg.compute_profile else cfg.link
    emulate, why = namespaces_permitted()
    note = (
        ""
        if emulate
        else f"Emulated hosts unavailable ({why}); ran local processes over loopback, "
        "links unshaped."
    )
    if note:
        print(f"dist-sqz compare: note: {note}", flush=True)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for model in cfg.models:
        for n in cfg.workers:
            tag = f"{model}-n{n}"
            run_dir = out / "runs" / tag
            config_file = out / "configs" / f"{tag}.yaml"
            config_file.parent.mkdir(parents=True, exist_ok=True)
            config_file.write_text(
                TrainConfig.build(configs[model].to_dict(), {"out": str(run_dir)}).dump_yaml()
            )
            t0 = time.perf_counter()
            where = "emulated hosts, " + cfg.link if emulate and n > 1 else "local"
            print(f"dist-sqz compare: {model} on {n} worker(s) ({where}) ...", end="", flush=True)
            args = ["-m", "dist_sqz", "train", "--config", str(config_file)]
            logs = out / "logs" / tag
            ok = run_job(args, n, emulate, shaped, cfg.delay, logs, cfg.timeout_s)
            if not ok or not (run_dir / "summary.json").exists():
                print(" failed", flush=True)
                raise RuntimeError(f"run {model} x {n} failed; see {logs}")
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
            scaling_efficiency(row["images_per_s"], row["world_size"], base["images_per_s"])
            if base
            else None
        )
        row["analytic_efficiency"] = (
            analytic_efficiency(base["step_time_s"], row["sent_bytes"], link_bps)
            if base and emulate
            else None
        )
    result = {
        "models": cfg.models,
        "workers": cfg.workers,
        "steps": cfg.steps,
        "warmup_steps": cfg.warmup_steps,
        "link": cfg.link if emulate else "loopback",
        "emulated_hosts": emulate,
        "note": note,
        "image_size": cfg.image_size,
        "batch_size": cfg.batch_size,
        "emulated_compute": (
            {
                "profile": cfg.compute_profile,
                "precision": cfg.compute_precision,
                "batch_size": cfg.profile_batch_size,
                "dilation": cfg.dilation,
            }
            if cfg.compute_profile
            else None
        ),
        "shaped_link": shaped if emulate else None,
        "rows": rows,
        "elapsed_s": time.perf_counter() - t_start,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    from dist_sqz.report import write_compare_report

    write_compare_report(result, out)
    if cfg.wandb != "off":
        from dist_sqz.report import PLOTS
        from dist_sqz.wandb_sink import WandbSink

        meta = {k: v for k, v in result.items() if k != "rows"}
        sink = WandbSink(cfg.wandb, cfg.wandb_project, group, "compare", meta, out)
        sink.log_table("results", rows)
        sink.log_images([out / p for p in PLOTS if (out / p).exists()])
        sink.close()
    return result
