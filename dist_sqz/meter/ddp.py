"""What the meter attaches to a user's DistributedDataParallel model.

- **Collectives.** `torch.distributed`'s `all_reduce`, `all_gather`, `all_gather_into_tensor`
  and `broadcast` are wrapped (once per process, while a meter watches): a call on a watched
  model's process group is accounted in that meter's ledger (payload, issue to completion)
  and otherwise left as it was. A comm hook the user registered (PowerSGD, fp16, their own)
  keeps running as written: the collectives it issues are counted, compressed bytes as sent.
- **No hook of the user's.** DDP's built-in all-reduce runs inside its C++ reducer, out of
  Python's sight: at the first training forward the meter registers the same exchange as a
  hook (the bucket's mean by all-reduce, torch's `allreduce_hook`), counted like any other.
  A *built-in* hook (`_register_builtin_comm_hook`) cannot be seen and is refused.
- **Buffers.** DDP's `broadcast_buffers` (its default) sends rank 0's buffers before each
  training forward through `_distributed_broadcast_coalesced`; the meter makes the same
  broadcast one dtype at a time (as DDP coalesces them), each accounted. The broadcasts of
  a forward without gradients (an evaluation) are made but not counted in a step.
"""

# No `from __future__ import annotations`: DDP checks the hook's annotations at run time.

import functools
import inspect
import itertools
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from dist_sqz.comm.accounting import Ledger
from dist_sqz.comm.buckets import buffer_groups
from dist_sqz.comm.collectives import nbytes, stamp_done, start_timing
from dist_sqz.errors import UsageError

# (function, collective kind, which argument is the payload)
_WRAPPED = (
    ("all_reduce", "allreduce", "tensor"),
    ("broadcast", "broadcast", "tensor"),
    ("all_gather", "allgather", "tensor"),
    ("all_gather_into_tensor", "allgather", "input_tensor"),
)
_watches: list["DDPWatch"] = []
_originals: dict[str, Callable[..., Any]] = {}
_serials = itertools.count()


def _accounted(name: str, kind: str, arg: str) -> Callable[..., Any]:
    original = _originals[name]
    signature = inspect.signature(original)

    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        watch = _watch_for(bound.arguments.get("group"))
        if watch is None or not watch.counting:
            return original(*args, **kwargs)
        payload = bound.arguments[arg]
        rec = watch.ledger.begin(kind, nbytes(payload))
        start = start_timing(payload)
        asked_async = bound.arguments.get("async_op")
        bound.arguments["async_op"] = True
        work = original(*bound.args, **bound.kwargs)
        work.get_future().then(lambda _fut: stamp_done(rec, start))
        if asked_async:
            return work
        work.wait()
        return None

    return call


def _watch_for(group: Any) -> "DDPWatch | None":
    for w in _watches:
        if group is w.group or (w.default_group and (group is None or group is dist.group.WORLD)):
            return w
    return None


def _install() -> None:
    if _originals:
        return
    for name, kind, arg in _WRAPPED:
        _originals[name] = getattr(dist, name)
        setattr(dist, name, _accounted(name, kind, arg))


def _uninstall() -> None:
    for name, fn in _originals.items():
        setattr(dist, name, fn)
    _originals.clear()


class _HookState:
    """The hook's state: the model, weakly (the reducer keeps its hook's state for as long as
    it lives; a process group held from there outlived destroy_process_group and aborted
    the interpreter at exit now and then)."""

    def __init__(self, ddp: torch.nn.parallel.DistributedDataParallel) -> None:
        self.ddp = weakref.ref(ddp)


