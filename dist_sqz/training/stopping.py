"""Stopping at a step boundary on SIGTERM/SIGINT/SIGUSR1, and checkpoints by the clock.

Schedulers (Slurm, Kubernetes) send SIGTERM before preemption, torchrun forwards it to every
worker and kills what is left 30 s later. Open MPI's mpirun (PRRTE) kills its ranks right
after forwarding SIGTERM, but forwards SIGUSR1 and leaves them be: `launch/mpirun.sh` turns
a SIGTERM into SIGUSR1 for mpirun, and Slurm's `--signal=B:USR1@120` sends it directly.
A signal only sets a flag here; after each step every rank takes the same decision from one
tiny max-reduce of (stop, checkpoint due, non-finite step, stalled, and the step's timing
figures that `timeline.py` gathers this way), so no rank leaves a
collective for another to wait on. Then each rank saves its state for the step
(`Trainer._save`) and the run ends with 128 + the signal number. A second signal stops at once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any, NamedTuple

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Decision(NamedTuple):
    signum: int  # the signal to stop on, 0 for none
    checkpoint_due: bool
    nonfinite: bool
    stalled: bool
    extra: list[int] | None = None  # the element-wise max of what ranks added (None: 1 rank)


class StepControl:
    """The (stop, checkpoint due) decision after each step, and the signal handlers that
    feed it (`install` before the loop, `restore` after)."""

    def __init__(self, backend: Any, is_main: bool, world_size: int, every_min: float) -> None:
        self.backend, self.is_main, self.world_size = backend, is_main, world_size
        self.every_s = every_min * 60
        self.signum: int | None = None
        self._saved_at = time.monotonic()
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._on_signal) for s in SIGNALS}

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:  # the second one: stop now
            signal.signal(signum, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        if self.is_main:
            print(
                f"dist-sqz: {signal.Signals(signum).name} received: stopping after this step "
                "with a checkpoint (send it again to stop at once)",
                flush=True,
            )

    def saved(self) -> None:
        self._saved_at = time.monotonic()

    def decide(
        self, bad: bool = False, stalled: bool = False, extra: list[int] | None = None
    ) -> Decision:
        """What every rank does after this step, the same on every rank: stop on a signal,
        write a checkpoint now, whether any rank saw a non-finite step (`bad`), and whether
        rank 0 found the run stalled (`health.py`); `extra` integers ride along, maxed."""
        stop = self.signum or 0
        due = bool(self.every_s) and time.monotonic() - self._saved_at >= self.every_s
        if self.world_size == 1:
            return Decision(stop, due, bad, stalled)
        # Any rank's signal stops all (SIGTERM over SIGINT), and any rank's bad step counts;
        # rank 0's clock alone decides a timed checkpoint, and its loss a stall.
        flags = [stop, int(due and self.is_main), int(bad), int(stalled and self.is_main)]
        agreed = self.backend.control(flags + list(extra or []))
        return Decision(
            agreed[0], bool(agreed[1]), bool(agreed[2]), bool(agreed[3]), agreed[4:] or None
        )
