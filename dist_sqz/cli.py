"""`dist-sqz` command line. Errors a user can cause end as one line and exit status 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from typing import Any

from dist_sqz.errors import CommFailure, UsageError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    from dist_sqz.config import TrainConfig

    p = sub.add_parser(
        "train",
        help="one training run (under torchrun, mpirun or horovodrun, or alone)",
        description=(
            "One data-parallel training run with exact per-step accounting of the bytes and "
            "time of gradient exchange. Launch it under torchrun, mpirun or horovodrun; alone it "
            "is a single worker. Settings come from the defaults, then --config FILE, then "
            "flags and --set key=value (later wins)."
        ),
        epilog="example: torchrun --standalone --nproc-per-node 2 -m dist_sqz train "
        "--model squeezenet1_1 --steps 20",
    )
    p.add_argument("--config", help="YAML file of settings (keys as below, with underscores)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="set any key; repeatable"
    )
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last.pt"
    )
    for f in fields(TrainConfig):
        ptype = {"int": int, "float": float, "str": str}[f.type]
        kw: dict[str, Any] = {"type": ptype, "default": argparse.SUPPRESS}
        if f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            help=f"{f.metadata['help']} (default: {f.default!r})",
            **kw,
        )
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from dist_sqz import checkpoint
    from dist_sqz.config import field_names, load_yaml, parse_set, resolve
    from dist_sqz.train import Trainer

    flags = {k: getattr(args, k) for k in field_names() if hasattr(args, k)}
    layers: list[dict[str, Any]] = []
    ckpt = None
    if args.resume:
        ckpt = checkpoint.load(args.resume)
        layers.append(ckpt["config"])
    if args.config:
        layers.append(load_yaml(args.config))
    layers += [flags, parse_set(args.set)]
    if args.resume:
        layers.append({"out": args.resume})
    cfg = resolve(*layers)
    Trainer(cfg, resume=ckpt).run()
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="the model zoo: params, size, GFLOPs, bytes exchanged per step",
        description="Parameters, fp32 size, GFLOPs at 224x224 (multiply-adds, torchvision's "
        "convention) and, for uncompressed fp32 ring all-reduce at --workers N, the "
        "payload_bytes and sent_bytes of one step.",
    )
    p.add_argument("--workers", type=int, default=2, help="world size N (default 2)")
    p.add_argument("--models", help="comma-separated subset (default: all)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from dist_sqz.models import MODELS
    from dist_sqz.models.stats import zoo_table

    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    names = args.models.split(",") if args.models else None
    for n in names or []:
        MODELS.get(n)
    rows = zoo_table(args.workers, names)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'model':<20}{'params':>14}{'fp32 MB':>10}{'GFLOPs':>8}"
        f"{'payload B/step':>16}{'sent B/step':>15}   (N={args.workers}, ring all-reduce)"
    )
    for r in rows:
        print(
            f"{r['model']:<20}{r['params']:>14,}{r['fp32_mb']:>10.2f}{r['gflops']:>8.2f}"
            f"{r['payload_bytes']:>16,}{r['sent_bytes']:>15,}"
        )
    return 0


def _add_cluster(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="emulated multi-host cluster on this machine (network namespaces, shaped links)",
        description="Emulated cluster: K network namespaces on a bridge, each host's link "
        "shaped with tc. Needs root.",
    )
    csub = p.add_subparsers(dest="cluster_command", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    r = csub.add_parser(
        "run",
        help="run CMD on every host as one torchrun multi-node job",
        description="Brings up K hosts, runs `torchrun --nnodes K --node-rank i ... CMD` on "
        "host i (c10d rendezvous on host 0, one worker per host), reports each host's wire "
        "bytes, and tears everything down, also on failure, timeout and Ctrl-C.",
        epilog="example: dist-sqz cluster run --hosts 3 --link 1gbit -- -m dist_sqz train "
        "--model squeezenet1_1 --steps 5",
    )
    r.add_argument("--hosts", type=int, required=True, help="number of emulated hosts K")
    r.add_argument("--link", default="1gbit", help="each host's link rate (tc units: 1gbit)")
    r.add_argument("--delay", default="", help="one-way delay added by netem, e.g. 1ms")
    r.add_argument("--loss", default="", help="packet loss added by netem, e.g. 0.1%%")
    r.add_argument("--timeout", type=float, default=1800, help="seconds before all is killed")
    r.add_argument("--logs", default="", help="folder for each host's output (default: shown)")
    r.add_argument("cmd", nargs=argparse.REMAINDER, help="torchrun's script and its args")
    r.set_defaults(func=cmd_cluster_run)


def cmd_cluster_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dist_sqz.cluster import Cluster

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise UsageError("cluster run needs a command after --, e.g. -- -m dist_sqz train")
    cluster = Cluster(args.hosts, args.link, args.delay, args.loss)
    with cluster:
        before = [cluster.tx_bytes(i) for i in range(args.hosts)]
        logs = Path(args.logs) if args.logs else None
        codes = cluster.run(cmd, timeout_s=args.timeout, log_dir=logs)
        wire = [cluster.tx_bytes(i) - b for i, b in enumerate(before)]
    for i, (code, w) in enumerate(zip(codes, wire, strict=True)):
        print(f"host {i} ({cluster.addr(i)}): exit {code}, wire tx {w:,} bytes")
    return 0 if all(c == 0 for c in codes) else 1


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="the main job: models x worker counts on emulated hosts, with a report",
        description="Trains each model at each worker count (one emulated host per worker, "
        "links shaped to --link; local processes where namespaces are not permitted) and "
        "writes results.json, report.md and PNG plots to --out.",
    )
    p.add_argument("--models", default="alexnet,squeezenet1_0,squeezenet1_1")
    p.add_argument("--workers", default="1,2,4", help="worker counts (default 1,2,4)")
    p.add_argument("--steps", type=int, default=8, help="steps per run (default 8)")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--link", default="1gbit", help="each host's link rate (default 1gbit)")
    p.add_argument("--delay", default="", help="one-way link delay, e.g. 100us")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8, help="per worker (default 8)")
    p.add_argument("--out", default="", help="output folder (default runs/compare-<time>)")
    p.add_argument("--wandb", default="off", choices=("off", "offline", "online"))
    p.add_argument("--wandb-project", default="dist_sqz")
    p.add_argument("--wandb-group", default="", help="default compare-<out folder name>")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from dist_sqz.compare import compare

    try:
        workers = [int(x) for x in _csv(args.workers)]
    except ValueError:
        raise UsageError(f"--workers takes integers like 1,2,4; got {args.workers!r}") from None
    if args.image_size <= 0 or args.batch_size <= 0:
        raise UsageError("--image-size and --batch-size must be > 0")
    out = Path(args.out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}")
    result = compare(
        _csv(args.models),
        workers,
        args.steps,
        args.link,
        out,
        warmup=args.warmup_steps,
        image_size=args.image_size,
        batch_size=args.batch_size,
        delay=args.delay,
        wandb=(args.wandb, args.wandb_project, args.wandb_group or f"compare-{out.name}"),
    )
    print((out / "report.md").read_text())
    print(
        f"dist-sqz compare: wrote {out}/results.json, report.md and plots "
        f"in {result['elapsed_s']:.0f}s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dist-sqz",
        description="Data-parallel training that measures exactly what gradient exchange "
        "costs (SqueezeNet vs AlexNet), and cuts it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_train(sub)
    _add_models(sub)
    _add_cluster(sub)
    _add_compare(sub)
    return parser


def _is_rank0() -> bool:
    for var in ("RANK", "HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"):
        if var in os.environ:
            return os.environ[var] == "0"
    return True


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as e:
        msg = str(e)
        # Errors of configuration are the same on every rank: rank 0 says it once.
        if _is_rank0() or msg.startswith("rank "):
            print(f"dist-sqz: error: {msg}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except CommFailure as e:
        print(f"dist-sqz: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("dist-sqz: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
