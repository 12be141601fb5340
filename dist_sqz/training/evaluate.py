"""Held-out evaluation, sharded over ranks and reduced: every rank gets the same numbers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    all_gather: Callable[[Any], list[Any]],
) -> dict[str, float]:
    """{accuracy, eval_loss} over the whole held-out split: each rank scores its shard, the
    (correct, loss sum, count) triples are gathered and summed in rank order."""
    was_training = model.training
    model.eval()
    correct, loss_sum, count = 0, 0.0, 0
    try:
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
    finally:
        model.train(was_training)
    parts = all_gather((correct, loss_sum, count))
    correct = sum(p[0] for p in parts)
    loss_sum = sum(p[1] for p in parts)
    count = sum(p[2] for p in parts)
    return {"accuracy": correct / count, "eval_loss": loss_sum / count}
