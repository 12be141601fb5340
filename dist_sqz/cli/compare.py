"""`dist-sqz compare`: the main job, each model at each worker count on emulated hosts."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dist_sqz.cli import add_config_flags, config_from_args


def add(sub: argparse._SubParsersAction) -> None:
    from dist_sqz.config import CompareConfig

    p = sub.add_parser(
        "compare",
        help="the main job: models x worker counts on emulated hosts, with a report",
        description="Trains each model at each worker count (one emulated host per worker, "
        "links shaped to --link; local processes where namespaces are not permitted) and "
        "writes results.json, report.md and PNG plots to --out. Every run's settings are "
        "checked before the first one starts.",
        epilog="example: dist-sqz compare --models alexnet,squeezenet1_1 --workers 1,2,4 "
        "--link 1gbit",
    )
    add_config_flags(p, CompareConfig)


def run(args: argparse.Namespace) -> int:
    from dist_sqz.compare import compare
    from dist_sqz.config import CompareConfig

    cfg = config_from_args(CompareConfig, args)
    out = Path(cfg.out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}")
    result = compare(cfg, out)
    print((out / "report.md").read_text())
    print(
        f"dist-sqz compare: wrote {out}/results.json, report.md and plots "
        f"in {result['elapsed_s']:.0f}s"
    )
    return 0
