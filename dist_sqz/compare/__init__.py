"""`dist-sqz compare`: the main job. Trains each model at each worker count and compares.

Each multi-worker run is a torchrun multi-node job on an emulated cluster (one host per
worker, every link shaped to `link`), so bytes cross a real network stack and `wire_bytes`
comes from the kernel's counters. Where namespaces are not permitted, runs fall back to
local processes on loopback, and the report says so. Compute is emulated by default as N
copies of this machine (`compute_modes`), so scaling efficiency measures the network rather
than workers sharing cores. With `target_accuracy` every run trains with its model's recipe
until the held-out accuracy reaches it, and rows gain time to accuracy.

Long comparisons are first-class: every run's config is built and validated before the first
starts; results.json is rewritten after every row; a failed row is recorded with its error
line and the rest go on; `--resume OUT` keeps finished rows and continues a row that left a
checkpoint.
"""

from dist_sqz.compare.plan import (
    CONFIG_FILE,
    compute_mode,
    estimate,
    format_estimate,
    load_for_resume,
    run_config,
    shaped_link,
)
from dist_sqz.compare.run import RESULT_FIELDS, Comparison, compare

__all__ = [
    "CONFIG_FILE",
    "RESULT_FIELDS",
    "Comparison",
    "compare",
    "compute_mode",
    "estimate",
    "format_estimate",
    "load_for_resume",
    "run_config",
    "shaped_link",
]
