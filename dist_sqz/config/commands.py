"""Configs of the commands that launch or model many runs: compare, simulate, design-space."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import field_validator

from dist_sqz.config.base import Config, WandbMode, check_model, setting
from dist_sqz.errors import UsageError
from dist_sqz.units import csv, slurm_time_s, valid_duration, valid_rate


def _split(v: Any) -> Any:
    return csv(v) if isinstance(v, str) else v


def _variants(v: Any) -> list[str]:
    """Compression variants (`topk:density=0.001`), each checked, as normalised labels."""
    from dist_sqz.config.variants import parse_variants

    items = _split(v)
    if not items:
        raise UsageError("compression needs at least one value")
    return [x.label for x in parse_variants(items)]


def _arms(v: Any) -> list[str]:
    """Arms `MODEL` or `MODEL+COMPRESSOR[:key=value...]`, each checked and normalised."""
    from dist_sqz.compare.arms import arm_name, split_arm

    out = []
    for arm in _split(v):
        model, compression = split_arm(arm)
        out.append(arm_name(check_model(model), _variants([compression])[0]))
    return out


def _duration_ok(v: str) -> str:
    return valid_duration(v) if v else v  # '' = none (a delay left out)


def _lists_ok(v: list[Any], info: Any) -> list[Any]:
    """models: registered names; workers: counts >= 1; neither empty."""
    if not v:
        raise UsageError(f"{info.field_name} needs at least one value")
    if info.field_name == "models":
        return [check_model(m) for m in v]
    if min(v) < 1:
        raise UsageError(f"workers takes integers >= 1 like 1,2,4; got {v}")
    return v


class CompareConfig(Config):
    """`dist-sqz compare`: each model at each worker count on emulated hosts."""

    ALIASES: ClassVar[dict[str, str]] = {
        "profile_batch_size": "compute_batch_size",
        "timeout_s": "run_timeout_s",
    }

    models: list[str] = setting(
        ["alexnet", "squeezenet1_0", "squeezenet1_1"], "models, comma-separated"
    )
    workers: list[int] = setting([1, 2, 4], "worker counts, comma-separated")
    compression: list[str] = setting(
        ["none"],
        "compressors, comma-separated, each with its settings (none, fp16, int8, "
        "topk:density=0.001, dgc:density=0.001, powersgd:rank=2, ...): one row per model, "
        "compressor and worker count",
    )
    arms: list[str] = setting(
        [],
        "the arms themselves instead of every model with every compressor: MODEL or "
        "MODEL+COMPRESSOR, comma-separated (squeezenet1_1,alexnet,alexnet+powersgd:rank=2)",
    )
    steps: int = setting(8, "steps per run (throughput runs; a target uses the recipe's)", gt=0)
    warmup_steps: int = setting(2, "first steps of each run left out of the medians", ge=0)
    link: str = setting("1gbit", "each host's link rate (tc units)")
    delay: str = setting("", "one-way link delay, e.g. 100us (needs netem)")
    image_size: int = setting(64, "input height and width in pixels (a target: the recipe's)", gt=0)
    batch_size: int = setting(8, "images per worker per step (a target: the recipe's)", gt=0)
    data: str = setting("synthetic", "synthetic, or with a target a dataset with recipes (digits)")
    target_accuracy: float | None = setting(
        None,
        "train each model with its recipe (configs/<data>_<model>.yaml) until held-out "
        "accuracy reaches this; adds time to accuracy",
        gt=0,
        le=1,
    )
    recipes: str = setting("", "a folder of <data>_<model>.yaml recipes ('' = the shipped ones)")
    out: str = setting("", "output folder (default runs/compare-<time>)")
    resume: str = setting(
        "",
        "continue the comparison in this folder: finished rows are kept, a cut row goes on "
        "from its checkpoint; only how it is scheduled may change (--time-limit, --signal-s, "
        "--partition, --account, --sbatch-args)",
    )
    estimate: bool = setting(
        False,
        "print each run's estimated wall time here (the cost model on the measured compute "
        "x D x its step budget) and stop; writes nothing",
    )
    compute: Literal["local", "real"] = setting(
        "local",
        "local: pad each worker's compute to one core's measured times, time-dilated, so "
        "efficiency measures the network; real: workers share this machine's cores",
    )
    compute_profile: str = setting("", "emulate GPU compute from this profile instead (e.g. h100)")
    compute_precision: str = setting("bf16_cl", "the profile's precision")
    compute_batch_size: int = setting(
        256, "emulated compute: the profile's per-GPU batch size", gt=0
    )
    dilation: float | None = setting(
        None,
        "time dilation D (compute and links D times slower); default: chosen per row so that "
        "its workers' real work fits (max(1.5, 1.15 x the D a trial run says one worker "
        "needs) x max(1, N / cores); at least 100 with a profile)",
        gt=0,
    )
    run_timeout_s: float | None = setting(
        None, "seconds before one run is killed (default 900; with a target 86400)", gt=0
    )
    wandb: WandbMode = setting("off", "Weights & Biases logging")
    wandb_project: str = setting("dist_sqz", "W&B project")
    wandb_group: str = setting("", "W&B group (default compare-<out folder name>)")
    backend: Literal["gloo", "nccl"] = setting("gloo", "the runs' backend: gloo (CPU), nccl (GPUs)")
    launcher: Literal["emulated", "slurm"] = setting(
        "emulated",
        "emulated: one emulated host per worker here (or local processes); slurm: each row "
        "a Slurm job (an srun step inside an allocation), docs/own-cluster.md",
    )
    partition: str = setting("", "slurm: the partition ('' = the default one)")
    account: str = setting("", "slurm: the account to charge ('' = yours by default)")
    time_limit: str = setting("", "slurm: each row's --time (e.g. 30:00; '' = the partition's)")
    gpus_per_node: int = setting(
        0, "slurm: GPUs per node, one worker each (0: one worker per node)", ge=0
    )
    sbatch_args: str = setting("", "slurm: more sbatch arguments, e.g. '--qos=high --exclusive'")
    socket_ifname: str = setting(
        "", "slurm: the nodes' interface for sockets and wire bytes ('' = the one of NodeAddr)"
    )
    controller_wait_s: float = setting(
        600.0, "slurm: how long to wait out a controller that does not answer (restart)", gt=0
    )
    signal_s: int = setting(
        120, "slurm: SIGTERM this many seconds before the time limit (checkpoint, resume)", gt=0
    )
    cluster: str = setting(
        "",
        "price each row on this cluster spec (a shipped name or a YAML file, as simulate "
        "--cluster) instead of the emulated link",
    )
    collect: list[str] = setting(
        [],
        "build results.json and report.md from these finished train run folders (made "
        "anywhere, any launcher) instead of running anything",
    )
    profile: str = setting(
        "",
        "with --compute real: the profile the cost model prices each row with (measured by "
        "`dist-sqz profile` on the cluster's GPU; a shipped name or a .json file)",
    )

    _compression = field_validator("compression", mode="before")(_variants)
    _arms = field_validator("arms", mode="before")(_arms)
    _csv_lists = field_validator("models", "workers", "collect", mode="before")(_split)

    _lists_ok = field_validator("models", "workers")(_lists_ok)

    _rates = field_validator("link")(valid_rate)
    _durations = field_validator("delay")(_duration_ok)

    @field_validator("time_limit")
    @classmethod
    def _time_limit(cls, v: str) -> str:
        if v:
            slurm_time_s(v)  # its ValueError becomes the one line of a usage error
        return v

    def model_post_init(self, _context: Any) -> None:
        if self.warmup_steps >= self.steps:
            raise UsageError(f"steps ({self.steps}) must exceed warmup_steps ({self.warmup_steps})")
        slurm_only = {"partition", "account", "time_limit", "gpus_per_node", "sbatch_args"}
        if self.launcher != "slurm" and slurm_only & self.model_fields_set and not self.resume:
            key = sorted(slurm_only & self.model_fields_set)[0]
            raise UsageError(f"--{key.replace('_', '-')} needs --launcher slurm")
        limit = slurm_time_s(self.time_limit) if self.time_limit else None
        if limit is not None and self.signal_s >= limit and not self.resume:
            raise UsageError(
                f"--signal-s {self.signal_s} is not less than --time-limit {self.time_limit} "
                f"({limit} s): each row would be told to stop as it starts"
            )
        if self.cluster:
            from dist_sqz.costmodel.spec import load_spec

            load_spec(self.cluster)  # a wrong key or a missing file: one line, now
        if self.profile:
            from dist_sqz.compute.profiles import load_profile

            load_profile(self.profile)
        if self.arms:
            from dist_sqz.compare.arms import split_arm

            pairs = [split_arm(a) for a in self.arms]
            implied = {
                "models": list(dict.fromkeys(m for m, _ in pairs)),
                "compression": list(dict.fromkeys(c for _, c in pairs)),
            }
            for key, value in implied.items():  # a saved config holds both: they agree
                if key in self.model_fields_set and getattr(self, key) != value:
                    raise UsageError(
                        f"--arms names the models and compressors itself; drop --{key}"
                    )
                setattr(self, key, value)
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
        from dist_sqz.training.recipes import recipe

        for m in self.models:
            recipe(self.data, m, self.recipes)  # UsageError naming the recipes there are

    @property
    def kill_after_s(self) -> float:
        """`run_timeout_s`, or its default."""
        if self.run_timeout_s is not None:
            return self.run_timeout_s
        return 86400.0 if self.target_accuracy is not None else 900.0


class SimulateConfig(Config):
    """`dist-sqz simulate`: the cost model over worker counts."""

    ALIASES: ClassVar[dict[str, str]] = {"precision": "compute_precision"}

    models: list[str] = setting(["alexnet", "squeezenet1_1"], "models, comma-separated")
    workers: list[int] = setting([2**i for i in range(11)], "worker counts, comma-separated")
    profile: str = setting("h100", "a shipped profile name or a profile .json file")
    compute_precision: str = setting("bf16_cl", "the profile's precision (fp32, bf16_cl)")
    batch_size: int = setting(256, "images per worker per step", gt=0)
    link: str = setting("100gbit", "per-worker link bandwidth")
    latency: str = setting("5us", "per-message latency")
    topology: Literal["ring", "tree", "ps", "hierarchical"] = setting(
        "ring", "all-reduce algorithm"
    )
    gpus_per_node: int = setting(8, "hierarchical: GPUs per node", gt=0)
    intra_link: str = setting("3600gbit", "hierarchical: node-local link")
    bucket_cap_mb: float = setting(25.0, "DDP gradient bucket size in MiB", gt=0)
    transport: Literal["tcp", "ideal"] = setting(
        "tcp", "tcp: the link carries TCP payload (1448 of 1514 bytes a frame); ideal: all of it"
    )
    cluster: str = setting(
        "",
        "a cluster spec (shipped name or .yaml) instead of --link, --latency, --topology, "
        "--gpus-per-node, --intra-link, --bucket-cap-mb, --transport",
    )
    compression: list[str] = setting(
        ["none"],
        "compressors, comma-separated, each with its settings: none, fp16, int8, "
        "topk:density=0.001, dgc:density=0.001, powersgd:rank=4",
    )
    broadcast_buffers: bool = setting(
        True, "price the broadcast of rank 0's buffers before each forward (as train does)"
    )
    break_even: bool = setting(
        False,
        "print the link rates below which each compressor shortens the step, and below "
        "which squeezenet1_1 uncompressed outruns alexnet with each",
    )

    calibrate: str = setting(
        "",
        "fit the spec's inter.achieved, collective.overhead and interference to the step "
        "times of this comparison (its folder or results.json), then predict every row",
    )
    calibrate_on: list[int] = setting(
        [],
        "--calibrate: fit on the rows of these worker counts only (default: all); the rest "
        "are held out",
    )
    calibrated: str = setting("", "--calibrate: write the calibrated spec to this YAML file")

    _csv_lists = field_validator("models", "workers", "calibrate_on", mode="before")(_split)
    _lists_ok = field_validator("models", "workers")(_lists_ok)

    _rates = field_validator("link", "intra_link")(valid_rate)
    _durations = field_validator("latency")(_duration_ok)

    _compression = field_validator("compression", mode="before")(_variants)

    def model_post_init(self, _context: Any) -> None:
        network = ("link", "latency", "topology", "gpus_per_node", "intra_link")
        _cluster_or_flags(
            self.cluster, self.model_fields_set, (*network, "bucket_cap_mb", "transport")
        )


def _cluster_or_flags(cluster: str, given_fields: set[str], network: tuple[str, ...]) -> None:
    """A cluster spec describes the network: none of the flags that describe it too."""
    given = [k for k in network if k in given_fields]
    if cluster and given:
        raise UsageError(
            f"--cluster describes the network; drop --{given[0].replace('_', '-')} (or "
            "write it into the spec)"
        )


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

    ALIASES: ClassVar[dict[str, str]] = {"precision": "compute_precision"}

    squeeze_ratios: list[float] = setting(
        [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0],
        "SR sweep (at pct3x3 0.5, as the paper's Fig. 3a)",
    )
    pct3x3: list[float] = setting(
        [0.01, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 0.99],
        "pct3x3 sweep (at SR 0.5, as the paper's Fig. 3b)",
    )
    workers: int = setting(8, "world size N of the simulated cluster", gt=0)
    link: str = setting("10gbit", "per-worker link bandwidth")
    latency: str = setting("5us", "per-message latency")
    profile: str = setting("h100", "compute profile (its squeezenet1_0 entry, scaled per point)")
    compute_precision: str = setting("bf16_cl", "the profile's precision")
    batch_size: int = setting(256, "images per worker per step (a batch size in the profile)", gt=0)
    train_steps: int = setting(
        0, "train each point this many steps of the digits squeezenet1_0 recipe (0 = off)", ge=0
    )

    _csv_lists = field_validator("squeeze_ratios", "pct3x3", mode="before")(_split)
    _fractions_ok = field_validator("squeeze_ratios", "pct3x3")(_fractions)
    _rates = field_validator("link")(valid_rate)
    _durations = field_validator("latency")(_duration_ok)


# SqueezeNet's line of work (SqueezeNext, ShuffleNet V2, MobileNet V1/V2/V3, MnasNet, MixNet,
# EfficientNet) beside AlexNet and ResNet-50; timm's two are left out (with a note) without timm.
FRONTIER_MODELS = [
    *("alexnet", "squeezenet1_0", "squeezenet1_1", "sqnxt23_w1", "sqnxt23v5_w1"),
    *("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "timm:mobilenetv1_100", "mobilenet_v2"),
    *("mobilenet_v3_small", "mobilenet_v3_large", "mnasnet0_5", "mnasnet1_0", "timm:mixnet_s"),
    *("efficientnet_b0", "resnet50"),
]


class FrontierConfig(Config):
    """`dist-sqz frontier`: published accuracy beside bytes per step and projected throughput."""

    ALIASES: ClassVar[dict[str, str]] = {"precision": "compute_precision"}

    models: list[str] = setting(FRONTIER_MODELS, "models, comma-separated (docs/models.md)")
    workers: list[int] = setting([1, 4, 16], "worker counts, comma-separated")
    link: str = setting("1gbit", "per-worker link bandwidth (flags network, as simulate)")
    cluster: str = setting("", "a cluster spec (shipped name or .yaml) instead of --link")
    profile: str = setting(
        "", "compute profile (shipped name or .json); default: measure each model here"
    )
    compute_precision: str = setting("fp32", "the profile's precision")
    batch_size: int = setting(8, "images per worker per step", gt=0)
    image_size: int = setting(224, "input size the models are measured at (default profile)", gt=0)
    compression: list[str] = setting(["none"], "compressors as arms, comma-separated")
    out: str = setting("", "output folder (default runs/frontier-<time>)")

    _csv_lists = field_validator("models", "workers", mode="before")(_split)
    _lists_ok = field_validator("models", "workers")(_lists_ok)
    _rates = field_validator("link")(valid_rate)
    _compression = field_validator("compression", mode="before")(_variants)

    def model_post_init(self, _context: Any) -> None:
        _cluster_or_flags(self.cluster, self.model_fields_set, ("link",))
