"""`TrainConfig`: one training run. Every field is a YAML key and a flag."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from dist_sqz.config.base import Config, WandbMode, check_model, registry_choices, setting
from dist_sqz.errors import UsageError


class TrainConfig(Config):
    """One training run. Field descriptions are what `dist-sqz train --help` prints."""

    model: str = setting(
        "squeezenet1_1",
        "model name (see `dist-sqz models`); family metaparameters as "
        "sqz_family:squeeze_ratio=0.25,pct3x3=0.75",
    )
    backend: str = setting("gloo", "gloo (CPU), nccl (GPU), mpi (mpi4py), horovod")
    compression: str = setting("none", "gradient compression")
    compression_density: float = setting(
        0.01, "topk/dgc: fraction of each bucket's values sent", gt=0, le=1
    )
    powersgd_rank: int = setting(2, "powersgd: rank of the gradient approximation", gt=0)
    powersgd_start_step: int = setting(
        0, "powersgd: plain all-reduce before this step (0-based)", ge=0
    )
    dgc_clip_norm: float = setting(
        0.0,
        "dgc: clip each bucket's gradient norm to this/sqrt(N) before accumulating; 0 = "
        "grad_clip_norm's value (dgc moves it here), off if neither is set",
        ge=0,
    )
    dgc_warmup_steps: int = setting(
        0, "dgc: steps over which density falls from 25% to its target", ge=0
    )
    dgc_momentum_masking: bool = setting(
        True,
        "dgc: zero the momentum of the entries just sent (momentum factor masking, as the "
        "paper); off keeps it",
    )
    compute_profile: str = setting(
        "", "emulated compute: pad to this profile's GPU times ('' = real)"
    )
    compute_precision: str = setting("bf16_cl", "emulated compute: the profile's precision")
    compute_batch_size: int = setting(
        0, "emulated compute: profile batch size (0 = batch_size)", ge=0
    )
    dilation: float = setting(
        1.0, "emulated compute: time dilation D (divide link rates by D)", gt=0
    )
    pad_encoding: bool = setting(
        False,
        "emulated compute from a profile of this machine: pad the compressor's encoding and "
        "decoding to D x their CPU time here, holding the backward up as long (compare's "
        "local mode sets it; no effect without compute_profile)",
    )
    trace_steps: str = setting(
        "",
        "write trace.json (Chrome trace / Perfetto) of steps A-B, e.g. 5-8 (from 1): every "
        "rank's phases, collectives, encoding and padding on one clock",
    )
    torch_profile_steps: str = setting(
        "",
        "torch.profiler over steps A-B (CPU, and CUDA on a GPU): each rank's Chrome trace "
        "torch_trace-rank<R>.json and torch_profile-rank<R>.txt (operators by self time, the "
        "host's waits on the device per step) in the run dir",
    )
    batch_size: int = setting(8, "images per worker per step", gt=0)
    steps: int = setting(20, "optimizer steps in total, warm-up included", gt=0)
    warmup_steps: int = setting(3, "first steps left out of summary medians", ge=0)
    data: str = setting("synthetic", "synthetic | digits | imagefolder:PATH | cifar10:PATH")
    image_size: int = setting(224, "input height and width in pixels", gt=0)
    num_classes: int = setting(0, "classifier outputs; 0 = from the data (synthetic: 1000)", ge=0)
    data_workers: int | None = setting(
        None, "DataLoader worker processes (null = 0 for in-memory data, else from the cores)", ge=0
    )
    augment: Literal["none", "standard"] = setting(
        "none", "standard: random translation (digits), resized crop + flip (image files)"
    )
    lr: float = setting(0.01, "SGD learning rate (of one worker: see lr_scaling)", gt=0)
    lr_scaling: Literal["none", "linear", "sqrt"] = setting(
        "none", "lr x 1, x N or x sqrt(N) at N workers (same per-worker batch)"
    )
    lr_max: float | None = setting(
        None,
        "cap on the scaled lr (null = none): the largest lr the recipe was shown to train at",
        gt=0,
    )
    lr_schedule: Literal["constant", "cosine", "step"] = setting(
        "constant", "after warm-up: constant, cosine to 0, or x0.1 at 50% and 75% of steps"
    )
    lr_warmup_steps: int = setting(0, "steps of linear lr warm-up before the schedule", ge=0)
    momentum: float = setting(0.9, "SGD momentum", ge=0)
    nesterov: bool = setting(False, "Nesterov momentum")
    weight_decay: float = setting(0.0, "SGD weight decay", ge=0)
    label_smoothing: float = setting(0.0, "cross-entropy label smoothing", ge=0, lt=1)
    grad_clip_norm: float | None = setting(
        None, "clip the averaged gradients' global L2 norm to this (null = off)", gt=0
    )
    skip_nonfinite_steps: int = setting(
        0,
        "steps whose loss or gradients are not finite to skip (no update, one line each) "
        "before stopping the run; 0 = stop at the first, keeping the last good checkpoint",
        ge=0,
    )
    stall_window: int = setting(
        50,
        "warn once the loss has sat at ln(classes), chance, this many steps in a row after "
        "the lr warm-up (a dead network); 0 = off",
        ge=0,
    )
    stop_when_stalled: bool = setting(False, "end the run (exit 1) when it stalls, after saving")
    eval_every: int = setting(
        0, "evaluate on the held-out split every N steps (0 = at the end)", ge=0
    )
    eval_batch_size: int = setting(256, "images per worker per evaluation batch", gt=0)
    target_accuracy: float | None = setting(
        None, "stop at the first evaluation with held-out accuracy >= this", gt=0, le=1
    )
    precision: Literal["fp32", "bf16", "fp16"] = setting(
        "fp32",
        "autocast dtype of forward and loss; weights and exchanged gradients stay fp32 "
        "(fp16 adds a gradient scaler: gloo/nccl only)",
    )
    channels_last: bool = setting(False, "model and inputs in channels_last memory format")
    compile: bool = setting(
        False, "torch.compile the data-parallel model (the comm hook still runs)"
    )
    seed: int = setting(0, "seed for weights, data order, dropout")
    bucket_cap_mb: float = setting(25.0, "DDP gradient bucket size in MiB", gt=0)
    broadcast_buffers: bool = setting(
        True,
        "before each training forward, send rank 0's buffers (BatchNorm statistics) to every "
        "rank, counted in the step's bytes (DDP's default; on every backend here)",
    )
    compute_probe_steps: int = setting(
        3, "no-communication steps timed for exposed_comm_s (0 = off)", ge=0
    )
    checkpoint_every: int = setting(
        0, "write checkpoints/last.pt every N steps (0 = by time only)", ge=0
    )
    keep_checkpoints: int = setting(
        2, "checkpoints kept: last.pt and the K-1 before it (step<S>.pt beside it)", ge=1
    )
    checkpoint_every_min: float = setting(
        10.0,
        "also write it once this many minutes have passed since the last one (0 = off); "
        "always at the end and on SIGTERM/SIGINT",
        ge=0,
    )
    timeout_s: float = setting(
        300.0, "seconds to wait for the rendezvous and for any collective", gt=0
    )
    out: str = setting("", "run directory (default runs/<time>-<name>, decided by rank 0)")
    name: str = setting("", "run name (default <model>-<backend>-<compression>-n<world size>)")
    log_every: int = setting(1, "progress line every N steps when stdout is not a terminal", gt=0)
    wandb: WandbMode = setting("off", "Weights & Biases logging")
    wandb_project: str = setting("dist_sqz", "W&B project")
    wandb_group: str = setting("", "W&B group (runs of one sweep share it)")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return check_model(v)

    @field_validator("backend", "compression")
    @classmethod
    def _registered(cls, v: str, info: Any) -> str:
        choices = registry_choices(info.field_name)
        if v not in choices:
            raise UsageError(f"{info.field_name} must be one of {', '.join(choices)}; got {v!r}")
        return v

    @field_validator("trace_steps", "torch_profile_steps")
    @classmethod
    def _trace_steps(cls, v: str, info: Any) -> str:
        from dist_sqz.observe.timeline import parse_steps

        try:
            parse_steps(v, info.field_name)
        except ValueError as e:
            raise UsageError(str(e)) from None
        return v

    @field_validator("data")
    @classmethod
    def _data(cls, v: str) -> str:
        from dist_sqz.training.data import check_data

        check_data(v)
        return v

    def model_post_init(self, _context: Any) -> None:
        if self.warmup_steps >= self.steps:
            raise UsageError(
                f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps}) "
                "so that some steps are measured"
            )
        if self.lr_warmup_steps >= self.steps:
            raise UsageError(
                f"lr_warmup_steps ({self.lr_warmup_steps}) must be smaller than steps "
                f"({self.steps})"
            )
        from dist_sqz.comm.compression import COMPRESSORS

        # A compressor may move a setting to its own option (DGC: grad_clip_norm to its
        # local clip); config.yaml records the move.
        for key, value in COMPRESSORS.get(self.compression).adjust_settings(self.to_dict()).items():
            setattr(self, key, value)
        if self.nesterov and self.momentum == 0:
            raise UsageError("nesterov needs momentum > 0")
        if self.precision == "fp16" and self.backend not in ("gloo", "nccl"):
            # The scaler skips a step whose averaged gradients overflowed; DDP averages before
            # it looks, so every rank skips alike. The other backends average inside step().
            raise UsageError(
                f"precision fp16 needs backend gloo or nccl (its gradient scaler); "
                f"use bf16 with {self.backend}"
            )
        if self.target_accuracy is not None and self.data == "synthetic":
            raise UsageError("target_accuracy needs data with a held-out split, not synthetic")
        from dist_sqz.models import check_input_size

        # A model too small for the image fails here, in the parent, not mid-rendezvous.
        check_input_size(self.model, self.image_size, self.num_classes or 10)
