"""Stages 1-2: magnitude pruning (per layer or global) and fine-tuning with the mask fixed."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from dist_sqz.paper.deep_compress.rundata import RunData


def prunable(model: nn.Module) -> list[str]:
    """Names of the conv and linear weights: what is pruned and shared."""
    return [n for n, p in model.named_parameters() if p.dim() > 1]


def magnitude_masks(
    weights: dict[str, torch.Tensor], keep: float, scope: str
) -> dict[str, torch.Tensor]:
    """Boolean masks keeping the `keep` fraction of largest |w|, per layer or globally."""
    if scope == "global":
        everything = torch.cat([w.abs().flatten() for w in weights.values()])
        k = max(1, round(keep * everything.numel()))
        threshold = torch.topk(everything, k).values.min()
        return {n: w.abs() >= threshold for n, w in weights.items()}
    masks = {}
    for n, w in weights.items():
        k = max(1, round(keep * w.numel()))
        flat = torch.zeros(w.numel(), dtype=torch.bool)
        flat[torch.topk(w.abs().flatten(), k).indices] = True
        masks[n] = flat.view_as(w)
    return masks


def finetune_masked(
    run: RunData,
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    steps: int,
    lr: float,
    log: Callable[[str], None],
    seed: int,
) -> None:
    """`steps` of SGD (the run's momentum and weight decay, lr decaying to 0 on a cosine)
    with pruned weights and their gradients held at 0."""
    if steps == 0:
        return
    params = dict(model.named_parameters())
    opt = torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=run.cfg.momentum,
        nesterov=run.cfg.nesterov,
        weight_decay=run.cfg.weight_decay,
    )
    model.train()
    for step, (x, y) in enumerate(run.batches(steps, seed=seed)):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        loss = run.loss(model(x), y)
        loss.backward()
        for n, m in masks.items():
            params[n].grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for n, m in masks.items():
                params[n].mul_(m)
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log(f"  masked fine-tune {step + 1}/{steps}: loss {loss.item():.4f}")
