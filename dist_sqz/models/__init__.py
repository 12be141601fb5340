"""Models: dist_sqz's registry (torchvision's AlexNet and SqueezeNets as the paper counts them,
the paper's SqueezeNet family, SqueezeNext) and any model named otherwise (`resolve.py`: any
torchvision classifier, timm:NAME, MODULE:CALLABLE, an entry point)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import yaml
from torch import nn

from dist_sqz.errors import UsageError
from dist_sqz.models import (  # noqa: F401 (they fill MODELS)
    squeezenet_family,
    squeezenext,
    torchvision_zoo,
)
from dist_sqz.models.registry import MODELS


def model_spec(name: str) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    """The builder of `name` and its settings. A family member is named with its
    metaparameters: `sqz_family:squeeze_ratio=0.25,pct3x3=0.75` (keys: the builder's keyword
    arguments; numbers as written). UsageError for an unknown model, key or value."""
    base, _, spec = name.partition(":")
    if base not in MODELS:  # torchvision, timm, the user's own (models/resolve.py)
        from dist_sqz.models.resolve import external_builder, unknown

        found = external_builder(name)
        if found is None:
            raise unknown(name, MODELS.names())
        return found, {}
    builder = MODELS.get(base)
    if not spec:
        return builder, {}
    accepted = [k for k in inspect.signature(builder).parameters if k != "num_classes"]
    if not accepted:
        raise UsageError(f"model {base} takes no settings; got {spec!r}")
    settings: dict[str, Any] = {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        if not eq or key not in accepted:
            raise UsageError(
                f"model {base} takes settings {','.join(k + '=...' for k in accepted)}; "
                f"got {item!r}"
            )
        try:
            settings[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            settings[key] = value
    return builder, settings


def build_model(name: str, num_classes: int = 1000) -> nn.Module:
    """Build a model by any of its names (`model_spec`) with a `num_classes`-way classifier."""
    builder, settings = model_spec(name)
    try:
        model = builder(num_classes=num_classes, **settings)
    except (TypeError, ValueError) as e:
        raise UsageError(f"model {name}: {e} (a builder takes num_classes=)") from None
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"model {name}: the builder returned a {type(model).__name__}, not an nn.Module"
        )
    return model


def check_input_size(name: str, image_size: int, num_classes: int = 1000) -> None:
    """Raise UsageError if `image_size` shrinks to nothing inside the model (shape-only run)."""
    with torch.device("meta"):
        model = build_model(name, num_classes)
        if _fits(model, image_size):
            return
        smallest = next(s for s in range(image_size + 1, 1025) if _fits(model, s))
    raise UsageError(f"image_size {image_size} is too small for {name}; use at least {smallest}")


def _fits(model: nn.Module, size: int) -> bool:
    # eval(): shapes only; batch norm in training mode would refuse a batch of one 1x1 map.
    # A model's own size check may assert (torchvision's ViT: "Wrong image height!").
    try:
        model.eval()(torch.empty(1, 3, size, size))
        return True
    except (RuntimeError, AssertionError, ValueError):
        return False


def count_params(model: nn.Module) -> int:
    """Trainable parameters: exactly what DDP all-reduces each step."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
