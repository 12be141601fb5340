"""The compressor interface and its two exchange patterns (all-reduce, all-gather)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import torch

from dist_sqz.options import pick
from dist_sqz.registry import Registry

COMPRESSORS = Registry("compression")
T = TypeVar("T")


class Collectives(Protocol):
    """What a backend offers compressors: accounted, asynchronous collectives."""

    world_size: int

    def all_reduce(self, t: torch.Tensor) -> torch.futures.Future: ...

    def all_gather(self, t: torch.Tensor) -> torch.futures.Future: ...


@dataclass
class Bucket:
    """One flat gradient buffer and the shapes of the parameters laid out in it, in order."""

    buffer: torch.Tensor
    index: int
    shapes: Sequence[torch.Size]
    names: Sequence[str]

    def views(self) -> list[torch.Tensor]:
        """The buffer cut into one view per parameter, shaped like it."""
        out, at = [], 0
        for s in self.shapes:
            n = math.prod(s)
            out.append(self.buffer[at : at + n].view(s))
            at += n
        return out


class ParamState:
    """Per-parameter state (residuals, momenta) kept by name, so it survives DDP re-forming
    its buckets after the first step and a resume into fresh buckets.

    Once a bucket's state has been stored, `flat` hands back that same flat tensor (no copy)
    as long as the bucket holds the same parameters: ~0.2 s a step saved on AlexNet's 61 M.
    """

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._flats: dict[tuple[str, ...], torch.Tensor] = {}

    def flat(self, bucket: Bucket) -> torch.Tensor:
        """This bucket's state as one flat tensor laid out like the buffer (zeros if new)."""
        kept = self._flats.get(tuple(bucket.names))
        if kept is not None and kept.dtype == bucket.buffer.dtype:
            return kept
        parts = []
        for name, shape in zip(bucket.names, bucket.shapes, strict=True):
            t = self.tensors.get(name)
            if t is None or t.shape != shape:
                t = bucket.buffer.new_zeros(shape)
            parts.append(t.reshape(-1).to(bucket.buffer))
        return torch.cat(parts) if len(parts) > 1 else parts[0].clone()

    def store(self, bucket: Bucket, flat: torch.Tensor) -> None:
        names = tuple(bucket.names)
        at = 0
        for name, shape in zip(names, bucket.shapes, strict=True):
            n = math.prod(shape)
            self.tensors[name] = flat[at : at + n].view(shape)
            at += n
        stale = [key for key in self._flats if not set(key).isdisjoint(names)]
        for key in stale:
            del self._flats[key]
        self._flats[names] = flat

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.tensors.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.tensors = dict(state)
        self._flats = {}


def done_future(value: Any) -> torch.futures.Future:
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(value)
    return fut


