"""`dist-sqz design-space`: the paper's SR and pct3x3 sweeps, in bytes per step and scaling."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dist_sqz.cli import add_config_flags, config_from_args

HELP = "the SqueezeNet paper's design-space sweeps (Fig. 3) in bytes and scaling"


def add(sub: argparse._SubParsersAction) -> None:
    from dist_sqz.config import DesignSpaceConfig

    p = sub.add_parser(
        "design-space",
        help=HELP,
        description="Sweeps the SqueezeNet family over the squeeze ratio SR (at pct3x3 0.5) "
        "and the share of 3x3 expand filters pct3x3 (at SR 0.5), as the paper's Fig. 3 does; "
        "for each point: parameters, fp32 MB, payload and sent bytes per step at N, and the "
        "cost model's step time, scaling efficiency and images/s at N on the link (compute: "
        "the profile's squeezenet1_0 scaled by multiply-adds). --train-steps S also trains "
        "each point S steps on digits and reports held-out accuracy.",
        epilog="example: dist-sqz design-space --workers 8 --link 10gbit --profile h100 "
        "--out design_space",
    )
    add_config_flags(p, DesignSpaceConfig)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--out", default="", metavar="DIR", help="also write design_space.{md,json} and plots"
    )


def run(args: argparse.Namespace) -> int:
    from dist_sqz.compute.profiles import load_profile
    from dist_sqz.config import DesignSpaceConfig
    from dist_sqz.costmodel import from_flags
    from dist_sqz.errors import UsageError
    from dist_sqz.paper.design_space import format_table, plot, sweep

    cfg = config_from_args(DesignSpaceConfig, args)
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; choose another --out")
    net = from_flags(cfg.link, cfg.latency)
    rows = sweep(cfg, load_profile(cfg.profile), net)
    table = format_table(rows, cfg)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "design_space.json").write_text(
            json.dumps({"config": cfg.to_dict(), "rows": rows}, indent=1) + "\n"
        )
        (out / "design_space.md").write_text(table + "\n")
        plots = plot(rows, cfg, out)
    print(json.dumps(rows, indent=1) if args.format == "json" else table)
    if out is not None:
        print(
            f"dist-sqz design-space: wrote {out}/design_space.md, .json, "
            + ", ".join(p.name for p in plots)
        )
    return 0
