"""torchvision's own definitions, untouched, so parameter counts match the paper's tables
(and the published scaling tables': ResNet-101, ResNeXt, Inception V3)."""

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


@MODELS.register("resnet101")
def resnet101(num_classes: int = 1000) -> nn.Module:
    return tvm.resnet101(weights=None, num_classes=num_classes)


@MODELS.register("resnext50_32x4d")
def resnext50_32x4d(num_classes: int = 1000) -> nn.Module:
    return tvm.resnext50_32x4d(weights=None, num_classes=num_classes)


@MODELS.register("resnext101_32x8d")
def resnext101_32x8d(num_classes: int = 1000) -> nn.Module:
    return tvm.resnext101_32x8d(weights=None, num_classes=num_classes)


@MODELS.register("inception_v3")
def inception_v3(num_classes: int = 1000) -> nn.Module:
    """Without the auxiliary head (as tf_cnn_benchmarks' inception3, which Horovod's published
    benchmark ran): 23.8 M parameters, one output. Its native input is 299 px (75 at least)."""
    return tvm.inception_v3(
        weights=None, num_classes=num_classes, aux_logits=False, init_weights=False
    )
