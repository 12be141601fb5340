"""The backend interface, its registry, and the gradient check and clip every backend applies
before the update."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed
from torch import nn

from dist_sqz.comm.accounting import Ledger
from dist_sqz.comm.buckets import buffer_groups
from dist_sqz.comm.compression import Compressor
from dist_sqz.comm.env import LaunchEnv
from dist_sqz.errors import UsageError
from dist_sqz.registry import Registry

T = TypeVar("T")

BACKENDS = Registry("backend")


def clip_gradients(optimizer: Any, max_norm: float | None) -> torch.Tensor:
    """The averaged gradients' global L2 norm (a 0-dim tensor), and when `max_norm` is set,
    all gradients scaled so that it is at most `max_norm` afterwards (the norm returned is
    the one before clipping). On averaged gradients every rank computes the same norm, so
    replicas stay equal, and every rank takes the same decision on it (`finite`).

    Computed every step, clipping or not: it is how a non-finite gradient is seen before the
    update (one pass over the gradients; AlexNet's 61 M take ~8 ms of one core)."""
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if max_norm:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    if not params:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def finite(norm: torch.Tensor | None) -> bool:
    """False when the gradients hold an inf or a NaN (their norm is then not finite)."""
    return norm is None or bool(torch.isfinite(norm))


@dataclass
class BackendOptions:
    """What a backend reads of a run's settings (train config keys of the same names)."""

    timeout_s: float = 300.0  # for the rendezvous and for any collective
    grad_clip_norm: float | None = None  # clip the averaged gradients' global norm
    bucket_cap_mb: float = 25.0  # gradient bucket size


class Backend:
    """Base class; see the module docstring."""

    name = "base"
    # What a failed or timed-out collective raises: the trainer turns exactly these (and no
    # other error, whatever its message) into one line naming the failure.
    comm_errors: tuple[type[BaseException], ...] = (torch.distributed.DistError,)
    # Whether the gradient buckets are re-formed after the first backward (DDP): a resumed
    # run must re-form them before its first step, or bucket-wise compressors see other
    # buckets than the uninterrupted run did.
    rebuilds_buckets = False

    def __init__(self, options: BackendOptions, env: LaunchEnv) -> None:
        self.options = options
        self.env = env
        self.rank = env.rank
        self.world_size = env.world_size
        self.local_rank = env.local_rank
        self.device = torch.device("cpu")
        self.ledger = Ledger(env.world_size)
        self.collectives: Any = None  # accounted all-reduce, all-gather and broadcast
        self.comm_enabled = True

    def wrap(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, compressor: Compressor
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        raise NotImplementedError

    @contextlib.contextmanager
    def compute_only(self) -> Iterator[None]:
        """Gradients stay local inside this block: no collective runs, nothing is counted."""
        self.comm_enabled = False
        try:
            yield
        finally:
            self.comm_enabled = True

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)

    def step(self, optimizer: torch.optim.Optimizer, scaler: Any = None) -> torch.Tensor | None:
        """Apply the step to averaged gradients, clipped to `grad_clip_norm` if set; the
        averaged gradients' norm before clipping. A step whose gradients are not finite is
        not applied (the trainer then stops or skips it: `training/health.py`). (DDP's gradients are
        averaged once backward returns; bucketed backends average in `SyncOptimizer.step`,
        which checks and clips after averaging.) With fp16's gradient `scaler` the gradients
        are unscaled first and a step whose gradients overflowed is skipped by the scaler, as
        fp16 training expects: they are averaged, so every rank skips the same steps."""
        if scaler is None:
            norm = clip_gradients(optimizer, self.options.grad_clip_norm)
            if finite(norm):
                optimizer.step()
            return norm
        scaler.unscale_(optimizer)
        norm = clip_gradients(optimizer, self.options.grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        return norm

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm's running statistics and counts) copied to every rank,
        as DDP's `broadcast_buffers` does before each training forward, through this
        backend's accounted collectives: one broadcast per dtype (DDP's coalescing), waited
        for before the forward reads them. Nothing runs alone or inside `compute_only`."""
        if self.world_size <= 1 or not self.comm_enabled:
            return
        for group in buffer_groups(model.buffers()):
            flat = torch.cat([b.detach().reshape(-1) for b in group])
            self.collectives.broadcast(flat).wait()
            with torch.no_grad():
                for b, part in zip(group, flat.split([b.numel() for b in group]), strict=True):
                    b.copy_(part.view_as(b))

    def all_gather_object(self, obj: Any) -> list[Any]:
        raise NotImplementedError

    def agree(self, find: Callable[[], T]) -> list[T]:
        """Run `find` on every rank and gather what each found. If any rank raised a
        UsageError, every rank raises it: the rank that found it reports it, and no rank is
        left waiting in a collective for one that has quit."""
        try:
            value, fault = find(), None
        except UsageError as e:
            value, fault = None, (str(e), self.rank if e.rank is None else e.rank)
        gathered = self.all_gather_object((value, fault))
        faults = [f for _, f in gathered if f is not None]
        if faults:
            raise UsageError(faults[0][0], rank=faults[0][1])
        return [v for v, _ in gathered]

    def control(self, flags: list[int]) -> list[int]:
        """Elementwise max of `flags` over ranks: decisions every rank must take at the same
        step (stop on a signal, write a checkpoint). Outside the ledger: not gradient bytes."""
        return [max(column) for column in zip(*self.all_gather_object(flags), strict=True)]

    def close(self) -> None:
        pass
