"""Cost of dist_sqz's accounting: plain DDP (no comm hook) vs DDP with the accounted hook;
and the cost of the straggler and overlap figures (`observe/timeline.py`): the accounted step with
the per-step agreement as it was (4 flags) vs with the timing figures riding it (7 values,
and the rank's own interval arithmetic over the step's collectives).

Method: 2 gloo workers on this machine (`--backend nccl`: one worker per GPU, steps timed
after a CUDA synchronize); the variants of the same model live in each worker
and steps rotate A, B, C, A, B, C... so machine noise hits them alike. C is DDP with torch's
own Python `allreduce_hook`: the price of any Python comm hook, for reference. After
warm-up, each round gives one paired ratio (accounted / plain step time). Printed: median
step times, the ratio of medians, and the mean paired ratio +- 1.96 sigma / sqrt(n).
Target <= 1.01x, for both.

    python benchmarks/overhead.py [--models squeezenet1_1,alexnet] [--rounds 30]
    python benchmarks/overhead.py --backend nccl --batch-size 256 --image-size 224
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from dist_sqz.comm.accounting import Ledger
from dist_sqz.comm.backends.ddp import accounted_hook
from dist_sqz.comm.collectives import TorchCollectives
from dist_sqz.comm.compression import build_compressor
from dist_sqz.config import TrainConfig
from dist_sqz.models import build_model
from dist_sqz.observe.timeline import StepTimeline


class _HookState:
    """The state `accounted_hook` reads, without the rest of a backend."""

    def __init__(self, world_size: int) -> None:
        self.ledger = Ledger(world_size)
        self.collectives = TorchCollectives(self.ledger, world_size)
        self.compressor = build_compressor("none", TrainConfig())
        self.comm_enabled = True


def _step(model, opt, x, y) -> float:
    cuda = x.is_cuda
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _agree(values: list[int]) -> None:
    dist.all_reduce(torch.tensor(values, dtype=torch.int64), op=dist.ReduceOp.MAX)


def _worker(rank: int, world: int, port: int, args, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # nccl for the model's gradients, gloo for the CPU tensor of the agreement (as the trainer)
    pg = "cpu:gloo,cuda:nccl" if args.backend == "nccl" else args.backend
    dist.init_process_group(pg, rank=rank, world_size=world)
    device = torch.device("cuda", rank) if args.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    results = {}
    for name in args.models.split(","):
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(rank)
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g)
        y = torch.randint(0, 1000, (args.batch_size,), generator=g)
        x, y = x.to(device), y.to(device)
        plain = DDP(build_model(name).to(device))
        hooked = DDP(build_model(name).to(device))
        state = _HookState(world)
        state.param_names = {id(p): n for n, p in hooked.module.named_parameters()}
        hooked.register_comm_hook(state, accounted_hook)
        # torch's own Python all-reduce hook: the cost of any Python comm hook in DDP.
        torch_hook = DDP(build_model(name).to(device))
        torch_hook.register_comm_hook(None, default_hooks.allreduce_hook)
        variants = [(plain, "plain"), (hooked, "accounted"), (torch_hook, "torch_python_hook")]
        # the accounted step and its agreement, without and with the timing figures
        variants += [(hooked, "agreed"), (hooked, "agreed_timed")]
        opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m, k in variants}
        times: dict[str, list[float]] = {k: [] for _, k in variants}
        rounds = args.rounds if "alexnet" not in name else max(8, args.rounds // 2)
        timeline = StepTimeline(rank, world, 1.0, None)
        for r in range(args.warmup + rounds):
            k = r % len(variants)
            order = variants[k:] + variants[:k]  # rotate who goes first
            for model, key in order:
                opt = opts[key]
                t0 = time.perf_counter()
                t = _step(model, opt, x, y)
                records = state.ledger.take_step().records
                if key == "agreed":
                    _agree([0, 0, 0, 0])
                    t = time.perf_counter() - t0
                elif key == "agreed_timed":
                    _agree([0, 0, 0, 0, *timeline.measure(t, t0, records)])
                    timeline.fields([0, 0, 0])
                    t = time.perf_counter() - t0
                if r >= args.warmup:
                    times[key].append(t)
        results[name] = times
    if rank == 0:
        queue.put(results)
    dist.destroy_process_group()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="squeezenet1_1,alexnet")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--backend", choices=("gloo", "nccl"), default="gloo")
    p.add_argument("--out", default="")
    args = p.parse_args()
    world = 2
    if args.backend == "nccl":
        world = torch.cuda.device_count()
        if not world:
            print("overhead: --backend nccl needs a CUDA GPU; none is visible", file=sys.stderr)
            return 2
    suffix = "_nccl" if args.backend == "nccl" else ""
    args.out = args.out or f"benchmarks/results/overhead{suffix}.json"
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(world, port, args, queue), nprocs=world, start_method="spawn")
    results = queue.get()
    print(
        f"method: {world} {args.backend} workers, batch {args.batch_size} at "
        f"{args.image_size}px, steps rotating plain/accounted/torch-hook/agreed/agreed+timing "
        f"after {args.warmup} warm-up rounds; rank 0 times"
    )
    rows = []
    for name, t in results.items():
        ratios = [a / b for a, b in zip(t["accounted"], t["plain"], strict=True)]
        mean = statistics.fmean(ratios)
        half = 1.96 * statistics.stdev(ratios) / len(ratios) ** 0.5
        ratios_torch = [a / b for a, b in zip(t["torch_python_hook"], t["plain"], strict=True)]
        timed = [a / b for a, b in zip(t["agreed_timed"], t["agreed"], strict=True)]
        timed_half = 1.96 * statistics.stdev(timed) / len(timed) ** 0.5
        row = {
            "model": name,
            "rounds": len(ratios),
            "plain_median_s": statistics.median(t["plain"]),
            "accounted_median_s": statistics.median(t["accounted"]),
            "ratio_of_medians": statistics.median(t["accounted"]) / statistics.median(t["plain"]),
            "paired_ratio_mean": mean,
            "paired_ratio_ci95": half,
            "torch_python_hook_median_s": statistics.median(t["torch_python_hook"]),
            "torch_python_hook_paired_ratio_mean": statistics.fmean(ratios_torch),
            "agreed_median_s": statistics.median(t["agreed"]),
            "agreed_timed_median_s": statistics.median(t["agreed_timed"]),
            "timing_paired_ratio_mean": statistics.fmean(timed),
            "timing_paired_ratio_ci95": timed_half,
        }
        rows.append(row)
        print(
            f"{name:<15} plain {row['plain_median_s'] * 1e3:8.1f} ms  accounted "
            f"{row['accounted_median_s'] * 1e3:8.1f} ms  ratio of medians "
            f"{row['ratio_of_medians']:.4f}x  paired {mean:.4f}x +- {half:.4f} "
            f"(n={len(ratios)}, target <= 1.01x); torch's Python allreduce_hook "
            f"{row['torch_python_hook_median_s'] * 1e3:.1f} ms, paired "
            f"{row['torch_python_hook_paired_ratio_mean']:.4f}x\n"
            f"{'':<15} straggler/overlap figures in the agreement: "
            f"{row['agreed_timed_median_s'] * 1e3:.1f} vs {row['agreed_median_s'] * 1e3:.1f} ms, "
            f"paired {row['timing_paired_ratio_mean']:.4f}x +- {timed_half:.4f} (target <= 1.01x)"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
