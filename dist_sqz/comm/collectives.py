"""torch.distributed collectives that report to a `Ledger`: bytes handed in, time to complete.

Timing runs from the call to the moment the collective's future completes. On CUDA the end
is marked by an event recorded on the stream the result is ready on, read once the step has
synchronised, so nothing extra blocks inside the step.
"""

from __future__ import annotations

import threading
import time

import torch
import torch.distributed as dist

from dist_sqz.comm.accounting import CollectiveRecord, Ledger


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def start_timing(payload: torch.Tensor) -> torch.cuda.Event | None:
    """Before a collective of `payload` is launched: on a GPU, an event on the current
    stream (its start); on the CPU, nothing (the record's own start_s)."""
    if not payload.is_cuda:
        return None
    start = torch.cuda.Event(enable_timing=True)
    start.record()
    return start


def stamp_done(rec: CollectiveRecord, start: torch.cuda.Event | None) -> None:
    """At the collective's completion: its end (on a GPU, an event read once the step has
    synchronised)."""
    if start is None:
        rec.end_s = time.perf_counter()
    else:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        rec.cuda_events = (start, end)


class TorchCollectives:
    """Asynchronous all-reduce (sum), all-gather and broadcast (from rank 0) over a process
    group, accounted."""

    def __init__(self, ledger: Ledger, world_size: int, group: dist.ProcessGroup | None = None):
        self.ledger = ledger
        self.world_size = world_size
        self.group = group

    def _issue(self, collective: str, payload: torch.Tensor, launch, result):
        """Start `launch()`, account it, and return a future of `result` once it completes."""
        rec = self.ledger.begin(collective, nbytes(payload))
        start = start_timing(payload)
        work = launch()

        def done(fut: torch.futures.Future):
            stamp_done(rec, start)
            try:
                fut.wait()  # re-raises a failed collective here
            except Exception as e:
                self.ledger.fail(e)
                raise
            return result

        return work.get_future().then(done)

    def all_reduce(self, t: torch.Tensor) -> torch.futures.Future:
        """Sum `t` in place across ranks; the future's value is `t`."""
        return self._issue(
            "allreduce", t, lambda: dist.all_reduce(t, group=self.group, async_op=True), t
        )

    def broadcast(self, t: torch.Tensor) -> torch.futures.Future:
        """Rank 0's `t` into `t` on every rank; the future's value is `t`."""
        return self._issue(
            "broadcast", t, lambda: dist.broadcast(t, 0, group=self.group, async_op=True), t
        )

    def all_gather(self, t: torch.Tensor) -> torch.futures.Future:
        """Gather equally shaped `t` from every rank; the future's value is the list."""
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        return self._issue(
            "allgather", t, lambda: dist.all_gather(out, t, group=self.group, async_op=True), out
        )


class _Pending(torch.futures.Future):
    """A future completed from a library's request handle (MPI, Horovod).

    `wait()` first drives the request to completion, so code that waits on it directly
    (PowerSGD's first all-reduce) cannot hang on a future nobody completes.
    """

    def __init__(self, owner: PolledCollectives, handle, result, rec) -> None:
        super().__init__()
        self.owner, self.handle, self.result, self.rec = owner, handle, result, rec

    def complete(self) -> None:
        if self.done():
            return
        self.owner.finish_pending(self)
        self.set_result(self.result() if callable(self.result) else self.result)

    def wait(self):
        self.complete()
        return super().wait()


class PolledCollectives:
    """Accounted collectives over a library with non-blocking calls and request handles.

    Subclasses start operations (`start_all_reduce`, `start_all_gather`) and say how to test
    and finish a handle. A watcher thread tests every in-flight handle each `POLL_S` and
    stamps the moment it completes, so comm_time_s is issue-to-completion as on DDP (not
    when the training thread happens to look), and its tests keep MPI's progress engine
    turning during backward. Library calls are serialised by one lock, so an MPI with
    MPI_THREAD_SERIALIZED suffices.
    """

    POLL_S = 2e-4

    def __init__(self, ledger: Ledger, world_size: int) -> None:
        self.ledger = ledger
        self.world_size = world_size
        self._cond = threading.Condition()
        self._inflight: list[_Pending] = []  # issued, completion not yet seen
        self._pending: list[_Pending] = []  # issued, result not yet collected
        self._closed = False
        self._watcher: threading.Thread | None = None

    def test(self, handle) -> bool:
        raise NotImplementedError

    def finish(self, handle) -> None:
        raise NotImplementedError

    def start_all_reduce(self, t: torch.Tensor):
        raise NotImplementedError

    def start_all_gather(self, t: torch.Tensor):
        """(handle, () -> list of N tensors shaped like t)"""
        raise NotImplementedError

    def start_broadcast(self, t: torch.Tensor):
        """A handle for rank 0's `t` into `t` on every rank."""
        raise NotImplementedError

    def watch_more(self) -> bool:
        """Subclass hook, called by the watcher under the lock: stamp completions it tracks
        itself; True while some remain in flight (keeps the watcher polling)."""
        return False

    def _stamp_done(self) -> bool:
        now = time.perf_counter()
        still = []
        for f in self._inflight:
            try:
                done = self.test(f.handle)
            except Exception as e:  # finish() raises it again on the training thread
                self.ledger.fail(e)
                done = True
            if done:
                f.rec.end_s = now
            else:
                still.append(f)
        self._inflight = still
        return bool(still)

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                busy = self._stamp_done() | self.watch_more()
                self._cond.wait(self.POLL_S if busy else None)

    def wake(self) -> None:
        with self._cond:
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, daemon=True)
                self._watcher.start()
            self._cond.notify()

    def _track(self, collective: str, payload: torch.Tensor, start) -> torch.futures.Future:
        with self._cond:
            rec = self.ledger.begin(collective, nbytes(payload))
            handle, result = start()
            fut = _Pending(self, handle, result, rec)
            self._inflight.append(fut)
            self._pending.append(fut)
        self.wake()
        return fut

    def finish_pending(self, f: _Pending) -> None:
        """Block until `f`'s request completes (stamping it if the watcher has not), then
        collect it."""
        with self._cond:
            while f.rec.end_s is None:
                self._stamp_done()
                if f.rec.end_s is None:
                    self._cond.wait(self.POLL_S)
            try:
                self.finish(f.handle)
            except Exception as e:
                self.ledger.fail(e)
                raise
            finally:
                if f in self._pending:
                    self._pending.remove(f)

    def all_reduce(self, t: torch.Tensor) -> torch.futures.Future:
        return self._track("allreduce", t, lambda: (self.start_all_reduce(t), t))

    def all_gather(self, t: torch.Tensor) -> torch.futures.Future:
        return self._track("allgather", t, lambda: self.start_all_gather(t))

    def broadcast(self, t: torch.Tensor) -> torch.futures.Future:
        return self._track("broadcast", t, lambda: (self.start_broadcast(t), t))

    def flush(self) -> None:
        """Complete every outstanding collective, oldest first."""
        for f in list(self._pending):
            f.complete()

    def end_step(self) -> None:
        """Called once every step's collectives are done."""

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
