"""DDP-style gradient bucketing for backends without DDP (MPI, Horovod with a compressor).

Parameters are grouped into buckets as DDP first forms them (`comm/buckets.py`). A
post-accumulate-grad hook copies each gradient into its bucket; when a bucket is full the
compressor exchanges it over the backend's non-blocking collectives while backward goes on.
Before `optimizer.step()` every bucket's result is waited for, in bucket order, and written
back to the gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dist_sqz.comm.backends.base import clip_gradients, finite
from dist_sqz.comm.buckets import ddp_bucket_groups
from dist_sqz.comm.compression import Bucket, Compressor


class _Slot:
    def __init__(self, index: int, params: list[tuple[str, nn.Parameter]]) -> None:
        self.index = index
        self.names = [n for n, _ in params]
        self.params = [p for _, p in params]
        self.shapes = [p.shape for p in self.params]
        numel = sum(p.numel() for p in self.params)
        self.buffer = torch.zeros(numel, dtype=self.params[0].dtype, device=self.params[0].device)
        self.offsets = {}
        at = 0
        for p in self.params:
            self.offsets[id(p)] = at
            at += p.numel()
        self.ready: set[int] = set()
        self.future: torch.futures.Future | None = None


class BucketedExchange:
    """Owns the buckets, the hooks and the pending futures of one model."""

    def __init__(
        self, model: nn.Module, compressor: Compressor, comm: Any, bucket_cap_mb: float
    ) -> None:
        self.compressor = compressor
        self.comm = comm
        self.enabled = True
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.slots = [
            _Slot(i, group) for i, group in enumerate(ddp_bucket_groups(params, bucket_cap_mb))
        ]
        self._slot_of = {id(p): s for s in self.slots for p in s.params}
        self._next = 0  # buckets are launched strictly in index order, like DDP
        self._hooks = [p.register_post_accumulate_grad_hook(self._on_grad) for _, p in params]

    def _on_grad(self, p: torch.Tensor) -> None:
        if not self.enabled:
            return
        slot = self._slot_of[id(p)]
        at = slot.offsets[id(p)]
        slot.buffer[at : at + p.numel()].copy_(p.grad.reshape(-1))
        slot.ready.add(id(p))
        self._launch_ready()

    def _launch(self, slot: _Slot) -> None:
        bucket = Bucket(slot.buffer, slot.index, slot.shapes, slot.names)
        slot.future = self.compressor.exchange(bucket, self.comm)

    def _launch_ready(self) -> None:
        while self._next < len(self.slots):
            slot = self.slots[self._next]
            if len(slot.ready) < len(slot.params):
                return
            self._launch(slot)
            self._next += 1

    def synchronize(self) -> None:
        """Launch what is left (unused parameters count as zero), wait, write gradients back."""
        if not self.enabled:
            return
        for slot in self.slots[self._next :]:
            for p in slot.params:
                if id(p) not in slot.ready:
                    at = slot.offsets[id(p)]
                    slot.buffer[at : at + p.numel()].zero_()
            self._launch(slot)
        self._next = len(self.slots)
        self.comm.flush()  # drive every outstanding request to completion, in issue order
        for slot in self.slots:
            out = slot.future.wait()
            for p in slot.params:
                at = slot.offsets[id(p)]
                view = out[at : at + p.numel()].view_as(p)
                if p.grad is None:
                    p.grad = view.clone()
                else:
                    p.grad.copy_(view)
            slot.ready.clear()
            slot.future = None
        self._next = 0
        self.comm.end_step()

    def reset(self) -> None:
        """Forget a backward pass that will not be synchronised (the no-comm probe)."""
        for slot in self.slots:
            slot.ready.clear()
            slot.future = None
        self._next = 0
        self.comm.end_step()


class SyncOptimizer:
    """An optimizer whose `step()` first completes the gradient exchange, then clips, and
    applies the update only to finite gradients; `grad_norm` is the last step's norm before
    clipping."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        exchange: BucketedExchange,
        clip_norm: float | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.exchange = exchange
        self.clip_norm = clip_norm
        self.grad_norm: torch.Tensor | None = None

    def step(self, closure=None):
        self.exchange.synchronize()
        self.grad_norm = clip_gradients(self.optimizer, self.clip_norm)
        if finite(self.grad_norm):
            return self.optimizer.step(closure)
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

    @property
    def param_groups(self):
        return self.optimizer.param_groups
