"""`dist-sqz profile --compression ...`: what each compressor's encoding and decoding cost per
step, measured here.

The compressor exchanges every DDP bucket of the model's gradients (random, fp32, on the
profiled device) through a real one-rank gloo group, so its own compute is all that is timed
(a one-rank collective returns at once): median over `reps` steps after `warmup` (which also
lets error feedback, PowerSGD's Q and DGC's accumulators settle). For all-gather compressors
the decoding then handles one payload, not N: what is measured is a lower bound on their
decoding at N workers (top-k's decode is a scatter-add of k values per rank, small beside its
selection over the whole bucket). The group is nccl on a GPU (gloo would copy CUDA tensors
through the host and time that copy too), gloo on the CPU.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.distributed as dist

from dist_sqz.comm.accounting import Ledger
from dist_sqz.comm.buckets import DEFAULT_BUCKET_CAP_MB, ddp_bucket_groups
from dist_sqz.comm.collectives import TorchCollectives
from dist_sqz.comm.compression import Bucket
from dist_sqz.config.variants import Variant
from dist_sqz.models import build_model


def _buckets(model_name: str, device: torch.device) -> list[Bucket]:
    model = build_model(model_name).to(device)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    gen = torch.Generator(device="cpu").manual_seed(0)
    out = []
    for i, group in enumerate(ddp_bucket_groups(params, DEFAULT_BUCKET_CAP_MB)):
        numel = sum(p.numel() for _, p in group)
        buf = torch.randn(numel, generator=gen).to(device)
        out.append(Bucket(buf, i, [p.shape for _, p in group], [n for n, _ in group]))
    return out


def measure_compression(
    models: list[str],
    variants: list[Variant],
    device: torch.device,
    reps: int = 5,
    warmup: int = 2,
    progress=print,
) -> dict[str, dict[str, float]]:
    """{model: {variant label: seconds per step}}."""
    started = not dist.is_initialized()
    if started:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    try:
        comm = TorchCollectives(Ledger(1), 1)
        out: dict[str, dict[str, float]] = {}
        for name in models:
            buckets = _buckets(name, device)
            saved = [b.buffer.clone() for b in buckets]
            for v in variants:
                if v.name == "none":
                    continue
                comp = v.build()
                times = []
                for step in range(warmup + reps):
                    comp.set_step(10**6)  # past any warm-up schedule
                    for b, g in zip(buckets, saved, strict=True):
                        b.buffer.copy_(g)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    for b in buckets:
                        comp.exchange(b, comm).wait()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    if step >= warmup:
                        times.append(time.perf_counter() - t0)
                    comm.ledger.take_step()
                out.setdefault(name, {})[v.label] = statistics.median(times)
                progress(
                    f"{name:14s} {v.label:24s} encode+decode {out[name][v.label] * 1e3:9.2f} ms"
                )
        return out
    finally:
        if started:
            dist.destroy_process_group()


def merge(result: dict[str, Any], measured: dict[str, dict[str, float]]) -> None:
    """Each model's encoding times into every (precision, batch) entry of the profile: they
    depend on the gradients' sizes, not on the batch."""
    for model, times in measured.items():
        for batches in result["models"].get(model, {}).values():
            for entry in batches.values():
                entry.setdefault("compress_s", {}).update(times)
