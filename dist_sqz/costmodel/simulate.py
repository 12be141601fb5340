"""Cost model: step time and scaling efficiency of data-parallel training at N workers.

    step(N) = forward + max(backward, last bucket's exchange ends) + optimizer

Inputs: (a) the model's gradient buckets as DDP forms them (reverse parameter order, first
bucket capped at 1 MiB, the rest at `bucket_cap_mb`); (b) a compute profile (forward,
backward, optimizer seconds at a batch size and precision, `profiles.py`, written by
`dist-sqz profile`); (c) a network: per-worker link bandwidth B, per-message
latency a, and a topology; (d) overlap: a bucket is ready when backward has got through its
layers (backward time is shared among layers by their multiply-adds) and buckets go out one
at a time, in order, each once it is ready and the previous one is done.

Per bucket of S bytes among N workers:
  ring          2(N-1) a + 2(N-1)/N S/B                    (NCCL/gloo ring all-reduce)
  tree          2 ceil(log2 N) (a + S/B)                   (FireCaffe's reduction tree)
  ps            2 (a + N S/B)                              (one parameter server: N pushes in,
                                                            N pulls out through its link)
  hierarchical  intra-node reduce-scatter + all-gather on the node link (g GPUs per node)
                around an inter-node ring over N/g nodes of S/g bytes per GPU
scaling_efficiency(N) = step(1) / step(N) (same per-worker batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dist_sqz.comm.buckets import ddp_bucket_groups
from dist_sqz.compute.profiles import compute_times, profile_image_size
from dist_sqz.costmodel import ClusterSpec, predict
from dist_sqz.costmodel.shares import ready_shares
from dist_sqz.errors import UsageError
from dist_sqz.observe.metrics import scaling_efficiency
from dist_sqz.observe.plotting import pyplot

TOPOLOGIES = ("ring", "tree", "ps", "hierarchical")


@dataclass(frozen=True)
class Network:
    bandwidth_Bps: float  # per worker, bytes/s
    latency_s: float = 5e-6
    topology: str = "ring"
    gpus_per_node: int = 8
    intra_bandwidth_Bps: float = 450e9  # NVLink 4 (H100): 450 GB/s each way
    intra_latency_s: float = 2e-6


def allreduce_time(size: float, n: int, net: Network) -> float:
    """Seconds to all-reduce `size` bytes among n workers on `net`."""
    if n <= 1 or size <= 0:
        return 0.0
    a, b = net.latency_s, net.bandwidth_Bps
    if net.topology == "ring":
        return 2 * (n - 1) * a + 2 * (n - 1) / n * size / b
    if net.topology == "tree":
        return 2 * math.ceil(math.log2(n)) * (a + size / b)
    if net.topology == "ps":
        return 2 * (a + n * size / b)
    if net.topology == "hierarchical":
        g = min(net.gpus_per_node, n)
        nodes = math.ceil(n / g)
        intra = 2 * ((g - 1) * net.intra_latency_s + (g - 1) / g * size / net.intra_bandwidth_Bps)
        inter = Network(b, a, "ring")
        return intra + allreduce_time(size / g, nodes, inter)
    raise UsageError(f"topology must be one of {', '.join(TOPOLOGIES)}; got {net.topology!r}")


@dataclass(frozen=True)
class GradBucket:
    nbytes: int
    ready_fraction: float  # share of backward done when its last gradient is ready


def ddp_buckets(model: nn.Module, bucket_cap_mb: float = 25.0, image_size: int = 224):
    """DDP's buckets in launch order, each with the share of backward done when it is ready."""
    shares = ready_shares(model, image_size)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        GradBucket(sum(p.numel() * 4 for _, p in group), max(shares[n] for n, _ in group))
        for group in ddp_bucket_groups(params, bucket_cap_mb)
    ]


