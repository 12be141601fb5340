"""`dist-sqz simulate`: the cost model's step time and scaling efficiency at N workers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dist_sqz.cli import add_config_flags, config_from_args


def add(sub: argparse._SubParsersAction) -> None:
    from dist_sqz.config import SimulateConfig

    p = sub.add_parser(
        "simulate",
        help="cost model: step time and scaling efficiency at N workers",
        description="Predicts step time, scaling efficiency and throughput from the model's "
        "DDP gradient buckets, a compute profile and a network (latency + bandwidth, "
        "topology), with each bucket's all-reduce overlapping the rest of backward.",
        epilog="example: dist-sqz simulate --models alexnet --profile h100 --workers 8,64",
    )
    add_config_flags(p, SimulateConfig)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--plot", default="", metavar="DIR", help="write efficiency/throughput PNGs")


def run(args: argparse.Namespace) -> int:
    from dist_sqz.config import SimulateConfig
    from dist_sqz.profiles import load_profile
    from dist_sqz.simulate import Network, format_table, plot, simulate
    from dist_sqz.units import parse_duration, parse_rate

    cfg = config_from_args(SimulateConfig, args)
    net = Network(
        bandwidth_Bps=parse_rate(cfg.link) / 8,
        latency_s=parse_duration(cfg.latency),
        topology=cfg.topology,
        gpus_per_node=cfg.gpus_per_node,
        intra_bandwidth_Bps=parse_rate(cfg.intra_link) / 8,
    )
    rows = simulate(
        cfg.models,
        cfg.workers,
        net,
        load_profile(cfg.profile),
        cfg.batch_size,
        cfg.compute_precision,
        cfg.bucket_cap_mb,
    )
    if args.plot:
        Path(args.plot).mkdir(parents=True, exist_ok=True)
        plot(rows, Path(args.plot))
    if args.format == "json":
        print(json.dumps(rows, indent=1))
        return 0
    header = (
        f"profile {cfg.profile} ({cfg.compute_precision}, batch {cfg.batch_size}/worker), "
        f"{cfg.link} links, {cfg.latency} latency, {cfg.topology}"
    )
    print(format_table(rows, header))
    return 0
