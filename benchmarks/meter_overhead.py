"""Cost of the meter (docs/meter.md) in a user's own DDP loop: the same step of the same
model with and without a meter attached, its `meter.step()` (the record, written by rank 0)
inside the timed step.

Method: 2 gloo workers on this machine; each holds two DDP replicas of the model (seeded
alike), one plain (DDP's own C++ all-reduce, its own buffer broadcasts) and one watched by a
meter (the meter's all-reduce hook, its counted broadcasts, the step's record). Steps
alternate A, B, A, B... so machine noise hits both alike; after warm-up each round gives one
paired ratio (metered / plain). Printed: median step times, the ratio of medians and the mean
paired ratio +- 1.96 sigma / sqrt(n). Target <= 1.01x.

    python benchmarks/meter_overhead.py [--model mobilenet_v3_small] [--rounds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from dist_sqz.meter import Meter
from dist_sqz.models import build_model


def _worker(rank: int, world: int, port: int, args, out: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    models = {}
    for name in ("plain", "metered"):
        torch.manual_seed(0)
        net = build_model(args.model)
        models[name] = (DDP(net), torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9))
    meter = Meter(Path(out) / "run", model=args.model, warmup_steps=0)
    meter.watch(models["metered"][0])
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g)
    y = torch.randint(0, 1000, (args.batch_size,), generator=g)
    times = {"plain": [], "metered": []}
    for r in range(args.warmup + args.rounds):
        for name, (model, opt) in models.items():
            dist.barrier()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if name == "metered":
                meter.step(loss)
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    meter.close()
    dist.destroy_process_group()
    if rank == 0:
        queue.put(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet_v3_small")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as out:
        procs = [ctx.Process(target=_worker, args=(r, 2, port, args, out, queue)) for r in (0, 1)]
        for proc in procs:
            proc.start()
        times = queue.get(timeout=1800)
        for proc in procs:
            proc.join()
    ratios = [m / q for m, q in zip(times["metered"], times["plain"], strict=True)]
    mean = statistics.mean(ratios)
    half = 1.96 * statistics.stdev(ratios) / len(ratios) ** 0.5
    plain, metered = statistics.median(times["plain"]), statistics.median(times["metered"])
    result = {
        "model": args.model,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "rounds": args.rounds,
        "plain_step_ms": plain * 1e3,
        "metered_step_ms": metered * 1e3,
        "ratio_of_medians": metered / plain,
        "paired_ratio_mean": mean,
        "paired_ratio_ci95": half,
    }
    print(
        f"{args.model}, batch {args.batch_size}, {args.image_size} px, 2 gloo workers, "
        f"{args.rounds} rounds: plain {plain * 1e3:.2f} ms, metered {metered * 1e3:.2f} ms; "
        f"ratio of medians {metered / plain:.4f}x, paired {mean:.4f}x +- {half:.4f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
