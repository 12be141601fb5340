"""Gradient compressors: plug-ins that decide what travels for each gradient bucket.

A compressor's `exchange(bucket, comm)` returns a future of the bucket's averaged gradient. The
collectives it calls (`comm.all_reduce`, `comm.all_gather`) are accounted, so whatever it
hands them is exactly what `payload_bytes` counts. Adding one: a module here that subclasses
`Compressor` and registers itself, plus its import line below.
"""

from __future__ import annotations

from dist_sqz.registry import Registry

COMPRESSORS = Registry("compression")

from dist_sqz.comm.compression import casts, powersgd, quant, sparse  # noqa: E402, F401
from dist_sqz.comm.compression.base import Bucket, Compressor  # noqa: E402

__all__ = ["COMPRESSORS", "Bucket", "Compressor", "build_compressor"]


def build_compressor(name: str, cfg: object) -> Compressor:
    return COMPRESSORS.get(name)(cfg)
