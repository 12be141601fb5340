"""How DDP groups gradients into buckets, shared by the MPI/Horovod bucketing and the cost
model: parameters in reverse registration order (roughly the order backward produces their
gradients), a bucket closing once it holds >= its cap, the first capped at 1 MiB (DDP's
`first_bucket_bytes_cap`) and the rest at `bucket_cap_mb`.

torch (2.9 and later) keeps the 1 MiB first bucket only when DDP is given no
`bucket_cap_mb`; an explicit cap applies to the first bucket too. The DDP backend therefore
passes none for the default 25 MiB, and a non-default cap caps the first bucket here as well.

Buffers (BatchNorm's running statistics and counts) go as DDP's `broadcast_buffers` sends
them: one broadcast from rank 0 per dtype (`buffer_groups`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

import torch

FIRST_BUCKET_BYTES = 2**20
DEFAULT_BUCKET_CAP_MB = 25.0

T = TypeVar("T")


def ddp_bucket_groups(
    params: Sequence[tuple[T, torch.Tensor]],
    bucket_cap_mb: float,
    first_bucket_mb: float | None = None,
) -> list[list[tuple[T, torch.Tensor]]]:
    """`params` (key, tensor) in registration order -> buckets in launch order. The first
    bucket's cap: `first_bucket_mb` where given (a cluster spec's), else as torch does."""
    groups: list[list[tuple[T, torch.Tensor]]] = []
    group: list[tuple[T, torch.Tensor]] = []
    size = 0
    cap = FIRST_BUCKET_BYTES if bucket_cap_mb == DEFAULT_BUCKET_CAP_MB else bucket_cap_mb * 2**20
    if first_bucket_mb is not None:
        cap = first_bucket_mb * 2**20
    for key, p in reversed(params):
        group.append((key, p))
        size += p.numel() * p.element_size()
        if size >= cap:
            groups.append(group)
            group, size, cap = [], 0, bucket_cap_mb * 2**20
    if group:
        groups.append(group)
    return groups


def buffer_groups(buffers: Iterable[torch.Tensor]) -> list[list[torch.Tensor]]:
    """A model's buffers by dtype, in order of first appearance: what one step's buffer
    broadcasts carry (`Backend.sync_buffers`, the meter, the cost model's
    `buffer_payloads`)."""
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for b in buffers:
        groups.setdefault(b.dtype, []).append(b)
    return list(groups.values())
