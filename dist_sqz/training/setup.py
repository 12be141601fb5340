"""Setting up one training run: checks that can fail before the job forms, the backend and
the agreed run directory, data, model and optimizer (from a checkpoint when resuming), the
wrapped step, and run control. `train.Trainer` runs what this builds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dist_sqz.comm.backends import BACKENDS, Backend, BackendOptions
from dist_sqz.comm.compression import build_compressor
from dist_sqz.comm.env import LaunchEnv, launch_env, share_cpu_threads
from dist_sqz.compute.emulate import EmulatedCompute
from dist_sqz.compute.profiles import compute_times, load_profile
from dist_sqz.config import TrainConfig
from dist_sqz.errors import UsageError
from dist_sqz.models import build_model, check_input_size, count_params
from dist_sqz.observe.metrics import Sink, tx_counter
from dist_sqz.observe.timeline import StepTimeline, parse_steps
from dist_sqz.observe.torch_profile import TorchProfile
from dist_sqz.observe.wandb_sink import import_wandb
from dist_sqz.options import pick
from dist_sqz.training import checkpoint
from dist_sqz.training.data import (
    Batching,
    check_head,
    datasets_for,
    default_workers,
    held_out_batches,
    num_classes_of,
    train_batches,
)
from dist_sqz.training.health import NonFiniteGuard, StallWatch
from dist_sqz.training.optim import Schedule, sgd
from dist_sqz.training.recipes import uses_recipe
from dist_sqz.training.step import TrainStep
from dist_sqz.training.stopping import StepControl


def _workers(n: int) -> str:
    return f"{n} worker" + ("s" if n != 1 else "")


class TrainerSetup:
    """Builds one run's parts, in a fixed order (`_setup_*`); `Trainer` runs them."""

    def __init__(
        self, cfg: TrainConfig, resume: dict[str, Any] | None = None, restarted: bool = False
    ) -> None:
        env = launch_env()
        share_cpu_threads(env)
        self.env: LaunchEnv = env
        self.resume, self.restarted = resume, restarted
        # The order matters: bad input fails before the job forms or anything is written;
        # image loaders start their processes before the backend starts threads; the run
        # directory is agreed before model; the model before the backend wraps it.
        train_set, held_set, num_classes = self._setup_checks(cfg)
        self._start_loaders(cfg, train_set, held_set, num_classes)
        self.backend: Backend = BACKENDS.get(cfg.backend)(pick(BackendOptions, cfg), env)
        try:
            # Rank 0 alone names the run directory (a timestamp read on every rank could
            # differ).
            pick_dir = lambda: self._run_dir(cfg) if env.is_main else ("", "")  # noqa: E731
            name, out = self.backend.agree(pick_dir)[0]
            self.cfg = TrainConfig.build(
                cfg.to_dict(), {"name": name, "out": out, "num_classes": num_classes}
            )
            self.out = Path(out)
            self.device = self.backend.device
            if self.batches is None:  # synthetic: one batch, made on the device
                self.batches = self._synthetic(cfg, num_classes)
            self._setup_model(num_classes)
            self._setup_step(num_classes)
            self._setup_control(train_set, num_classes)
        except BaseException:
            # Leave no process group behind: exiting with gloo's threads alive aborted the
            # interpreter now and then ("terminate called without an active exception",
            # SIGABRT instead of exit 2 for a run directory that already held a run).
            self.backend.close()
            raise

    def _setup_checks(self, cfg: TrainConfig) -> tuple[Any, Any, int]:
        """What can be checked before the job forms: the data, the model's input size, the
        checkpoint's world size and step, W&B, the compute profile."""
        env, resume = self.env, self.resume
        # Image files are verified by one process per host (the data may be each node's own).
        train_set, held_set = datasets_for(cfg.data, cfg.image_size, env.local_rank == 0)
        num_classes = cfg.num_classes or num_classes_of(train_set)
        check_head(num_classes, train_set, cfg.data)
        check_input_size(cfg.model, cfg.image_size, num_classes)
        self.start_step = 0
        if resume is not None:
            if resume.get("world_size", env.world_size) != env.world_size:
                n = resume["world_size"]
                raise UsageError(
                    f"the checkpoint was written by {_workers(n)} but this run has "
                    f"{_workers(env.world_size)}; relaunch with {_workers(n)}"
                )
            self.start_step = int(resume["step"])
            if self.start_step >= cfg.steps:
                raise UsageError(
                    f"the run already finished {self.start_step} steps; pass --steps larger "
                    f"than {self.start_step} to train further"
                )
        if cfg.wandb != "off" and env.is_main:
            import_wandb()  # fail before anything is written
        if cfg.compute_profile:  # a missing profile or model entry fails here, not mid-run
            compute_times(
                load_profile(cfg.compute_profile),
                cfg.model,
                cfg.compute_batch_size or cfg.batch_size,
                cfg.compute_precision,
            )
        # Set by `dist-sqz cluster run`: this host's interface, whose tx bytes are wire_bytes.
        self.tx = tx_counter(os.environ.get("DIST_SQZ_WIRE_IFACE", ""))
        return train_set, held_set, num_classes

    def _start_loaders(
        self, cfg: TrainConfig, train_set: Any, held_set: Any, num_classes: int
    ) -> None:
        """The loaders of image data, their processes started before the job forms (why:
        `held_out_batches`); synthetic batches wait for the backend's device."""
        env = self.env
        workers = cfg.data_workers
        if workers is None:
            workers = default_workers(cfg.data, env.local_world_size)
        batching = pick(Batching, cfg)
        self.batches = None
        if train_set is not None:
            device = torch.device("cuda") if cfg.backend == "nccl" else None  # pins for a GPU
            self.batches = train_batches(
                batching,
                train_set,
                num_classes,
                env.rank,
                env.world_size,
                self.start_step,
                workers,
                device,
            )
        self.held_out = held_out_batches(batching, held_set, env.rank, env.world_size, workers)
        if cfg.target_accuracy is not None and self.held_out is None:
            raise UsageError(f"target_accuracy needs a held-out split; {cfg.data} has none")

    def _synthetic(self, cfg: TrainConfig, num_classes: int):
        env = self.env
        return train_batches(
            pick(Batching, cfg),
            None,
            num_classes,
            env.rank,
            env.world_size,
            self.start_step,
            0,
            self.device,
        )

    def _setup_model(self, num_classes: int) -> None:
        """Model, compressor and optimizer (from the checkpoint when resuming)."""
        cfg, env, resume = self.cfg, self.env, self.resume
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, num_classes).to(self.device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
        self.model.to(memory_format=self.memory_format)
        self.params = count_params(self.model)
        self.compressor = build_compressor(cfg.compression, cfg.to_dict())
        self.optimizer = sgd(
            self.model.parameters(),
            lr=cfg.lr,
            # DGC corrects momentum before sparsifying; the optimizer must not apply it again.
            momentum=0.0 if self.compressor.owns_momentum else cfg.momentum,
            nesterov=cfg.nesterov and not self.compressor.owns_momentum,
            weight_decay=cfg.weight_decay,
            fused=cfg.precision != "fp16",
        )
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            self.optimizer.load_state_dict(resume["optimizer"])
            # Every rank needs its own state; one that lacks it stops all, and says so.
            needed = self.compressor.has_state
            state = self.backend.agree(
                lambda: checkpoint.load_rank_state(self.out, env.rank, self.start_step, needed)
            )[env.rank]
            self.compressor.load_state_dict(state)
        # fp16 scales the loss so small gradients survive; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        if self.scaler and resume is not None and "scaler" in resume:
            self.scaler.load_state_dict(resume["scaler"])

    def _setup_step(self, num_classes: int) -> None:
        """The backend wraps model and optimizer; emulated compute pads the phases."""
        cfg = self.cfg
        train_model, self.optimizer = self.backend.wrap(self.model, self.optimizer, self.compressor)
        if cfg.compile:  # of the wrapped model: DDP's optimizer splits graphs at its buckets
            train_model = torch.compile(train_model)
        self.emu = (
            EmulatedCompute(
                self.model,
                cfg.compute_profile,
                cfg.model,
                cfg.compute_batch_size or cfg.batch_size,
                cfg.compute_precision,
                cfg.dilation,
                num_classes,
            )
            if cfg.compute_profile
            else None
        )
        self.dilation = self.emu.dilation if self.emu else 1.0
        if self.emu:
            self.compressor.held = self.emu.hold
        if self.emu and cfg.pad_encoding:
            self.compressor.pace = self.emu.spend
        autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.train_step = TrainStep(
            train_model,
            self.optimizer,
            self.backend,
            cfg.label_smoothing,
            autocast,
            self.scaler,
            self.emu,
            cfg.broadcast_buffers,
        )

    def _setup_control(self, train_set: Any, num_classes: int) -> None:
        """Sinks, the per-step agreement, and the health watches."""
        cfg, env = self.cfg, self.env
        self.schedule = pick(Schedule, cfg)
        self.sinks: list[Sink] = []
        self.coll_log: Sink | None = None  # rank 0: collectives.jsonl
        self.compute_s: float | None = None
        self.control = StepControl(
            self.backend, env.is_main, env.world_size, cfg.checkpoint_every_min
        )
        self.guard = NonFiniteGuard(cfg.skip_nonfinite_steps, env.is_main, env.world_size, cfg.lr)
        self.stall = StallWatch(
            cfg.stall_window,
            max(cfg.warmup_steps, cfg.lr_warmup_steps),
            None if train_set is None else len(train_set.classes),
            num_classes,
            cfg.model,
            cfg.lr,
            cfg.data,
            uses_recipe(cfg.to_dict()),
        )
        self.ckpt = checkpoint.Checkpointer(
            self.out,
            env.rank,
            env.world_size,
            cfg.keep_checkpoints,
            self.backend.control,
            self.start_step if self.resume is not None else None,
        )
        self.stall_warned = self.stopped_stalled = False
        self.timeline = StepTimeline(
            env.rank, env.world_size, self.dilation, parse_steps(cfg.trace_steps)
        )
        self.torch_profile = TorchProfile(
            parse_steps(cfg.torch_profile_steps), self.out, env.rank, self.device.type == "cuda"
        )

    def _run_dir(self, cfg: TrainConfig) -> tuple[str, str]:
        name, out = checkpoint.default_out(cfg, self.env.world_size)
        if self.resume is None and not self.restarted:  # a restart before any checkpoint
            checkpoint.check_new_run_dir(Path(out))  # starts over in its own directory
        return name, out
