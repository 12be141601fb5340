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


class _Pending(torch.futures.Future):
    """A future completed by polling a library's request handle (MPI, Horovod).

    `wait()` first drives the request to completion, so code that waits on it directly
    (PowerSGD's first all-reduce) cannot hang on a future nobody completes.
    """

    def __init__(self, owner: PolledCollectives, handle, result, rec, t0: float) -> None:
        super().__init__()
        self.owner, self.handle, self.result, self.rec, self.t0 = owner, handle, result, rec, t0

    def complete(self, block: bool = True) -> bool:
        if self.done():
            return True
        if not block and not self.owner.test(self.handle):
            return False
        self.owner.finish(self.handle)
        self.rec.comm_time_s = time.perf_counter() - self.t0
        self.set_result(self.result() if callable(self.result) else self.result)
        return True

    def wait(self):
        self.complete()
        return super().wait()


class PolledCollectives:
    """Accounted collectives over a library with non-blocking calls and request handles.

    Subclasses start operations (`start_all_reduce`, `start_all_gather`) and say how to test
    and finish a handle. `poll()` completes whatever has finished; the bucketed exchange calls
    it from each gradient hook so completion times are observed during backward.
    """

    def __init__(self, ledger: Ledger, world_size: int) -> None:
        self.ledger = ledger
        self.world_size = world_size
        self._pending: list[_Pending] = []

    def test(self, handle) -> bool:
        raise NotImplementedError

    def finish(self, handle) -> None:
        raise NotImplementedError

    def start_all_reduce(self, t: torch.Tensor):
        raise NotImplementedError

    def start_all_gather(self, t: torch.Tensor):
        """(handle, () -> list of N tensors shaped like t)"""
        raise NotImplementedError

    def _track(self, collective: str, payload: torch.Tensor, start) -> torch.futures.Future:
        rec = self.ledger.begin(collective, nbytes(payload))
        t0 = time.perf_counter()
        handle, result = start()
        fut = _Pending(self, handle, result, rec, t0)
        self._pending.append(fut)
        return fut

    def poll(self) -> None:
        self._pending = [f for f in self._pending if not f.complete(block=False)]

    def all_reduce(self, t: torch.Tensor) -> torch.futures.Future:
        return self._track("allreduce", t, lambda: (self.start_all_reduce(t), t))

    def all_gather(self, t: torch.Tensor) -> torch.futures.Future:
        return self._track("allgather", t, lambda: self.start_all_gather(t))

    def flush(self) -> None:
        """Complete every outstanding collective, oldest first."""
        for f in self._pending:
            f.complete()
        self._pending = []