def mean_allreduce_hook(
    state: _HookState, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """DDP's own exchange as a hook: the bucket's mean over ranks (torch's allreduce_hook)."""
    group = state.ddp().process_group
    buf = bucket.buffer().div_(dist.get_world_size(group))
    work = dist.all_reduce(buf, group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


class InputWatch:
    """What a training forward tells the meter: when the step's work began, and the batch
    (its size and image size) each rank feeds."""

    def __init__(self) -> None:
        self.batch_size: int | None = None
        self.image_size: int | None = None
        self.started: float | None = None  # the step's first training forward

    def saw(self, inputs: Any) -> None:
        if self.started is None:
            self.started = time.perf_counter()
        first = inputs[0] if inputs else None
        if self.batch_size is None and isinstance(first, torch.Tensor) and first.dim() > 0:
            self.batch_size = int(first.shape[0])
            self.image_size = int(first.shape[-1]) if first.dim() == 4 else None

    def settle(self, ledger: Ledger, timeout_s: float = 5.0) -> None:
        """Wait (briefly) for the step's completion stamps: a collective's future may run its
        callbacks just after the waiter that ended backward was released."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline and any(
            r.end_s is None and r.cuda_events is None for r in ledger.open_records()
        ):
            time.sleep(1e-4)


class DDPWatch(InputWatch):
    """The meter's view of one DDP model: its group, its ledger, and the hooks above."""

    def __init__(self, ddp: torch.nn.parallel.DistributedDataParallel, ledger: Ledger) -> None:
        if any(w.ddp is ddp for w in _watches):
            raise UsageError("this DDP model already has a meter; attach one meter per model")
        builtin = ddp._get_ddp_logging_data().get("comm_hook")
        if builtin and not ddp._comm_hooks:
            raise UsageError(
                f"DDP's built-in comm hook {builtin} runs inside torch's C++ reducer, where no "
                "byte can be counted; register its Python twin (torch.distributed.algorithms."
                "ddp_comm_hooks.default_hooks) with register_comm_hook instead"
            )
        super().__init__()
        self.ddp, self.ledger = ddp, ledger
        self.group = ddp.process_group
        self.default_group = self.group is dist.distributed_c10d._get_default_group()
        self.counting = True
        self.user_hook = ddp._comm_hooks[0][0].__qualname__ if ddp._comm_hooks else None
        self.training_forward = False
        self.serial = next(_serials)  # this process's n-th watch: every rank counts alike
        self._pre = ddp.register_forward_pre_hook(self._before_forward)
        self._broadcast = getattr(ddp, "_distributed_broadcast_coalesced", None)
        params = [p for p in ddp.module.parameters() if p.requires_grad]
        self.params = sum(p.numel() for p in params)
        self.device = str(params[0].device) if params else "cpu"
        self.model_class = type(ddp.module)
        self.broadcast_buffers = bool(ddp.broadcast_buffers) and any(
            True for _ in ddp.module.buffers()
        )
        if self.broadcast_buffers:
            if self._broadcast is None:
                raise UsageError(
                    "this torch's DDP has no _distributed_broadcast_coalesced: its buffer "
                    "broadcasts cannot be counted; pass broadcast_buffers=False to DDP"
                )
            ddp._distributed_broadcast_coalesced = self._broadcast_buffers
        _install()
        _watches.append(self)

    @property
    def hook(self) -> str:
        """The gradient exchange: the user's hook's name, or the meter's all-reduce."""
        return self.user_hook or "allreduce"

    def _before_forward(self, _module: Any, inputs: Any) -> None:
        self.training_forward = torch.is_grad_enabled()  # DDP syncs buffers under no_grad
        if not self.training_forward:
            return
        self.saw(inputs)
        if not self.ddp._comm_hooks:  # the first forward, no hook of the user's: DDP's own
            self.ddp.register_comm_hook(_HookState(self.ddp), mean_allreduce_hook)

    def _broadcast_buffers(self, tensors: list, buffer_size: int, authoritative_rank: int = 0):
        if not self.training_forward:  # an evaluation's: made, not a step's
            return self._broadcast(tensors, buffer_size, authoritative_rank)
        for group in buffer_groups(tensors):
            rec = self.ledger.begin("broadcast", sum(nbytes(t) for t in group))
            self._broadcast(group, buffer_size, authoritative_rank)
            rec.end_s = time.perf_counter()  # blocking: done once it returns
        return None

    def end_step(self) -> None:
        self.settle(self.ledger)

    def gather(self, text: str) -> list[str]:
        """Every rank's `text` (a checksum), through the job's store, not a collective: a
        collective's work freed by gloo's thread just before a script's exit, its tensors
        Python's, aborted the rank now and then ("terminate called without an active
        exception")."""
        store = dist.distributed_c10d._get_default_store()
        n, rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        key = f"dist_sqz.meter.{self.serial}"  # the same on every rank
        store.set(f"{key}.{rank}", text)
        return [store.get(f"{key}.{r}").decode() for r in range(n)]

    def parameters_holder(self) -> torch.nn.Module:
        return self.ddp.module

    def close(self) -> None:
        self._pre.remove()
        if self._broadcast is not None and "_distributed_broadcast_coalesced" in vars(self.ddp):
            del self.ddp._distributed_broadcast_coalesced
        if self in _watches:
            _watches.remove(self)
        if not _watches:
            _uninstall()
        self.group = self.ddp = None  # nothing of the meter keeps a process group alive
