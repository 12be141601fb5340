"""The compressor interface and its two exchange patterns (all-reduce, all-gather)."""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Collectives(Protocol):
    """What a backend offers compressors: accounted, asynchronous collectives."""

    world_size: int

    def all_reduce(self, t: torch.Tensor) -> torch.futures.Future: ...

    def all_gather(self, t: torch.Tensor) -> torch.futures.Future: ...


class Compressor:
    """Base: `exchange` turns one rank's gradient into the average over ranks."""

    name = "base"

    def __init__(self, cfg: Any = None) -> None:
        self.cfg = cfg

    def exchange(self, grad: torch.Tensor, comm: Collectives, key: int) -> torch.futures.Future:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Compressor state that a checkpoint must keep (error-feedback residuals...)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class AllReduceCompressor(Compressor):
    """compress -> all-reduce (sum) -> decompress -> divide by N. Payloads must sum linearly."""

    def compress(self, grad: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return grad, None

    def decompress(self, payload: torch.Tensor, ctx: Any, like: torch.Tensor) -> torch.Tensor:
        return payload

    def exchange(self, grad: torch.Tensor, comm: Collectives, key: int) -> torch.futures.Future:
        payload, ctx = self.compress(grad)
        n = comm.world_size

        def finish(fut: torch.futures.Future) -> torch.Tensor:
            out = self.decompress(fut.value(), ctx, grad)
            if out is not grad:
                grad.copy_(out)
            return grad.div_(n)

        return comm.all_reduce(payload).then(finish)
