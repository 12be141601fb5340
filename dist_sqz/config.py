"""Typed configs, validated once at start-up by pydantic: defaults < YAML file < flags/--set.

Every field is a YAML key and a flag (`batch_size` <-> `--batch-size`; booleans as
`--flag/--no-flag`; optionals take `--set key=null`); `--set key=value` sets any key, its value
read as a YAML scalar. Any bad value raises one `UsageError` naming the field. `TrainConfig`
is one run; `CompareConfig` and `SimulateConfig` are the commands that launch or model many.
Choices of model, backend and compression come from their registries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dist_sqz.errors import UsageError
from dist_sqz.units import csv, parse_duration, parse_rate

WandbMode = Literal["off", "offline", "online"]
C = TypeVar("C", bound="Config")


def _model(name: str) -> str:
    from dist_sqz.models import model_spec

    model_spec(name)  # UsageError listing the models, or naming a bad setting
    return name


def registry_choices(field: str) -> list[str] | None:
    """The registry that lists a field's choices (for --help and argparse), if any."""
    if field == "models":
        from dist_sqz.models import MODELS

        return MODELS.names()
    if field == "backend":
        from dist_sqz.comm.backends import BACKENDS

        return BACKENDS.names()
    if field == "compression":
        from dist_sqz.comm.compression import COMPRESSORS

        return COMPRESSORS.names()
    return None


