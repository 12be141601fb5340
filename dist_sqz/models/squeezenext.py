"""SqueezeNext (Gholami et al., 2018, arXiv 1803.10615): SqueezeNet's successor from the same
group, a residual network of SqueezeNext blocks.

A block (the paper's Fig. 3): a two-stage squeeze (1x1 to C/2, 1x1 to C/4), the 3x3 split into
a 3x1 and a 1x3 back to C/2 (separable, low rank), a 1x1 expansion to the block's output, and a
shortcut added before the last ReLU. Each convolution is followed by batch normalisation and a
ReLU. The first block of a stage after the first strides by 2 in its first 1x1, which there
keeps the input width (no squeeze before the stride), and its shortcut is a 1x1 convolution;
so is a block's shortcut where the width changes. The network: a 7x7 / 2 convolution of 64
filters, a 3x3 / 2 max-pool, four stages of 32, 64, 128 and 256 channels, a 1x1 convolution
to 128 before the pool and the classifier; the width multiplier (1.0, 2.0) scales every
width. 23 is [6, 6, 8, 1] blocks per stage; 23v5 moves blocks to the third stage, [2, 4, 14,
1] (the paper's Table 3 and Fig. 6: fewer blocks at high resolution, same depth).

Parameter counts at 1000 classes, the reference for `tests/test_models.py`: 1.0-SqNxt-23
724,056; 1.0-SqNxt-23v5 921,816; 2.0-SqNxt-23 2,583,752; 2.0-SqNxt-23v5 3,366,344 (the
counts the imgclsmob PyTorch port reports for its sqnxt23_w1 / sqnxt23v5_w1 / sqnxt23_w2 /
sqnxt23v5_w2; the paper's Table 2 gives 0.72 M and 0.92 M for the 1.0 networks).
"""

from __future__ import annotations

import torch
from torch import nn

from dist_sqz.models.registry import MODELS

STAGE_WIDTHS = (32, 64, 128, 256)
BLOCKS = {"23": (6, 6, 8, 1), "23v5": (2, 4, 14, 1)}


def _conv(inp: int, out: int, kernel, stride: int = 1, padding=0) -> nn.Sequential:
    """Convolution (with its bias, as the paper's Caffe model has) + batch norm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel, stride=stride, padding=padding),
        nn.BatchNorm2d(out),
        nn.ReLU(inplace=True),
    )


class SqueezeNextBlock(nn.Module):
    def __init__(self, inp: int, out: int, stride: int) -> None:
        super().__init__()
        # The first 1x1 halves the width, except where it strides (it keeps it) and where the
        # block narrows (it quarters it).
        if stride > 1:
            first = inp
        elif inp > out:
            first = inp // 4
        else:
            first = inp // 2
        self.body = nn.Sequential(
            _conv(inp, first, 1, stride),
            _conv(first, first // 2, 1),
            _conv(first // 2, first, (1, 3), padding=(0, 1)),
            _conv(first, first, (3, 1), padding=(1, 0)),
            _conv(first, out, 1),
        )
        self.shortcut = _conv(inp, out, 1, stride) if stride > 1 or inp != out else nn.Identity()
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


class SqueezeNext(nn.Module):
    def __init__(self, blocks: tuple[int, ...], width: float, num_classes: int = 1000) -> None:
        super().__init__()
        stem, head = int(64 * width), int(128 * width)
        layers: list[nn.Module] = [
            _conv(3, stem, 7, stride=2, padding=1),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        ]
        inp = stem
        for stage, (count, channels) in enumerate(zip(blocks, STAGE_WIDTHS, strict=True)):
            out = int(channels * width)
            for k in range(count):
                layers.append(SqueezeNextBlock(inp, out, 2 if k == 0 and stage > 0 else 1))
                inp = out
        layers.append(_conv(inp, head, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _register(version: str, width: float) -> None:
    name = f"sqnxt{version}_w{width:g}"

    @MODELS.register(name)
    def build(num_classes: int = 1000) -> nn.Module:
        return SqueezeNext(BLOCKS[version], width, num_classes)

    build.__doc__ = f"{width:.1f}-SqNxt-{version} (Gholami et al., 2018)"


for _version in BLOCKS:
    for _width in (1.0, 2.0):
        _register(_version, _width)
