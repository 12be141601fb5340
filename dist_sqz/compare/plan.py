"""A comparison's plan: its compute mode, each run's validated train config, and each run's
expected wall time here (the cost model x D x its step budget)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from dist_sqz.compare.arms import split_arm
from dist_sqz.compute.modes import ComputeMode, cores
from dist_sqz.config import CompareConfig, TrainConfig
from dist_sqz.errors import UsageError
from dist_sqz.units import format_rate, parse_rate

CONFIG_FILE = "compare.yaml"


def wandb_group(cfg: CompareConfig, out: Path) -> str:
    """The W&B group of a comparison's runs."""
    return cfg.wandb_group or f"compare-{out.name}"


def shaped_link(link: str, dilation: float) -> str:
    """The link that is actually shaped under time dilation D: D times slower (tc units)."""
    return format_rate(parse_rate(link) / dilation)


@functools.lru_cache(maxsize=32)
def _model_bytes(model: str) -> int:
    import torch

    from dist_sqz.models import build_model

    with torch.device("meta"):
        return sum(p.numel() * p.element_size() for p in build_model(model).parameters())


def first_broadcast_s(model: str, n: int, link: str | None) -> float:
    """DDP's first broadcast on the link as shaped (`link`; None: not shaped): the whole
    model from rank 0 to one peer after another (gloo: AlexNet on 4 hosts at 100 Mbit/s / 6
    outlasted a 300 s timeout, which a tree's 2 rounds of 117 s would not)."""
    if n <= 1 or not link:
        return 0.0
    return (n - 1) * _model_bytes(model) * 8 / parse_rate(link)


def collective_timeout_s(model: str, n: int, link: str | None, floor_s: float) -> float:
    """How long one run's collectives may take: twice its first broadcast on the shaped link
    (`first_broadcast_s`), and never less than `floor_s` (train's own default)."""
    return max(floor_s, 2 * first_broadcast_s(model, n, link))


def compute_mode(cfg: CompareConfig, profile_path: Path) -> ComputeMode:
    if cfg.compute_profile:
        return ComputeMode(
            "profile",
            cfg.compute_profile,
            cfg.compute_precision,
            cfg.compute_batch_size,
            cfg.dilation,
        )
    if cfg.compute == "real":
        return ComputeMode("real")
    return ComputeMode("local", str(profile_path), "fp32", 0, cfg.dilation)


def run_config(
    cfg: CompareConfig, model: str, n: int, mode: ComputeMode, out: Path, compression: str = "none"
) -> TrainConfig:
    """The training config of one compare run (validated: a model that cannot take the
    image size fails here, before anything starts)."""
    from dist_sqz.config.variants import parse_variant

    if cfg.target_accuracy is not None:
        from dist_sqz.training.recipes import recipe

        base = {**recipe(cfg.data, model, cfg.recipes), "target_accuracy": cfg.target_accuracy}
    else:
        base = {
            "model": model,
            "steps": cfg.steps,
            "warmup_steps": cfg.warmup_steps,
            "image_size": cfg.image_size,
            "batch_size": cfg.batch_size,
            "log_every": cfg.steps,
        }
    first = int(base.get("warmup_steps", 3)) + 1  # two measured steps, traced
    last = min(first + 1, int(base.get("steps", 20)))
    return TrainConfig.build(
        base,
        {
            "trace_steps": f"{first}-{last}" if first <= last else "",
            "out": str(out),
            "backend": cfg.backend,
            "wandb": cfg.wandb,
            "wandb_project": cfg.wandb_project,
            "wandb_group": cfg.wandb_group,
            **mode.train_settings(n),
        },
        parse_variant(compression).train_settings(),
    )


def estimate(
    mode: ComputeMode,
    configs: dict[tuple[str, int], TrainConfig],
    link: str,
    todo: list[tuple[str, int]],
    profile: str,
    overhead_s: dict[str, float] | None = None,
    dilations: dict[tuple[str, int], float] | None = None,
) -> list[dict[str, Any]]:
    """Each run's expected wall time here: the cost model's step time on `profile` (the
    comparison's measured or named compute) and link, times D, times its step budget (an
    upper bound with a target, which stops a run early; evaluations come on top), plus the
    model's measured per-run cost beyond its steps (`overhead_s`: `runs.trial_run`, its start-
    up shared by n workers where they outnumber the cores). DDP's construction broadcast is
    not counted: the ranks start with the same weights, so it is skipped
    (`DDPBackend._replicas_agree`). D is each row's as chosen (`dilations`), else the
    mode's for its N."""
    from dist_sqz.compute.profiles import load_profile
    from dist_sqz.costmodel import from_flags, predict

    if mode.kind == "real":
        return []
    prof = load_profile(profile)
    net = from_flags(link)
    rows = []
    for arm, n in todo:
        cfg = configs[arm, n]
        model, compression = split_arm(arm)
        batch = mode.batch_size or cfg.batch_size
        step_s = predict([model], [n], net, prof, batch, mode.precision, compression)[0][
            "step_time_s"
        ]
        d = (dilations or {}).get((arm, n)) or mode.dilation_for(n)
        # n workers start up on these cores at once: the trial's one-worker start-up, shared
        extra = (overhead_s or {}).get(arm, 0.0) * max(1.0, n / cores())
        rows.append(
            {
                "model": arm,
                "world_size": n,
                "dilation": d,
                "step_s": step_s,
                "steps": cfg.steps,
                "overhead_s": extra,
                "wall_s": step_s * d * cfg.steps + extra,
            }
        )
    return rows


def format_estimate(
    rows: list[dict[str, Any]], target: bool, spent_s: float = 0.0, trials: bool = True
) -> str:
    """The estimate's lines; `spent_s`: what measuring the profile and the trials took
    already, shown beside the rows' total so the whole job's time is on one line; `trials`:
    whether trial runs measured each model's cost outside its steps."""
    bound = "at most " if target else ""
    lines = [
        f"    {r['model']} x {r['world_size']}: {r['step_s']:.3f} s/step emulated x D="
        f"{r['dilation']:g} x {bound}{r['steps']} steps + {r.get('overhead_s', 0.0):.0f} s "
        f"outside the steps = {bound}{_hours(r['wall_s'])}"
        for r in rows
    ]
    total = sum(r["wall_s"] for r in rows)
    spent = f" after the {spent_s:.0f} s spent measuring" if spent_s >= 1 else ""
    lines.append(
        f"    in all: {bound}{_hours(total)} of wall time here{spent} (outside the steps: "
        + (
            "start-up, model, probes, final checkpoint, measured per model by a trial run); D "
            "holds each worker's real work as the trial measured it, and a row that still "
            "overruns its padding runs again at 2 x D, extra"
            if trials
            else "not measured before the rows, as D is given or the rows run on Slurm; the "
            "ETA counts it once a row has run)"
        )
    )
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def load_for_resume(out: Path, changed: dict[str, Any] | None = None) -> CompareConfig:
    """The config a comparison folder was started with (for `--resume OUT`), with the
    settings `changed` for the rest of it (the caller allows only scheduling ones)."""
    path = out / CONFIG_FILE
    if not path.is_file():
        raise UsageError(f"{out} holds no comparison to resume (no {CONFIG_FILE})")
    return CompareConfig.build(yaml.safe_load(path.read_text()), changed or {})
