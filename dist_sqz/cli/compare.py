"""`dist-sqz compare`: the main job, each model at each worker count on emulated hosts."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dist_sqz.cli import add_config_flags, config_from_args

HELP = "the main job: models x worker counts on emulated hosts, with a report"


def add(sub: argparse._SubParsersAction) -> None:
    from dist_sqz.config import CompareConfig

    p = sub.add_parser(
        "compare",
        help=HELP,
        description="Trains each model at each worker count (one emulated host per worker, "
        "links shaped to --link; local processes where namespaces are not permitted) and "
        "writes results.json (after every run), report.md and PNG plots to --out. By default "
        "each worker's compute is padded to one core's measured times, time-dilated, so "
        "scaling efficiency measures the network, not workers sharing this machine's cores. "
        "With --target-accuracy each model trains with its recipe until it reaches the "
        "target, and the report gives time to accuracy. Every run's settings are checked "
        "before the first one starts; a failed run is recorded and the others go on.",
        epilog="examples: dist-sqz compare --models alexnet,squeezenet1_1 --workers 1,2,4 "
        "--link 1gbit | dist-sqz compare --models alexnet,squeezenet1_1 --workers 1,2,4,8 "
        "--target-accuracy 0.95 --data digits | dist-sqz compare --resume runs/compare-X",
    )
    add_config_flags(p, CompareConfig)


# What `--resume` may change: where and for how long the rest is scheduled, never what is
# measured (a row cut by its time limit continues with a longer one).
RESCHEDULE = ("time_limit", "signal_s", "partition", "account", "sbatch_args")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def run(args: argparse.Namespace) -> int:
    from dist_sqz.compare import compare, load_for_resume
    from dist_sqz.config import CompareConfig
    from dist_sqz.errors import UsageError

    cfg = config_from_args(CompareConfig, args)
    if cfg.collect:
        from dist_sqz.compare.collect import collect, write

        out = Path(cfg.out or f"runs/collect-{time.strftime('%Y%m%d-%H%M%S')}")
        result = collect([Path(r) for r in cfg.collect], cfg)
        write(result, out)
        print((out / "report.md").read_text())
        print(f"dist-sqz compare: collected {len(result['rows'])} runs into {out}")
        return 0
    resuming = bool(cfg.resume)
    if resuming:
        others = sorted(cfg.model_fields_set - {"resume"} - set(RESCHEDULE))
        if others:
            raise UsageError(
                f"--resume continues a comparison with its own settings (only where it is "
                f"scheduled may change: {', '.join(_flag(k) for k in RESCHEDULE)}); drop "
                f"{_flag(others[0])}"
            )
        out = Path(cfg.resume)
        cfg = load_for_resume(out, cfg.model_dump(include=cfg.model_fields_set - {"resume"}))
    else:
        out = Path(cfg.out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}")
    result = compare(cfg, out, resume=resuming)
    if cfg.estimate:
        return 0
    print((out / "report.md").read_text())
    print(
        f"dist-sqz compare: wrote {out}/results.json, report.md and plots "
        f"in {result['elapsed_s']:.0f}s"
    )
    if result["failed"]:
        print(
            f"dist-sqz compare: {len(result['failed'])} row(s) failed: "
            + "; ".join(result["failed"])
            + f" (logs under {out}/logs; rerun them with --resume {out})",
            file=sys.stderr,
        )
        return 1
    return 0
