"""One data-parallel step on a cluster spec: when each gradient collective starts and ends,
how much of it hides behind backward, and what it costs the backward it overlaps.

    step(N) = (1 + f) [forward + optimizer] + buffers + max(backward done, end)

Backward's own work, (1 + f) backward + e, runs on a clock (`Clock`): a second of work per
second, 1 / (1 + k) while a collective runs beside it, none while a hook holds it (h); every
gradient is ready when backward has done its share of that work, on that clock.

- Gradients become ready in reverse parameter order, each when backward has done the
  multiply-adds of the layers behind it (`ready_shares`).
- DDP (`framework.kind: ddp`): buckets as DDP forms them (first 1 MiB, then `bucket_cap_mb`),
  each launched once ready and the previous one is done.
- Horovod (`horovod`): a background loop wakes every `cycle_time`; at each wake-up the
  tensors ready by then are fused into buffers of at most `fusion_mb` (a bigger tensor goes
  alone) and all-reduced one after another; the next wake-up is a cycle later or when those
  are done, whichever is later.
- Each collective takes `collective.allreduce_time` (achieved bandwidth, latency, overhead).
- Interference k (`interference`): while a collective runs beside backward, backward runs
  k slower, so it ends later and so do the gradients it has not produced yet: the buckets
  after a slowed stretch are ready (and start) later too.
- f (`framework.step_overhead`): the framework's own cost per step at N >= 2 against the
  1-GPU figures, which run without it (DDP's reducer hooks and bucket copies).
- e: a compressor's encoding and decoding (the profile's `compress_s`), compute on the same
  device: a bucket's collectives start once it is encoded (its share, by size).
- h: a compressor that waits inside its hook for a bucket's first collectives (PowerSGD's
  all-reduce of P: `blocking_collectives`) holds the backward up from the hook's call until
  they complete, queue included: backward stops for that long.
- end: when the last collective completes; what lies past backward is exposed.
- buffers: the broadcasts of rank 0's buffers before the forward (one per dtype; DDP's
  `broadcast_buffers`), nothing beside them to hide behind: all of it exposed.
scaling_efficiency(N) = step(1) / step(N), step(1) = forward + backward + optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from dist_sqz.comm.buckets import ddp_bucket_groups
from dist_sqz.costmodel.collective import allreduce_time, collective_time
from dist_sqz.costmodel.spec import ClusterSpec


@dataclass(frozen=True)
class Grad:
    nbytes: int
    ready: float  # share of backward done when it is ready
    shapes: tuple = ()  # of the parameters in it (DDP buckets), for a compressor's plan


Plan = Callable[[Grad], list[tuple[str, int]]]  # a bucket -> its collectives (kind, bytes)


@dataclass(frozen=True)
class Step:
    step_s: float
    comm_s: float  # collectives' time summed (overheads included)
    exposed_s: float  # past the end of backward, and the buffers' broadcasts before forward
    interference_s: float  # backward's slowdown from overlapped collectives
    collectives: int


def gradients(model: nn.Module, shares: dict[str, float]) -> list[Grad]:
    """Trainable parameters in registration order, each with its ready share."""
    return [
        Grad(p.numel() * p.element_size(), shares[n])
        for n, p in model.named_parameters()
        if p.requires_grad
    ]


def ddp_schedule(
    model: nn.Module, shares: dict[str, float], cap_mb: float, first_mb: float | None = None
) -> list[Grad]:
    """DDP's buckets in launch order, each ready when its last gradient is."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        Grad(
            sum(p.numel() * p.element_size() for _, p in g),
            max(shares[n] for n, _ in g),
            tuple(p.shape for _, p in g),
        )
        for g in ddp_bucket_groups(params, cap_mb, first_mb)
    ]


class Clock:
    """Backward's own work against the wall clock (seconds from backward's start): it does a
    second of work per second, 1 / (1 + k) while a collective runs beside it, and none while
    a hook holds it. Collectives and holds are added as they are scheduled; each starts no
    earlier than the moment the work it depends on is done, so earlier answers stand."""

    def __init__(self, k: float) -> None:
        self.rate_beside_comm = 1 / (1 + k)
        self.comm: list[tuple[float, float]] = []
        self.holds: list[tuple[float, float]] = []

    def _segments(self):
        """(start, end, rate) from 0 to the last interval's end."""
        cuts = sorted({0.0, *(x for span in self.comm + self.holds for x in span)})
        for a, b in zip(cuts, cuts[1:], strict=False):
            mid = (a + b) / 2
            if any(s <= mid < e for s, e in self.holds):
                rate = 0.0
            elif any(s <= mid < e for s, e in self.comm):
                rate = self.rate_beside_comm
            else:
                rate = 1.0
            yield a, b, rate

    def wall(self, work: float) -> float:
        """When backward has done `work` seconds of its work."""
        done, t = 0.0, 0.0
        for a, b, rate in self._segments():
            if rate and done + (b - a) * rate >= work:
                return a + (work - done) / rate
            done, t = done + (b - a) * rate, b
        return t + work - done

    def work(self, wall: float) -> float:
        """How much of its work backward has done by `wall`."""
        done, t = 0.0, 0.0
        for a, b, rate in self._segments():
            if b >= wall:
                return done + (wall - a) * rate
            done, t = done + (b - a) * rate, b
        return done + wall - t


