"""`compare --collect RUN_DIR...`: a comparison's results.json and report.md from train runs
made anywhere (any launcher, any cluster, copied here).

Each run folder's own config.yaml and summary.json say what it is: its arm (the model and
the compressor with the settings that differ from the compressor's defaults) and N (its
world size). The runs must differ in nothing else that changes what a step measures: two
that do (a batch size, an image size, a precision) are refused in one line naming the
setting and both values, since a scaling efficiency between them would mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from dist_sqz.compare.arms import arm_name
from dist_sqz.compute.modes import ComputeMode
from dist_sqz.config import CompareConfig, TrainConfig
from dist_sqz.errors import UsageError

# Settings a row may differ in: what names, places or watches a run, how long it ran, and
# the time dilation (chosen per N in local mode).
FREE = {
    "model",
    "compression",
    "out",
    "name",
    "wandb",
    "wandb_project",
    "wandb_group",
    "trace_steps",
    "timeout_s",
    "log_every",
    "checkpoint_every",
    "checkpoint_every_min",
    "keep_checkpoints",
    "dilation",
    "data_workers",
    "stop_when_stalled",
    "compute_profile",
}


def _read(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg_file, summary_file = folder / "config.yaml", folder / "summary.json"
    if not folder.is_dir():
        raise UsageError(f"collect: run folder {folder} not found")
    if not summary_file.is_file() or not cfg_file.is_file():
        lack = "summary.json" if not summary_file.is_file() else "config.yaml"
        raise UsageError(f"collect: {folder} has no {lack} (a finished `dist-sqz train` run?)")
    try:
        return yaml.safe_load(cfg_file.read_text()), json.loads(summary_file.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise UsageError(f"collect: {folder} does not read ({type(e).__name__})") from None


def arm_of(cfg: dict[str, Any]) -> str:
    """The run's arm: its model, and its compressor with the options set off their default."""
    from dist_sqz.comm.compression import COMPRESSORS

    name = cfg.get("compression", "none")
    defaults = TrainConfig()
    options = [
        f"{opt}={cfg[key]}"
        for opt, key in own_keys(COMPRESSORS.get(name)).items()
        if key in cfg and cfg[key] != getattr(defaults, key)
    ]
    return arm_name(cfg["model"], ":".join([name, *options]))


def own_keys(cls: Any) -> dict[str, str]:
    """A compressor's own settings ({option: train key}): those that are not the run's
    general settings under the same name (DGC's momentum is the run's momentum)."""
    return {o: k for o, k in cls.KEYS.items() if k != o}


def _compute_mode(cfg: dict[str, Any]) -> ComputeMode:
    profile = cfg.get("compute_profile") or ""
    if not profile:
        return ComputeMode("real")
    local = profile.endswith(".json") and Path(profile).name == "profile.json"
    kind = "local" if local else "profile"
    return ComputeMode(
        kind, profile, cfg.get("compute_precision", "fp32"), cfg.get("compute_batch_size", 0), None
    )


def collect(runs: list[Path], flags: CompareConfig) -> dict[str, Any]:
    """The comparison result of `runs` (rows as compare writes them, derived the same way)."""
    from dist_sqz.compare.derive import derive
    from dist_sqz.compare.run import RESULT_FIELDS, row_key

    if not runs:
        raise UsageError("--collect needs at least one train run folder")
    read = [(folder, *_read(folder)) for folder in runs]
    first_dir, first, _ = read[0]
    for folder, cfg, _ in read[1:]:
        for key in sorted((set(first) | set(cfg)) - FREE - compressor_keys()):
            if first.get(key) != cfg.get(key):
                raise UsageError(
                    f"collect: {first_dir} and {folder} differ in {key} ({first.get(key)!r} "
                    f"against {cfg.get(key)!r}); rows may differ only in the arm and N"
                )
    rows, seen = [], {}
    for folder, cfg, summary in read:
        arm, n = arm_of(cfg), int(summary["world_size"])
        if (arm, n) in seen:
            raise UsageError(f"collect: {seen[arm, n]} and {folder} are both {arm} x {n}")
        seen[arm, n] = folder
        row = row_key(arm, n) | {"dilation": cfg.get("dilation"), "run": str(folder)}
        row |= {"batch_size": cfg["batch_size"], "image_size": cfg["image_size"]}
        row["params"] = summary.get("params")
        row.update({k: summary.get(k) for k in RESULT_FIELDS})
        rows.append(row)
    rows.sort(key=lambda r: (r["arm"], r["world_size"]))
    mode = _compute_mode(first)
    emulate = any(r.get("wire_bytes") for r in rows if r["world_size"] > 1)
    settings = {
        "models": list(dict.fromkeys(r["model"] for r in rows)),
        "workers": sorted({r["world_size"] for r in rows}),
        "steps": first["steps"],
        "warmup_steps": first["warmup_steps"],
        "batch_size": first["batch_size"],
        "image_size": first["image_size"],
        "backend": first.get("backend", "gloo"),
        "compute_precision": first.get("compute_precision", "bf16_cl"),
    }
    cfg = CompareConfig.build(flags.model_dump(exclude_unset=True, exclude={"collect"}), settings)
    derive(rows, cfg, mode, emulate)
    return {
        "models": cfg.models,
        "compression": list(dict.fromkeys(r["compression"] for r in rows)),
        "workers": cfg.workers,
        "steps": cfg.steps,
        "warmup_steps": cfg.warmup_steps,
        "link": cfg.link,
        "emulated_hosts": False,
        "note": f"Collected from {len(rows)} train runs (their own config.yaml and summary.json)"
        + (f"; links {cfg.link} as given" if emulate else ""),
        "image_size": cfg.image_size,
        "batch_size": cfg.batch_size,
        "data": first.get("data"),
        "target_accuracy": first.get("target_accuracy"),
        "backend": cfg.backend,
        "launcher": "collected",
        "cluster": cfg.cluster,
        "compute": mode.to_dict() | {"description": mode.describe()},
        "rows": rows,
        "failed": [],
        "elapsed_s": 0.0,
    }


def compressor_keys() -> set[str]:
    """Every train setting some compressor reads (part of a row's arm, not a difference)."""
    from dist_sqz.comm.compression import COMPRESSORS

    return {key for name in COMPRESSORS for key in own_keys(COMPRESSORS.get(name)).values()}


def write(result: dict[str, Any], out: Path) -> None:
    from dist_sqz.compare.report import write_compare_report

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    write_compare_report(result, out)
