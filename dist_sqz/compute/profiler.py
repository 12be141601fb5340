"""`dist-sqz profile`: forward, backward and optimizer time per model on this device.

Each step is timed in three parts (CUDA events on GPU, perf_counter on CPU, synchronised):
forward + loss, backward, SGD-momentum step. Medians over `steps` after `warmup`. Precisions:
fp32, and on CUDA bf16_cl (bf16 autocast + channels_last); with `compile`, each also under
torch.compile, keyed `<precision>+compile` (the first compiled steps are warm-up and are
left out like any other). The JSON it writes is what
`dist-sqz simulate --profile FILE` reads (the shipped profiles in dist_sqz/compute/profile_data
have the same layout).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dist_sqz.comm.backends.base import clip_gradients, finite
from dist_sqz.errors import UsageError
from dist_sqz.models import build_model

PRECISIONS = ("fp32", "bf16_cl")


class _Clock:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def between(self, a, b) -> float:
        if self.cuda:
            b.synchronize()
            return a.elapsed_time(b) / 1e3
        return b - a


def profile_model(
    name: str,
    batch_size: int,
    precision: str,
    device: torch.device,
    image_size: int,
    steps: int,
    warmup: int,
    compile: bool = False,
) -> dict[str, float]:
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True  # as the trainer on a GPU (no effect on the CPU)
    model = build_model(name).to(device)
    fmt = torch.channels_last if precision == "bf16_cl" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if compile:
        model = torch.compile(model)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device).to(memory_format=fmt)
    y = torch.randint(0, 1000, (batch_size,), device=device)
    clock = _Clock(device)
    parts: dict[str, list[float]] = {"forward_s": [], "backward_s": [], "optimizer_s": []}
    for i in range(warmup + steps):
        opt.zero_grad(set_to_none=True)
        t0 = clock.mark()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16_cl"):
            loss = F.cross_entropy(model(x), y)
        t1 = clock.mark()
        loss.backward()
        t2 = clock.mark()
        if finite(clip_gradients(opt, None)):  # as the trainer's step: norm, check, update
            opt.step()
        t3 = clock.mark()
        if i >= warmup:
            parts["forward_s"].append(clock.between(t0, t1))
            parts["backward_s"].append(clock.between(t1, t2))
            parts["optimizer_s"].append(clock.between(t2, t3))
    out = {k: statistics.median(v) for k, v in parts.items()}
    out["step_s"] = sum(out.values())
    return out


def profile(
    models: list[str],
    batch_sizes: list[int],
    precisions: list[str],
    image_size: int,
    steps: int,
    warmup: int,
    compile: bool = False,
    progress=print,
) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for p in precisions:
        if p not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}; got {p!r}")
        if p == "bf16_cl" and device.type != "cuda":
            raise UsageError("precision bf16_cl is profiled on CUDA only; use fp32 on CPU")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    result: dict[str, Any] = {
        "device": name or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "image_size": image_size,
        "method": f"median of {steps} steps after {warmup} warm-up; forward+loss, backward, "
        "SGD(momentum) step timed separately; cudnn.benchmark on",
        "models": {},
    }
    variants = [(p, False) for p in precisions] + [(p, True) for p in precisions if compile]
    for m in models:
        for p, compiled in variants:
            key = f"{p}+compile" if compiled else p
            for bs in batch_sizes:
                t = profile_model(m, bs, p, device, image_size, steps, warmup, compiled)
                result["models"].setdefault(m, {}).setdefault(key, {})[str(bs)] = t
                progress(
                    f"{m:14s} {key:16s} batch {bs:4d}: forward {t['forward_s'] * 1e3:8.2f} ms  "
                    f"backward {t['backward_s'] * 1e3:8.2f} ms  "
                    f"optimizer {t['optimizer_s'] * 1e3:7.2f} ms"
                )
    return result


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
