"""Exact per-step accounting of what collectives move, and how long they take.

Every collective a backend issues goes through a `Ledger`: it records the payload handed to
the collective, the bytes this rank transmits under the collective's algorithm (the
nccl-tests "bus bytes" convention, docs/design.md), and when it was issued and completed. On every
backend comm_time_s sums issue-to-completion over a step's collectives and comm_busy_s is the
time at least one was in flight. Compression composes for free: whatever a
compressor hands to a collective is what gets counted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction

# sent / payload for one rank, per collective, at world size N (nccl-tests busbw factors).
_SENT_FACTOR = {
    "allreduce": lambda n: Fraction(2 * (n - 1), n),
    "allgather": lambda n: Fraction(n - 1),
    "broadcast": lambda n: Fraction(1),
}


def sent_fraction(collective: str, payload: int, world_size: int) -> Fraction:
    """Exact bytes sent for `payload` bytes through `collective` among `world_size` ranks."""
    if world_size <= 1:
        return Fraction(0)
    return _SENT_FACTOR[collective](world_size) * payload


def sent_bytes(collective: str, payload: int, world_size: int) -> int:
    """`sent_fraction` rounded to the nearest byte."""
    return round(sent_fraction(collective, payload, world_size))


@dataclass
class CollectiveRecord:
    """One collective: its bytes, and when it was issued and completed (perf_counter s)."""

    collective: str
    payload_bytes: int
    start_s: float = 0.0
    end_s: float | None = None  # None while in flight
    cuda_events: tuple | None = None  # (start, end) on GPU, read after the step synchronises

    @property
    def comm_time_s(self) -> float:
        return 0.0 if self.end_s is None else self.end_s - self.start_s


def busy_time(records: list[CollectiveRecord]) -> float:
    """Length of the union of the records' [start, end] intervals: comm_busy_s."""
    total, reach = 0.0, float("-inf")
    for r in sorted(records, key=lambda r: r.start_s):
        end = r.start_s if r.end_s is None else r.end_s
        if end > reach:
            total += end - max(r.start_s, reach)
            reach = end
    return total


@dataclass
class StepComm:
    """What one step's collectives moved, summed over buckets."""

    payload_bytes: int = 0
    sent_bytes: int = 0
    comm_time_s: float = 0.0
    comm_busy_s: float = 0.0
    collectives: int = 0
    records: list[CollectiveRecord] = field(default_factory=list)


class Ledger:
    """Collects `CollectiveRecord`s for the current step; thread-safe (gloo completes on its
    own threads)."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self._records: list[CollectiveRecord] = []
        self._lock = threading.Lock()
        # The first collective that failed (a dead peer, a cut link, a timeout), as the
        # library raised it. Errors of the step that follow from it are communication
        # failures whatever their wording; errors without it are not.
        self.failure: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error

    def begin(self, collective: str, payload_bytes: int) -> CollectiveRecord:
        """Record a collective issued now; the caller sets `end_s` when it completes."""
        rec = CollectiveRecord(collective, int(payload_bytes), start_s=time.perf_counter())
        with self._lock:
            self._records.append(rec)
        return rec

    def open_records(self) -> list[CollectiveRecord]:
        """This step's records so far (in flight or done)."""
        with self._lock:
            return list(self._records)

    def take_step(self) -> StepComm:
        """Return and clear what has been recorded since the last call."""
        with self._lock:
            records, self._records = self._records, []
        for r in records:
            if r.cuda_events is not None:
                start, end = r.cuda_events
                end.synchronize()
                r.end_s = r.start_s + start.elapsed_time(end) / 1e3
                r.cuda_events = None
        sent = sum(
            (sent_fraction(r.collective, r.payload_bytes, self.world_size) for r in records),
            Fraction(0),
        )
        return StepComm(
            payload_bytes=sum(r.payload_bytes for r in records),
            sent_bytes=round(sent),
            comm_time_s=sum(r.comm_time_s for r in records),
            comm_busy_s=busy_time(records),
            collectives=len(records),
            records=records,
        )
