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
    restarted = False
    if ckpt is None and cfg.out and checkpoint.same_launch(cfg.out):
        # torchrun restarted this job's workers (--max-restarts; also on the nodes whose own
        # workers did not fail, where TORCHELASTIC_RESTART_COUNT stays 0): every worker picks
        # the run up from its last checkpoint, as `--resume OUT` would.
        restarted = True
        if checkpoint.checkpoint_path(cfg.out).exists():
            ckpt = checkpoint.load(cfg.out)
            cfg = resolve(ckpt["config"], *layers, {"out": cfg.out})
        if _is_rank0():
            where = f"from step {ckpt['step']}" if ckpt else "from the start (no checkpoint yet)"
            print(f"dist-sqz: elastic restart: resuming {cfg.out} {where}", flush=True)
    Trainer(cfg, resume=ckpt, restarted=restarted).run()
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
    r.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        help="torchrun elastic restarts after a worker fails; train runs with --out and "
        "--checkpoint-every resume from their last checkpoint",
    )
    r.add_argument("--logs", default="", help="folder for each host's output (default: shown)")
    r.add_argument("cmd", nargs=argparse.REMAINDER, help="torchrun's script and its args")
    r.set_defaults(func=cmd_cluster_run)
    b = csub.add_parser(
        "bench",
        help="all-reduce bus bandwidth between emulated hosts, and the ring model's fit",
        description="Times gloo all-reduces of each size on K emulated hosts for each K "
        "(fastest of --reps), prints algbw and busbw (nccl-tests' definitions), and fits "
        "the ring model t = 2(N-1) a + 2(N-1)/N S/B that `dist-sqz simulate` uses: per-hop "
        "latency a and achieved bandwidth B, as `--latency` and `--link` x efficiency.",
        epilog="example: dist-sqz cluster bench --hosts 2,8 --link 1gbit --sizes 4MB,64MB",
    )
    b.add_argument("--hosts", default="2,8", help="host counts, comma-separated (each >= 2)")
    b.add_argument("--link", default="1gbit", help="each host's link rate (tc units: 1gbit)")
    b.add_argument(
        "--sizes",
        default="4MB,64MB",
        help="all-reduce sizes (binary units); the fit models these sizes, so use ones like "
        "the gradient buckets",
    )
    b.add_argument("--reps", type=int, default=3, help="timed all-reduces per size")
    b.add_argument("--format", choices=("text", "json"), default="text")
    b.set_defaults(func=cmd_cluster_bench)


def cmd_cluster_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dist_sqz.cluster import Cluster

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise UsageError("cluster run needs a command after --, e.g. -- -m dist_sqz train")
    cluster = Cluster(args.hosts, args.link, args.delay, args.loss, max_restarts=args.max_restarts)
    with cluster:
        before = [cluster.tx_bytes(i) for i in range(args.hosts)]
        logs = Path(args.logs) if args.logs else None
        codes = cluster.run(cmd, timeout_s=args.timeout, log_dir=logs)
        wire = [cluster.tx_bytes(i) - b for i, b in enumerate(before)]
    for i, (code, w) in enumerate(zip(codes, wire, strict=True)):
        print(f"host {i} ({cluster.addr(i)}): exit {code}, wire tx {w:,} bytes")
    return 0 if all(c == 0 for c in codes) else 1


