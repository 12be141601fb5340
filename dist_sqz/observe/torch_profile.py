"""`--torch-profile-steps A-B`: torch.profiler over steps A-B of a run, on every rank.

Where dist_sqz's own trace (`--trace-steps`, `timeline`) shows phases and collectives on one
clock across ranks, this is PyTorch's view of one rank: every operator and kernel, the CPU
and (on a GPU) the CUDA timeline, and the points where the host waits for the device. Each
rank writes `torch_trace-rank<R>.json` (a Chrome trace; Perfetto and chrome://tracing open
it) and `torch_profile-rank<R>.txt`: the operators by self time, then per step the host's
reads of device scalars (`aten::_local_scalar_dense`: `.item()`, `float(tensor)`, a tensor
in an `if`) and the CUDA synchronisations (`cudaStreamSynchronize`, `cudaDeviceSynchronize`,
device-to-host copies) that stall a GPU's queue. Each step is one `step N` range in it.
Profiling slows the steps it covers; their metrics are recorded as usual.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

SYNCS = (
    "aten::_local_scalar_dense",
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpyAsync",
)


class TorchProfile:
    """Starts torch.profiler before step A, stops it after step B (or at the end of a run
    that stops inside), and writes this rank's trace and table."""

    def __init__(self, steps: tuple[int, int] | None, out: Path, rank: int, cuda: bool) -> None:
        self.steps, self.out, self.rank, self.cuda = steps, out, rank, cuda
        self.prof: Any = None
        self.range: contextlib.AbstractContextManager[Any] | None = None
        self.done: list[int] = []

    def before(self, step: int) -> None:
        """Called before step `step` (from 1)."""
        if self.steps is None or not self.steps[0] <= step <= self.steps[1]:
            return
        if self.prof is None:
            from torch.profiler import ProfilerActivity, profile

            kinds = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
            self.prof = profile(activities=kinds)
            self.prof.start()
        self.range = torch.profiler.record_function(f"step {step}")
        self.range.__enter__()

    def after(self, step: int) -> None:
        """Called after step `step`, before its checkpoint or evaluation."""
        if self.range is None:
            return
        if self.cuda:
            torch.cuda.synchronize()  # the step's kernels inside its range
        self.range.__exit__(None, None, None)
        self.range = None
        self.done.append(step)
        if step == self.steps[1]:
            self.close()

    def close(self) -> None:
        """Stop and write (a run that ended inside the steps writes what it has)."""
        if self.range is not None:
            self.range.__exit__(None, None, None)
            self.range = None
        if self.prof is None:
            return
        prof, self.prof = self.prof, None
        prof.stop()
        self.out.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.out / f"torch_trace-rank{self.rank}.json"))
        (self.out / f"torch_profile-rank{self.rank}.txt").write_text(self.table(prof))
        self.steps = None  # once per run

    def table(self, prof: Any) -> str:
        events = prof.key_averages()
        key = "self_cuda_time_total" if self.cuda else "self_cpu_time_total"
        n = max(len(self.done), 1)
        counts = {e.key: e.count for e in events if e.key in SYNCS}
        lines = [
            f"torch.profiler, rank {self.rank}, steps {self.done[0] if self.done else '-'}"
            f"-{self.done[-1] if self.done else '-'} ({len(self.done)})",
            "",
            "host waits on the device, per step:",
            *(f"  {name}: {counts.get(name, 0) / n:g}" for name in SYNCS),
            "",
            events.table(sort_by=key, row_limit=40),
        ]
        return "\n".join(lines) + "\n"
