"""No compression, and fp16/bf16 casts (all-reduce in the low-precision type)."""

from __future__ import annotations

from typing import Any

import torch

from dist_sqz.comm.compression.base import COMPRESSORS, AllReduceCompressor


@COMPRESSORS.register("none")
class NoCompression(AllReduceCompressor):
    """fp32 gradients all-reduced as they are: payload = 4 bytes x parameters."""

    name = "none"
    encodes = False


class _Cast(AllReduceCompressor):
    dtype: torch.dtype

    def compress(self, grad: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return grad.to(self.dtype), None

    def decompress(self, payload: torch.Tensor, ctx: Any, like: torch.Tensor) -> torch.Tensor:
        return payload.to(like.dtype)


@COMPRESSORS.register("fp16")
class FP16(_Cast):
    """Cast to float16, all-reduce, cast back: half the payload (like Horovod's fp16)."""

    name = "fp16"
    dtype = torch.float16
    payload_bytes_per_value = 2


@COMPRESSORS.register("bf16")
class BF16(_Cast):
    """Cast to bfloat16 (fp32's range, 8-bit mantissa), all-reduce, cast back."""

    name = "bf16"
    dtype = torch.bfloat16
    payload_bytes_per_value = 2
