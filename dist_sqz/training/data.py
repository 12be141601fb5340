"""Training and held-out data, batched by step through torch's DataLoader.

- `synthetic`: one fixed random batch per rank, reused every step (Horovod's synthetic
  benchmark); measures the system, not the data pipeline.
- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), scaled
  to `image_size` and shown as 3 channels; the last 297 images are the held-out split.
- `imagefolder:PATH`: one sub-folder of images per class; `PATH/train` and `PATH/val` when
  both exist (ImageNet's layout), else PATH itself with no held-out split.
- `cifar10:PATH`: the CIFAR-10 python batches (`data_batch_1..5`, `test_batch`) in PATH or
  in PATH/cifar-10-batches-py (the layout torchvision's CIFAR10 downloads), read directly
  (`cifar`: the classes are its `batches.meta`'s).

A user's data is checked before the job forms and before anything is written: every CIFAR
batch is read whole, every image file of a folder is opened and verified (`check_images`);
a fault is one line naming the file.

Exactly resumable at any step: each epoch's order is a permutation seeded by (seed, epoch),
sharded over ranks, and the `StepSampler` yields step s's indices whatever step the run
started at. Augmentation draws from a generator seeded by (seed, step, rank, position), so
neither the number of loader workers nor a restart changes what a step sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from dist_sqz.errors import UsageError, first_line
from dist_sqz.training.cifar import BATCHES, CifarBatches

_MEAN = [0.485, 0.456, 0.406]
_STD = [0.229, 0.224, 0.225]
DIGITS_HELD_OUT = 297
KINDS = ("synthetic", "digits", "imagefolder", "cifar10")


def _aug_seed(seed: int, step: int, rank: int, pos: int) -> int:
    return (((seed * 1_000_003 + step) * 10_007 + rank) * 1_009 + pos) % (2**63)


class DigitsDataset(Dataset):
    """scikit-learn's digits, resized to `size` x `size`, 3 channels, in [-1, 1]. Items are
    keyed (index, augmentation seed or None); augmentation shifts the digit by up to 1/8 of
    the image each way, filling with background."""

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

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[torch.Tensor, int]:
        i, aug = key
        img = F.interpolate(
            self.images[i][None, None], size=(self.size, self.size), mode="bilinear"
        )[0]
        x = (img.expand(3, -1, -1) - 0.5) / 0.5
        if aug is not None:
            g = torch.Generator().manual_seed(aug)
            pad = self.size // 8
            dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=g).tolist()
            x = F.pad(x, (pad, pad, pad, pad), value=-1.0)[
                :, dy : dy + self.size, dx : dx + self.size
            ]
        return x.contiguous(), int(self.labels[i])


class TransformDataset(Dataset):
    """A torchvision dataset of PIL images with a transform for training (augmented, drawn
    from the item's own seed) and one for evaluation."""

    def __init__(self, base: Any, train_tf: Any, plain_tf: Any) -> None:
        self.base, self.train_tf, self.plain_tf = base, train_tf, plain_tf
        self.classes = base.classes

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[torch.Tensor, int]:
        i, aug = key
        img, label = self.base[i]
        if aug is None:
            return self.plain_tf(img), int(label)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(aug)
            return self.train_tf(img), int(label)


def _transforms(size: int, small: bool) -> tuple[Any, Any]:
    """(augmented, plain) transforms: resized crop + flip for photos at ImageNet scale; pad-4
    crop + flip for 32 px images (CIFAR's standard), resized to `size`."""
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(_MEAN, _STD)]
    if small:
        aug = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.Resize(size)]
        return T.Compose(aug + norm), T.Compose([T.Resize(size)] + norm)
    aug = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    plain = [T.Resize(int(size * 256 / 224)), T.CenterCrop(size)]
    return T.Compose(aug + norm), T.Compose(plain + norm)


def _split_dirs(path: str) -> tuple[Path, Path | None]:
    root = Path(path)
    train, val = root / "train", root / "val"
    if train.is_dir() and val.is_dir():
        return train, val
    if train.is_dir() or val.is_dir():
        have, lack = ("train", "val") if train.is_dir() else ("val", "train")
        raise UsageError(f"imagefolder:{path} has {have}/ but no {lack}/; give both or neither")
    return root, None


