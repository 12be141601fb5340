"""torch.distributed DDP over gloo (CPU) or nccl (GPU), with an accounting comm hook."""

# No `from __future__ import annotations`: DDP checks the hook's annotations at run time.

import datetime
import hashlib
import inspect
import os
import socket
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from dist_sqz.comm.backends.base import BACKENDS, Backend, BackendOptions
from dist_sqz.comm.buckets import DEFAULT_BUCKET_CAP_MB
from dist_sqz.comm.collectives import TorchCollectives
from dist_sqz.comm.compression import Bucket, Compressor
from dist_sqz.comm.env import LaunchEnv
from dist_sqz.errors import UsageError


def wait_for_listener(addr: str, port: int, timeout_s: float) -> bool:
    """True once a TCP connection to addr:port succeeds; False after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((addr, port), timeout=min(2.0, timeout_s)):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def init_process_group(backend: str, env: LaunchEnv, timeout_s: float) -> None:
    """Join the job through torch's env:// rendezvous (a local store if alone).

    env:// reads MASTER_ADDR/MASTER_PORT; launchers other than torchrun may not set them, so
    the values `launch_env` settled on are exported first. Under torchrun the agent's store
    is used, which keeps elastic restarts apart.
    """
    timeout = datetime.timedelta(seconds=timeout_s)
    if env.world_size == 1:
        dist.init_process_group(
            backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
        )
        return
    os.environ.setdefault("MASTER_ADDR", env.master_addr)
    os.environ.setdefault("MASTER_PORT", str(env.master_port))
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    where = f"{addr}:{port}"
    if env.rank != 0 and not wait_for_listener(addr, port, timeout_s):
        raise UsageError(
            f"nothing listens at the rendezvous {where} after {timeout_s:g}s; "
            "start rank 0 (or torchrun) there, or fix MASTER_ADDR/MASTER_PORT",
            rank=env.rank,
        )
    try:
        dist.init_process_group(
            backend,
            init_method="env://",
            rank=env.rank,
            world_size=env.world_size,
            timeout=timeout,
        )
    except (RuntimeError, ValueError, OSError) as e:
        lines = str(e).strip().splitlines()
        reason = lines[0][:160] if lines else type(e).__name__
        if os.environ.get("DIST_SQZ_NODE_ADDR"):  # a Slurm row's node (compare/slurm.py)
            iface = os.environ.get("GLOO_SOCKET_IFNAME") or "gloo's own pick"
            raise UsageError(
                f"could not complete the rendezvous at {where} with {env.world_size} workers "
                f"within {timeout_s:g}s ({reason}); this node used address "
                f"{os.environ['DIST_SQZ_NODE_ADDR']}, interface {iface}: pass --socket-ifname "
                "naming the interface that reaches the other nodes",
                rank=env.rank,
            ) from None
        raise UsageError(
            f"could not complete the rendezvous at {where} with "
            f"{env.world_size} workers within {timeout_s:g}s ({reason}); start all workers "
            "with the same world size and check MASTER_ADDR/MASTER_PORT",
            rank=env.rank,
        ) from None


def accounted_hook(
    state: "DDPBackend", bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: the compressor's exchange over accounted collectives.

    What goes on the wire is whatever the compressor hands to `all_reduce`/`all_gather`
    (the whole fp32 bucket without compression); the ledger records its bytes and the time to
    completion. Under `compute_only()` the bucket comes back untouched, like torch's
    `noop_hook`. Registered by `DDPBackend.wrap`::

        ddp.register_comm_hook(backend, accounted_hook)
    """
    buf = bucket.buffer()
    if not state.comm_enabled:
        fut: torch.futures.Future = torch.futures.Future()
        fut.set_result(buf)
        return fut
    params = bucket.parameters()
    names = [state.param_names[id(p)] for p in params]
    shapes = [p.shape for p in params]
    return state.compressor.exchange(Bucket(buf, bucket.index(), shapes, names), state.collectives)


# DDP's own buffer broadcast (inside its forward, outside any comm hook) stays off: the
# trainer makes the same broadcast itself before the forward (`broadcast_buffers`,
# `Backend.sync_buffers`), through the accounted collectives, so every byte DDP sends per
# step is counted. Newer torch renamed the flag.
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
    else {"broadcast_buffers": False}
)


_INIT_SYNC = "init_sync" in inspect.signature(DDP.__init__).parameters  # torch >= 2.4


class DDPBackend(Backend):
    """DistributedDataParallel; `pg_backend` is the torch.distributed backend name."""

    pg_backend = "gloo"
    rebuilds_buckets = True

    def __init__(self, options: BackendOptions, env: LaunchEnv) -> None:
        super().__init__(options, env)
        self.name = self.pg_backend
        if self.pg_backend == "nccl":
            if not torch.cuda.is_available():
                raise UsageError("backend nccl needs a CUDA GPU; on CPU use --backend gloo")
            self.device = torch.device("cuda", env.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
            # Inputs keep one shape: let cuDNN time its algorithms once and keep the fastest
            # (what the profile and benchmarks/gpu_step.py's reference do too).
            torch.backends.cudnn.benchmark = True
        init_process_group(self.pg_backend, env, options.timeout_s)
        self.collectives = TorchCollectives(self.ledger, env.world_size)
        self.compressor: Compressor | None = None

    def wrap(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, compressor: Compressor
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        self.compressor = compressor
        self.param_names = {id(p): n for n, p in model.named_parameters()}
        ddp = DDP(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # No cap for the default: only then does torch keep the 1 MiB first bucket that
            # overlaps the last layers' exchange with backward (see comm/buckets.py).
            bucket_cap_mb=(
                None
                if self.options.bucket_cap_mb == DEFAULT_BUCKET_CAP_MB
                else self.options.bucket_cap_mb
            ),
            # Gradients live in DDP's buckets: no copy into the bucket before the exchange,
            # none back out after it, and one fewer model-sized buffer.
            gradient_as_bucket_view=True,
            **_NO_BUFFER_SYNC,
            **({"init_sync": False} if _INIT_SYNC and self._replicas_agree(model) else {}),
        )
        ddp.register_comm_hook(self, accounted_hook)
        return ddp, optimizer

    def _replicas_agree(self, model: nn.Module) -> bool:
        """Whether every rank already holds the same weights and buffers (the same seed, the
        same checkpoint): then DDP's construction broadcast of the whole model from rank 0
        sends nothing new and is skipped (AlexNet to 3 emulated hosts at 1 Gbit/s / 4.4 spent
        26 s of a 165 s row on it). A digest per rank decides; any difference, and DDP
        broadcasts as it would."""
        digest = hashlib.sha256()
        for name, t in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(t.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        return len(set(self.all_gather_object(digest.hexdigest()))) == 1

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        # Zeroed in place: the gradients stay views of DDP's buckets, and backward
        # accumulates straight into them. (None would have DDP copy each new one in.)
        optimizer.zero_grad(set_to_none=False)

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def control(self, flags: list[int]) -> list[int]:
        t = torch.tensor(flags, dtype=torch.int64, device=self.device)
        try:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)  # a few bytes, outside the accounting hook
        except RuntimeError as e:  # gloo's timeout on a dead peer or a cut link
            self.ledger.fail(e)
            raise
        return t.tolist()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


@BACKENDS.register("gloo")
class GlooBackend(DDPBackend):
    pg_backend = "gloo"


@BACKENDS.register("nccl")
class NCCLBackend(DDPBackend):
    pg_backend = "nccl"
