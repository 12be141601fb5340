"""`dist-sqz cluster run|bench|curve|up|down`: jobs, all-reduce benchmarks and a Slurm test
cluster on emulated hosts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dist_sqz.cli import Parser
from dist_sqz.errors import Stopped, UsageError

HELP = "emulated multi-host cluster on this machine (network namespaces, shaped links)"


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help=HELP,
        description="Emulated cluster: K network namespaces on a bridge, each host's link "
        "shaped with tc. Needs root. Each cluster is private to the command that made it: "
        "several run at once.",
    )
    csub = p.add_subparsers(dest="cluster_command", metavar="ACTION", parser_class=Parser)
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
    u = csub.add_parser(
        "up",
        help="a real Slurm cluster whose nodes are emulated hosts (for testing --launcher slurm)",
        description="Starts K emulated hosts (shaped links) and Slurm's own daemons on them: "
        "munged, slurmctld on the bridge, one slurmd per host in its namespace with its own "
        "hostname. The cluster outlives the command; `dist-sqz cluster down` stops it. Prints "
        "sinfo and the SLURM_CONF to export. Needs root and launch/install_slurm.sh.",
        epilog="example: dist-sqz cluster up --hosts 4 --link 1gbit --slurm && export "
        "SLURM_CONF=$(cat /run/dist_sqz/slurm.current)",
    )
    u.add_argument("--hosts", type=int, required=True, help="number of nodes K")
    u.add_argument("--link", default="1gbit", help="each node's link rate (tc units: 1gbit)")
    u.add_argument("--slurm", action="store_true", help="run Slurm on the hosts (required)")
    csub.add_parser(
        "down",
        help="stop every Slurm test cluster here (daemons, namespaces, links)",
        description="Stops every daemon and removes every namespace and link a `cluster up "
        "--slurm` made, also what a crashed one left behind. Safe to repeat.",
    )
    c = csub.add_parser(
        "curve",
        help="measured all-reduce bus bandwidth -> a cluster spec's busbw_curve",
        description="Reads all_reduce_perf's output (its table, or the JSON of -J FILE.json) "
        "or `dist-sqz cluster bench --format json` and prints the spec lines that make the "
        "cost model use the measured bus bandwidth per message size (docs/cost-model.md).",
        epilog="example: all_reduce_perf -b 1M -e 1G -f 2 -g 8 | tee ar.txt; "
        "dist-sqz cluster curve ar.txt --level intra >> my.yaml",
    )
    c.add_argument("file", help="a file with all_reduce_perf's output or its -J JSON")
    c.add_argument(
        "--level",
        choices=("intra", "inter"),
        default="intra",
        help="intra: GPUs of one node were measured; inter: one GPU per node",
    )
    c.add_argument(
        "--hosts",
        type=int,
        default=None,
        help="cluster bench output: the host count whose points to use (default: the most)",
    )
    c.add_argument(
        "--time",
        choices=("fastest", "median"),
        default="fastest",
        help="cluster bench output: each size's fastest all-reduce (nccl-tests' habit) or its "
        "median (what a training step's median meets)",
    )


def run(args: argparse.Namespace) -> int:
    actions = {"curve": _curve, "run": _run, "bench": _bench, "up": _up, "down": _down}
    return actions[args.cluster_command](args)


def _up(args: argparse.Namespace) -> int:
    from dist_sqz.cluster import Cluster, slurm

    if not args.slurm:
        raise UsageError(
            "cluster up starts a Slurm cluster: add --slurm (for one job on emulated hosts, "
            "`dist-sqz cluster run`)"
        )
    Cluster(args.hosts, args.link)  # validates the host count and the link first
    folder = slurm.up(args.hosts, args.link)
    print(slurm.sinfo(folder))
    print(f"dist-sqz cluster: Slurm up, {args.hosts} nodes at {args.link}; state in {folder}")
    print(f"export SLURM_CONF={folder / 'slurm.conf'}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from dist_sqz.cluster import slurm

    slots = slurm.down()
    print(f"dist-sqz cluster: stopped {len(slots)} Slurm test cluster(s)")
    return 0


def _curve(args: argparse.Namespace) -> int:
    from dist_sqz.costmodel.curves import curve_yaml, read_busbw

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"cluster curve: {args.file!r} not found")
    points = read_busbw(path.read_text(), args.file, args.hosts, args.time)
    print(curve_yaml(points, args.level))
    return 0


def _run(args: argparse.Namespace) -> int:
    from dist_sqz.cluster import Cluster
    from dist_sqz.cluster.launch import run_on_hosts

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise UsageError("cluster run needs a command after --, e.g. -- -m dist_sqz train")
    cluster = Cluster(args.hosts, args.link, args.delay, args.loss, max_restarts=args.max_restarts)
    with cluster:
        print(
            f"dist-sqz cluster: {cluster.prefix} up, {args.hosts} hosts "
            f"{cluster.addr(0)}-{cluster.addr(args.hosts - 1)}, {args.link} links",
            flush=True,
        )
        before = [cluster.tx_bytes(i) for i in range(args.hosts)]
        logs = Path(args.logs) if args.logs else None
        try:
            codes = run_on_hosts(cluster, cmd, timeout_s=args.timeout, log_dir=logs)
        except Stopped as e:  # forwarded to every host; the cluster comes down on the way out
            msg = f"{e}; every host got it; cluster {cluster.prefix} torn down"
            raise Stopped(msg, e.status) from None
        wire = [cluster.tx_bytes(i) - b for i, b in enumerate(before)]
        for i, (code, w) in enumerate(zip(codes, wire, strict=True)):
            print(f"host {i} ({cluster.addr(i)}): exit {code}, wire tx {w:,} bytes")
    return 0 if all(c == 0 for c in codes) else 1


def _bench(args: argparse.Namespace) -> int:
    from dist_sqz.cluster import Cluster, namespaces_permitted
    from dist_sqz.cluster.bench import bench_cluster, format_table
    from dist_sqz.units import csv, parse_counts, parse_size

    hosts = parse_counts(args.hosts, "cluster bench: --hosts", minimum=2)
    sizes = [parse_size(s) for s in csv(args.sizes)]
    if not sizes or args.reps < 1:
        raise UsageError("cluster bench: give at least one size and --reps >= 1")
    for n in hosts:
        Cluster(n, args.link)  # validates host count and link before anything starts
    ok, why = namespaces_permitted()
    if not ok:
        raise UsageError(f"cannot emulate a cluster here: {why}")
    result = bench_cluster(hosts, args.link, sizes, args.reps)
    print(json.dumps(result, indent=2) if args.format == "json" else format_table(result))
    return 0
