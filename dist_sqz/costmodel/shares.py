"""When each gradient is ready: backward's time shared among layers by their multiply-adds."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def ready_shares(model: nn.Module, image_size: int) -> dict[str, float]:
    """Per trainable parameter: the share of backward's multiply-adds done when its gradient
    is ready (backward reaches the last layers first)."""
    macs = param_macs(model, image_size)
    total = sum(macs.values()) or 1
    out, done = {}, 0
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for name in reversed(names):
        done += macs.get(name, 0)
        out[name] = done / total
    return out


def param_macs(model: nn.Module, image_size: int) -> dict[str, int]:
    """Multiply-adds of the layer each weight belongs to (a proxy for its backward time)."""
    owner = {id(m): name for name, m in model.named_modules()}
    out: dict[str, int] = {}

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        elif isinstance(module, nn.Linear):
            k = module.in_features
        else:
            return
        prefix = owner[id(module)]
        out[f"{prefix}.weight" if prefix else "weight"] = output.numel() * k

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, image_size, image_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return out
