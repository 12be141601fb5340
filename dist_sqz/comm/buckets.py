"""How DDP first groups gradients into buckets, shared by the MPI/Horovod bucketing and the
cost model: parameters in reverse registration order (roughly the order backward produces
their gradients), a bucket closing once it holds >= its cap, the first capped at 1 MiB
(DDP's `first_bucket_bytes_cap`) and the rest at `bucket_cap_mb`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

FIRST_BUCKET_BYTES = 2**20

T = TypeVar("T")


def ddp_bucket_groups(
    params: Sequence[tuple[T, torch.Tensor]], bucket_cap_mb: float
) -> list[list[tuple[T, torch.Tensor]]]:
    """`params` (key, tensor) in registration order -> buckets in launch order."""
    groups: list[list[tuple[T, torch.Tensor]]] = []
    group: list[tuple[T, torch.Tensor]] = []
    size, cap = 0, FIRST_BUCKET_BYTES
    for key, p in reversed(params):
        group.append((key, p))
        size += p.numel() * p.element_size()
        if size >= cap:
            groups.append(group)
            group, size, cap = [], 0, bucket_cap_mb * 2**20
    if group:
        groups.append(group)
    return groups
