"""How `compare` obtains each step's compute time: local (N copies of this machine), real, or
a named profile (docs/design.md, "Compute modes").

- **local** (the default): before any run, each model's forward, backward and optimizer times
  are measured here with one thread at the run's batch and image size (`profiler`); every run
  then pads its compute to those times under a dilation D chosen per worker count so that all
  workers' real work fits on this machine's cores. Each worker is one core of this machine,
  and scaling efficiency measures the network alone.
- **real**: workers run unpadded and share this machine's cores.
- **profile** (`compute_profile`, e.g. h100): padded to a GPU profile, D = 100 by default,
  doubled for a row whose real work overran the padding (a D given is kept).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_MARGIN = 1.5  # padding over the measured time: room for loaders, gloo and the OS
NEED_MARGIN = 1.15  # over the D a trial run found each worker's real work to need
PROFILE_DILATION = 100.0
LATE_FRACTION = 0.05  # a row whose real work overran the padding by more than this is flagged


def cores() -> int:
    return len(os.sched_getaffinity(0))


def _round_up(x: float) -> float:
    """x rounded up to 2 significant figures (1.5, 3.1, 12, 130): a D that reads well."""
    scale = 10 ** (math.floor(math.log10(x)) - 1)
    return round(math.ceil(round(x / scale, 6)) * scale, 10) if x > 0 else x


@dataclass(frozen=True)
class ComputeMode:
    kind: str  # local | real | profile
    profile: str = ""  # a shipped profile's name or a .json path ('' for real)
    precision: str = "fp32"
    batch_size: int = 0  # the emulated per-worker batch (0 = the run's)
    # fixed D; None = this mode's choice (per worker count locally, PROFILE_DILATION under a
    # profile), doubled for a row whose real work overran the padding
    dilation: float | None = None

    @property
    def adaptive(self) -> bool:
        """D is this mode's to choose (and to raise where real work overran the padding)."""
        return self.kind != "real" and self.dilation is None

    def dilation_for(self, n: int, need: float | None = None) -> float:
        """D for a run of n workers: given, or this mode's choice. Chosen, it is large enough
        that n one-thread workers' real work fits their padding: `need` is the D at which one
        worker's fits here alone (`compare.trial.need_for`, from a trial run: each phase, and
        each gradient by its own due time), taken with NEED_MARGIN to spare, never below
        LOCAL_MARGIN, times max(1, n / cores) where workers share the cores. Under a GPU
        profile never below PROFILE_DILATION. Rounded up to 2 significant figures."""
        if self.kind == "real":
            return 1.0
        if self.dilation is not None:
            return self.dilation
        alone = max(LOCAL_MARGIN, NEED_MARGIN * (need or 0.0))
        d = alone * max(1.0, n / cores())
        if self.kind == "profile":
            d = max(PROFILE_DILATION, d)
        return _round_up(d)

    def train_settings(self, n: int) -> dict[str, Any]:
        """The TrainConfig keys that put a run of n workers in this mode."""
        if self.kind == "real":
            return {}
        return {
            "compute_profile": self.profile,
            "compute_precision": self.precision,
            "compute_batch_size": self.batch_size,
            "dilation": self.dilation_for(n),
            # Encoding measured here is this machine's: padded like forward and backward in
            # local mode; under a GPU profile it is not the GPU's, and left unpadded.
            "pad_encoding": self.kind == "local",
        }

    def describe(self, folder: Path | None = None) -> str:
        """One line for logs and reports; a profile inside `folder` (the comparison's own)
        is named relative to it, so a report moved or committed names no machine's path."""
        profile = self.profile
        if folder is not None and profile and Path(profile).is_relative_to(folder):
            profile = str(Path(profile).relative_to(folder))
        if self.kind == "real":
            return (
                f"real compute: all workers share this machine's {cores()} cores, so "
                "efficiency counts core sharing as well as the network"
            )
        if self.kind == "local":
            d = (
                f"x{self.dilation:g}"
                if self.dilation
                else f"per row: max({LOCAL_MARGIN:g}, {NEED_MARGIN:g} x the D a trial run found "
                f"one worker's real work to need) x max(1, N / {cores()} cores), doubled for a "
                "row whose real work still overran the padding"
            )
            return (
                "emulated compute, N copies of this machine: each worker padded to one core's "
                f"measured forward/backward/optimizer times ({profile}); time-dilated {d}"
                ", links shaped to link / D, times reported divided back"
            )
        return (
            f"emulated compute from profile {profile} ({self.precision}, batch "
            f"{self.batch_size} per GPU), time-dilated x{self.dilation_for(1):g}"
            + (
                " or more where a trial run says this machine's real work needs it, doubled "
                "for a row whose real work still overran the padding"
                if self.adaptive
                else ""
            )
            + ": links shaped to link / D, times reported divided back"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "profile": self.profile,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "dilation": self.dilation,
            "cores": cores(),
            "margin": LOCAL_MARGIN if self.kind == "local" and self.dilation is None else None,
        }


