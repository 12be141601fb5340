"""`dist-sqz simulate`: the cost model's step time and scaling efficiency at N workers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dist_sqz.cli import add_config_flags, config_from_args

HELP = "cost model: step time and scaling efficiency at N workers"


def add(sub: argparse._SubParsersAction) -> None:
    from dist_sqz.config import SimulateConfig

    p = sub.add_parser(
        "simulate",
        help=HELP,
        description="Predicts step time, scaling efficiency and throughput from the model's "
        "gradient buckets, a compute profile and a cluster: a spec (--cluster: fabrics, "
        "achieved bandwidth, latency, framework, interference; docs/cost-model.md) or a "
        "network given by flags (a link rate, latency and topology). Each bucket's "
        "all-reduce overlaps the rest of backward.",
        epilog="examples: dist-sqz simulate --models alexnet --profile h100 --workers 8,64 | "
        "dist-sqz simulate --cluster dgx1-v100 --profile v100.json --models resnet50 "
        "--compute-precision fp32 --batch-size 128 --workers 8,16,32 (v100.json from "
        "dist-sqz profile --published resnet50=367 ...)",
    )
    add_config_flags(p, SimulateConfig)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--plot", default="", metavar="DIR", help="write efficiency/throughput PNGs")


def run(args: argparse.Namespace) -> int:
    from dist_sqz.compute.profiles import load_profile
    from dist_sqz.config import SimulateConfig
    from dist_sqz.costmodel import from_flags, load_spec, predict
    from dist_sqz.costmodel.simulate import format_table, plot

    cfg = config_from_args(SimulateConfig, args)
    if cfg.calibrate:
        return _calibrate(cfg)
    net = (
        load_spec(cfg.cluster)
        if cfg.cluster
        else from_flags(
            cfg.link,
            cfg.latency,
            cfg.topology,
            cfg.gpus_per_node,
            cfg.intra_link,
            cfg.transport,
            cfg.bucket_cap_mb,
        )
    )
    prof = load_profile(cfg.profile)
    where = (
        net.summary()
        if cfg.cluster
        else f"{cfg.link} links ({cfg.transport}), {cfg.latency} latency, {cfg.topology}"
    )
    header = (
        f"profile {cfg.profile} ({cfg.compute_precision}, batch {cfg.batch_size}/worker), {where}"
    )
    if cfg.break_even:
        from dist_sqz.costmodel.breakeven import DEFAULT_VARIANTS, break_even, format_break_even

        variants = DEFAULT_VARIANTS if cfg.compression == ["none"] else cfg.compression
        args_ = (cfg.models, variants, cfg.workers, net, prof, cfg.batch_size)
        result = break_even(*args_, cfg.compute_precision)
        print(
            json.dumps(result, indent=1)
            if args.format == "json"
            else format_break_even(result, header)
        )
        return 0
    rows = [
        row
        for variant in cfg.compression
        for row in predict(
            cfg.models,
            cfg.workers,
            net,
            prof,
            cfg.batch_size,
            cfg.compute_precision,
            variant,
            cfg.broadcast_buffers,
        )
    ]
    if args.plot:
        Path(args.plot).mkdir(parents=True, exist_ok=True)
        plot(rows, Path(args.plot))
    if args.format == "json":
        print(json.dumps(rows, indent=1))
        return 0
    print(format_table(rows, header))
    return 0


def _calibrate(cfg) -> int:
    """`simulate --calibrate RESULTS`: fit, show every row against the fit, write the spec."""
    from pathlib import Path

    from dist_sqz.costmodel import from_flags, load_spec
    from dist_sqz.costmodel.calibrate import calibrate, check_table, load_rows, spec_yaml

    rows, result = load_rows(cfg.calibrate)
    base = load_spec(cfg.cluster) if cfg.cluster else from_flags(result.get("link") or cfg.link)
    on = cfg.calibrate_on or None
    spec, summary = calibrate(base, rows, result, on)
    print(f"calibrated on {', '.join(summary['rows'])}:")
    for term, value in summary["terms"].items():
        print(f"  {term} = {value:.4g}")
    print("\nbefore (the spec as given):")
    print(check_table(base, rows, result, on))
    print("\nafter (each model's compute scaled by its N = 1 row, the terms fitted):")
    print(check_table(spec, rows, result, on, summary["scales"]))
    text = spec_yaml(spec, summary)
    if cfg.calibrated:
        Path(cfg.calibrated).write_text(text)
        print(
            f"\nwrote the calibrated spec to {cfg.calibrated} (simulate --cluster {cfg.calibrated})"
        )
    else:
        print("\n" + text)
    return 0
