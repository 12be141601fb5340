"""Model zoo: torchvision's AlexNet and SqueezeNets plus the paper's SqueezeNet family builder."""

from __future__ import annotations

from torch import nn

from dist_sqz.registry import Registry

MODELS = Registry("model")

# Importing the modules fills MODELS.
from dist_sqz.models import squeezenet_family, torchvision_zoo  # noqa: E402, F401


def build_model(name: str, num_classes: int = 1000) -> nn.Module:
    """Build a registered model by name with a `num_classes`-way classifier."""
    return MODELS.get(name)(num_classes=num_classes)


def count_params(model: nn.Module) -> int:
    """Trainable parameters: exactly what DDP all-reduces each step."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