class Compressor:
    """Base: `exchange` turns one rank's gradient bucket into the average over ranks, in place.

    Collectives must be issued from `exchange` itself (the thread that runs the backward
    pass), never from a completion callback: callbacks run on the collective library's
    threads in whatever order collectives finish, and ranks would then disagree on the order.
    """

    name = "base"
    owns_momentum = False  # True: the compressor applies momentum itself (the optimizer must not)
    encodes = True  # False: nothing to encode (compress_time_s stays 0)
    # How many of a bucket's planned collectives `exchange` waits for before it returns: the
    # backward is held up that long (the cost model prices it).
    blocking_collectives = 0

    @dataclass
    class Options:
        """A compressor's own settings (none here); subclasses declare theirs."""

    # Each option's train-config key: the flag and YAML key users set it by
    # (`compression_density` -> `density`). A compressor sees its options alone.
    KEYS: ClassVar[dict[str, str]] = {}

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else self.Options()
        self.step = 0
        self._compute_s = 0.0
        self._compute_lock = threading.Lock()

    # Emulated compute sets this (`EmulatedCompute.spend`): given a piece of encoding's CPU
    # seconds and its start (perf_counter), it pads the piece to the emulated time and answers
    # the wall seconds it took. None: encoding runs as fast as it runs here.
    pace: Callable[[float, float], float] | None = None
    # Emulated compute sets this (`EmulatedCompute.hold`): the backward was held up this many
    # seconds by a collective the compressor waited for inside the hook.
    held: Callable[[float], None] | None = None
    # A list while the step is traced: each piece of encoding's (start, end), perf_counter.
    pieces: list[tuple[float, float]] | None = None

    @contextmanager
    def computing(self) -> Iterator[None]:
        """Count the block's time as this compressor's own compute (encoding and decoding:
        `compress_time_s`). Host time: on CUDA it is the kernels' launch, unless they
        synchronise (`dist-sqz profile --compression` measures device time). Under
        emulated compute the block is padded by `pace` from its CPU time (this thread's)."""
        if not self.encodes:
            yield
            return
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            if self.pace is not None:
                wall = self.pace(time.thread_time() - c0, t0)
            else:
                wall = time.perf_counter() - t0
            self.add_compute(wall)
            if self.pieces is not None:
                self.pieces.append((t0, t0 + wall))

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """A collective waited for inside the hook (PowerSGD's first): the backward stops
        meanwhile, here as on a GPU whose launching thread waits, and emulated compute
        moves its later deadlines as long (`held`)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.held is not None:
                self.held(time.perf_counter() - t0)

    def timed(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args), counted as this compressor's compute (`computing`)."""
        with self.computing():
            return fn(*args)

    def add_compute(self, seconds: float) -> None:
        with self._compute_lock:
            self._compute_s += seconds

    def take_compute_s(self) -> float:
        """Seconds of encoding and decoding since the last call (decoding that completes on
        the collective library's threads included once it has run)."""
        with self._compute_lock:
            out, self._compute_s = self._compute_s, 0.0
        return out

    @classmethod
    def options_from(cls, settings: Mapping[str, Any] | Any) -> Any:
        """This compressor's `Options` read from train settings (a mapping or a config
        object); settings it does not name keep their defaults."""
        return pick(cls.Options, settings, cls.KEYS)

    @classmethod
    def adjust_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """Train settings this compressor changes before a run starts (say, moving a
        setting to its own option); what changed, recorded in config.yaml. None here."""
        return {}

    def set_step(self, step: int) -> None:
        """Called before each training step (0-based) so schedules can follow it."""
        self.step = step

    def exchange(self, bucket: Bucket, comm: Collectives) -> torch.futures.Future:
        raise NotImplementedError

    def plan(self, shapes: Sequence[torch.Size]) -> list[tuple[str, int]]:
        """The collectives `exchange` issues for a bucket of fp32 parameters of these shapes,
        in order, each as (allreduce | allgather, payload bytes per rank), once past any
        warm-up: what the cost model prices (tests hold it to the accounted payloads)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Per-rank state a checkpoint must keep (error-feedback residuals...)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    @property
    def has_state(self) -> bool:
        """Whether this compressor keeps per-rank state that a resume must restore."""
        return bool(self.state_dict())


class AllReduceCompressor(Compressor):
    """compress -> all-reduce (sum) -> decompress -> divide by N. Payloads must sum linearly."""

    def compress(self, grad: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return grad, None

    def decompress(self, payload: torch.Tensor, ctx: Any, like: torch.Tensor) -> torch.Tensor:
        return payload

    payload_bytes_per_value = 4  # fp32 as it is

    def plan(self, shapes: Sequence[torch.Size]) -> list[tuple[str, int]]:
        values = sum(math.prod(s) for s in shapes)
        return [("allreduce", values * self.payload_bytes_per_value)]

    def exchange(self, bucket: Bucket, comm: Collectives) -> torch.futures.Future:
        grad = bucket.buffer
        payload, ctx = self.timed(self.compress, grad)
        n = comm.world_size

        def finish(fut: torch.futures.Future) -> torch.Tensor:
            out = self.timed(self.decompress, fut.value(), ctx, grad)
            if out is not grad:
                grad.copy_(out)
            return grad.div_(n)

        return comm.all_reduce(payload).then(finish)


class GatherCompressor(Compressor):
    """compress to a per-rank payload -> all-gather -> every rank decodes all N the same way.

    For payloads that do not sum (sparse values + indices, int8 with per-rank scales). All
    ranks decode the gathered list in rank order, so they compute bit-identical averages.
    """

    def encode(self, bucket: Bucket) -> torch.Tensor:
        raise NotImplementedError

    def decode_sum(self, payloads: list[torch.Tensor], out: torch.Tensor) -> None:
        """Write the sum of every rank's decoded gradient into `out` (zeroed by the caller)."""
        raise NotImplementedError

    def exchange(self, bucket: Bucket, comm: Collectives) -> torch.futures.Future:
        grad = bucket.buffer
        payload = self.timed(self.encode, bucket)
        n = comm.world_size

        def finish(fut: torch.futures.Future) -> torch.Tensor:
            grad.zero_()
            self.timed(self.decode_sum, fut.value(), grad)
            return grad.div_(n)

        return comm.all_gather(payload).then(finish)
