"""torch.distributed collectives that report to a `Ledger`: bytes handed in, time to complete.

Timing runs from the call to the moment the collective's future completes. On CUDA the end
is marked by an event recorded on the stream the result is ready on, read once the step has
synchronised, so nothing extra blocks inside the step.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from dist_sqz.comm.accounting import Ledger


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class TorchCollectives:
    """Asynchronous all-reduce (sum) and all-gather over a process group, accounted."""

    def __init__(self, ledger: Ledger, world_size: int, group: dist.ProcessGroup | None = None):
        self.ledger = ledger
        self.world_size = world_size
        self.group = group

    def _issue(self, collective: str, payload: torch.Tensor, launch, result):
        """Start `launch()`, account it, and return a future of `result` once it completes."""
        rec = self.ledger.begin(collective, nbytes(payload))
        start = None
        if payload.is_cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        work = launch()

        def done(fut: torch.futures.Future):
            if start is None:
                rec.comm_time_s = time.perf_counter() - t0
            else:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                rec.cuda_events = (start, end)
            fut.wait()  # re-raises a failed collective here
            return result

        return work.get_future().then(done)

    def all_reduce(self, t: torch.Tensor) -> torch.futures.Future:
        """Sum `t` in place across ranks; the future's value is `t`."""
        return self._issue(
            "allreduce", t, lambda: dist.all_reduce(t, group=self.group, async_op=True), t
        )

    def all_gather(self, t: torch.Tensor) -> torch.futures.Future:
        """Gather equally shaped `t` from every rank; the future's value is the list."""
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        return self._issue(
            "allgather", t, lambda: dist.all_gather(out, t, group=self.group, async_op=True), out
        )
