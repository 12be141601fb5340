"""The cost model: cluster specs (`spec`), collective times (`collective`), and the step
(`step`). `predict` is what `dist-sqz simulate` prints; docs/cost-model.md explains each term."""

from __future__ import annotations

import functools
import json
from typing import Any

import torch

from dist_sqz.comm.accounting import sent_bytes
from dist_sqz.compute.profiles import compress_time, compute_times, profile_image_size
from dist_sqz.config.variants import parse_variant
from dist_sqz.costmodel.shares import ready_shares
from dist_sqz.costmodel.spec import ClusterSpec, from_flags, load_spec, shipped
from dist_sqz.costmodel.step import Grad, ddp_schedule, gradients, step_time
from dist_sqz.errors import UsageError
from dist_sqz.observe.metrics import scaling_efficiency

__all__ = ["ClusterSpec", "from_flags", "load_spec", "predict", "shipped"]


SCHEDULES = "schedule_data.json"  # the zoo's schedules at the shipped profiles' shapes


def schedule_key(name: str, image_size: int, ddp: bool, cap_mb: float, first_mb: float | None):
    return f"{name}|{image_size}|{'ddp' if ddp else 'horovod'}|{cap_mb:g}|{first_mb}"


@functools.lru_cache(maxsize=1)
def _shipped_schedules() -> dict[str, Any]:
    from importlib import resources

    return json.loads(resources.files(__name__).joinpath(SCHEDULES).read_text())


@functools.lru_cache(maxsize=64)
def _schedule(
    name: str, image_size: int, ddp: bool, cap_mb: float, first_mb: float | None
) -> tuple[Grad, ...]:
    """The model's gradient buckets (DDP) or gradients (Horovod), each with its ready share:
    built once per shape (a break-even search asks hundreds of times). The zoo's, at the
    shapes the shipped profiles use, ship as package data (`build_schedule` wrote them;
    tests/test_costmodel.py checks them): no model is built and torchvision, 1.9 s of a
    2-core machine's 5 s `simulate`, is not imported."""
    shipped = _shipped_schedules().get(schedule_key(name, image_size, ddp, cap_mb, first_mb))
    if shipped is not None:
        return tuple(Grad(n, r, tuple(tuple(s) for s in shapes)) for n, r, shapes in shipped)
    return build_schedule(name, image_size, ddp, cap_mb, first_mb)


def build_schedule(
    name: str, image_size: int, ddp: bool, cap_mb: float, first_mb: float | None
) -> tuple[Grad, ...]:
    """The schedule, from the model itself (on the meta device: shapes only)."""
    from dist_sqz.models import build_model

    with torch.device("meta"):
        model = build_model(name)
    shares = ready_shares(model, image_size)
    if ddp:
        return tuple(ddp_schedule(model, shares, cap_mb, first_mb))
    return tuple(gradients(model, shares))


@functools.lru_cache(maxsize=64)
def buffer_bytes(name: str) -> tuple[int, ...]:
    """Bytes of each buffer broadcast of a step (models/zoo_facts.json for the zoo; else
    cached or counted on the meta device: `dist_sqz.models_cache`)."""
    from dist_sqz.models_cache import facts_for

    return tuple(facts_for([name])[name]["buffer_bytes"])


def schedule_data(image_sizes: dict[str, int]) -> dict[str, Any]:
    """What SCHEDULES ships: each model's DDP schedule at torch's defaults (25 MiB buckets,
    the first 1 MiB) and its Horovod gradients, at its image size."""
    out = {}
    for name, size in sorted(image_sizes.items()):
        for ddp in (True, False):
            grads = build_schedule(name, size, ddp, 25.0, None)
            out[schedule_key(name, size, ddp, 25.0, None)] = [
                [g.nbytes, g.ready, [list(s) for s in g.shapes]] for g in grads
            ]
    return out


def predict(
    models: list[str],
    workers: list[int],
    spec: ClusterSpec,
    profile: dict[str, Any],
    batch_size: int,
    precision: str,
    compression: str = "none",
    broadcast_buffers: bool = True,
) -> list[dict[str, Any]]:
    """One row per (model, N): step time, its parts, scaling efficiency, images/s, and what a
    worker sends. `compression`: a variant (`topk:density=0.001`); its encoding time comes
    from the profile where measured, else it counts as 0 and `compress_time_s` is None.
    `broadcast_buffers`: rank 0's buffers are broadcast before each forward (the trainer's
    default, DDP's)."""
    variant = parse_variant(compression)
    compressor = variant.build() if variant.name != "none" else None
    if compressor is not None and spec.framework.kind != "ddp":
        raise UsageError(
            f"compression {variant.label} is priced on DDP's buckets; cluster spec {spec.name} "
            "runs horovod"
        )
    rows = []
    ddp = spec.framework.kind == "ddp"
    for name in models:
        grads = _schedule(
            name,
            profile_image_size(profile, name),
            ddp,
            spec.framework.bucket_cap_mb,
            spec.framework.first_bucket_mb,
        )
        plans = [
            compressor.plan(g.shapes) if compressor else [("allreduce", g.nbytes)] for g in grads
        ]
        table = dict(zip(grads, plans, strict=True))  # equal buckets, equal plans
        compute = compute_times(profile, name, batch_size, precision)
        encode = compress_time(compute, variant.label)
        buffers = buffer_bytes(name) if broadcast_buffers else ()
        t1 = step_time(compute, grads, 1, spec, ddp).step_s
        for n in workers:
            s = step_time(
                compute,
                grads,
                n,
                spec,
                ddp,
                table.__getitem__ if compressor else None,
                encode or 0.0,
                compressor.blocking_collectives if compressor else 0,
                buffers,
            )
            rows.append(
                {
                    "model": name,
                    "compression": variant.label,
                    "world_size": n,
                    "topology": spec.collective.algorithm,
                    "cluster": spec.name,
                    "step_time_s": s.step_s,
                    "comm_time_s": s.comm_s,
                    "exposed_comm_s": s.exposed_s,
                    "interference_s": s.interference_s,
                    "compress_time_s": encode,
                    "collectives": s.collectives,
                    "compute_time_s": t1,
                    "scaling_efficiency": scaling_efficiency(
                        n * batch_size / s.step_s, n, batch_size / t1
                    ),
                    "images_per_s": n * batch_size / s.step_s,
                    # one worker broadcasts nothing (`Backend.sync_buffers`)
                    "payload_bytes": sum(b for p in plans for _, b in p)
                    + (sum(buffers) if n > 1 else 0),
                    "sent_bytes": sum(sent_bytes(k, b, n) for p in plans for k, b in p)
                    + sum(sent_bytes("broadcast", b, n) for b in buffers),
                    "buckets": len(grads) if ddp else None,
                }
            )
    return rows
