"""What the meter attaches to a user's Horovod `DistributedOptimizer`.

Its compression is wrapped (`comm.backends.horovod.AccountedCompression`, the same wrapper
`dist-sqz train --backend horovod` uses): every tensor it hands to `allreduce_async_` is
accounted after compression, fp16 included; a watcher thread stamps each all-reduce's
completion from the optimizer's handles. Horovod sends no buffer after
`broadcast_parameters`: nothing else travels in a step.
"""

from __future__ import annotations

from typing import Any

import torch

from dist_sqz.comm.accounting import Ledger
from dist_sqz.comm.backends.horovod import AccountedCompression, HorovodCollectives
from dist_sqz.errors import UsageError
from dist_sqz.meter.ddp import InputWatch


class HorovodWatch(InputWatch):
    def __init__(self, opt: Any, model: torch.nn.Module | None) -> None:
        super().__init__()
        import horovod.torch as hvd

        if not hasattr(opt, "_compression") or not hasattr(opt, "_handles"):
            raise UsageError(
                f"{type(opt).__name__} is not a Horovod DistributedOptimizer: watch "
                "hvd.DistributedOptimizer(optimizer, named_parameters=...)"
            )
        if isinstance(opt._compression, AccountedCompression):
            raise UsageError("this optimizer already has a meter; attach one meter per model")
        try:
            self.rank, self.world_size = hvd.rank(), hvd.size()
        except ValueError:
            raise UsageError("Horovod is not initialised: call hvd.init() first") from None
        self.hvd, self.opt = hvd, opt
        self.ledger = Ledger(self.world_size)
        self.collectives = HorovodCollectives(self.ledger, hvd)
        self.collectives.native_opt = opt
        self.inner = opt._compression
        opt._compression = AccountedCompression(self.inner, self.ledger, self.collectives)
        params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
        self.params = sum(p.numel() for p in params)
        self.device = str(params[0].device) if params else "cpu"
        self.model = model
        self.model_class = type(model) if model is not None else type(opt)
        self.hook = "fp16" if "FP16" in type(self.inner).__name__ else "allreduce"
        self.broadcast_buffers = False
        self._pre = None
        if model is not None:
            self._pre = model.register_forward_pre_hook(
                lambda _m, inputs: self.saw(inputs) if torch.is_grad_enabled() else None
            )

    def end_step(self) -> None:
        self.settle(self.ledger)
        self.collectives.end_step()

    def gather(self, obj: Any) -> list[Any]:
        return self.hvd.allgather_object(obj)

    def parameters_holder(self) -> torch.nn.Module:
        holder = torch.nn.Module()
        for i, g in enumerate(self.opt.param_groups):
            holder.register_module(f"g{i}", torch.nn.ParameterList(g["params"]))
        return holder

    def close(self) -> None:
        if self._pre is not None:
            self._pre.remove()
        if isinstance(self.opt._compression, AccountedCompression):
            self.opt._compression = self.inner
        self.collectives.close()
