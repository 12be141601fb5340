"""torchvision's own definitions, untouched, so parameter counts match the paper's tables."""

from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from dist_sqz.models.registry import MODELS


@MODELS.register("alexnet")
def alexnet(num_classes: int = 1000) -> nn.Module:
    return tvm.alexnet(weights=None, num_classes=num_classes)


@MODELS.register("squeezenet1_0")
def squeezenet1_0(num_classes: int = 1000) -> nn.Module:
    return tvm.squeezenet1_0(weights=None, num_classes=num_classes)


@MODELS.register("squeezenet1_1")
def squeezenet1_1(num_classes: int = 1000) -> nn.Module:
    return tvm.squeezenet1_1(weights=None, num_classes=num_classes)


@MODELS.register("resnet50")
def resnet50(num_classes: int = 1000) -> nn.Module:
    return tvm.resnet50(weights=None, num_classes=num_classes)


@MODELS.register("vgg16")
def vgg16(num_classes: int = 1000) -> nn.Module:
    return tvm.vgg16(weights=None, num_classes=num_classes)


@MODELS.register("mobilenet_v2")
def mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    return tvm.mobilenet_v2(weights=None, num_classes=num_classes)
