"""A finished run's model, recipe and data: what every Deep Compression stage trains and
evaluates on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dist_sqz.config import TrainConfig
from dist_sqz.errors import UsageError
from dist_sqz.models import build_model
from dist_sqz.options import pick
from dist_sqz.training.data import (
    Batching,
    datasets_for,
    held_out_batches,
    num_classes_of,
    train_batches,
)
from dist_sqz.training.evaluate import evaluate


def held_out_accuracy(model: nn.Module, cfg: TrainConfig, held: Any) -> float:
    """`model`'s accuracy on the held-out split `held` of `cfg`'s data, in one process."""
    batches = held_out_batches(cfg, held, 0, 1, 0)
    return evaluate(model, batches, torch.device("cpu"), lambda x: [x])["accuracy"]


class RunData:
    """A finished run's model, recipe and data: what every stage trains and evaluates on."""

    def __init__(self, run_dir: Path) -> None:
        from dist_sqz.training import checkpoint

        ckpt = checkpoint.load(run_dir)
        self.cfg = TrainConfig.build(ckpt["config"])
        self.train_set, self.held_set = datasets_for(self.cfg.data, self.cfg.image_size)
        if self.held_set is None:
            raise UsageError(
                f"deep-compress evaluates held-out accuracy; {self.cfg.data} has no held-out split"
            )
        self.num_classes = self.cfg.num_classes or num_classes_of(self.train_set)
        self.model = build_model(self.cfg.model, self.num_classes)
        self.model.load_state_dict(ckpt["model"])
        self.step = int(ckpt["step"])

    def accuracy(self, model: nn.Module) -> float:
        return held_out_accuracy(model, self.cfg, self.held_set)

    def batches(self, steps: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batching = replace(pick(Batching, self.cfg), steps=steps, seed=seed)
        return train_batches(batching, self.train_set, self.num_classes, 0, 1, 0, 0)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