def cmd_cluster_bench(args: argparse.Namespace) -> int:
    import json

    from dist_sqz.cluster import Cluster, namespaces_permitted
    from dist_sqz.comm.bench import bench_cluster, parse_size, ring_terms

    try:
        hosts = [int(h) for h in _csv(args.hosts)]
    except ValueError:
        raise UsageError(
            f"cluster bench: --hosts takes counts like 2,8, not {args.hosts!r}"
        ) from None
    try:
        sizes = [parse_size(s) for s in _csv(args.sizes)]
    except ValueError as e:
        raise UsageError(f"cluster bench: {e}") from None
    if not hosts or min(hosts) < 2:
        raise UsageError("cluster bench: --hosts needs host counts of at least 2, e.g. 2,8")
    if not sizes or args.reps < 1:
        raise UsageError("cluster bench: give at least one size and --reps >= 1")
    for n in hosts:
        Cluster(n, args.link)  # validates host count and link before anything starts
    ok, why = namespaces_permitted()
    if not ok:
        raise UsageError(f"cannot emulate a cluster here: {why}")
    result = bench_cluster(hosts, args.link, sizes, args.reps)
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{'hosts':>5}{'bytes':>14}{'time ms':>11}{'algbw MB/s':>12}{'busbw MB/s':>12}"
        f"{'fit ms':>10}"
    )
    for p in result["points"]:
        ca, cb = ring_terms(p["world_size"], p["bytes"])
        fitted = ca * result["latency_s"] + cb / result["bandwidth_Bps"]
        print(
            f"{p['world_size']:>5}{p['bytes']:>14,}{p['time_s'] * 1e3:>11.2f}"
            f"{p['algbw_Bps'] / 1e6:>12.1f}{p['busbw_Bps'] / 1e6:>12.1f}{fitted * 1e3:>10.2f}"
        )
    print(
        f"ring fit: latency a = {result['latency_s'] * 1e6:.0f} us per hop, bandwidth B = "
        f"{result['bandwidth_Bps'] / 1e6:.1f} MB/s = {result['efficiency']:.3f} x the "
        f"{args.link} link"
    )
    return 0


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
    p.add_argument(
        "--compute-profile",
        default="",
        help="emulate GPU compute from configs/profiles/NAME.json (e.g. h100) instead of "
        "timing this CPU; --link is then the emulated link",
    )
    p.add_argument("--compute-precision", default="bf16_cl")
    p.add_argument("--profile-batch-size", type=int, default=256, help="emulated per-GPU batch")
    p.add_argument(
        "--dilation",
        type=float,
        default=100.0,
        help="with --compute-profile: compute runs D times slower and links D times slower "
        "(default 100: a 100gbit link is shaped to 1gbit)",
    )
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
    if args.compute_profile:
        from dist_sqz.simulate import compute_times, load_profile

        if not args.dilation > 0 or args.profile_batch_size < 1:
            raise UsageError("--dilation must be > 0 and --profile-batch-size >= 1")
        prof = load_profile(args.compute_profile)
        for m in _csv(args.models):
            compute_times(prof, m, args.profile_batch_size, args.compute_precision)
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
        emulated=(
            (args.compute_profile, args.compute_precision, args.profile_batch_size, args.dilation)
            if args.compute_profile
            else None
        ),
    )
    print((out / "report.md").read_text())
    print(
        f"dist-sqz compare: wrote {out}/results.json, report.md and plots "
        f"in {result['elapsed_s']:.0f}s"
    )
    return 0


