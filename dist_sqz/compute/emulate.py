"""Emulated compute, time-dilated: the real model runs, but each phase is padded to a GPU.

On a 2-core machine, real compute for 4+ workers measures CPU contention, not the network.
Here every step still runs the real forward and backward (so DDP's buckets, their order and
their payloads are real), but waits until each phase has taken what the profile says a GPU
takes, times a dilation factor D:

- forward + loss: padded to D x forward_s;
- backward: each parameter's gradient is held back (a tensor hook, before DDP sees it) until
  D x backward_s x (share of backward done by then) has passed — the share by the
  multiply-adds of the layers behind it at the profile's input size, as `dist-sqz simulate`
  assumes;
- optimizer step: padded to D x optimizer_s;
- a compressor's encoding and decoding (`spend`, local compute only: a GPU profile says
  nothing of this machine's encoding): padded to D x the CPU seconds it took here, and the
  rest of the backward waits as long (a worker is one core: its encoding holds the backward up);
  a collective the compressor waits for inside the hook (`hold`) holds it up as long too.

Links run D times slower (the caller divides the link rate by D) and reported times are
divided by D, so a 100 Gbit/s cluster of GPUs is emulated on 1 Gbit/s links with D = 100.
Scaling efficiency is invariant under D as long as the real work fits inside the padding;
`emulation_late_s` says, per step, by how much (in undilated seconds) real work overran
the padding: then the step measured this machine, not the GPU. `schedule` keeps each pad's
real time from its phase's start beside its due time, each gradient's included (the
backward's early gradients take more of it on a CPU than their multiply-adds say:
SqueezeNet 1.0's classifier gradient came 11 ms into a backward that gave it 7.9 at D = 3);
compare's trial run reads it at D = 1 to choose each row's D.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch
from torch import nn

from dist_sqz.compute.profiles import compute_times, load_profile, profile_image_size
from dist_sqz.costmodel.simulate import ready_shares
from dist_sqz.models import build_model

KEPT_STEPS = 3  # the last steps whose padded schedules a summary keeps


def _wait_until(deadline: float) -> float:
    """Sleep until `deadline` (perf_counter); how late we already were (0 if on time)."""
    left = deadline - time.perf_counter()
    if left <= 0:
        return -left
    time.sleep(left)
    return 0.0


class EmulatedCompute:
    def __init__(
        self,
        model: nn.Module,
        profile: str,
        model_name: str,
        batch_size: int,
        precision: str,
        dilation: float,
        num_classes: int = 1000,
    ) -> None:
        prof = load_profile(profile)
        times = compute_times(prof, model_name, batch_size, precision)
        self.dilation = dilation
        self.forward_s = times["forward_s"] * dilation
        self.backward_s = times["backward_s"] * dilation
        self.optimizer_s = times["optimizer_s"] * dilation
        self.batch_size = batch_size
        with torch.device("meta"):  # layer sizes only: a shape-only twin of the model
            twin = build_model(model_name, num_classes)
            shares = ready_shares(twin, profile_image_size(prof, model_name))
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._share = {id(p): shares[name] for name, p in params}
        self._hooks = [p.register_hook(self._grad_hook(p)) for _, p in params]
        self._backward_start = 0.0
        self._shift = 0.0  # this step's encoding so far: later gradients wait as long
        self._lock = threading.Lock()
        self._released = 0.0
        self._t0 = 0.0
        self.late_s = 0.0  # this step: real work that did not fit in the padding
        # each pad of this step and of the KEPT_STEPS before it: (real time from its phase's
        # start to it, its due time), both undilated (what compare's trial run reads)
        self.schedule: list[tuple[float, float]] = []
        self.recent: list[list[tuple[float, float]]] = []
        self.pads: list[tuple[float, float]] = []  # this step: when it waited (perf_counter)

    def _grad_hook(self, p: torch.Tensor):
        share = self._share[id(p)]

        def hook(grad: torch.Tensor) -> torch.Tensor:
            deadline = self._backward_start + self._shift + share * self.backward_s
            # Parallel branches (Fire modules) may finish in another order than the
            # parameters are listed: a gradient due earlier than one already released waits
            # no more and is not late.
            if deadline > self._released:
                self._pad(deadline, self._backward_start)
                self._released = deadline
            return grad

        return hook

    def _pad(self, deadline: float, start: float | None = None) -> None:
        """Wait for `deadline`, the padded end of the work begun at `start` (a phase's start;
        None for encoding, padded to its own CPU time, which `schedule` leaves out)."""
        # Gradients behind one deadline arrive one after another; only real lateness counts.
        now = time.perf_counter()
        if deadline > now:
            self.pads.append((now, deadline))  # this step's padding, for its trace
        if start is not None and deadline > start:
            d = self.dilation
            self.schedule.append(((now - start) / d, (deadline - start) / d))
        self.late_s = max(self.late_s, _wait_until(deadline))

    def start_step(self) -> None:
        if self.schedule:
            self.recent = [*self.recent, self.schedule][-KEPT_STEPS:]
        self.schedule = []
        self.late_s = 0.0
        self.pads = []
        self._shift = 0.0
        self._t0 = time.perf_counter()

    def spend(self, cpu_s: float, started: float) -> float:
        """A piece of encoding that started at `started` (perf_counter) and took `cpu_s` of
        its thread's CPU time: padded to D x cpu_s (CPU time, not wall: a worker sharing a
        core with others still counts one core's work), every later gradient of the step
        held back as long. The wall seconds the piece took."""
        padded = self.dilation * cpu_s
        with self._lock:
            self._shift += padded
        self._pad(started + padded)
        return time.perf_counter() - started

    def hold(self, seconds: float) -> None:
        """The backward was held up `seconds` (wall) waiting for a collective inside a hook:
        its later gradients are due as much later (waiting is not work overrunning)."""
        with self._lock:
            self._shift += seconds

    def end_forward(self) -> None:
        self._pad(self._t0 + self.forward_s, self._t0)
        self._backward_start = time.perf_counter()
        self._released = self._backward_start

    def start_optimizer(self) -> None:
        self._t0 = time.perf_counter()

    def end_optimizer(self) -> None:
        self._pad(self._t0 + self.optimizer_s, self._t0)

    def describe(self) -> dict[str, Any]:
        return {
            "emulation_schedule": [*self.recent, self.schedule][-KEPT_STEPS:],
            "dilation": self.dilation,
            "emulated_batch_size": self.batch_size,
            "emulated_compute_s": (self.forward_s + self.backward_s + self.optimizer_s)
            / self.dilation,
        }
