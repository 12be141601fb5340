"""Per-layer table of a model, in the layout of the SqueezeNet paper's Table 1.

A row per layer as the paper counts them: convolutions, linear layers and Fire modules (one
row each, with their squeeze 1x1 / expand 1x1 / expand 3x3 filter counts), and pooling
layers (numbered after the layer before them, as the paper's maxpool1, maxpool4...). Each row
gives the output size at the input size asked for, the filter size and stride, the filters,
the parameters, and the fp32 bytes those parameters put in every uncompressed step's
gradient exchange. Rows are found by forward hooks, so any model of the zoo works.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dist_sqz.models.stats import forward_with_hooks

POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _is_fire(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("squeeze", "expand1x1", "expand3x3"))


def _rows_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that are table rows: Fire modules whole, and conv/linear/pool layers
    that are not inside one."""
    out: list[tuple[str, nn.Module]] = []
    inside: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if _is_fire(m):
            inside.append(name)
            out.append((name, m))
        elif isinstance(m, (nn.Conv2d, nn.Linear, *POOLS)):
            out.append((name, m))
    return out


def _filter(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        return f"{m.kernel_size[0]}x{m.kernel_size[1]}/{m.stride[0]}"
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s = m.kernel_size, m.stride
        k = k if isinstance(k, int) else k[0]
        s = s if isinstance(s, int) else s[0]
        return f"{k}x{k}/{s}"
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return "global"
    return ""


def layer_table(model: nn.Module, image_size: int = 224) -> list[dict[str, Any]]:
    """One dict per row, in forward order: layer, type, output, filter, s1x1, e1x1, e3x3,
    params, payload_bytes."""
    rows: list[dict[str, Any]] = []
    order: list[tuple[str, nn.Module, tuple[int, ...]]] = []

    def hook(name: str, m: nn.Module):
        def record(_m: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            order.append((name, m, tuple(output.shape[1:])))

        return record

    forward_with_hooks(model, [(m, hook(n, m)) for n, m in _rows_modules(model)], image_size)
    k = 0
    for name, m, shape in order:
        if _is_fire(m):
            kind, k = "fire", k + 1
        elif isinstance(m, nn.Conv2d):
            kind, k = "conv", k + 1
        elif isinstance(m, nn.Linear):
            kind, k = "fc", k + 1
        elif isinstance(m, nn.MaxPool2d):
            kind = "maxpool"
        else:
            kind = "avgpool"
        params = sum(p.numel() for p in m.parameters())
        out = "x".join(map(str, (*shape[1:], shape[0]))) if len(shape) == 3 else str(shape[0])
        rows.append(
            {
                "layer": f"{kind}{max(k, 1)}",
                "module": name,
                "type": kind,
                "output": out,
                "filter": _filter(m),
                "s1x1": m.squeeze.out_channels if _is_fire(m) else None,
                "e1x1": m.expand1x1.out_channels if _is_fire(m) else None,
                "e3x3": m.expand3x3.out_channels if _is_fire(m) else None,
                "params": params,
                "payload_bytes": 4 * params,
            }
        )
    return rows


def format_layer_table(name: str, rows: list[dict[str, Any]], image_size: int) -> str:
    def cell(v: Any) -> str:
        return "" if v is None else str(v)

    lines = [
        f"{name} at {image_size}x{image_size} (the SqueezeNet paper's Table 1 layout; "
        "bytes = fp32 gradient per step)",
        f"{'layer':<11}{'module':<16}{'output':>14}{'filter':>9}{'s1x1':>6}{'e1x1':>6}"
        f"{'e3x3':>6}{'params':>13}{'bytes':>14}",
    ]
    for r in rows:
        lines.append(
            f"{r['layer']:<11}{r['module']:<16}{r['output']:>14}{r['filter']:>9}"
            f"{cell(r['s1x1']):>6}{cell(r['e1x1']):>6}{cell(r['e3x3']):>6}"
            f"{r['params']:>13,}{r['payload_bytes']:>14,}"
        )
    total = sum(r["params"] for r in rows)
    lines.append(f"{'total':<68}{total:>13,}{4 * total:>14,}")
    return "\n".join(lines)
