"""SqueezeNet as a family (Iandola et al., 2016, Sec. 5): metaparameters and bypass variants.

Fire module i (i = 0..7, i.e. fire2..fire9) expands to
``e_i = base_e + incr_e * floor(i / freq)`` channels, a fraction ``pct3x3`` of them 3x3, and
squeezes to ``s_i = squeeze_ratio * e_i``. The defaults (128, 128, 2, 0.125, 0.5) give
SqueezeNet v1.0, layer for layer the same as torchvision's ``squeezenet1_0`` (1,248,424
parameters). Bypass (paper Sec. 6): ``simple`` adds identity shortcuts around fire3, 5, 7, 9
(where input and output widths match, so no parameters); ``complex`` also adds 1x1-conv
shortcuts around fire2, 4, 6, 8.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dist_sqz.errors import UsageError
from dist_sqz.models.registry import MODELS

BYPASS = ("none", "simple", "complex")


class Fire(nn.Module):
    """squeeze 1x1 -> ReLU -> [expand 1x1 | expand 3x3] -> ReLU, with an optional bypass."""

    def __init__(self, inp: int, squeeze: int, e1x1: int, e3x3: int, bypass: str = "none"):
        super().__init__()
        self.squeeze = nn.Conv2d(inp, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, e1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, e3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)
        out = e1x1 + e3x3
        self.bypass: nn.Module | None = None
        self.identity = False
        if bypass == "simple":
            if inp != out:
                raise ValueError("simple bypass needs equal input and output channels")
            self.identity = True
        elif bypass == "complex":
            self.bypass = nn.Conv2d(inp, out, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_activation(self.squeeze(x))
        y = torch.cat(
            [
                self.expand1x1_activation(self.expand1x1(s)),
                self.expand3x3_activation(self.expand3x3(s)),
            ],
            1,
        )
        if self.identity:
            y = y + x
        elif self.bypass is not None:
            y = y + self.bypass(x)
        return y


def fire_widths(
    base_e: int, incr_e: int, freq: int, squeeze_ratio: float, pct3x3: float
) -> list[tuple[int, int, int]]:
    """(squeeze, expand1x1, expand3x3) for fire2..fire9 from the paper's metaparameters."""
    widths = []
    for i in range(8):
        e = base_e + incr_e * math.floor(i / freq)
        e3 = round(e * pct3x3)
        widths.append((max(1, round(e * squeeze_ratio)), e - e3, e3))
    return widths


class SqueezeNetFamily(nn.Module):
    """SqueezeNet v1.0 macro-architecture with paper metaparameters (see module docstring)."""

    def __init__(
        self,
        num_classes: int = 1000,
        base_e: int = 128,
        incr_e: int = 128,
        freq: int = 2,
        squeeze_ratio: float = 0.125,
        pct3x3: float = 0.5,
        bypass: str = "none",
    ) -> None:
        super().__init__()
        if bypass not in BYPASS:
            raise UsageError(f"bypass must be one of {', '.join(BYPASS)}; got {bypass!r}")
        if base_e <= 0 or incr_e < 0 or freq <= 0:
            raise UsageError("base_e and freq must be > 0 and incr_e >= 0")
        if not 0 < squeeze_ratio <= 1 or not 0 < pct3x3 < 1:
            raise UsageError("squeeze_ratio must be in (0, 1] and pct3x3 in (0, 1)")
        widths = fire_widths(base_e, incr_e, freq, squeeze_ratio, pct3x3)
        layers: list[nn.Module] = [
            nn.Conv2d(3, 96, kernel_size=7, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        ]
        inp = 96
        for i, (s, e1, e3) in enumerate(widths):
            out = e1 + e3
            kind = "none"
            if bypass != "none":
                # Paper Fig. 2: identity around fire3/5/7/9 (odd i), 1x1 conv around the others.
                if i % 2 == 1 and inp == out:
                    kind = "simple"
                elif bypass == "complex":
                    kind = "complex"
            layers.append(Fire(inp, s, e1, e3, kind))
            inp = out
            if i in (2, 6):  # max-pool after fire4 and fire8
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        final_conv = nn.Conv2d(inp, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


# The class is its own builder; metaparameters can be set in the model's name:
# `sqz_family:squeeze_ratio=0.25,pct3x3=0.75`.
MODELS.register("sqz_family")(SqueezeNetFamily)


@MODELS.register("sqz_simple_bypass")
def sqz_simple_bypass(num_classes: int = 1000) -> nn.Module:
    return SqueezeNetFamily(num_classes=num_classes, bypass="simple")


@MODELS.register("sqz_complex_bypass")
def sqz_complex_bypass(num_classes: int = 1000) -> nn.Module:
    return SqueezeNetFamily(num_classes=num_classes, bypass="complex")
