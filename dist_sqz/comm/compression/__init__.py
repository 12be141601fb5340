"""Gradient compressors: plug-ins that decide what travels for each gradient bucket.

A compressor's `exchange(bucket, comm)` returns a future of the bucket's averaged gradient. The
collectives it calls (`comm.all_reduce`, `comm.all_gather`) are accounted, so whatever it
hands them is exactly what `payload_bytes` counts. Each declares its own `Options` next to
its class and the train-config key of each (`KEYS`), and receives only those. Adding one: a
module here that subclasses `Compressor` (or `AllReduceCompressor` / `GatherCompressor`) and
registers itself with `@COMPRESSORS.register("name")`; every module of this package is
imported below, so it registers with no further edit. Each new key in `KEYS` is a field of
`TrainConfig` (its type and range are the one rule for it: CONTRIBUTING.md).
"""

from __future__ import annotations

import pkgutil
from collections.abc import Mapping
from importlib import import_module
from typing import Any

from dist_sqz.comm.compression.base import COMPRESSORS, Bucket, Compressor

for _module in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")  # each registers its compressors

__all__ = ["COMPRESSORS", "Bucket", "Compressor", "build_compressor"]


def build_compressor(name: str, settings: Mapping[str, Any] | Any = None) -> Compressor:
    """The compressor `name`, built from its own options read from `settings` (train
    settings as a mapping or a config object; None: its defaults)."""
    cls = COMPRESSORS.get(name)
    return cls(cls.options_from(settings) if settings is not None else None)
