"""`dist-sqz report`: Markdown + PNG report from finished runs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dist_sqz.errors import UsageError

HELP = "Markdown + PNG report from finished runs"


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help=HELP,
        description="Reads finished run directories (train runs: metrics.jsonl + "
        "summary.json; compare folders: results.json) and writes report.md with plots: "
        "per-step bytes and time, scaling curves, a compression table.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="", help="output folder (default runs/report-<time>)")
    p.add_argument(
        "--collectives",
        action="store_true",
        help="print each run's per-collective statistics instead (nccl-tests' columns: "
        "count, median and p95 time, algbw, busbw, per collective and size class, from "
        "collectives.jsonl); writes nothing",
    )
    p.add_argument("--format", choices=("text", "json"), default="text", help="--collectives: how")
    p.add_argument(
        "--wandb-report",
        default="",
        metavar="ENTITY/PROJECT",
        help="build a W&B Report of one comparison (COMPARE_DIR, run with --wandb): its claim, "
        "panels over its runs and its table; saved online, else its definition is written to "
        "COMPARE_DIR/wandb_report.json",
    )


def run(args: argparse.Namespace) -> int:
    from dist_sqz.observe.report import write_runs_report

    for r in args.runs:
        if not Path(r).is_dir():
            raise UsageError(f"run directory {r!r} not found")
    if args.collectives:
        return _collectives([Path(r) for r in args.runs], args.format)
    if args.wandb_report:
        return _wandb_report([Path(r) for r in args.runs], args.wandb_report)
    out = Path(args.out or f"runs/report-{time.strftime('%Y%m%d-%H%M%S')}")
    path = write_runs_report([Path(r) for r in args.runs], out)
    print(path.read_text())
    print(f"dist-sqz report: wrote {path} and plots")
    return 0


def _collectives(dirs: list[Path], fmt: str) -> int:
    import json

    from dist_sqz.observe.step_view import collective_stats, format_stats, read_log

    result = {}
    for d in dirs:
        lines = read_log(d)
        if not lines:
            raise UsageError(f"{d} has no collectives.jsonl (a train run writes one)")
        result[str(d)] = collective_stats(lines)
    if fmt == "json":
        print(json.dumps(result, indent=1))
        return 0
    for d, rows in result.items():
        print(f"{d}:")
        print(format_stats(rows) if rows else "  no measured collectives")
    print(
        "algbw = S / t and busbw = algbw x 2(N-1)/N (all-reduce), (N-1)/N with S = N x "
        "payload (all-gather): nccl-tests' definitions (DeepSpeed's all-reduce algbw is 2 S / t)"
    )
    return 0


def _wandb_report(dirs: list[Path], target: str) -> int:
    import json

    from dist_sqz.compare import load_for_resume
    from dist_sqz.compare.plan import wandb_group
    from dist_sqz.observe.wandb_report import Offline, build_report, parse_target, publish

    entity, project = parse_target(target)
    if len(dirs) != 1 or not (dirs[0] / "results.json").is_file():
        raise UsageError("--wandb-report takes one comparison folder (with results.json)")
    out = dirs[0]
    cfg = load_for_resume(out)
    result = json.loads((out / "results.json").read_text())
    report = build_report(result, entity, project, wandb_group(cfg, out), out.name)
    try:
        url = publish(report, out)
    except Offline as e:
        # Name only the offline runs that exist: a comparison made without --wandb has none.
        offline = sorted(str(p) for p in out.glob("**/wandb/offline-run-*") if p.is_dir())
        step = (
            f"sync its runs ({len(offline)}: wandb sync {' '.join(offline)}), then run this "
            "command again"
            if offline
            else f"rerun the comparison with --wandb offline (its rows' runs are what the "
            f"report shows; {out} has none), sync them, then run this command again"
        )
        print(
            f"dist-sqz report: W&B not reachable; wrote the report's definition to {e}. To "
            f"publish it: {step}"
        )
        return 0
    print(f"dist-sqz report: saved the W&B Report: {url}")
    return 0
