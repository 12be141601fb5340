"""Exact per-step accounting of what collectives move, and how long they take.

Every collective a backend issues goes through a `Ledger`: it records the payload handed to
the collective and the bytes this rank transmits under the collective's algorithm (the
nccl-tests "bus bytes" convention, DESIGN.md). Compression composes for free: whatever a
compressor hands to a collective is what gets counted.
"""

from __future__ import annotations

import threading
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
    collective: str
    payload_bytes: int
    comm_time_s: float = 0.0
    cuda_events: tuple | None = None  # (start, end) on GPU, read after the step synchronises


@dataclass
class StepComm:
    """What one step's collectives moved, summed over buckets."""

    payload_bytes: int = 0
    sent_bytes: int = 0
    comm_time_s: float = 0.0
    collectives: int = 0
    records: list[CollectiveRecord] = field(default_factory=list)


class Ledger:
    """Collects `CollectiveRecord`s for the current step; thread-safe (gloo completes on its
    own threads)."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self._records: list[CollectiveRecord] = []
        self._lock = threading.Lock()

    def begin(self, collective: str, payload_bytes: int) -> CollectiveRecord:
        """Record a collective about to be issued; the caller sets its time on completion."""
        rec = CollectiveRecord(collective, int(payload_bytes))
        with self._lock:
            self._records.append(rec)
        return rec

    def take_step(self) -> StepComm:
        """Return and clear what has been recorded since the last call."""
        with self._lock:
            records, self._records = self._records, []
        for r in records:
            if r.cuda_events is not None:
                start, end = r.cuda_events
                end.synchronize()
                r.comm_time_s = start.elapsed_time(end) / 1e3
                r.cuda_events = None
        sent = sum(
            (sent_fraction(r.collective, r.payload_bytes, self.world_size) for r in records),
            Fraction(0),
        )
        return StepComm(
            payload_bytes=sum(r.payload_bytes for r in records),
            sent_bytes=round(sent),
            comm_time_s=sum(r.comm_time_s for r in records),
            collectives=len(records),
            records=records,
        )