def _ints(text: str, flag: str) -> list[int]:
    try:
        vals = [int(x) for x in _csv(text)]
    except ValueError:
        raise UsageError(f"{flag} takes integers like 1,2,4; got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise UsageError(f"{flag} takes positive integers; got {text!r}")
    return vals


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from dist_sqz.simulate import TOPOLOGIES

    p = sub.add_parser(
        "simulate",
        help="cost model: step time and scaling efficiency at N workers",
        description="Predicts step time, scaling efficiency and throughput from the model's "
        "DDP gradient buckets, a compute profile and a network (latency + bandwidth, "
        "topology), with each bucket's all-reduce overlapping the rest of backward.",
    )
    p.add_argument("--models", default="alexnet,squeezenet1_1")
    p.add_argument(
        "--workers",
        default=",".join(str(2**i) for i in range(11)),
        help="worker counts (default 1,2,4,...,1024)",
    )
    p.add_argument("--profile", default="h100", help="configs/profiles/NAME.json or a path")
    p.add_argument("--precision", default="bf16_cl", help="profile precision (fp32, bf16_cl)")
    p.add_argument("--batch-size", type=int, default=256, help="per worker (default 256)")
    p.add_argument("--link", default="100gbit", help="per-worker bandwidth (default 100gbit)")
    p.add_argument("--latency", default="5us", help="per-message latency (default 5us)")
    p.add_argument("--topology", default="ring", choices=TOPOLOGIES)
    p.add_argument("--gpus-per-node", type=int, default=8, help="hierarchical only")
    p.add_argument("--intra-link", default="3600gbit", help="hierarchical: node-local link")
    p.add_argument("--bucket-cap-mb", type=float, default=25.0)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--plot", default="", metavar="DIR", help="write efficiency/throughput PNGs")
    p.set_defaults(func=cmd_simulate)


def _seconds(text: str) -> float:
    import re

    m = re.fullmatch(r"\s*([0-9.]+)\s*(s|ms|us|ns)?\s*", text)
    if not m:
        raise UsageError(f"latency {text!r} is not like 5us or 1ms")
    return float(m.group(1)) * {"s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[m.group(2) or "s"]


def cmd_simulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dist_sqz.cluster import parse_rate
    from dist_sqz.models import MODELS
    from dist_sqz.simulate import Network, load_profile, plot, simulate

    for m in _csv(args.models):
        MODELS.get(m)
    if args.batch_size < 1 or args.gpus_per_node < 1:
        raise UsageError("--batch-size and --gpus-per-node must be >= 1")
    net = Network(
        bandwidth_Bps=parse_rate(args.link) / 8,
        latency_s=_seconds(args.latency),
        topology=args.topology,
        gpus_per_node=args.gpus_per_node,
        intra_bandwidth_Bps=parse_rate(args.intra_link) / 8,
    )
    rows = simulate(
        _csv(args.models),
        _ints(args.workers, "--workers"),
        net,
        load_profile(args.profile),
        args.batch_size,
        args.precision,
        args.bucket_cap_mb,
    )
    if args.plot:
        Path(args.plot).mkdir(parents=True, exist_ok=True)
        plot(rows, Path(args.plot))
    if args.format == "json":
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"profile {args.profile} ({args.precision}, batch {args.batch_size}/worker), "
        f"{args.link} links, {args.latency} latency, {args.topology}"
    )
    print(
        f"{'model':15s} {'N':>5s} {'step ms':>9s} {'comm ms':>9s} {'exposed':>9s} "
        f"{'efficiency':>10s} {'images/s':>12s}"
    )
    for r in rows:
        print(
            f"{r['model']:15s} {r['world_size']:5d} {r['step_time_s'] * 1e3:9.2f} "
            f"{r['comm_time_s'] * 1e3:9.2f} {r['exposed_comm_s'] * 1e3:9.2f} "
            f"{r['scaling_efficiency']:10.3f} {r['images_per_s']:12,.0f}"
        )
    return 0


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="measure forward/backward/optimizer time per model on this device",
        description="Times forward, backward and the optimizer step for each model, batch "
        "size and precision on this device (GPU if present) and writes a profile JSON for "
        "`dist-sqz simulate --profile FILE`.",
    )
    p.add_argument("--models", default="alexnet,squeezenet1_0,squeezenet1_1")
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--precisions", default="", help="default fp32,bf16_cl on GPU, fp32 on CPU")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from dist_sqz.models import MODELS
    from dist_sqz.profile import profile, write

    for m in _csv(args.models):
        MODELS.get(m)
    if args.steps < 1 or args.warmup < 0 or args.image_size < 1:
        raise UsageError("--steps and --image-size must be >= 1, --warmup >= 0")
    out = Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists; choose another --out")
    default = "fp32,bf16_cl" if torch.cuda.is_available() else "fp32"
    result = profile(
        _csv(args.models),
        _ints(args.batch_sizes, "--batch-sizes"),
        _csv(args.precisions or default),
        args.image_size,
        args.steps,
        args.warmup,
    )
    write(result, out)
    print(f"dist-sqz profile: wrote {out}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="Markdown + PNG report from finished runs",
        description="Reads finished run directories (train runs: metrics.jsonl + "
        "summary.json; compare folders: results.json) and writes report.md with plots: "
        "per-step bytes and time, scaling curves, a compression table.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="", help="output folder (default runs/report-<time>)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from dist_sqz.report import write_runs_report

    out = Path(args.out or f"runs/report-{time.strftime('%Y%m%d-%H%M%S')}")
    path = write_runs_report([Path(r) for r in args.runs], out)
    print(path.read_text())
    print(f"dist-sqz report: wrote {path} and plots")
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
    _add_simulate(sub)
    _add_profile(sub)
    _add_report(sub)
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
