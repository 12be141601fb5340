"""PowerSGD (Vogels et al., NeurIPS 2019): rank-r gradient approximation with error feedback.

Per bucket, every parameter with 2+ dimensions is seen as an n x m matrix M = grad + error
(conv weights as out x in*kh*kw). One step of power iteration with the previous step's Q
(warm start) gives P = M Q; P is all-reduced together with the bucket's small tensors
(biases, and matrices too small to gain), orthonormalised, then Q = M^T P is all-reduced and
the average gradient is P Q^T / N. The error M - P Q_local^T stays on this rank. Payload:
r(n + m) values per matrix instead of nm. torch's `powerSGD_hook` is the reference.

The first all-reduce is waited for inside `exchange`, so the second is issued from the
backward thread too: every rank issues its collectives in the same order (torch's hook issues
the second from a callback, which breaks on gloo with several buckets).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dist_sqz.comm.compression.base import (
    COMPRESSORS,
    Bucket,
    Collectives,
    Compressor,
    ParamState,
    done_future,
)


def orthonormalize(p: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning p's (reduced QR; deterministic for equal inputs)."""
    return torch.linalg.qr(p, mode="reduced").Q


@COMPRESSORS.register("powersgd")
class PowerSGD(Compressor):
    """Rank-`powersgd_rank` PowerSGD from step `powersgd_start_step` (plain all-reduce before)."""

    name = "powersgd"
    blocking_collectives = 1  # P's all-reduce, waited for inside `exchange`

    @dataclass
    class Options:
        rank: int = 2  # rank of the gradient approximation
        start_step: int = 0  # plain all-reduce before this step (0-based)

    KEYS: ClassVar[dict[str, str]] = {"rank": "powersgd_rank", "start_step": "powersgd_start_step"}

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.rank = self.options.rank
        self.start = self.options.start_step
        self.error = ParamState()
        self.q: dict[str, torch.Tensor] = {}

    def _q(self, name: str, m: int, r: int, like: torch.Tensor) -> torch.Tensor:
        q = self.q.get(name)
        if q is None or q.shape != (m, r):
            # The same on every rank: seeded from the parameter's name.
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            q = torch.randn(m, r, generator=gen)
        return q.to(like)

    def _factor_rank(self, shape) -> int:
        """The rank a parameter of this shape is sent at as n x m factors (0: sent as it is,
        a vector or a matrix whose factors would be no smaller)."""
        if len(shape) < 2:
            return 0
        n, m = shape[0], math.prod(shape[1:])
        r = min(self.rank, n, m)
        return r if r * (n + m) < n * m else 0

    def plan(self, shapes):
        """Two all-reduces: every P = M Q (n x r) with the plain values, then every Q (m x r)."""
        low = [(s[0], math.prod(s[1:]), self._factor_rank(s)) for s in shapes]
        plain = sum(math.prod(s) for s, (_, _, r) in zip(shapes, low, strict=True) if not r)
        low = [x for x in low if x[2]]
        first = 4 * (sum(n * r for n, _, r in low) + plain)
        second = 4 * sum(m * r for _, m, r in low)
        return [("allreduce", first)] + ([("allreduce", second)] if second else [])

    def exchange(self, bucket: Bucket, comm: Collectives) -> torch.futures.Future:
        grad = bucket.buffer
        n_ranks = comm.world_size
        if self.step < self.start:
            return comm.all_reduce(grad).then(lambda f: f.value().div_(n_ranks))
        # The compute around the first all-reduce is encoding.
        with self.computing():
            m_all = self.error.flat(bucket).add_(grad)
            start = Bucket(m_all, bucket.index, bucket.shapes, bucket.names)
            low, plain = [], []  # (name, M, r) to compress; flat views sent as they are
            for name, view in zip(bucket.names, start.views(), strict=True):
                r = self._factor_rank(view.shape)
                if r:
                    low.append((name, view.reshape(view.shape[0], -1), r))
                    continue
                plain.append(view.reshape(-1))
            ps = [mat @ self._q(name, mat.shape[1], r, mat) for name, mat, r in low]
            first = torch.cat([p.reshape(-1) for p in ps] + plain)
        with self.waiting():  # the backward waits for P's all-reduce
            comm.all_reduce(first).wait()
        with self.computing():
            at = 0
            qs_local = []
            for (_, mat, _r), p in zip(low, ps, strict=True):
                p_hat = orthonormalize(first[at : at + p.numel()].view(p.shape))
                at += p.numel()
                # (P^T M)^T, not M^T P: torch's CPU matmul is ~25x slower with the transposed
                # large operand (fc6: 671 vs 25 ms on one core).
                qs_local.append((p_hat, (p_hat.t() @ mat).t()))
            plain_sum = first[at:]
            # Error feedback: what this rank's own rank-r approximation missed.
            for (_, mat, _), (p_hat, q) in zip(low, qs_local, strict=True):
                mat.addmm_(p_hat, q.t(), alpha=-1)  # in place: no n x m temporary
            for v in plain:
                v.zero_()
            self.error.store(bucket, m_all)
            second = torch.cat([q.reshape(-1) for _, q in qs_local]) if low else None

        low_by_name = {name: i for i, (name, _, _) in enumerate(low)}
        q_offsets = [0]
        for _, q in qs_local:
            q_offsets.append(q_offsets[-1] + q.numel())

        def finish(q_sum: torch.Tensor | None) -> torch.Tensor:
            plain_at = 0
            for name, view in zip(bucket.names, bucket.views(), strict=True):
                i = low_by_name.get(name)
                if i is None:
                    k = view.numel()
                    view.copy_(plain_sum[plain_at : plain_at + k].view(view.shape))
                    view.div_(n_ranks)
                    plain_at += k
                    continue
                p_hat, q = qs_local[i]
                q_avg = q_sum[q_offsets[i] : q_offsets[i + 1]].view(q.shape) / n_ranks
                self.q[name] = q_avg
                view.view(p_hat.shape[0], -1).addmm_(p_hat, q_avg.t(), beta=0)  # in place
            return grad

        if second is None:
            return done_future(None).then(lambda _: self.timed(finish, None))
        return comm.all_reduce(second).then(lambda f: self.timed(finish, f.value()))

    def state_dict(self) -> dict[str, Any]:
        return {"error": self.error.state_dict(), "q": {k: v.cpu() for k, v in self.q.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.error.load_state_dict(state.get("error", {}))
        self.q = dict(state.get("q", {}))
