"""Backends: how gradients get averaged across workers. One module each, one registry line.

A backend joins the job, wraps the model and optimizer so that `loss.backward();
optimizer.step()` trains data-parallel, and routes every gradient collective through the
compressor and the `Ledger`. `compute_only()` turns communication off for the no-comm probe
steps that give `exposed_comm_s`.
"""

from dist_sqz.comm.backends import ddp, horovod, mpi  # noqa: F401 (they fill BACKENDS)
from dist_sqz.comm.backends.base import (
    BACKENDS,
    Backend,
    BackendOptions,
    clip_gradients,
    finite,
)

__all__ = ["BACKENDS", "Backend", "BackendOptions", "clip_gradients", "finite"]