def _cifar_folder(path: str) -> Path:
    """The folder holding the CIFAR-10 python batches: PATH itself, or
    PATH/cifar-10-batches-py (torchvision's download layout); UsageError naming the batches
    missing from the folder that holds the most of them."""
    root = Path(path)
    candidates = [root, root / "cifar-10-batches-py"]
    missing = {c: [f for f in BATCHES if not (c / f).is_file()] for c in candidates}
    best = min(candidates, key=lambda c: len(missing[c]))
    if not missing[best]:
        return best
    raise UsageError(
        f"cifar10:{path}: {best} lacks {', '.join(missing[best])}; give the folder holding "
        "the CIFAR-10 python batches (data_batch_1..5, test_batch), or its parent"
    )


def check_data(data: str) -> None:
    """UsageError if `data` names no usable dataset (checked before anything starts)."""
    kind, _, path = data.partition(":")
    if kind not in KINDS:
        raise UsageError(
            f"data must be synthetic, digits, imagefolder:PATH or cifar10:PATH; got {data!r}"
        )
    if kind in ("imagefolder", "cifar10") and (not path or not Path(path).is_dir()):
        raise UsageError(f"data directory {path!r} does not exist (data {data!r})")
    if kind == "imagefolder":
        _split_dirs(path)
    if kind == "cifar10":
        _cifar_folder(path)


def check_images(paths: list[str]) -> None:
    """Open every image and verify it (its header, and for PNG every chunk's checksum)
    without decoding the pixels: a file that is not an image, or is cut short, is one line
    here rather than a traceback in a loader worker mid-run."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as e:  # whatever PIL raises for a damaged file
            raise UsageError(f"{path} does not read as an image ({first_line(e)})") from None


def _imagefolder(folder: Path, size: int, spec: str, check: bool) -> TransformDataset:
    from torchvision import datasets

    try:
        base = datasets.ImageFolder(str(folder))
    except (FileNotFoundError, RuntimeError) as e:
        raise UsageError(
            f"{spec}: {folder} holds no usable images ({first_line(e, 120)}); "
            "put images in one sub-folder per class"
        ) from None
    if check:
        check_images([p for p, _ in base.samples])
    return TransformDataset(base, *_transforms(size, small=False))


def datasets_for(data: str, size: int, check: bool = True) -> tuple[Dataset | None, Dataset | None]:
    """(training set, held-out set or None) of `data`; (None, None) for synthetic data.
    `check`: verify every image file of a folder (one process per host does it)."""
    kind, _, path = data.partition(":")
    if kind == "synthetic":
        return None, None
    if kind == "digits":
        return DigitsDataset(size, train=True), DigitsDataset(size, train=False)
    if kind == "imagefolder":
        train, val = _split_dirs(path)
        held = _imagefolder(val, size, data, check) if val else None
        return _imagefolder(train, size, data, check), held
    if kind == "cifar10":
        folder = _cifar_folder(path)
        tfs = _transforms(size, small=True)
        return (
            TransformDataset(CifarBatches(folder, train=True), *tfs),
            TransformDataset(CifarBatches(folder, train=False), *tfs),
        )
    raise UsageError(f"data {data!r} has no dataset")


def num_classes_of(train: Dataset | None) -> int:
    """Classes of a training set (synthetic data, None: 1000, ImageNet's)."""
    return 1000 if train is None else len(train.classes)


def check_head(num_classes: int, train: Dataset | None, data: str) -> None:
    """A classifier narrower than the data's classes cannot learn them: refused. A wider one
    is the recipes' choice (docs/training.md: the paper's 1000-way head on 10 classes)."""
    if train is not None and num_classes < len(train.classes):
        raise UsageError(
            f"num_classes {num_classes} is fewer than the {len(train.classes)} classes of "
            f"{data}; set --num-classes 0 (from the data) or at least {len(train.classes)}"
        )


class StepSampler(Sampler):
    """Batches of (index, augmentation seed) for steps `start`..`steps`-1 of one rank.

    Epoch e's order is a permutation seeded by (seed, e), cut to a multiple of the world size
    and dealt round-robin to ranks; each rank's share is cut into whole batches."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        start: int,
        steps: int,
        augment: bool,
    ) -> None:
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.seed, self.start, self.steps, self.augment = seed, start, steps, augment
        self.per_rank = n // world_size
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise UsageError(
                f"the data gives each of {world_size} workers {self.per_rank} images, fewer "
                f"than batch_size {batch_size}; lower --batch-size"
            )

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g)[: self.per_rank * self.world_size]
        return perm[self.rank :: self.world_size].tolist()

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self):
        epoch, order = -1, []
        for step in range(self.start, self.steps):
            e, b = divmod(step, self.batches_per_epoch)
            if e != epoch:
                epoch, order = e, self.order(e)
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield [
                (i, _aug_seed(self.seed, step, self.rank, k) if self.augment else None)
                for k, i in enumerate(idx)
            ]


def default_workers(data: str, local_world_size: int) -> int:
    """Loader processes per worker: none for in-memory data; for image files, this host's
    cores shared among its workers, at most 4 each."""
    if data.split(":", 1)[0] in ("synthetic", "digits"):
        return 0
    return max(1, min(4, (os.cpu_count() or 1) // max(1, local_world_size)))


def _loader(ds: Dataset, sampler: Sampler, workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )


@dataclass
class Batching:
    """What the loaders read of a run's settings (train config keys of the same names)."""

    batch_size: int = 8
    image_size: int = 224
    steps: int = 20
    seed: int = 0
    augment: str = "none"
    eval_batch_size: int = 256


def train_batches(
    cfg: Batching | Any,
    ds: Dataset | None,
    num_classes: int,
    rank: int,
    world_size: int,
    start: int,
    workers: int,
    device: torch.device | None = None,
):
    """An iterator of (x, y) for steps start..steps-1 of this rank (`ds` None: synthetic),
    for `device` (None: the CPU). A synthetic batch is made once and kept on the device (as
    Horovod's synthetic benchmark does): no step copies it again. A loader pins its batches
    for a GPU; its processes start here (see `held_out_batches` for why before the job
    forms)."""
    pin = device is not None and device.type == "cuda"
    if ds is None:
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + rank)
        x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, generator=g)
        y = torch.randint(0, num_classes, (cfg.batch_size,), generator=g)
        if device is not None:
            x, y = x.to(device), y.to(device)
        return iter([(x, y)] * (cfg.steps - start))
    check_head(num_classes, ds, "the data")
    augment = cfg.augment == "standard"
    sampler = StepSampler(
        len(ds), cfg.batch_size, rank, world_size, cfg.seed, start, cfg.steps, augment
    )
    return iter(_loader(ds, sampler, workers, pin))


