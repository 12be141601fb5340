"""Backends: how gradients get averaged across workers. One module each, one registry line.

Every module of this package is imported here, so a new backend registers itself with no
further edit (CONTRIBUTING.md). A backend joins the job, wraps the model and optimizer so
that `loss.backward(); optimizer.step()` trains data-parallel, and routes every gradient
collective through the compressor and the `Ledger`. `compute_only()` turns communication
off for the no-comm probe steps that give `exposed_comm_s`.
"""

import pkgutil
from importlib import import_module

from dist_sqz.comm.backends.base import (
    BACKENDS,
    Backend,
    BackendOptions,
    clip_gradients,
    finite,
)

for _module in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")  # each registers its backends

__all__ = ["BACKENDS", "Backend", "BackendOptions", "clip_gradients", "finite"]
