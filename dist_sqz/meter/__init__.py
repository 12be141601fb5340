"""The meter: dist_sqz's exact accounting in the user's own training script.

    meter = dist_sqz.Meter("runs/mine")
    model = meter.watch(DDP(net))         # Horovod: meter.watch(hvd_optimizer, model=net)
    for x, y in loader:
        ...
        optimizer.step()
        meter.step(loss)                  # where a step ends
    meter.close()                         # summary.json

Every rank measures; rank 0 writes the run folder `dist-sqz train` writes (`metrics.jsonl`,
`collectives.jsonl`, `config.yaml`, `summary.json`, docs/design.md), so `dist-sqz report` and
`compare --collect` read it as they read a train run. What is counted on DDP and on Horovod:
`meter/ddp.py`, `meter/horovod.py`; docs/meter.md.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from dist_sqz.comm.accounting import Ledger
from dist_sqz.errors import UsageError
from dist_sqz.observe.metrics import JsonlSink, build_summary, step_record, tx_counter
from dist_sqz.observe.step_view import log_line

__all__ = ["Meter"]


class Meter:
    """Exact bytes and communication time per step of a DDP or Horovod training loop.

    `out`: the run folder (rank 0 writes it; it must not hold a run already). `model`: the
    name the run is filed under (default: the model's class name). `warmup_steps`: the first
    steps, left out of the summary's medians (as `train --warmup-steps`). `iface`: a network
    interface whose transmitted bytes are each step's `wire_bytes`. `wandb`: "offline" or
    "online" logs each step to Weights & Biases as `train` does (project `wandb_project`)."""

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        model: str = "",
        warmup_steps: int = 1,
        iface: str = "",
        wandb: str = "off",
        wandb_project: str = "dist_sqz",
    ) -> None:
        if warmup_steps < 0:
            raise UsageError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.out, self.name, self.warmup_steps = Path(out), model, warmup_steps
        self.tx = tx_counter(iface)
        self.wandb, self.wandb_project = wandb, wandb_project
        self.ledger: Ledger | None = None
        self.watch_: Any = None  # meter.ddp.DDPWatch or meter.horovod.HorovodWatch
        self.rank, self.world_size = 0, 1
        self.steps: list[dict[str, Any]] = []
        self.sinks: list[Any] = []
        self.coll_log: JsonlSink | None = None
        self.last_end: float | None = None
        self.tx0: int | None = None
        self.closed = False

    # -- attaching --------------------------------------------------------------------
    def watch(self, target: Any, model: torch.nn.Module | None = None) -> Any:
        """Attach to a `DistributedDataParallel` model or a Horovod `DistributedOptimizer`
        (before training; after the user's own comm hook, if any); returns `target`. With
        Horovod, `model` (the module being trained) gives the batch size and when each
        step's work begins; without it, a step runs from the end of the one before."""
        if self.watch_ is not None:
            raise UsageError("this meter already watches a model; make one meter per model")
        if isinstance(target, torch.nn.parallel.DistributedDataParallel):
            import torch.distributed as dist

            if not dist.is_initialized():
                raise UsageError("the process group is not initialised: init_process_group first")
            self.rank = dist.get_rank(target.process_group)
            self.world_size = dist.get_world_size(target.process_group)
            self.ledger = Ledger(self.world_size)
            self._check_out()
            from dist_sqz.meter.ddp import DDPWatch

            self.watch_ = DDPWatch(target, self.ledger)
            self.module = target.module
            self.backend = dist.get_backend(target.process_group)
        elif type(target).__module__.startswith("horovod."):
            from dist_sqz.meter.horovod import HorovodWatch

            self.watch_ = HorovodWatch(target, model)
            self.rank, self.world_size = self.watch_.rank, self.watch_.world_size
            self.ledger = self.watch_.ledger
            try:
                self._check_out()
            except UsageError:
                self.watch_.close()
                raise
            self.module = model
            self.backend = "horovod"
        elif isinstance(target, torch.nn.Module):
            raise UsageError(
                f"the meter watches a DistributedDataParallel model; {type(target).__name__} "
                "is not wrapped (model = DDP(model), then meter.watch(model))"
            )
        else:
            raise UsageError(
                f"the meter watches a DistributedDataParallel model or a Horovod "
                f"DistributedOptimizer, not {type(target).__name__}"
            )
        return target

    def _check_out(self) -> None:
        """Rank 0's folder: new (or empty) and writable; refused before anything is written."""
        if self.rank != 0:
            return
        if (self.out / "metrics.jsonl").exists():
            raise UsageError(f"{self.out} already holds a run; give the meter a new folder")
        probe = self.out
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write the meter's folder {self.out} ({probe}: not writable)")

    # -- each step ----------------------------------------------------------------------
    def step(self, loss: float | torch.Tensor | None = None, lr: float | None = None) -> dict:
        """End a step: its bytes, collectives and times, as a metrics.jsonl record (written
        by rank 0; every rank returns its own). `loss` and `lr`, where given, are recorded."""
        if self.watch_ is None:
            raise UsageError("meter.step() before meter.watch(model or optimizer)")
        now = time.perf_counter()
        self.watch_.end_step()
        comm = self.ledger.take_step()
        start = self.watch_.started or self.last_end or now
        self.watch_.started, self.last_end = None, now
        wire = None
        if self.tx is not None:
            tx = self.tx()
            wire, self.tx0 = (None if self.tx0 is None else tx - self.tx0), tx
        done = len(self.steps) + 1
        cfg = self._config()
        record = step_record(
            SimpleNamespace(**cfg),
            self.world_size,
            done,
            float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
            if loss is not None
            else None,
            lr,
            max(now - start, 1e-9),
            None,
            comm,
            wire,
        )
        self.steps.append(record)
        if self.rank == 0:
            if not self.sinks:
                self._open()
            for sink in self.sinks:
                sink.write(record)
            self.coll_log.write(
                log_line(done, record["warmup"], self.world_size, comm.records, 1.0)
            )
        return record

    def _config(self) -> dict[str, Any]:
        """The run's config.yaml: train's keys where they mean the same thing."""
        w = self.watch_
        model = self.name or type(self.module or w.model_class).__name__
        return {
            "model": model,
            "backend": self.backend,
            "compression": "none",
            "comm_hook": w.hook,
            "batch_size": w.batch_size or 0,
            "image_size": w.image_size or 0,
            "steps": len(self.steps),
            "warmup_steps": self.warmup_steps,
            "broadcast_buffers": w.broadcast_buffers,
            "meter": True,
        }

    def _open(self) -> None:
        """Rank 0's sinks, at the first step (config.yaml waits for close(): its steps)."""
        from dist_sqz.observe.metrics import Logging, open_sinks

        self.out.mkdir(parents=True, exist_ok=True)
        cfg = self._config()
        log = Logging(steps=0, log_every=0, wandb=self.wandb, wandb_project=self.wandb_project)
        log.name = self.out.name
        self.sinks = [s for s in open_sinks(log, self.out, None, cfg) if _kept(s)]
        self.coll_log = JsonlSink(self.out / "collectives.jsonl", keep_below_step=None)

    # -- the end --------------------------------------------------------------------------
    def close(self) -> dict[str, Any] | None:
        """Detach, and write summary.json (rank 0; every rank takes part in the replica
        check, so every rank calls it). Returns the summary on rank 0."""
        if self.closed or self.watch_ is None:
            return None
        self.closed = True
        from dist_sqz.training.checkpoint import param_checksum

        checksums = self.watch_.gather(param_checksum(self.watch_.parameters_holder()))
        self.watch_.close()
        if self.rank != 0 or not self.steps:
            return None
        for sink in [*self.sinks, self.coll_log]:
            sink.close()
        import json

        import yaml

        cfg = self._config()  # its final steps
        (self.out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        summary = build_summary(
            self.steps,
            model=cfg["model"],
            backend=self.backend,
            compression="none",
            comm_hook=cfg["comm_hook"],
            world_size=self.world_size,
            batch_size=cfg["batch_size"],
            launcher=_launcher(),
            device=self.watch_.device,
            params=self.watch_.params,
            target_accuracy=None,
        )
        summary["replicas_consistent"] = len(set(checksums)) == 1
        summary["broadcast_buffers"] = cfg["broadcast_buffers"]
        summary["config"] = cfg
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
        elif self.watch_ is not None and not self.closed:  # leave the user's objects as found
            self.closed = True
            self.watch_.close()


def _kept(sink: Any) -> bool:
    """The meter writes records, not progress lines: the user's script has its own."""
    from dist_sqz.observe.metrics import ProgressSink

    return not isinstance(sink, ProgressSink)


def _launcher() -> str:
    from dist_sqz.comm.env import launch_env

    try:
        return launch_env().launcher
    except UsageError:
        return "unknown"