def crowded_hosts(compute: dict, most: int) -> str:
    """A line for a comparison's report (its `compute` record, its most workers) where 4 or
    more emulated hosts shared each core at the default dilation; else ''."""
    cores = compute.get("cores") or 0
    if compute.get("kind") != "local" or compute.get("dilation") or not cores:
        return ""
    if most < 4 * cores:
        return ""
    return (
        f"{most} hosts on {cores} cores: at the default dilation their gloo threads wait for "
        "the CPU beside their real compute, so all-reduces run longer than on the bare link "
        "(squeezenet1_1 at N = 8: 12%, docs/cost-model.md); a larger `--dilation` leaves them "
        "room (12 for 8 hosts on 2 cores)."
    )


def measure_local(shapes: dict[str, tuple[int, int]], path: Path, progress=print) -> Path:
    """Profile each model at its (batch, image size) with one thread; write `path` (the
    layout `dist-sqz profile` writes, so `dist-sqz simulate --profile` reads it)."""
    import torch

    from dist_sqz.compute.profiler import profile_model

    result: dict[str, Any] = {
        "device": "this machine, one core (torch threads = 1)",
        "torch": torch.__version__,
        "threads": 1,
        "method": "median of 5 steps after 2 warm-up; forward+loss, backward, SGD(momentum) "
        "step timed separately",
        "image_sizes": {m: size for m, (_, size) in shapes.items()},
        "models": {},
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for model, (batch, size) in shapes.items():
            t = profile_model(model, batch, "fp32", torch.device("cpu"), size, steps=5, warmup=2)
            result["models"][model] = {"fp32": {str(batch): t}}
            progress(
                f"dist-sqz compare: measured {model} at batch {batch}, {size}px on one core: "
                f"forward {t['forward_s'] * 1e3:.0f} ms, backward {t['backward_s'] * 1e3:.0f} "
                f"ms, optimizer {t['optimizer_s'] * 1e3:.0f} ms"
            )
    finally:
        torch.set_num_threads(threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def measure_local_encoding(arms: list[tuple[str, str]], path: Path, progress=print) -> None:
    """Each compressor's encoding and decoding per step, on one core, into the local profile
    at `path` (`compress_s`, as `dist-sqz profile --compression` writes it): those the
    profile lacks, so that a resumed comparison keeps what it measured."""
    from dist_sqz.config.variants import parse_variant

    result = json.loads(path.read_text())
    missing: dict[str, list[str]] = {}  # model -> its compressors the profile lacks
    for model, label in arms:
        entries = result["models"].get(model, {}).get("fp32", {}).values()
        if label != "none" and any(label not in e.get("compress_s", {}) for e in entries):
            missing.setdefault(model, []).append(label)
    if not missing:
        return
    import torch

    from dist_sqz.compute.profile_compress import measure_compression, merge

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    measured: dict[str, dict[str, float]] = {}
    try:
        for model, labels in missing.items():
            measured |= measure_compression(
                [model],
                [parse_variant(v) for v in labels],
                torch.device("cpu"),
                progress=lambda line: progress(f"dist-sqz compare: measured on one core: {line}"),
            )
    finally:
        torch.set_num_threads(threads)
    merge(result, measured)
    path.write_text(json.dumps(result, indent=1) + "\n")
