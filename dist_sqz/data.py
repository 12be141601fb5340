"""Training data as a function of the step: `batch(step)` is the same on every run.

- `synthetic`: one fixed random batch per rank, reused every step (Horovod's synthetic
  benchmark); measures the system, not the data pipeline.
- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), scaled
  to `image_size` and shown as 3 channels; the last 297 images are held out for evaluation.
- `imagefolder:PATH`: torchvision `ImageFolder` (one sub-folder per class).

Real datasets are sharded with `DistributedSampler` (seeded, `set_epoch` per epoch) and
batched without drop-out of order, so a resumed run sees exactly the batches it would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, DistributedSampler

from dist_sqz.errors import UsageError

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
DIGITS_HELD_OUT = 297


class DigitsDataset(Dataset):
    """scikit-learn's digits, resized to `size` x `size`, 3 channels, standardised."""

    def __init__(self, size: int, train: bool = True) -> None:
        from sklearn.datasets import load_digits

        d = load_digits()
        images = torch.tensor(d.images, dtype=torch.float32) / 16.0
        labels = torch.tensor(d.target, dtype=torch.long)
        cut = len(images) - DIGITS_HELD_OUT
        self.images = images[:cut] if train else images[cut:]
        self.labels = labels[:cut] if train else labels[cut:]
        self.size = size
        self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i][None, None]
        img = F.interpolate(img, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = (img[0].expand(3, -1, -1) - 0.5) / 0.5
        return x, int(self.labels[i])


def _imagefolder(path: str, size: int) -> Dataset:
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(_MEAN.flatten().tolist(), _STD.flatten().tolist()),
        ]
    )
    try:
        return datasets.ImageFolder(path, transform=tf)
    except (FileNotFoundError, RuntimeError) as e:
        raise UsageError(
            f"imagefolder:{path} holds no usable images ({str(e).splitlines()[0][:120]}); "
            "put images in one sub-folder per class"
        ) from None


@dataclass
class BatchSource:
    """Deterministic batches: `batch(step)` depends only on (seed, step, rank, world size)."""

    dataset: Dataset | None
    num_classes: int
    batch_size: int
    rank: int
    world_size: int
    seed: int
    image_size: int
    fixed: tuple[torch.Tensor, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.dataset is None:
            return
        self.sampler = DistributedSampler(
            self.dataset,
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=True,
            seed=self.seed,
        )
        self.batches_per_epoch = len(self.sampler) // self.batch_size
        if self.batches_per_epoch == 0:
            raise UsageError(
                f"the data gives each of {self.world_size} workers {len(self.sampler)} images, "
                f"fewer than batch_size {self.batch_size}; lower --batch-size"
            )
        self._epoch = -1
        self._order: list[int] = []

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch for 0-based `step`."""
        if self.fixed is not None:
            return self.fixed
        epoch, b = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._order = list(iter(self.sampler))
            self._epoch = epoch
        idx = self._order[b * self.batch_size : (b + 1) * self.batch_size]
        items = [self.dataset[i] for i in idx]
        x = torch.stack([it[0] for it in items])
        y = torch.tensor([it[1] for it in items], dtype=torch.long)
        return x, y


def num_classes_of(data: str, image_size: int) -> int:
    """Classes the data has (synthetic: 1000, ImageNet's)."""
    kind = data.split(":", 1)[0]
    if kind == "synthetic":
        return 1000
    if kind == "digits":
        return 10
    return len(_imagefolder(data.split(":", 1)[1], image_size).classes)


def build_batches(
    data: str,
    batch_size: int,
    image_size: int,
    num_classes: int,
    rank: int,
    world_size: int,
    seed: int,
) -> BatchSource:
    """The training batch source for this rank. Raises UsageError on unusable data."""
    kind, _, path = data.partition(":")
    common = dict(
        batch_size=batch_size, rank=rank, world_size=world_size, seed=seed, image_size=image_size
    )
    if kind == "synthetic":
        g = torch.Generator().manual_seed(seed * 100_003 + rank)
        x = torch.randn(batch_size, 3, image_size, image_size, generator=g)
        y = torch.randint(0, num_classes, (batch_size,), generator=g)
        return BatchSource(None, num_classes, fixed=(x, y), **common)
    ds = DigitsDataset(image_size) if kind == "digits" else _imagefolder(path, image_size)
    n = len(ds.classes)
    if num_classes < n:
        raise UsageError(f"num_classes {num_classes} is fewer than the data's {n} classes")
    return BatchSource(ds, num_classes, **common)


def eval_batches(data: str, image_size: int, batch_size: int = 256):
    """Held-out batches for accuracy (digits only; other data has no held-out split here)."""
    if data != "digits":
        return []
    ds = DigitsDataset(image_size, train=False)
    out = []
    for i in range(0, len(ds), batch_size):
        items = [ds[j] for j in range(i, min(i + batch_size, len(ds)))]
        out.append((torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])))
    return out
