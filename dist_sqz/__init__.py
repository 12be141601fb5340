"""dist_sqz: data-parallel training that measures exactly what gradient exchange costs.

The public API for a training script of one's own is `Meter` (docs/meter.md); the rest is
the `dist-sqz` command. `Meter` is imported on first use, so the command's start-up does not
pay for torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Meter", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Meter":
        from dist_sqz.meter import Meter

        return Meter
    raise AttributeError(f"module 'dist_sqz' has no attribute {name!r}")