class _Shard(Sampler):
    """This rank's share of the held-out split (every image counted once across ranks). With
    `empty_first`, the first pass yields nothing: it starts the loader's processes."""

    def __init__(self, n: int, batch_size: int, rank: int, world_size: int, empty_first: bool):
        self.idx = list(range(rank, n, world_size))
        self.batch_size = batch_size
        self.empty = empty_first

    def __len__(self) -> int:
        return -(-len(self.idx) // self.batch_size)

    def __iter__(self):
        if self.empty:
            self.empty = False
            return
        for b in range(0, len(self.idx), self.batch_size):
            yield [(i, None) for i in self.idx[b : b + self.batch_size]]


def held_out_batches(
    cfg: Batching | Any, held: Dataset | None, rank: int, world_size: int, workers: int
) -> DataLoader | None:
    """This rank's shard of the held-out split, or None when the data has none.

    Its processes (kept for the whole run) start here, by an empty first pass, as the
    training loader's do: the trainer builds both before the job forms, while this process
    runs no thread but its own. Forked later, beside gloo's or Horovod's threads, a loader
    process could hang for good in CPython's after-fork clean-up (seen: an evaluation loader
    stuck in PyOS_AfterFork_Child at the first evaluation, both ranks waiting on it)."""
    if held is None:
        return None
    shard = _Shard(len(held), cfg.eval_batch_size, rank, world_size, empty_first=workers > 0)
    loader = _loader(held, shard, workers, False)
    if workers:
        iter(loader)
    return loader
