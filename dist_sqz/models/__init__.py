"""Model zoo: torchvision's AlexNet and SqueezeNets plus the paper's SqueezeNet family builder."""

from __future__ import annotations

import torch
from torch import nn

from dist_sqz.errors import UsageError
from dist_sqz.registry import Registry

MODELS = Registry("model")

# Importing the modules fills MODELS.
from dist_sqz.models import squeezenet_family, torchvision_zoo  # noqa: E402, F401


def build_model(name: str, num_classes: int = 1000) -> nn.Module:
    """Build a registered model by name with a `num_classes`-way classifier."""
    return MODELS.get(name)(num_classes=num_classes)


def check_input_size(name: str, image_size: int, num_classes: int = 1000) -> None:
    """Raise UsageError if `image_size` shrinks to nothing inside the model (shape-only run)."""
    with torch.device("meta"):
        model = build_model(name, num_classes)
        if _fits(model, image_size):
            return
        smallest = next(s for s in range(image_size + 1, 1025) if _fits(model, s))
    raise UsageError(f"image_size {image_size} is too small for {name}; use at least {smallest}")


def _fits(model: nn.Module, size: int) -> bool:
    try:
        model(torch.empty(1, 3, size, size))
        return True
    except RuntimeError:
        return False


def count_params(model: nn.Module) -> int:
    """Trainable parameters: exactly what DDP all-reduces each step."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