def step_time(
    compute: dict[str, float],
    grads: list[Grad],
    n: int,
    spec: ClusterSpec,
    bucketed: bool,
    plan: Plan | None = None,
    compress_s: float = 0.0,
    blocking: int = 0,
    buffers: tuple[int, ...] = (),
) -> Step:
    """`grads`: DDP buckets (`bucketed`) or single gradients in registration order. With a
    compressor, `plan` gives each bucket's collectives and `compress_s` the step's encoding
    and decoding compute, shared among buckets by size and done on the device that runs
    backward: a bucket's collectives start once it is encoded, and backward ends later.
    `blocking`: how many of a bucket's collectives the hook waits for. On one worker nothing
    travels, but DDP still calls the hook: the encoding is still paid. `buffers`: the bytes
    of each buffer broadcast before the forward."""
    fwd, bwd, opt = compute["forward_s"], compute["backward_s"], compute["optimizer_s"]
    if n <= 1:
        return Step(fwd + bwd + opt + compress_s, 0.0, 0.0, 0.0, 0)
    f = spec.framework.step_overhead
    bwd_n = bwd * (1 + f)
    clock = Clock(spec.interference)
    if plan is not None or bucketed or spec.framework.kind == "ddp":
        _ddp_spans(grads, n, spec, bwd_n, plan, compress_s, blocking, clock)
    else:
        _horovod_spans(grads, n, spec, bwd_n, clock)
    spans = clock.comm
    comm = sum(e - s for s, e in spans)
    backward_done = clock.wall(bwd_n + compress_s)
    held = sum(e - s for s, e in clock.holds)
    slowed = backward_done - bwd_n - compress_s - held
    end = max([backward_done] + [e for _, e in spans])
    pre = sum(collective_time(spec, "broadcast", b, n) for b in buffers)
    step = (fwd + opt) * (1 + f) + pre + end
    exposed = end - backward_done + pre
    return Step(step, comm + pre, exposed, slowed, len(spans) + len(buffers))


def _ddp_spans(
    grads: list[Grad],
    n: int,
    spec: ClusterSpec,
    bwd: float,
    plan: Plan | None,
    compress_s: float,
    blocking: int,
    clock: Clock,
) -> None:
    """Each bucket's collectives onto the clock, and the holds of hooks that wait."""
    free, encoded = 0.0, 0.0
    total = sum(g.nbytes for g in grads) or 1
    for b in grads:
        encoded += compress_s * b.nbytes / total
        called = clock.wall(b.ready * bwd + encoded)  # the hook runs when backward gets there
        at = max(free, called)
        collectives = plan(b) if plan is not None else [("allreduce", b.nbytes)]
        for i, (kind, size) in enumerate(collectives):
            clock.comm.append((at, at + collective_time(spec, kind, size, n)))
            at = clock.comm[-1][1]
            if i + 1 == blocking:
                clock.holds.append((called, at))
        free = at


def _horovod_spans(grads: list[Grad], n: int, spec: ClusterSpec, bwd: float, clock: Clock):
    """Horovod's cycle: wake, fuse what is ready (<= fusion buffer), reduce, sleep."""
    cycle = spec.framework.cycle_s
    fusion = spec.framework.fusion_mb * 2**20
    pending = sorted(reversed(grads), key=lambda g: g.ready)  # backward order
    t = 0.0
    while pending:
        done = clock.work(t)
        ready = [g for g in pending if g.ready * bwd <= done + 1e-12]
        if not ready:  # sleep through the cycles before the next gradient is ready
            wait = clock.wall(pending[0].ready * bwd) - t
            t += max(1, math.ceil(wait / cycle)) * cycle if cycle > 0 else wait
            continue
        pending = pending[len(ready) :]
        free = t
        for size in _fuse([g.nbytes for g in ready], fusion):
            clock.comm.append((free, free + allreduce_time(spec, size, n)))
            free = clock.comm[-1][1]
        t = max(t + cycle, free)


def _fuse(sizes: list[int], cap: float) -> list[int]:
    """Buffers of at most `cap` bytes, in order; a tensor over `cap` goes alone."""
    out: list[int] = []
    cur = 0
    for s in sizes:
        if cur and cur + s > cap:
            out.append(cur)
            cur = 0
        cur += s
    if cur:
        out.append(cur)
    return out
