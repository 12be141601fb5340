"""`dist-sqz frontier`: published top-1 beside bytes per step and the cost model's throughput
on a cluster, the Pareto set marked; JSON, Markdown and two plots."""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

from dist_sqz.cli import add_config_flags, config_from_args

HELP = "accuracy per byte: top-1, bytes per step and projected cluster throughput, Pareto set"


def add(sub: argparse._SubParsersAction) -> None:
    from dist_sqz.config import FrontierConfig

    p = sub.add_parser(
        "frontier",
        help=HELP,
        description="For each model: parameters, gradient bytes per step, GFLOPs, published "
        "ImageNet top-1 with its source (torchvision's weights metadata, or the paper that "
        "defined the model; unknown where neither), and the cost model's cluster images/s "
        "and scaling efficiency at each --workers N on --link or --cluster, with compute "
        "from --profile or measured here on one core (as compare does). Marks the Pareto set "
        "(top-1 against projected throughput) at each N; writes OUT/frontier.json, "
        "frontier.md, frontier_bytes.png and frontier_throughput.png.",
        epilog="example: dist-sqz frontier --workers 1,4,16 --link 1gbit (docs/models.md)",
    )
    add_config_flags(p, FrontierConfig)


def run(args: argparse.Namespace) -> int:
    from dist_sqz.config import FrontierConfig

    cfg = config_from_args(FrontierConfig, args)
    out = Path(cfg.out or f"runs/frontier-{time.strftime('%Y%m%d-%H%M%S')}")
    models, notes = _available(cfg)
    from dist_sqz.costmodel import from_flags, load_spec

    net = load_spec(cfg.cluster) if cfg.cluster else from_flags(cfg.link)
    facts = _facts(models)  # every model named is built (shapes only) before anything runs
    from dist_sqz.errors import UsageError

    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; choose another --out")
    with tempfile.TemporaryDirectory(prefix="dsqz-frontier-") as scratch:
        profile, where, measured = _profile(cfg, models, Path(scratch))
    from dist_sqz.costmodel import predict
    from dist_sqz.costmodel.frontier import format_markdown, frontier_rows, plot

    predicted = [
        row
        for variant in cfg.compression
        for row in predict(
            models, cfg.workers, net, profile, cfg.batch_size, cfg.compute_precision, variant
        )
    ]
    rows = frontier_rows(facts, predicted)
    network = net.summary() if cfg.cluster else f"{cfg.link} links (tcp), ring"
    header = (
        f"Cost model: {network}; compute {where} ({cfg.compute_precision}, batch "
        f"{cfg.batch_size} per worker). Command: `dist-sqz frontier "
        f"--workers {','.join(map(str, cfg.workers))} "
        + (f"--cluster {cfg.cluster}" if cfg.cluster else f"--link {cfg.link}")
        + (f" --profile {cfg.profile}" if cfg.profile else "")
        + "`."
    )
    out.mkdir(parents=True, exist_ok=True)
    if measured:
        (out / "profile.json").write_text(measured)
    text = format_markdown(rows, header, notes)
    (out / "frontier.md").write_text(text)
    result = {"config": cfg.model_dump(), "notes": notes, "rows": rows}
    (out / "frontier.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(rows, out)
    print(text)
    print(f"dist-sqz frontier: wrote {out}/frontier.md, frontier.json and two plots")
    return 0


def _available(cfg) -> tuple[list[str], list[str]]:
    """The models to draw: the default set without timm's where timm is not installed (a
    note says so); a model named on purpose stays, and fails if it cannot be built."""
    from dist_sqz.config.commands import FRONTIER_MODELS
    from dist_sqz.models.resolve import TIMM_EXTRA

    if cfg.models != FRONTIER_MODELS or importlib.util.find_spec("timm"):
        return list(cfg.models), []
    left = [m for m in cfg.models if m.startswith("timm:")]
    kept = [m for m in cfg.models if m not in left]
    return kept, [f"timm not installed: {', '.join(left)} left out ({TIMM_EXTRA})"]


def _facts(models: list[str]) -> dict[str, dict]:
    from dist_sqz.models.top1 import published_top1
    from dist_sqz.models_cache import facts_for

    return {m: f | published_top1(m) for m, f in facts_for(models).items()}


def _profile(cfg, models: list[str], scratch: Path) -> tuple[dict, str, str]:
    """The compute profile: the one named, or each model measured here on one core at the
    batch and image size asked (its text too, for OUT/profile.json, as compare keeps its
    own; written only once everything else has worked)."""
    from dist_sqz.compute.profiles import load_profile

    if cfg.profile:
        return load_profile(cfg.profile), f"profile {cfg.profile}", ""
    from dist_sqz.compute.modes import measure_local

    path = measure_local(
        {m: (cfg.batch_size, cfg.image_size) for m in models},
        scratch / "profile.json",
        progress=lambda line: print(line.replace("compare", "frontier"), flush=True),
    )
    where = f"measured here on one core at {cfg.image_size} px (OUT/profile.json)"
    return load_profile(str(path)), where, path.read_text()
