"""Sparse exchange: top-k with error feedback, and Deep Gradient Compression (Lin et al. 2018).

Each rank keeps the k = ceil(density x bucket size) largest-magnitude entries of its
(corrected) gradient and all-gathers them as one int32 tensor: k fp32 values (bit-cast) then
k int32 indices, 8k bytes. What it did not send stays in a per-rank residual and is added
back next step (error feedback), so nothing is lost, only delayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dist_sqz.comm.compression.base import COMPRESSORS, Bucket, GatherCompressor, ParamState


def keep_count(numel: int, density: float) -> int:
    return max(1, min(numel, math.ceil(density * numel)))


# Exact top-k over a large tensor through a candidate set (the sampled threshold of Lin et al.
# 2018, made exact): the k x MARGIN largest of an every-STRIDE-th sample bound the k-th
# largest from below, so the entries at or above that bound hold the whole top-k.
# torch.topk over 61 M entries costs ~1.4 s on one CPU core; this costs ~0.3 s.
SAMPLE_STRIDE = 64
SAMPLE_MARGIN = 2.0
MAX_SAMPLED_DENSITY = 0.02  # above it the candidate set is most of the tensor: plain topk
MIN_SAMPLE = 64  # smaller tensors: plain topk


def topk_indices(mags: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries of 1-D `mags`, in no particular order.

    The same set torch.topk picks (up to ties at the k-th value); faster when k is a small
    fraction of a large tensor. Deterministic and draws no random numbers.
    """
    n = mags.numel()
    if n < MIN_SAMPLE * SAMPLE_STRIDE or k > MAX_SAMPLED_DENSITY * n:
        return torch.topk(mags, k, sorted=False).indices
    sample = mags[::SAMPLE_STRIDE]
    kept = min(sample.numel(), math.ceil(SAMPLE_MARGIN * k / SAMPLE_STRIDE) + 8)
    bound = torch.topk(sample, kept, sorted=False).values.min()
    candidates = torch.nonzero(mags >= bound).squeeze(1)
    if candidates.numel() < k:  # the sample overestimated the k-th value: no shortcut
        return torch.topk(mags, k, sorted=False).indices
    return candidates[torch.topk(mags[candidates], k, sorted=False).indices]


