"""`dist-sqz report`: Markdown + PNG report from finished runs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dist_sqz.errors import UsageError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="Markdown + PNG report from finished runs",
        description="Reads finished run directories (train runs: metrics.jsonl + "
        "summary.json; compare folders: results.json) and writes report.md with plots: "
        "per-step bytes and time, scaling curves, a compression table.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="", help="output folder (default runs/report-<time>)")


def run(args: argparse.Namespace) -> int:
    from dist_sqz.report import write_runs_report

    for r in args.runs:
        if not Path(r).is_dir():
            raise UsageError(f"run directory {r!r} not found")
    out = Path(args.out or f"runs/report-{time.strftime('%Y%m%d-%H%M%S')}")
    path = write_runs_report([Path(r) for r in args.runs], out)
    print(path.read_text())
    print(f"dist-sqz report: wrote {path} and plots")
    return 0
