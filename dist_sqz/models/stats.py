"""Static model facts: parameters, fp32 size, multiply-adds, and bytes a step exchanges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dist_sqz.models import MODELS, build_model, count_params


def gflops(model: nn.Module, image_size: int = 224) -> float:
    """Forward multiply-adds of conv and linear layers in billions, at batch 1.

    Same convention as torchvision's weight metadata (one multiply-add counts once):
    AlexNet 0.71, SqueezeNet 1.0 0.82, SqueezeNet 1.1 0.35.
    """
    total = 0

    def count(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output.numel() * k
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    forward_with_hooks(model, [(m, count) for m in model.modules()], image_size)
    return total / 1e9


def forward_with_hooks(
    model: nn.Module, hooks: list[tuple[nn.Module, Callable]], image_size: int
) -> None:
    """One batch-1 forward of a zero image in eval mode with `hooks` (module, forward hook)
    registered for its duration: how layer facts are read off a model."""
    handles = [m.register_forward_hook(h) for m, h in hooks]
    device = next(model.parameters()).device  # the meta device: shapes, no arithmetic
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for h in handles:
            h.remove()


def model_facts(name: str, image_size: int = 224) -> dict[str, Any]:
    """A model's parameters and GFLOPs (what a row of `dist-sqz models` is made from).
    Built on the meta device: counting needs shapes, not initialised weights (building the
    zoo's weights took 23.7 s of `dist-sqz models` on a loaded 2-core machine)."""
    with torch.device("meta"):
        model = build_model(name)
    return {
        "params": count_params(model),
        "gflops": round(gflops(model, image_size), 3),
        "buffer_bytes": buffer_payloads(model),
    }


def counted_facts(name: str) -> dict[str, Any]:
    """`model_facts` of a model not shipped, kept in the user's cache when a library
    defines it (`dist_sqz.models_cache`)."""
    from dist_sqz.models import model_spec
    from dist_sqz.models.resolve import from_library
    from dist_sqz.models_cache import remember_facts

    model_spec(name)  # an unknown name: one line, before anything is built
    facts = model_facts(name)
    remember_facts(name, facts, from_library(name))
    return facts


def buffer_payloads(model: nn.Module) -> list[int]:
    """Bytes of each buffer broadcast a step makes (one per dtype: `Backend.sync_buffers`);
    [] for a model without buffers (AlexNet, SqueezeNet)."""
    from dist_sqz.comm.buckets import buffer_groups

    return [sum(b.numel() * b.element_size() for b in g) for g in buffer_groups(model.buffers())]


def zoo_facts() -> dict[str, Any]:
    """What `models/zoo_facts.json` ships: each registered model's params and GFLOPs at 224
    px, counted from the models themselves (tests/test_models.py checks the shipped file)."""
    return {"image_size": 224, "models": {name: model_facts(name) for name in MODELS.names()}}
