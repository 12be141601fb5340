"""Horovod (horovodrun, Gloo controller): `hvd.DistributedOptimizer` with accounted compression.

Launch with `horovodrun -np N python -m dist_sqz train --backend horovod`. Uncompressed and
fp16 runs go through `hvd.DistributedOptimizer` itself (Horovod's own fp16 compression): an
accounting wrapper around its `Compression` records each tensor's payload after compression
and the time from hand-off to `synchronize()` collecting it. Compressors that need an
all-gather or two rounds (int8, topk, dgc, powersgd, bf16) run through the same bucketing as
the MPI backend, over Horovod's asynchronous collectives.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from dist_sqz.comm.accounting import Ledger
from dist_sqz.comm.backends.base import BACKENDS, Backend, BackendOptions, clip_gradients, finite
from dist_sqz.comm.backends.bucketed import BucketedExchange, SyncOptimizer
from dist_sqz.comm.collectives import PolledCollectives, nbytes
from dist_sqz.comm.compression import Compressor
from dist_sqz.comm.env import LaunchEnv
from dist_sqz.errors import UsageError


def import_horovod():
    try:
        import horovod.torch as hvd
    except ImportError:
        raise UsageError(
            "backend horovod needs Horovod built for this torch: run launch/install_horovod.sh"
        ) from None
    return hvd


class AccountedCompression:
    """Wraps a Horovod `Compression`: what `compress` returns is what gets all-reduced.

    `compress` runs as the DistributedOptimizer hands a gradient to `allreduce_async_`: that
    is the collective's issue time. Its completion is stamped by the collectives' watcher
    thread, which polls the optimizer's handles (`HorovodCollectives.watch_more`), or at the
    latest by `decompress`, which runs once `synchronize` has collected it.
    """

    def __init__(self, inner, ledger: Ledger, watcher: HorovodCollectives) -> None:
        self.inner = inner
        self.ledger = ledger
        self.watcher = watcher

    def compress(self, tensor: torch.Tensor):
        out, ctx = self.inner.compress(tensor)
        rec = self.ledger.begin("allreduce", nbytes(out))
        self.watcher.wake()
        return out, (ctx, rec)

    def decompress(self, tensor: torch.Tensor, ctx):
        inner_ctx, rec = ctx
        if rec.end_s is None:
            rec.end_s = time.perf_counter()
        return self.inner.decompress(tensor, inner_ctx)


class HorovodCollectives(PolledCollectives):
    """Horovod's async all-reduce (sum) and all-gather; names repeat each step, in order."""

    def __init__(self, ledger: Ledger, hvd) -> None:
        super().__init__(ledger, hvd.size())
        self.hvd = hvd
        self._seq = itertools.count()
        self._results: dict[int, list[torch.Tensor]] = {}
        self.native_opt = None  # the DistributedOptimizer, on the native path

    def watch_more(self) -> bool:
        """Stamp the native DistributedOptimizer's all-reduces that have completed."""
        if self.native_opt is None:
            return False
        busy = False
        now = time.perf_counter()
        # Its `_handles` dict is replaced by load_state_dict: read it afresh each time.
        for handle, ctx in list(self.native_opt._handles.values()):
            if handle is None or ctx is None or ctx[1].end_s is not None:
                continue
            try:
                done = self.hvd.poll(handle)
            except (ValueError, RuntimeError):  # collected by synchronize() meanwhile
                continue
            if done:
                ctx[1].end_s = now
            else:
                busy = True
        return busy or any(r.end_s is None for r in self.ledger.open_records())

    def start_all_reduce(self, t: torch.Tensor):
        return self.hvd.allreduce_async_(t, name=f"dsqz.ar.{next(self._seq)}", op=self.hvd.Sum)

    def start_all_gather(self, t: torch.Tensor):
        handle = self.hvd.allgather_async(t.unsqueeze(0), name=f"dsqz.ag.{next(self._seq)}")
        box: list[torch.Tensor] = []
        self._results[id(handle)] = box
        return handle, lambda: list(box[0].unbind(0))

    def start_broadcast(self, t: torch.Tensor):
        return self.hvd.broadcast_async_(t, root_rank=0, name=f"dsqz.bc.{next(self._seq)}")

    def test(self, handle) -> bool:
        return self.hvd.poll(handle)

    def finish(self, handle) -> None:
        out = self.hvd.synchronize(handle)
        box = self._results.pop(id(handle), None)
        if box is not None:
            box.append(out)

    def end_step(self) -> None:
        """The step's collectives are done: the next step reuses the same names, in the same
        order (Horovod caches its negotiation per name)."""
        self._seq = itertools.count()


