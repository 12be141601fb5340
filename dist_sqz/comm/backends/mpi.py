"""mpi4py over MPI (Open MPI from PyPI): bucketed gradients, non-blocking all-reduce/gather.

Launch with `mpirun -np N python -m dist_sqz train --backend mpi`. Gradients are bucketed
like DDP's and each full bucket is exchanged with `Iallreduce`/`Iallgather` while backward
continues (`backends/bucketed.py`); fp16 and bf16 sums use a user-defined MPI operation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from dist_sqz.comm.backends.base import BACKENDS, Backend, BackendOptions
from dist_sqz.comm.backends.bucketed import BucketedExchange, SyncOptimizer
from dist_sqz.comm.collectives import PolledCollectives
from dist_sqz.comm.compression import Compressor
from dist_sqz.comm.env import LaunchEnv
from dist_sqz.errors import UsageError


def import_mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise UsageError(
            "backend mpi needs mpi4py and an MPI: pip install -e '.[mpi]' (mpi4py + Open MPI)"
        ) from None
    return MPI


class MPICollectives(PolledCollectives):
    def __init__(self, ledger, comm, MPI) -> None:
        super().__init__(ledger, comm.Get_size())
        self.comm = comm
        self.MPI = MPI
        self._ops = {
            torch.float32: ([MPI.FLOAT], MPI.SUM),
            torch.float64: ([MPI.DOUBLE], MPI.SUM),
        }
        for dtype in (torch.float16, torch.bfloat16):
            elem = MPI.BYTE.Create_contiguous(2).Commit()
            self._ops[dtype] = ([elem], MPI.Op.Create(self._summer(dtype), commute=True))

    @staticmethod
    def _summer(dtype: torch.dtype):
        def add(inbuf, inoutbuf, _datatype) -> None:
            acc = torch.frombuffer(inoutbuf, dtype=dtype)
            acc.add_(torch.frombuffer(inbuf, dtype=dtype))

        return add

    def _bytes(self, t: torch.Tensor):
        return t.reshape(-1).view(torch.uint8).numpy()

    def start_all_reduce(self, t: torch.Tensor):
        if t.dtype not in self._ops:
            raise UsageError(f"backend mpi cannot sum {t.dtype} tensors")
        (mpi_type,), op = self._ops[t.dtype]
        if t.dtype in (torch.float16, torch.bfloat16):
            buf = [self._bytes(t), t.numel(), mpi_type]
        else:
            buf = [t.numpy(), mpi_type]
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=op)

    def start_all_gather(self, t: torch.Tensor):
        out = torch.empty((self.world_size, *t.shape), dtype=t.dtype)
        req = self.comm.Iallgather(
            [self._bytes(t), self.MPI.BYTE], [self._bytes(out), self.MPI.BYTE]
        )
        return req, lambda: list(out.unbind(0))

    def start_broadcast(self, t: torch.Tensor):
        return self.comm.Ibcast([self._bytes(t), self.MPI.BYTE], root=0)

    def test(self, handle) -> bool:
        return handle.Test()

    def finish(self, handle) -> None:
        handle.Wait()


@BACKENDS.register("mpi")
class MPIBackend(Backend):
    """mpi4py; CPU tensors."""

    name = "mpi"

    def __init__(self, options: BackendOptions, env: LaunchEnv) -> None:
        super().__init__(options, env)
        MPI = import_mpi()
        self.comm = MPI.COMM_WORLD
        size, rank = self.comm.Get_size(), self.comm.Get_rank()
        if (size, rank) != (env.world_size, env.rank):
            raise UsageError(
                f"backend mpi sees MPI world size {size} (rank {rank}) but the launcher says "
                f"{env.world_size} (rank {env.rank}); launch with mpirun -np N"
            )
        self.collectives = MPICollectives(self.ledger, self.comm, MPI)
        self.comm_errors = (MPI.Exception,)
        self.exchange: BucketedExchange | None = None

    def wrap(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, compressor: Compressor
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        # Same start everywhere (weights come from the seed already; this makes it certain).
        for t in model.state_dict().values():
            self.comm.Bcast(t.numpy() if t.dtype != torch.bfloat16 else t.view(torch.int16))
        self.exchange = BucketedExchange(
            model, compressor, self.collectives, self.options.bucket_cap_mb
        )
        return model, SyncOptimizer(optimizer, self.exchange, self.options.grad_clip_norm)

    @contextlib.contextmanager
    def compute_only(self) -> Iterator[None]:
        self.exchange.enabled = False
        try:
            with super().compute_only():
                yield
        finally:
            self.exchange.enabled = True
            self.exchange.reset()

    def step(self, optimizer, scaler=None) -> torch.Tensor | None:  # no fp16 scaler (config)
        optimizer.step()  # SyncOptimizer: exchange, check and clip, step
        return optimizer.grad_norm

    def all_gather_object(self, obj: Any) -> list[Any]:
        return self.comm.allgather(obj)

    def close(self) -> None:
        self.collectives.close()
