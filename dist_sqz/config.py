"""Typed training config: defaults < YAML file < command-line flags, validated once at start-up.

Every field is both a YAML key and a flag (`batch_size` <-> `--batch-size`); `--set key=value`
sets any key too. A bad value raises `UsageError` naming the field.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from dist_sqz.errors import UsageError

BACKENDS = ("gloo", "nccl", "mpi", "horovod")
COMPRESSIONS = ("none", "fp16", "bf16", "int8", "topk", "dgc", "powersgd")
WANDB_MODES = ("off", "offline", "online")


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """One training run. Field docs are what `dist-sqz train --help` prints."""

    model: str = _f("squeezenet1_1", "model name (see `dist-sqz models`)")
    backend: str = _f("gloo", "gloo (CPU), nccl (GPU), mpi (mpi4py), horovod", choices=BACKENDS)
    compression: str = _f("none", "gradient compression", choices=COMPRESSIONS)
    compression_density: float = _f(0.01, "topk/dgc: fraction of each bucket's values sent")
    powersgd_rank: int = _f(2, "powersgd: rank of the gradient approximation")
    powersgd_start_step: int = _f(0, "powersgd: plain all-reduce before this step (0-based)")
    dgc_clip_norm: float = _f(0.0, "dgc: clip each bucket's gradient norm to this/sqrt(N); 0=off")
    dgc_warmup_steps: int = _f(0, "dgc: steps over which density falls from 25% to its target")
    compute_profile: str = _f("", "emulated compute: pad to this profile's GPU times ('' = real)")
    compute_precision: str = _f("bf16_cl", "emulated compute: the profile's precision")
    compute_batch_size: int = _f(0, "emulated compute: profile batch size (0 = batch_size)")
    dilation: float = _f(1.0, "emulated compute: time dilation D (divide link rates by D)")
    batch_size: int = _f(8, "images per worker per step")
    steps: int = _f(20, "optimizer steps in total, warm-up included")
    warmup_steps: int = _f(3, "first steps left out of summary medians")
    data: str = _f("synthetic", "synthetic | digits | imagefolder:PATH")
    image_size: int = _f(224, "input height and width in pixels")
    num_classes: int = _f(0, "classifier outputs; 0 = from the data (synthetic: 1000)")
    lr: float = _f(0.01, "SGD learning rate")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(0.0, "SGD weight decay")
    seed: int = _f(0, "seed for weights, data order, dropout")
    bucket_cap_mb: float = _f(25.0, "DDP gradient bucket size in MiB")
    compute_probe_steps: int = _f(3, "no-communication steps timed to get exposed_comm_s (0 = off)")
    checkpoint_every: int = _f(0, "write checkpoints/last.pt every N steps (0 = only at the end)")
    timeout_s: float = _f(300.0, "seconds to wait for the rendezvous and for any collective")
    out: str = _f("", "run directory (default runs/<time>-<model>)")
    name: str = _f("", "run name (default <model>-<backend>-<compression>-n<world size>)")
    log_every: int = _f(1, "progress line every N steps when stdout is not a terminal")
    wandb: str = _f("off", "Weights & Biases logging", choices=WANDB_MODES)
    wandb_project: str = _f("dist_sqz", "W&B project")
    wandb_group: str = _f("", "W&B group (runs of one sweep share it)")

    def __post_init__(self) -> None:
        positive = ("batch_size", "steps", "image_size", "log_every", "powersgd_rank")
        for name in positive:
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be > 0, got {getattr(self, name)}")
        nonneg = (
            "warmup_steps",
            "num_classes",
            "compute_probe_steps",
            "checkpoint_every",
            "powersgd_start_step",
            "dgc_warmup_steps",
            "compute_batch_size",
        )
        for name in nonneg:
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "bucket_cap_mb", "timeout_s", "dilation"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.compression_density <= 1:
            raise UsageError(
                f"compression_density must be in (0, 1], got {self.compression_density}"
            )
        for name in ("momentum", "weight_decay", "dgc_clip_norm"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_steps >= self.steps:
            raise UsageError(
                f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps}) "
                "so that some steps are measured"
            )
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise UsageError(
                    f"{f.name} must be one of {', '.join(choices)}; got {getattr(self, f.name)!r}"
                )
        from dist_sqz.models import MODELS

        MODELS.get(self.model)  # raises UsageError listing the models
        kind = self.data.split(":", 1)[0]
        if kind not in ("synthetic", "digits", "imagefolder"):
            raise UsageError(
                f"data must be synthetic, digits or imagefolder:PATH; got {self.data!r}"
            )
        if kind == "imagefolder":
            path = self.data.split(":", 1)[1] if ":" in self.data else ""
            if not path or not Path(path).is_dir():
                raise UsageError(
                    f"data directory {path!r} does not exist; give imagefolder:PATH with one "
                    "sub-folder of images per class"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def _coerce(name: str, raw: Any) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise UsageError."""
    ftype = {f.name: f.type for f in fields(TrainConfig)}[name]
    try:
        if ftype == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if ftype == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if ftype == "str":
            if isinstance(raw, (dict, list)):
                raise ValueError
            return str(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be {ftype}; got {raw!r}") from None
    raise AssertionError(f"unhandled field type {ftype} for {name}")


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file into a {key: value} dict, rejecting unknown keys."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"config file {str(p)!r} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {str(p)!r} must hold a mapping of key: value")
    return check_keys(data, source=f"config file {str(p)!r}")


def check_keys(values: dict[str, Any], source: str) -> dict[str, Any]:
    known = field_names()
    for key in values:
        if key not in known:
            raise UsageError(f"unknown key {key!r} in {source}; known keys: {', '.join(known)}")
    return {k: _coerce(k, v) for k, v in values.items()}


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars (`lr=1e-3`, `steps=5`)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            out[key] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            out[key] = raw
    return check_keys(out, source="--set")


def resolve(*layers: dict[str, Any]) -> TrainConfig:
    """Merge layers (later wins) over the defaults and validate."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return TrainConfig(**merged)


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
