"""The cost model: cluster specs (`spec`), collective times (`collective`), and the step
(`step`). `predict` is what `dist-sqz simulate` prints; docs/cost-model.md explains each term."""

from __future__ import annotations

from typing import Any

import torch

from dist_sqz.costmodel.shares import ready_shares
from dist_sqz.costmodel.spec import ClusterSpec, from_flags, load_spec, shipped
from dist_sqz.costmodel.step import ddp_schedule, gradients, step_time
from dist_sqz.metrics import scaling_efficiency
from dist_sqz.models import build_model
from dist_sqz.profiles import compute_times, profile_image_size

__all__ = ["ClusterSpec", "from_flags", "load_spec", "predict", "shipped"]


def predict(
    models: list[str],
    workers: list[int],
    spec: ClusterSpec,
    profile: dict[str, Any],
    batch_size: int,
    precision: str,
) -> list[dict[str, Any]]:
    """One row per (model, N): step time, its parts, scaling efficiency, images/s."""
    rows = []
    for name in models:
        with torch.device("meta"):
            model = build_model(name)
        shares = ready_shares(model, profile_image_size(profile, name))
        ddp = spec.framework.kind == "ddp"
        grads = (
            ddp_schedule(
                model, shares, spec.framework.bucket_cap_mb, spec.framework.first_bucket_mb
            )
            if ddp
            else gradients(model, shares)
        )
        compute = compute_times(profile, name, batch_size, precision)
        t1 = step_time(compute, grads, 1, spec, ddp).step_s
        for n in workers:
            s = step_time(compute, grads, n, spec, ddp)
            rows.append(
                {
                    "model": name,
                    "world_size": n,
                    "topology": spec.collective.algorithm,
                    "cluster": spec.name,
                    "step_time_s": s.step_s,
                    "comm_time_s": s.comm_s,
                    "exposed_comm_s": s.exposed_s,
                    "interference_s": s.interference_s,
                    "collectives": s.collectives,
                    "compute_time_s": t1,
                    "scaling_efficiency": scaling_efficiency(
                        n * batch_size / s.step_s, n, batch_size / t1
                    ),
                    "images_per_s": n * batch_size / s.step_s,
                    "payload_bytes": sum(g.nbytes for g in grads),
                    "buckets": len(grads) if ddp else None,
                }
            )
    return rows
