"""The arithmetic of one training step, apart from run control: forward and loss under
autocast, backward (the backend exchanges gradients as it goes), the optimizer step on the
averaged gradients, and the no-communication probe that `exposed_comm_s` is measured
against. `TrainStep` can be built and called in one process (world size 1, gloo) without a
launcher; `Trainer` in `train.py` wraps it in timing, accounting and run control.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of dropout at (seed, step, rank): a resumed run draws what the uninterrupted
    one drew."""
    return ((seed * 1_000_003 + step) * 10_007 + rank) % (2**63)


@dataclass
class StepResult:
    loss: float  # this rank's loss, before the update
    grad_norm: torch.Tensor | None  # the averaged gradients' norm, before clipping
    step_s: float  # forward + backward (with the exchange) + optimizer
    optimizer_s: float  # the optimizer's part (the exchange's tail on bucketed backends)
    # perf_counter times: start, forward_end, backward_end, end (the step's phases)
    marks: dict[str, float] = field(default_factory=dict)


class TrainStep:
    """One step of data-parallel SGD on `backend`'s wrapped model and optimizer."""

    def __init__(
        self,
        train_model: nn.Module,
        optimizer: Any,
        backend: Any,
        label_smoothing: float = 0.0,
        autocast_dtype: torch.dtype | None = None,
        scaler: Any = None,
        emu: Any = None,
        broadcast_buffers: bool = False,
    ) -> None:
        self.train_model, self.optimizer, self.backend = train_model, optimizer, backend
        self.broadcast_buffers = broadcast_buffers
        self.label_smoothing = label_smoothing
        self.autocast_dtype, self.scaler, self.emu = autocast_dtype, scaler, emu
        self.device_type = backend.device.type
        self.forward_end = 0.0

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.backend.zero_grad(self.optimizer)
        if self.broadcast_buffers:  # before the emulated compute: it is communication
            self.backend.sync_buffers(self.train_model)
        if self.emu:
            self.emu.start_step()
        with torch.autocast(
            self.device_type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            logits = self.train_model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        if self.emu:
            self.emu.end_forward()
        self.forward_end = time.perf_counter()
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        return loss

    def optimizer_step(self) -> torch.Tensor | None:
        """The update (none where the gradients are not finite: the backend checks); the
        gradients' norm before clipping."""
        if self.emu:
            self.emu.start_optimizer()
        norm = self.backend.step(self.optimizer, self.scaler)
        if self.emu:
            self.emu.end_optimizer()
        return norm

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        t0 = time.perf_counter()
        loss = self.forward_backward(x, y)
        t1 = time.perf_counter()
        norm = self.optimizer_step()
        loss_value = loss.item()
        t2 = time.perf_counter()
        marks = {"start": t0, "forward_end": self.forward_end, "backward_end": t1, "end": t2}
        return StepResult(loss_value, norm, t2 - t0, t2 - t1, marks)

    def probe_compute(self, x: torch.Tensor, y: torch.Tensor, seed: int, steps: int) -> float:
        """Median forward+backward time with communication off (a no-op comm hook)."""
        times = []
        with self.backend.compute_only():
            for _ in range(steps):
                torch.manual_seed(seed)
                t0 = time.perf_counter()
                self.forward_backward(x, y).item()
                times.append(time.perf_counter() - t0)
        self.backend.zero_grad(self.optimizer)
        self.backend.ledger.take_step()  # nothing should be there; keep the ledger clean
        return statistics.median(times)