class Config(BaseModel):
    """Base: unknown keys are errors, values keep their declared types."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    @classmethod
    def build(cls: type[C], *layers: dict[str, Any]) -> C:
        """Merge layers (later wins) over the defaults; validate; UsageError on any fault."""
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update(layer)
        try:
            return cls(**merged)
        except ValidationError as e:
            raise UsageError(_one_line(e)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def dump_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_EXAMPLES = {"workers": "1,2,4", "models": "alexnet,squeezenet1_1"}


def _one_line(e: ValidationError) -> str:
    err = e.errors()[0]
    name = str(err["loc"][0]) if err["loc"] else "config"
    if len(err["loc"]) > 1:  # one item of a list: name the list, show the item
        return f"{name} takes values like {_EXAMPLES.get(name, '1,2')}; got {err.get('input')!r}"
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if kind == "extra_forbidden":
        return f"unknown key {name!r}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    for bound, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if bound in ctx:
            return f"{name} must be {op} {ctx[bound]}, got {value!r}"
    if kind == "literal_error":
        return f"{name} must be one of {ctx.get('expected')}; got {value!r}"
    for t in ("int", "float", "bool", "string"):
        if kind.startswith(t):
            return f"{name} must be {'str' if t == 'string' else t}; got {value!r}"
    return f"{name}: {err['msg']}; got {value!r}"


def _f(default: Any, help: str, **kw: Any) -> Any:
    return Field(default, description=help, **kw)


class TrainConfig(Config):
    """One training run. Field descriptions are what `dist-sqz train --help` prints."""

    model: str = _f(
        "squeezenet1_1",
        "model name (see `dist-sqz models`); family metaparameters as "
        "sqz_family:squeeze_ratio=0.25,pct3x3=0.75",
    )
    backend: str = _f("gloo", "gloo (CPU), nccl (GPU), mpi (mpi4py), horovod")
    compression: str = _f("none", "gradient compression")
    compression_density: float = _f(
        0.01, "topk/dgc: fraction of each bucket's values sent", gt=0, le=1
    )
    powersgd_rank: int = _f(2, "powersgd: rank of the gradient approximation", gt=0)
    powersgd_start_step: int = _f(0, "powersgd: plain all-reduce before this step (0-based)", ge=0)
    dgc_clip_norm: float = _f(
        0.0,
        "dgc: clip each bucket's gradient norm to this/sqrt(N) before accumulating; 0 = "
        "grad_clip_norm's value (dgc moves it here), off if neither is set",
        ge=0,
    )
    dgc_warmup_steps: int = _f(
        0, "dgc: steps over which density falls from 25% to its target", ge=0
    )
    dgc_momentum_masking: bool = _f(
        True,
        "dgc: zero the momentum of the entries just sent (momentum factor masking, as the "
        "paper); off keeps it",
    )
    compute_profile: str = _f("", "emulated compute: pad to this profile's GPU times ('' = real)")
    compute_precision: str = _f("bf16_cl", "emulated compute: the profile's precision")
    compute_batch_size: int = _f(0, "emulated compute: profile batch size (0 = batch_size)", ge=0)
    dilation: float = _f(1.0, "emulated compute: time dilation D (divide link rates by D)", gt=0)
    batch_size: int = _f(8, "images per worker per step", gt=0)
    steps: int = _f(20, "optimizer steps in total, warm-up included", gt=0)
    warmup_steps: int = _f(3, "first steps left out of summary medians", ge=0)
    data: str = _f("synthetic", "synthetic | digits | imagefolder:PATH | cifar10:PATH")
    image_size: int = _f(224, "input height and width in pixels", gt=0)
    num_classes: int = _f(0, "classifier outputs; 0 = from the data (synthetic: 1000)", ge=0)
    data_workers: int | None = _f(
        None, "DataLoader worker processes (null = 0 for in-memory data, else from the cores)", ge=0
    )
    augment: Literal["none", "standard"] = _f(
        "none", "standard: random translation (digits), resized crop + flip (image files)"
    )
    lr: float = _f(0.01, "SGD learning rate (of one worker: see lr_scaling)", gt=0)
    lr_scaling: Literal["none", "linear", "sqrt"] = _f(
        "none", "lr x 1, x N or x sqrt(N) at N workers (same per-worker batch)"
    )
    lr_max: float | None = _f(
        None,
        "cap on the scaled lr (null = none): the largest lr the recipe was shown to train at",
        gt=0,
    )
    lr_schedule: Literal["constant", "cosine", "step"] = _f(
        "constant", "after warm-up: constant, cosine to 0, or x0.1 at 50% and 75% of steps"
    )
    lr_warmup_steps: int = _f(0, "steps of linear lr warm-up before the schedule", ge=0)
    momentum: float = _f(0.9, "SGD momentum", ge=0)
    nesterov: bool = _f(False, "Nesterov momentum")
    weight_decay: float = _f(0.0, "SGD weight decay", ge=0)
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing", ge=0, lt=1)
    grad_clip_norm: float | None = _f(
        None, "clip the averaged gradients' global L2 norm to this (null = off)", gt=0
    )
    skip_nonfinite_steps: int = _f(
        0,
        "steps whose loss or gradients are not finite to skip (no update, one line each) "
        "before stopping the run; 0 = stop at the first, keeping the last good checkpoint",
        ge=0,
    )
    stall_window: int = _f(
        50,
        "warn once the loss has sat at ln(classes), chance, this many steps in a row after "
        "the lr warm-up (a dead network); 0 = off",
        ge=0,
    )
    stop_when_stalled: bool = _f(False, "end the run (exit 1) when it stalls, after saving")
    eval_every: int = _f(0, "evaluate on the held-out split every N steps (0 = at the end)", ge=0)
    eval_batch_size: int = _f(256, "images per worker per evaluation batch", gt=0)
    target_accuracy: float | None = _f(
        None, "stop at the first evaluation with held-out accuracy >= this", gt=0, le=1
    )
    precision: Literal["fp32", "bf16", "fp16"] = _f(
        "fp32",
        "autocast dtype of forward and loss; weights and exchanged gradients stay fp32 "
        "(fp16 adds a gradient scaler: gloo/nccl only)",
    )
    channels_last: bool = _f(False, "model and inputs in channels_last memory format")
    compile: bool = _f(False, "torch.compile the data-parallel model (the comm hook still runs)")
    seed: int = _f(0, "seed for weights, data order, dropout")
    bucket_cap_mb: float = _f(25.0, "DDP gradient bucket size in MiB", gt=0)
    compute_probe_steps: int = _f(
        3, "no-communication steps timed for exposed_comm_s (0 = off)", ge=0
    )
    checkpoint_every: int = _f(
        0, "write checkpoints/last.pt every N steps (0 = by time only)", ge=0
    )
    keep_checkpoints: int = _f(
        2, "checkpoints kept: last.pt and the K-1 before it (step<S>.pt beside it)", ge=1
    )
    checkpoint_every_min: float = _f(
        10.0,
        "also write it once this many minutes have passed since the last one (0 = off); "
        "always at the end and on SIGTERM/SIGINT",
        ge=0,
    )
    timeout_s: float = _f(300.0, "seconds to wait for the rendezvous and for any collective", gt=0)
    out: str = _f("", "run directory (default runs/<time>-<name>, decided by rank 0)")
    name: str = _f("", "run name (default <model>-<backend>-<compression>-n<world size>)")
    log_every: int = _f(1, "progress line every N steps when stdout is not a terminal", gt=0)
    wandb: WandbMode = _f("off", "Weights & Biases logging")
    wandb_project: str = _f("dist_sqz", "W&B project")
    wandb_group: str = _f("", "W&B group (runs of one sweep share it)")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return _model(v)

    @field_validator("backend", "compression")
    @classmethod
    def _registered(cls, v: str, info: Any) -> str:
        choices = registry_choices(info.field_name)
        if v not in choices:
            raise UsageError(f"{info.field_name} must be one of {', '.join(choices)}; got {v!r}")
        return v

    @field_validator("data")
    @classmethod
    def _data(cls, v: str) -> str:
        from dist_sqz.data import check_data

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
        if self.compression == "dgc" and self.grad_clip_norm is not None:
            # DGC exchanges accumulated momentum, not gradients: clipping that after the
            # exchange cut AlexNet's steps ~9x (its norm ~27 against a clip of 3) and it sat at
            # chance on digits. The paper clips each worker's gradient before accumulating
            # instead (Lin et al. 2018, section 3.2); config.yaml records the move.
            self.dgc_clip_norm = self.dgc_clip_norm or self.grad_clip_norm
            self.grad_clip_norm = None
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


def _split(v: Any) -> Any:
    return csv(v) if isinstance(v, str) else v


def _rate_ok(v: str) -> str:
    parse_rate(v)
    return v


def _duration_ok(v: str) -> str:
    if v:  # '' = none (a delay left out)
        parse_duration(v)
    return v


def _lists_ok(v: list[Any], info: Any) -> list[Any]:
    """models: registered names; workers: counts >= 1; neither empty."""
    if not v:
        raise UsageError(f"{info.field_name} needs at least one value")
    if info.field_name == "models":
        return [_model(m) for m in v]
    if min(v) < 1:
        raise UsageError(f"workers takes integers >= 1 like 1,2,4; got {v}")
    return v


class CompareConfig(Config):
    """`dist-sqz compare`: each model at each worker count on emulated hosts."""

    models: list[str] = _f(["alexnet", "squeezenet1_0", "squeezenet1_1"], "models, comma-separated")
    workers: list[int] = _f([1, 2, 4], "worker counts, comma-separated")
    steps: int = _f(8, "steps per run (throughput runs; a target uses the recipe's)", gt=0)
    warmup_steps: int = _f(2, "first steps of each run left out of the medians", ge=0)
    link: str = _f("1gbit", "each host's link rate (tc units)")
    delay: str = _f("", "one-way link delay, e.g. 100us (needs netem)")
    image_size: int = _f(64, "input height and width in pixels (a target: the recipe's)", gt=0)
    batch_size: int = _f(8, "images per worker per step (a target: the recipe's)", gt=0)
    data: str = _f("synthetic", "synthetic, or with a target a dataset with recipes (digits)")
    target_accuracy: float | None = _f(
        None,
        "train each model with its recipe (configs/<data>_<model>.yaml) until held-out "
        "accuracy reaches this; adds time to accuracy",
        gt=0,
        le=1,
    )
    recipes: str = _f("", "a folder of <data>_<model>.yaml recipes ('' = the shipped ones)")
    out: str = _f("", "output folder (default runs/compare-<time>)")
    resume: str = _f("", "continue the comparison in this folder: finished rows are kept")
    estimate: bool = _f(
        False,
        "print each run's estimated wall time here (the cost model on the measured compute "
        "x D x its step budget) and stop; writes nothing",
    )
    compute: Literal["local", "real"] = _f(
        "local",
        "local: pad each worker's compute to one core's measured times, time-dilated, so "
        "efficiency measures the network; real: workers share this machine's cores",
    )
    compute_profile: str = _f("", "emulate GPU compute from this profile instead (e.g. h100)")
    compute_precision: str = _f("bf16_cl", "the profile's precision")
    profile_batch_size: int = _f(256, "emulated per-GPU batch size", gt=0)
    dilation: float | None = _f(
        None,
        "time dilation D (compute and links D times slower); default: 100 with a profile, "
        "else 1.5 x max(1, N / cores) per N",
        gt=0,
    )
    timeout_s: float | None = _f(
        None, "seconds before one run is killed (default 900; with a target 86400)", gt=0
    )
    wandb: WandbMode = _f("off", "Weights & Biases logging")
    wandb_project: str = _f("dist_sqz", "W&B project")
    wandb_group: str = _f("", "W&B group (default compare-<out folder name>)")

    _csv_lists = field_validator("models", "workers", mode="before")(_split)

    _lists_ok = field_validator("models", "workers")(_lists_ok)

    _rates = field_validator("link")(_rate_ok)
    _durations = field_validator("delay")(_duration_ok)

    def model_post_init(self, _context: Any) -> None:
        if self.warmup_steps >= self.steps:
            raise UsageError(f"steps ({self.steps}) must exceed warmup_steps ({self.warmup_steps})")
        if self.compute_profile and "compute" in self.model_fields_set and self.compute == "real":
            raise UsageError("--compute real and --compute-profile exclude each other")
        if self.estimate and self.compute == "real" and not self.compute_profile:
            raise UsageError(
                "--estimate needs emulated compute; with --compute real nothing is modelled"
            )
        if self.target_accuracy is None:
            if self.data != "synthetic":
                raise UsageError(
                    "compare trains on synthetic data unless --target-accuracy is given; "
                    "drop --data or add --target-accuracy"
                )
            return
        fixed = sorted({"batch_size", "image_size", "steps"} & self.model_fields_set)
        if fixed:
            raise UsageError(
                f"with --target-accuracy the recipes set {', '.join(fixed)}; drop "
                f"--{fixed[0].replace('_', '-')} (or edit configs/{self.data}_<model>.yaml)"
            )
        from dist_sqz.recipes import recipe

        for m in self.models:
            recipe(self.data, m, self.recipes)  # UsageError naming the recipes there are

    @property
    def run_timeout_s(self) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        return 86400.0 if self.target_accuracy is not None else 900.0


class SimulateConfig(Config):
    """`dist-sqz simulate`: the cost model over worker counts."""

    models: list[str] = _f(["alexnet", "squeezenet1_1"], "models, comma-separated")
    workers: list[int] = _f([2**i for i in range(11)], "worker counts, comma-separated")
    profile: str = _f("h100", "a shipped profile name or a profile .json file")
    precision: str = _f("bf16_cl", "profile precision (fp32, bf16_cl)")
    batch_size: int = _f(256, "images per worker per step", gt=0)
    link: str = _f("100gbit", "per-worker link bandwidth")
    latency: str = _f("5us", "per-message latency")
    topology: Literal["ring", "tree", "ps", "hierarchical"] = _f("ring", "all-reduce algorithm")
    gpus_per_node: int = _f(8, "hierarchical: GPUs per node", gt=0)
    intra_link: str = _f("3600gbit", "hierarchical: node-local link")
    bucket_cap_mb: float = _f(25.0, "DDP gradient bucket size in MiB", gt=0)

    _csv_lists = field_validator("models", "workers", mode="before")(_split)
    _lists_ok = field_validator("models", "workers")(_lists_ok)

    _rates = field_validator("link", "intra_link")(_rate_ok)
    _durations = field_validator("latency")(_duration_ok)


def _fractions(v: list[float], info: Any) -> list[float]:
    if not v:
        raise UsageError(f"{info.field_name} needs at least one value")
    hi_open = info.field_name == "pct3x3"  # a fire module needs some 1x1 expand filters
    for x in v:
        if not (0 < x < 1 if hi_open else 0 < x <= 1):
            interval = "(0, 1)" if hi_open else "(0, 1]"
            raise UsageError(f"{info.field_name} values must be in {interval}; got {x}")
    return v


class DesignSpaceConfig(Config):
    """`dist-sqz design-space`: the paper's SR and pct3x3 sweeps, in bytes and efficiency."""

    squeeze_ratios: list[float] = _f(
        [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0],
        "SR sweep (at pct3x3 0.5, as the paper's Fig. 3a)",
    )
    pct3x3: list[float] = _f(
        [0.01, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 0.99],
        "pct3x3 sweep (at SR 0.5, as the paper's Fig. 3b)",
    )
    workers: int = _f(8, "world size N of the simulated cluster", gt=0)
    link: str = _f("10gbit", "per-worker link bandwidth")
    latency: str = _f("5us", "per-message latency")
    profile: str = _f("h100", "compute profile (its squeezenet1_0 entry, scaled per point)")
    precision: str = _f("bf16_cl", "profile precision")
    batch_size: int = _f(256, "images per worker per step (a batch size in the profile)", gt=0)
    train_steps: int = _f(
        0, "train each point this many steps of the digits squeezenet1_0 recipe (0 = off)", ge=0
    )

    _csv_lists = field_validator("squeeze_ratios", "pct3x3", mode="before")(_split)
    _fractions_ok = field_validator("squeeze_ratios", "pct3x3")(_fractions)
    _rates = field_validator("link")(_rate_ok)
    _durations = field_validator("latency")(_duration_ok)


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file into a {key: value} dict (keys are checked by `build`)."""
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
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars (`lr=1e-3`, `nesterov=true`)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            out[key.strip().replace("-", "_")] = raw
    return out
