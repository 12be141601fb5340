"""`dist-sqz design-space`: the SqueezeNet paper's design-space sweeps (Sec. 5, Fig. 3),
measured in what a data-parallel step sends and what that does to scaling.

Two sweeps of the family builder (base_e 128, incr_e 128, freq 2, as in the paper):
squeeze ratio SR at pct3x3 0.5 (Fig. 3a), and pct3x3 at SR 0.5 (Fig. 3b). Per point:
parameters, fp32 MB, the payload of one uncompressed step (fp32 gradients) and the bytes each
worker sends in a ring all-reduce at N, and the cost model's (`simulate`) step time,
scaling efficiency and images/s at N on the link. The profile holds no family member, so a
point's compute is the profile's squeezenet1_0 times scaled by the point's multiply-adds
(forward, backward) and parameters (optimizer: memory-bound); every output says so. With
`train_steps` each point also trains that many steps of the digits squeezenet1_0 recipe (one
worker, 64 px, a real `dist-sqz train`) and reports held-out accuracy.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from dist_sqz import runs
from dist_sqz.comm.accounting import sent_bytes
from dist_sqz.compute.profiles import compute_times, profile_image_size
from dist_sqz.costmodel import ClusterSpec
from dist_sqz.costmodel.shares import ready_shares
from dist_sqz.costmodel.step import ddp_schedule, step_time
from dist_sqz.errors import RunFailure
from dist_sqz.models import build_model, count_params
from dist_sqz.models.stats import gflops
from dist_sqz.observe.metrics import eta_text
from dist_sqz.observe.plotting import pyplot

REFERENCE = "squeezenet1_0"  # = sqz_family at its defaults, layer for layer
# What the paper's Fig. 3 labels (ImageNet top-5 accuracy, model size in MB): said beside
# the points it names, never used in a computation.
PAPER = {
    ("squeeze_ratio", 0.125): "4.8 MB, top-5 80.3%",
    ("squeeze_ratio", 0.75): "19 MB, top-5 86.0% (plateau)",
    ("pct3x3", 0.01): "5.7 MB",
    ("pct3x3", 0.5): "13 MB, top-5 85.6% (plateau)",
}


def points(cfg: Any) -> list[tuple[str, float, str]]:
    """(sweep, value, model name) for every point of both sweeps."""
    out = [
        ("squeeze_ratio", sr, f"sqz_family:squeeze_ratio={sr},pct3x3=0.5")
        for sr in cfg.squeeze_ratios
    ]
    out += [("pct3x3", pct, f"sqz_family:squeeze_ratio=0.5,pct3x3={pct}") for pct in cfg.pct3x3]
    return out


def _scaled(base: dict[str, float], macs_ratio: float, params_ratio: float) -> dict[str, float]:
    return {
        "forward_s": base["forward_s"] * macs_ratio,
        "backward_s": base["backward_s"] * macs_ratio,
        "optimizer_s": base["optimizer_s"] * params_ratio,
    }


def sweep(
    cfg: Any, profile: dict[str, Any], net: ClusterSpec, progress: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    base = compute_times(profile, REFERENCE, cfg.batch_size, cfg.compute_precision)
    size = profile_image_size(profile, REFERENCE)  # the size `base` was measured at
    ref = build_model(REFERENCE)
    ref_macs, ref_params = gflops(ref), count_params(ref)
    rows = []
    todo = points(cfg)
    took: list[tuple[str, float]] = []  # (sweep, wall seconds) of each point trained
    for i, (kind, value, name) in enumerate(todo):
        model = build_model(name)
        params = count_params(model)
        macs = gflops(model)
        compute = _scaled(base, macs / ref_macs, params / ref_params)
        with torch.device("meta"):
            twin = build_model(name)
            buckets = ddp_schedule(
                twin,
                ready_shares(twin, size),
                net.framework.bucket_cap_mb,
                net.framework.first_bucket_mb,
            )
        t1 = step_time(compute, buckets, 1, net, bucketed=True).step_s
        step = step_time(compute, buckets, cfg.workers, net, bucketed=True)
        tn, comm, exposed = step.step_s, step.comm_s, step.exposed_s
        row = {
            "sweep": kind,
            "value": value,
            "model": name,
            "params": params,
            "fp32_mb": 4 * params / 2**20,
            "gmacs": round(macs, 4),
            "world_size": cfg.workers,
            "payload_bytes": 4 * params,
            "sent_bytes": sent_bytes("allreduce", 4 * params, cfg.workers),
            "compute_time_s": t1,
            "step_time_s": tn,
            "comm_time_s": comm,
            "exposed_comm_s": exposed,
            "scaling_efficiency": t1 / tn,
            "images_per_s": cfg.workers * cfg.batch_size / tn,
            "paper": PAPER.get((kind, value), ""),
        }
        if cfg.train_steps:
            row.update(train_point(name, cfg.train_steps))
            took.append((kind, row["train_wall_s"]))
            eta = eta_text(took, [k for k, _, _ in todo[i + 1 :]])
            progress(
                f"design-space: {i + 1}/{len(todo)} {kind} {value}: accuracy "
                f"{row['accuracy']:.4f} after {cfg.train_steps} steps{eta}"
            )
        rows.append(row)
    return rows


def train_point(name: str, steps: int) -> dict[str, Any]:
    """Held-out digits accuracy of `name` after `steps` steps of the squeezenet1_0 recipe."""
    from dist_sqz.training.recipes import recipe

    keys = recipe("digits", REFERENCE)
    keys.update(model=name, steps=steps, warmup_steps=1, eval_every=0)
    keys.update(lr_warmup_steps=max(1, steps // 10), checkpoint_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        keys["out"] = str(out)
        config = Path(tmp) / "point.yaml"
        config.write_text(yaml.safe_dump(keys))
        t0 = time.perf_counter()
        code, why = runs.run_captured(runs.train_command("--config", str(config)))
        if code != 0:
            raise RunFailure(f"design-space: training {name} failed: {why}")
        summary = json.loads((out / "summary.json").read_text())
    return {
        "train_steps": steps,
        "accuracy": summary["accuracy"],
        "train_wall_s": time.perf_counter() - t0,
    }


def header(cfg: Any) -> str:
    return (
        f"SqueezeNet design space (base_e 128, incr_e 128, freq 2) at N={cfg.workers} on "
        f"{cfg.link} links ({cfg.latency} latency, ring), batch {cfg.batch_size}/worker; "
        f"compute = profile {cfg.profile} {cfg.compute_precision} {REFERENCE} scaled by each "
        "point's multiply-adds (forward, backward) and parameters (optimizer): a proxy, not "
        "measured"
    )


def format_table(rows: list[dict[str, Any]], cfg: Any) -> str:
    trained = any("accuracy" in r for r in rows)
    lines = [header(cfg), ""]
    for kind, title in (("squeeze_ratio", "SR (pct3x3 0.5)"), ("pct3x3", "pct3x3 (SR 0.5)")):
        mine = [r for r in rows if r["sweep"] == kind]
        if not mine:
            continue
        lines.append(
            f"| {title} | params | fp32 MB | sent MB/step/worker | step ms | efficiency | "
            "images/s |" + (" accuracy |" if trained else "") + " paper |"
        )
        lines.append("|---" * (8 + trained) + "|")
        for r in mine:
            lines.append(
                f"| {r['value']:g} | {r['params']:,} | {r['fp32_mb']:.2f} | "
                f"{r['sent_bytes'] / 2**20:.2f} | {r['step_time_s'] * 1e3:.2f} | "
                f"{r['scaling_efficiency']:.3f} | {r['images_per_s']:,.0f} |"
                + (f" {r['accuracy']:.4f} |" if trained else "")
                + f" {r['paper']} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], cfg: Any, out: Path) -> list[Path]:
    """The paper's Fig. 3 layout, one figure per sweep: held-out accuracy (when trained) and
    scaling efficiency on the left axis, MB each worker sends per step on the right."""
    plt = pyplot()

    paths = []
    for kind, xlabel in (
        ("squeeze_ratio", "squeeze ratio SR (pct3x3 0.5)"),
        ("pct3x3", "fraction of 3x3 expand filters pct3x3 (SR 0.5)"),
    ):
        mine = [r for r in rows if r["sweep"] == kind]
        if not mine:
            continue
        x = list(range(len(mine)))
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.plot(x, [r["scaling_efficiency"] for r in mine], "s--", label="scaling efficiency")
        if all("accuracy" in r for r in mine):
            ax.plot(x, [r["accuracy"] for r in mine], "o-", label="held-out accuracy (digits)")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(f"fraction (efficiency at N={cfg.workers}, {cfg.link})")
        ax.set_xticks(x, [f"{r['value']:g}\n{r['fp32_mb']:.1f} MB" for r in mine])
        ax.set_xlabel(xlabel + " / fp32 model size")
        ax2 = ax.twinx()
        ax2.bar(x, [r["sent_bytes"] / 2**20 for r in mine], alpha=0.25, color="tab:red")
        ax2.set_ylabel("MB sent per worker per step (ring all-reduce)", color="tab:red")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.legend(loc="lower left")
        ax.set_title("compute: profile squeezenet1_0 scaled by multiply-adds", fontsize=9)
        fig.tight_layout()
        path = out / f"design_space_{kind}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
