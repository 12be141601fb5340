"""Stage 3: weight sharing per layer (k-means, linear initialisation) and centroid
fine-tuning."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from dist_sqz.paper.deep_compress.rundata import RunData


def kmeans_1d(values: torch.Tensor, k: int, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids, index of each value's centroid): Lloyd's algorithm in one dimension,
    linearly initialised over [min, max]. Empty clusters keep their place."""
    lo, hi = float(values.min()), float(values.max())
    k = max(1, min(k, values.numel()))
    centroids = torch.linspace(lo, hi, k, dtype=torch.float64)
    v = values.double()
    for _ in range(iters):
        order = torch.argsort(centroids)
        centroids = centroids[order]
        idx = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, idx, v)
        counts = torch.bincount(idx, minlength=k)
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.equal(moved, centroids):
            break
        centroids = moved
    idx = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
    return centroids.float(), idx


class Shared:
    """One layer's shared weights: sorted kept positions, their centroid indices, codebook."""

    def __init__(self, shape: torch.Size, positions: torch.Tensor, idx: torch.Tensor, c):
        self.shape, self.positions, self.idx = tuple(shape), positions, idx
        self.centroids = c

    def dense(self, centroids: torch.Tensor | None = None) -> torch.Tensor:
        c = self.centroids if centroids is None else centroids
        flat = torch.zeros(math.prod(self.shape), dtype=c.dtype)
        return flat.index_put((self.positions,), c[self.idx]).view(self.shape)


def share_weights(model: nn.Module, masks: dict[str, torch.Tensor], bits: int) -> dict[str, Shared]:
    out = {}
    state = model.state_dict()
    for n, m in masks.items():
        positions = torch.nonzero(m.flatten()).flatten()
        values = state[n].flatten()[positions]
        centroids, idx = kmeans_1d(values, 2**bits)
        out[n] = Shared(m.shape, positions, idx, centroids)
    return out


def finetune_centroids(
    run: RunData, model: nn.Module, shared: dict[str, Shared], steps: int, lr: float, log
) -> None:
    """`steps` of SGD on the centroids (mean gradient of their weights) and the fp32 rest;
    the model then holds the shared weights."""
    centroids = {n: nn.Parameter(s.centroids.clone()) for n, s in shared.items()}
    sizes = {
        n: torch.bincount(s.idx, minlength=len(s.centroids)).clamp(min=1) for n, s in shared.items()
    }
    rest = {n: p for n, p in model.named_parameters() if n not in shared}
    opt = torch.optim.SGD([*centroids.values(), *rest.values()], lr=lr, momentum=run.cfg.momentum)
    model.train()
    batches = run.batches(steps, seed=run.cfg.seed + 1000) if steps else []
    for step, (x, y) in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        weights = {n: s.dense(centroids[n]) for n, s in shared.items()}
        loss = run.loss(functional_call(model, {**rest, **weights}, (x,)), y)
        loss.backward()
        for n, c in centroids.items():
            c.grad.div_(sizes[n])
        opt.step()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log(f"  centroid fine-tune {step + 1}/{steps}: loss {loss.item():.4f}")
    with torch.no_grad():
        for n, s in shared.items():
            s.centroids = centroids[n].detach().clone()
            model.get_parameter(n).copy_(s.dense())
