"""CIFAR-format folders (CIFAR-10's python batches), read and checked before the first step.

A folder holds `data_batch_1..5` (training) and `test_batch` (held out): each a pickled dict
of uint8 rows (3 x 32 x 32 = 3,072 values, channel-major) under `data` and one label per row
under `labels`; `batches.meta` names the classes (`label_names`). Every batch is read whole
when the run starts (that is how the data is loaded), so every fault is found then and named
in one line: a file that does not unpickle (truncated, not a batch), rows of the wrong
length, labels that do not match the rows or fall outside the classes the meta file names.
The number of classes is the meta file's; a folder without one has CIFAR-10's 10.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from dist_sqz.errors import UsageError, first_line

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
BATCHES = [*TRAIN_BATCHES, "test_batch"]
META = "batches.meta"
ROW = 3 * 32 * 32
CIFAR10_CLASSES = 10


def _unpickle(path: Path, what: str) -> Any:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as e:  # any unpickling fault of a user's file is the file's fault
        raise UsageError(f"{path} does not read as {what} ({first_line(e)})") from None


def class_names(folder: Path) -> list[str]:
    """The classes `batches.meta` names (`label_names`), or CIFAR-10's ten without one."""
    path = folder / META
    if not path.is_file():
        return [str(i) for i in range(CIFAR10_CLASSES)]
    meta = _unpickle(path, "a CIFAR meta file")
    names = meta.get(b"label_names", meta.get("label_names")) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names:
        raise UsageError(f"{path} names no classes: expected a dict with a list 'label_names'")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def classes_source(folder: Path) -> str:
    return f"{folder / META} names" if (folder / META).is_file() else f"CIFAR-10 has (no {META})"


def read_batch(path: Path, classes: int) -> tuple[np.ndarray, list[int]]:
    """(images as N x 32 x 32 x 3 uint8, labels) of one batch; UsageError naming the file,
    what is wrong and what was expected."""
    batch = _unpickle(path, "a CIFAR batch")
    if not isinstance(batch, dict):
        raise UsageError(f"{path} holds a {type(batch).__name__}, not a CIFAR batch (a dict)")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise UsageError(f"{path} lacks {'data' if data is None else 'labels'}: not a CIFAR batch")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        raise UsageError(
            f"{path}: data is {data.dtype} of shape {data.shape}; expected uint8 rows of "
            f"{ROW} values (3 x 32 x 32, channel-major)"
        )
    labels = [int(x) for x in labels]
    if len(labels) != len(data):
        raise UsageError(f"{path}: {len(labels)} labels for {len(data)} images; expected one each")
    bad = [x for x in labels if not 0 <= x < classes]
    if bad:
        raise UsageError(
            f"{path}: label {max(bad, key=abs)} is outside the {classes} classes "
            f"{classes_source(path.parent)} (0..{classes - 1}); {len(bad)} of {len(labels)} are"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


class CifarBatches(Dataset):
    """A CIFAR-format folder's training batches or its test batch, as PIL images."""

    def __init__(self, folder: Path, train: bool) -> None:
        self.classes = class_names(folder)
        images, labels = [], []
        for name in TRAIN_BATCHES if train else ["test_batch"]:
            path = folder / name
            if not path.is_file():
                raise UsageError(f"CIFAR-10 batch {path} is missing")
            x, y = read_batch(path, len(self.classes))
            images.append(x)
            labels += y
        self.images = np.concatenate(images)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        return Image.fromarray(self.images[i]), self.labels[i]