def step_time(compute: dict[str, float], buckets: list[GradBucket], n: int, net: Network):
    """(step seconds, comm seconds summed over buckets, exposed comm seconds)."""
    fwd, bwd, opt = compute["forward_s"], compute["backward_s"], compute["optimizer_s"]
    end = 0.0
    comm = 0.0
    for b in buckets:
        t = allreduce_time(b.nbytes, n, net)
        end = max(end, b.ready_fraction * bwd) + t
        comm += t
    backward_done = max(bwd, end)
    return fwd + backward_done + opt, comm, backward_done - bwd


def simulate(
    models: list[str],
    workers: list[int],
    net: Network | ClusterSpec,
    profile: dict[str, Any],
    batch_size: int,
    precision: str,
    bucket_cap_mb: float = 25.0,
) -> list[dict[str, Any]]:
    """Rows per (model, N): the cost model on a cluster spec (`dist_sqz.costmodel`), or the
    first model on a bare Network (nominal rate, ideal overlap, no overheads), which is
    kept so that benchmarks can show what the spec's terms change."""
    if isinstance(net, ClusterSpec):
        return predict(models, workers, net, profile, batch_size, precision)
    from dist_sqz.models import build_model

    rows = []
    for name in models:
        with torch.device("meta"):
            model = build_model(name)
        buckets = ddp_buckets(model, bucket_cap_mb, profile_image_size(profile, name))
        compute = compute_times(profile, name, batch_size, precision)
        t1, _, _ = step_time(compute, buckets, 1, net)
        for n in workers:
            t, comm, exposed = step_time(compute, buckets, n, net)
            rows.append(
                {
                    "model": name,
                    "world_size": n,
                    "topology": net.topology,
                    "step_time_s": t,
                    "comm_time_s": comm,
                    "exposed_comm_s": exposed,
                    "compute_time_s": t1,
                    "scaling_efficiency": scaling_efficiency(
                        n * batch_size / t, n, batch_size / t1
                    ),
                    "images_per_s": n * batch_size / t,
                    "payload_bytes": sum(b.nbytes for b in buckets),
                    "buckets": len(buckets),
                }
            )
    return rows


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    plt = pyplot()

    paths = []
    for key, label, name in (
        ("scaling_efficiency", "scaling efficiency", "sim_efficiency.png"),
        ("images_per_s", "cluster images/s", "sim_throughput.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for model in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == model]
            ax.plot([r["world_size"] for r in mine], [r[key] for r in mine], "o-", label=model)
        ax.set_xscale("log", base=2)
        if key == "images_per_s":
            ax.set_yscale("log")
        ax.set_xlabel("workers")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    return paths


def format_table(rows: list[dict[str, Any]], header: str) -> str:
    """exposed: collectives past the end of backward; slowed: backward's slowdown from the
    collectives beside it (the spec's interference)."""
    compressed = any(r.get("compression", "none") != "none" for r in rows)
    width = 17 + 23 * compressed
    lines = [
        header,
        f"{'model':{width}s} {'N':>5s} {'step ms':>9s} {'comm ms':>9s} {'exposed':>9s} "
        f"{'slowed':>8s} {'efficiency':>10s} {'images/s':>12s}"
        + (f" {'sent B/step':>13s} {'encode ms':>9s}" if compressed else ""),
    ]
    for r in rows:
        name = f"{r['model']}+{r['compression']}" if compressed else r["model"]
        encode = r.get("compress_time_s")
        extra = (
            f" {r['sent_bytes']:13,d} {'unknown' if encode is None else f'{encode * 1e3:.2f}':>9s}"
            if compressed
            else ""
        )
        lines.append(
            f"{name:{width}s} {r['world_size']:5d} {r['step_time_s'] * 1e3:9.2f} "
            f"{r['comm_time_s'] * 1e3:9.2f} {r['exposed_comm_s'] * 1e3:9.2f} "
            f"{r.get('interference_s', 0.0) * 1e3:8.2f} "
            f"{r['scaling_efficiency']:10.3f} {r['images_per_s']:12,.0f}{extra}"
        )
    return "\n".join(lines)