@BACKENDS.register("horovod")
class HorovodBackend(Backend):
    name = "horovod"

    def __init__(self, options: BackendOptions, env: LaunchEnv) -> None:
        super().__init__(options, env)
        self.hvd = hvd = import_horovod()
        hvd.init()
        if (hvd.size(), hvd.rank()) != (env.world_size, env.rank):
            raise UsageError(
                f"backend horovod sees world size {hvd.size()} (rank {hvd.rank()}) but the "
                f"launcher says {env.world_size} (rank {env.rank}); launch with horovodrun -np N"
            )
        self.collectives = HorovodCollectives(self.ledger, hvd)
        from horovod.common.exceptions import HorovodInternalError

        self.comm_errors = (HorovodInternalError,)
        self.hvd_opt = None
        self.exchange: BucketedExchange | None = None

    def wrap(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, compressor: Compressor
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        hvd = self.hvd
        wire = getattr(compressor, "dtype", None)  # what a cast compressor all-reduces
        if wire is not None and not self._reduces(wire, next(model.parameters()).device):
            import horovod

            raise UsageError(
                f"backend horovod {horovod.__version__} cannot all-reduce {wire} tensors "
                f"(compression {compressor.name}); use fp16 here, or backend gloo, nccl or mpi"
            )
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        native = {"none": hvd.Compression.none, "fp16": hvd.Compression.fp16}
        if compressor.name in native:
            self.hvd_opt = hvd.DistributedOptimizer(
                optimizer,
                named_parameters=model.named_parameters(),
                compression=AccountedCompression(
                    native[compressor.name], self.ledger, self.collectives
                ),
            )
            self.collectives.native_opt = self.hvd_opt
            hvd.broadcast_optimizer_state(self.hvd_opt, root_rank=0)
            return model, self.hvd_opt
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        self.exchange = BucketedExchange(
            model, compressor, self.collectives, self.options.bucket_cap_mb
        )
        return model, SyncOptimizer(optimizer, self.exchange, self.options.grad_clip_norm)

    @staticmethod
    def _reduces(dtype: torch.dtype, device: torch.device) -> bool:
        """Whether Horovod has an all-reduce for this tensor type, by its own rule (the check
        `allreduce_async_` makes before anything is sent; 0.28.1's CPU ops have no bfloat16,
        and a bf16 run died with a traceback at its first bucket)."""
        from horovod.torch.mpi_ops import _allreduce_function_factory, _check_function

        try:
            _check_function(_allreduce_function_factory, torch.zeros(1, dtype=dtype, device=device))
        except ValueError:
            return False
        return True

    @contextlib.contextmanager
    def compute_only(self) -> Iterator[None]:
        opt, ex = self.hvd_opt, self.exchange
        if opt is not None:
            # The hooks count down per backward pass and all-reduce at zero: out of reach here.
            opt.set_backward_passes_per_step(2**30)
        if ex is not None:
            ex.enabled = False
        try:
            with super().compute_only():
                yield
        finally:
            if opt is not None:
                opt._handles.clear()  # the (None, None) placeholders the hooks left
                opt.set_backward_passes_per_step(1)
            if ex is not None:
                ex.enabled = True
                ex.reset()

    def zero_grad(self, optimizer) -> None:
        if self.hvd_opt is None:
            return super().zero_grad(optimizer)
        if not self.comm_enabled:
            self.hvd_opt._handles.clear()
        self.hvd_opt.zero_grad()  # Horovod's takes no set_to_none; it sets None anyway

    def step(self, optimizer, scaler=None) -> torch.Tensor | None:  # no fp16 scaler (config)
        if self.hvd_opt is None:
            optimizer.step()  # SyncOptimizer: exchange, check and clip, step
            return optimizer.grad_norm
        optimizer.synchronize()
        norm = clip_gradients(optimizer, self.options.grad_clip_norm)
        if finite(norm):
            with optimizer.skip_synchronize():
                optimizer.step()
        else:
            optimizer._synchronized = False  # what its step() resets; no update applied
        return norm

    def all_gather_object(self, obj: Any) -> list[Any]:
        return self.hvd.allgather_object(obj)

    def close(self) -> None:
        self.collectives.close()
        self.hvd.shutdown()
