"""All-reduce bus bandwidth, nccl-tests style, and the latency-bandwidth fit the cost model uses.

Worker (one per rank, under torchrun or `dist-sqz cluster bench`)::

    torchrun --nproc-per-node 2 -m dist_sqz.cluster.bench --sizes 1MB,64MB --reps 3

times `reps` all-reduces of each size (after one untimed warm-up, each started together
behind a barrier) and rank 0 prints one JSON line, `BENCH {...}`, per size: the fastest time
(algbw and busbw are the fastest's, as nccl-tests reports), the median and p95, the count:
the columns `dist-sqz report --collectives` prints for a run. busbw = 2(N-1)/N x size / time,
as docs/design.md defines it.

`fit_ring` fits the ring model t = 2(N-1) a + 2(N-1)/N S / B (the one `dist-sqz simulate`
uses) to such points by least squares: a per-hop latency a and an achieved bandwidth B.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

from dist_sqz.observe.metrics import p95
from dist_sqz.units import csv, parse_rate, parse_size

PREFIX = "BENCH "


def ring_terms(n: int, size: float) -> tuple[float, float]:
    """(latency coefficient, bandwidth coefficient) of the ring all-reduce time."""
    return 2 * (n - 1), 2 * (n - 1) / n * size


def fit_ring(points: Sequence[tuple[int, float, float]]) -> tuple[float, float]:
    """Least-squares (a, B) from (world_size, bytes, seconds) points; a is clamped at 0.

    Errors are weighted relative to each time, so small and large messages count alike.
    """
    rows = [(*ring_terms(n, s), t) for n, s, t in points if n > 1]
    if not rows:
        raise ValueError("fit_ring needs points with world_size > 1")
    # Normal equations of min sum ((x*ca + y*cb - t) / t)^2 over x = a, y = 1/B.
    saa = sum((ca / t) ** 2 for ca, _, t in rows)
    sbb = sum((cb / t) ** 2 for _, cb, t in rows)
    sab = sum(ca * cb / t**2 for ca, cb, t in rows)
    sa = sum(ca / t for ca, _, t in rows)
    sb = sum(cb / t for _, cb, t in rows)
    det = saa * sbb - sab**2
    if det > 1e-12 * saa * sbb:
        a = (sa * sbb - sb * sab) / det
        inv_b = (saa * sb - sab * sa) / det
        if a >= 0 and inv_b > 0:
            return a, 1 / inv_b
    # One size only, or a negative latency: bandwidth alone.
    inv_b = sb / sbb
    return 0.0, 1 / inv_b


def run_worker(sizes: Sequence[int], reps: int) -> dict | None:
    """Rank 0: the timings; other ranks: None. Joins through torchrun's env://."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    n, rank = dist.get_world_size(), dist.get_rank()
    rows = []
    for size in sizes:
        t = torch.ones(max(1, size // 4))
        dist.all_reduce(t)  # warm-up: connections, allocations
        times = []
        for _ in range(reps):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - t0)
        best, nbytes = min(times), t.numel() * 4
        rows.append(
            {
                "collective": "allreduce",
                "bytes": nbytes,
                "count": reps,
                "time_s": best,  # the fit's: the fastest
                "time_median_s": statistics.median(times),
                "time_p95_s": p95(times),
                "algbw_Bps": nbytes / best,
                "busbw_Bps": 2 * (n - 1) / n * nbytes / best,
            }
        )
    dist.destroy_process_group()
    return {"world_size": n, "rows": rows} if rank == 0 else None


def parse_output(text: str) -> dict:
    """The BENCH record rank 0 printed."""
    for line in text.splitlines():
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX) :])
    raise RuntimeError("the all-reduce benchmark printed no result")


def bench_cluster(
    hosts: Sequence[int], link: str, sizes: Sequence[int], reps: int = 3, timeout_s: float = 900
) -> dict:
    """Run the benchmark on emulated clusters of each size in `hosts`; fit the ring model.

    Returns {"link", "points": [{world_size, bytes, time_s, busbw_Bps}], "latency_s",
    "bandwidth_Bps", "efficiency"} where efficiency = fitted bandwidth / link rate.
    """
    import tempfile
    from pathlib import Path

    from dist_sqz.cluster.launch import run_on_hosts
    from dist_sqz.cluster.netns import Cluster

    argv = ["-m", "dist_sqz.cluster.bench", "--sizes", ",".join(f"{s}B" for s in sizes)]
    argv += ["--reps", str(reps)]
    points = []
    for n in hosts:
        if n < 2:
            raise ValueError("an all-reduce benchmark needs at least 2 hosts")
        with tempfile.TemporaryDirectory(prefix="dsqz-bench-") as logs, Cluster(n, link) as c:
            codes = run_on_hosts(c, argv, timeout_s=timeout_s, log_dir=Path(logs))
            text = (Path(logs) / "host0.log").read_text()
        if any(codes):
            tail = " | ".join(text.strip().splitlines()[-3:])[:300]
            raise RuntimeError(f"all-reduce benchmark on {n} hosts failed: {tail}")
        for row in parse_output(text)["rows"]:
            points.append({"world_size": n, **row})
    a, b = fit_ring([(p["world_size"], p["bytes"], p["time_s"]) for p in points])
    rate_Bps = parse_rate(link) / 8
    return {
        "link": link,
        "points": points,
        "latency_s": a,
        "bandwidth_Bps": b,
        "efficiency": b / rate_Bps,
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m dist_sqz.cluster.bench", description=__doc__)
    ap.add_argument("--sizes", default="1MB,16MB,64MB", help="message sizes, e.g. 1MB,64MB")
    ap.add_argument("--reps", type=int, default=3, help="timed all-reduces per size")
    args = ap.parse_args(argv)
    result = run_worker([parse_size(s) for s in csv(args.sizes)], args.reps)
    if result is not None:
        print(PREFIX + json.dumps(result), flush=True)


def format_table(result: dict) -> str:
    """The benchmark's points with the fitted time beside each, and the fit itself."""
    lines = [
        f"{'hosts':>5}{'bytes':>14}{'count':>6}{'time ms':>11}{'median ms':>11}{'p95 ms':>9}"
        f"{'algbw MB/s':>12}{'busbw MB/s':>12}{'fit ms':>10}"
    ]
    for p in result["points"]:
        ca, cb = ring_terms(p["world_size"], p["bytes"])
        fitted = ca * result["latency_s"] + cb / result["bandwidth_Bps"]
        lines.append(
            f"{p['world_size']:>5}{p['bytes']:>14,}{p.get('count', 1):>6}"
            f"{p['time_s'] * 1e3:>11.2f}{p.get('time_median_s', p['time_s']) * 1e3:>11.2f}"
            f"{p.get('time_p95_s', p['time_s']) * 1e3:>9.2f}"
            f"{p['algbw_Bps'] / 1e6:>12.1f}{p['busbw_Bps'] / 1e6:>12.1f}{fitted * 1e3:>10.2f}"
        )
    lines.append(
        f"ring fit: latency a = {result['latency_s'] * 1e6:.0f} us per hop, bandwidth B = "
        f"{result['bandwidth_Bps'] / 1e6:.1f} MB/s = {result['efficiency']:.3f} x the "
        f"{result['link']} link"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