def pack_topk(acc: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(payload, indices): the k largest |acc| entries as [values bits | indices], int32."""
    idx = topk_indices(acc.abs(), k)
    vals = acc[idx]
    return torch.cat([vals.view(torch.int32), idx.to(torch.int32)]), idx


def add_sparse(payloads: list[torch.Tensor], out: torch.Tensor) -> None:
    """Sum every rank's [values | indices] payload into `out`, in rank order."""
    for p in payloads:
        k = p.numel() // 2
        out.index_add_(0, p[k:].long(), p[:k].view(torch.float32))


class _Sparse(GatherCompressor):
    @dataclass
    class Options:
        density: float = 0.01  # fraction of each bucket's values sent

    KEYS: ClassVar[dict[str, str]] = {"density": "compression_density"}

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.density = self.options.density

    def decode_sum(self, payloads: list[torch.Tensor], out: torch.Tensor) -> None:
        add_sparse(payloads, out)

    def plan(self, shapes):
        values = sum(math.prod(s) for s in shapes)
        return [("allgather", 8 * keep_count(values, self.density))]  # fp32 values, int32 indices


@COMPRESSORS.register("topk")
class TopK(_Sparse):
    """Top-k sparsification (`compression_density` of each bucket) with error feedback."""

    name = "topk"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.residual = ParamState()

    def encode(self, bucket: Bucket) -> torch.Tensor:
        acc = self.residual.flat(bucket).add_(bucket.buffer)
        payload, idx = pack_topk(acc, keep_count(acc.numel(), self.density))
        acc[idx] = 0
        self.residual.store(bucket, acc)
        return payload

    def state_dict(self) -> dict[str, Any]:
        return {"residual": self.residual.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.residual.load_state_dict(state.get("residual", {}))


@COMPRESSORS.register("dgc")
class DGC(_Sparse):
    """Deep Gradient Compression: top-k of momentum-corrected accumulated gradients.

    Per rank and parameter: u <- m u + g (momentum correction), v <- v + u; send the top-k of
    |v|, then zero u and v where sent (momentum factor masking; `dgc_momentum_masking` off
    zeroes v only). With `nesterov`, u <- m (u + g) and v <- v + u + g: the update torch's
    Nesterov SGD makes, accumulated (the DGC authors' release has the same option). Before
    accumulating, the bucket's gradient norm is clipped to `dgc_clip_norm / sqrt(N)` (local
    gradient clipping; 0 = off; the config moves a `grad_clip_norm` here). Density warms up
    25% -> 6.25% -> 1.5625% -> 0.39% -> `compression_density` in equal stages over
    `dgc_warmup_steps` (the paper uses the first epochs). Momentum lives here, so the
    optimizer runs without it.
    """

    name = "dgc"
    owns_momentum = True

    @dataclass
    class Options:
        density: float = 0.01  # the target fraction of each bucket's values sent
        momentum: float = 0.9  # the run's momentum: DGC applies it, the optimizer does not
        nesterov: bool = False
        momentum_masking: bool = True  # zero the momentum of the entries just sent
        clip_norm: float = 0.0  # local clip of each bucket's norm to clip_norm / sqrt(N)
        warmup_steps: int = 0  # steps over which density falls from 25% to its target

    KEYS: ClassVar[dict[str, str]] = {
        "density": "compression_density",
        "momentum": "momentum",
        "nesterov": "nesterov",
        "momentum_masking": "dgc_momentum_masking",
        "clip_norm": "dgc_clip_norm",
        "warmup_steps": "dgc_warmup_steps",
    }

    @classmethod
    def adjust_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """DGC exchanges accumulated momentum, not gradients: clipping that after the
        exchange cut AlexNet's steps ~9x (its norm ~27 against a clip of 3) and it sat at
        chance on digits. The paper clips each worker's gradient before accumulating
        instead (Lin et al. 2018, section 3.2): a `grad_clip_norm` moves to `dgc_clip_norm`."""
        if settings.get("grad_clip_norm") is None:
            return {}
        clip = settings.get("dgc_clip_norm") or settings["grad_clip_norm"]
        return {"dgc_clip_norm": clip, "grad_clip_norm": None}

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        o = self.options
        self.momentum, self.nesterov, self.masking = o.momentum, o.nesterov, o.momentum_masking
        self.clip, self.warmup = o.clip_norm, o.warmup_steps
        self.u = ParamState()
        self.v = ParamState()
        self.world_size = 1

    def current_density(self) -> float:
        """The warm-up schedule's density at this step."""
        stages = [0.25 / 4**i for i in range(4)]
        stages = [d for d in stages if d > self.density]
        if not stages or self.step >= self.warmup:
            return self.density
        return stages[self.step * len(stages) // self.warmup]

    def encode(self, bucket: Bucket) -> torch.Tensor:
        g = bucket.buffer
        if self.clip > 0:
            limit = self.clip / math.sqrt(self.world_size)
            norm = float(g.norm())
            if norm > limit:
                g = g * (limit / norm)
        u = self.u.flat(bucket)
        if self.nesterov:
            v = self.v.flat(bucket).add_(u.add_(g).mul_(self.momentum)).add_(g)
        else:
            v = self.v.flat(bucket).add_(u.mul_(self.momentum).add_(g))
        payload, idx = pack_topk(v, keep_count(v.numel(), self.current_density()))
        if self.masking:
            u[idx] = 0
        v[idx] = 0
        self.u.store(bucket, u)
        self.v.store(bucket, v)
        return payload

    def exchange(self, bucket, comm):
        self.world_size = comm.world_size
        return super().exchange(bucket, comm)

    def state_dict(self) -> dict[str, Any]:
        return {"u": self.u.state_dict(), "v": self.v.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.u.load_state_dict(state.get("u", {}))
        self.v.load_state_dict(state.get("v", {}))
