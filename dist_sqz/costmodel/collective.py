"""Seconds for one all-reduce of S bytes among N workers on a cluster spec (and for the
all-gathers of compressors and the broadcasts of buffers, at the end).

Each level of the system (inside a node, between nodes) has an achieved all-reduce bus
bandwidth B(S) (nccl-tests' busBw: the rate at which each rank's link moves the 2(N-1)/N S
bytes a ring all-reduce sends): a measured curve over message sizes where the spec gives one,
else line rate x achieved fraction, and over TCP no more than flows x the one-flow cap.
A node's NICs carry all of its GPUs' inter-node traffic: a ring through g GPUs per node
crosses each node boundary once per direction, so the node's NICs move 2(N-1)/N S per
all-reduce whatever g is.

    ring          L + 2(N-1)/N S / min(B_intra(S), B_inter(S))
    hierarchical  2 [(g-1) a_i + (g-1)/g S / B_intra(S)]                  (reduce-scatter and
                  + 2(M-1) a + 2(M-1)/M S / B_inter(S)                     all-gather in the
                                                                           node; a ring over
                                                                           M = N/g nodes)
    tree          2 ceil(log2 N) (a + S / b)                 (b = the node's B_inter / g)
    ps            2 (a + N S / b)                            (one server's link)

plus the spec's per-collective overhead o (launch, bookkeeping). The ring's latency L is
NCCL's own model of it (src/graph/tuning.cc): of its 2(N-1) steps, 2(M-1) cross the network
at a_inter each and the rest stay in a node at a_intra each. A level given by a measured
curve carries its own latency: its a is not added again.
"""

from __future__ import annotations

import math
from bisect import bisect_left

from dist_sqz.costmodel.spec import ClusterSpec, Fabric, Network


def _curve_busbw(points: tuple[tuple[float, float], ...], size: float) -> float:
    """Bytes/s at `size`, linear in log(size) between measured points, flat beyond them."""
    sizes = [s for s, _ in points]
    if size <= sizes[0]:
        return points[0][1] * size / sizes[0]  # below the smallest point: latency-bound
    if size >= sizes[-1]:
        return points[-1][1]
    i = bisect_left(sizes, size)
    (s0, b0), (s1, b1) = points[i - 1], points[i]
    t = (math.log(size) - math.log(s0)) / (math.log(s1) - math.log(s0))
    return b0 + t * (b1 - b0)


def busbw(level: Fabric | Network, size: float) -> float:
    """The level's bytes/s for a collective of `size` (a network: the node's, all NICs)."""
    si = level.si
    return _curve_busbw(si.curve, size) if si.curve else si.busbw_Bps


def _latency(level: Fabric | Network) -> float:
    return 0.0 if level.si.curve else level.si.latency_s


def _ring_latency(spec: ClusterSpec, n: int, nodes: int, passes: int) -> float:
    """NCCL's ring latency: of `passes` x (N-1) steps, `passes` x (M-1) cross the network
    (all-reduce: 2 passes, reduce-scatter then all-gather; all-gather: 1)."""
    inter_steps = passes * (nodes - 1)
    a_inter = _latency(spec.inter) if nodes > 1 else 0.0
    return (passes * (n - 1) - inter_steps) * _latency(spec.intra) + inter_steps * a_inter


def _ring_busbw(spec: ClusterSpec, nodes: int, size: float) -> float:
    """The slowest level a ring crosses: the fabric, and across nodes the NICs too."""
    b = busbw(spec.intra, size)
    return b if nodes == 1 else min(b, busbw(spec.inter, size))


def allreduce_time(spec: ClusterSpec, size: float, n: int) -> float:
    """Seconds to all-reduce `size` bytes among n workers (0 for one worker)."""
    if n <= 1 or size <= 0:
        return 0.0
    g = min(spec.gpus_per_node, n)
    nodes = math.ceil(n / g)
    b_in = busbw(spec.intra, size)
    a_in = _latency(spec.intra)
    overhead = spec.collective.overhead_s
    alg = spec.collective.algorithm
    b = _ring_busbw(spec, nodes, size)
    a = a_in if nodes == 1 else _latency(spec.inter)
    if alg == "ring" or (alg == "hierarchical" and nodes == 1):
        latency = _ring_latency(spec, n, nodes, passes=2)
        return overhead + latency + 2 * (n - 1) / n * size / b
    if alg == "hierarchical":
        intra = 2 * ((g - 1) * a_in + (g - 1) / g * size / b_in)
        b_out = busbw(spec.inter, size)
        inter = 2 * (nodes - 1) * a + 2 * (nodes - 1) / nodes * size / b_out
        return overhead + intra + inter
    per_worker = b if nodes == 1 else busbw(spec.inter, size) / g
    if alg == "tree":
        return overhead + 2 * math.ceil(math.log2(n)) * (a + size / per_worker)
    return overhead + 2 * (a + n * size / per_worker)  # ps


def allgather_time(spec: ClusterSpec, payload: float, n: int) -> float:
    """Seconds to all-gather `payload` bytes from each of n workers (a ring, as NCCL's and
    gloo's): N-1 steps, each rank's link moving (N-1) x payload; busBw = algbw (N-1)/N."""
    if n <= 1 or payload <= 0:
        return 0.0
    nodes = math.ceil(n / min(spec.gpus_per_node, n))
    b = _ring_busbw(spec, nodes, n * payload)
    latency = _ring_latency(spec, n, nodes, passes=1)
    return spec.collective.overhead_s + latency + (n - 1) * payload / b


def broadcast_time(spec: ClusterSpec, payload: float, n: int) -> float:
    """Seconds to broadcast `payload` bytes from one worker to n (as NCCL's ring broadcast:
    a pipelined chain, N-1 steps, each rank's link moving the payload once; busBw = algbw)."""
    if n <= 1 or payload <= 0:
        return 0.0
    nodes = math.ceil(n / min(spec.gpus_per_node, n))
    b = _ring_busbw(spec, nodes, payload)
    latency = _ring_latency(spec, n, nodes, passes=1)
    return spec.collective.overhead_s + latency + payload / b


def collective_time(spec: ClusterSpec, kind: str, payload: float, n: int) -> float:
    """`kind`: allreduce or allgather, as compressors' `plan` names them, or broadcast."""
    if kind == "allgather":
        return allgather_time(spec, payload, n)
    if kind == "broadcast":
        return broadcast_time(spec, payload, n)
    return allreduce_time(spec, payload, n)
