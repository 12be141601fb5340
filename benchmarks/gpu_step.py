"""GPU step time: torchvision eager bf16 against this trainer's best settings, side by side.

Method, per model at batch B (default 256) and 224 px on one GPU, repeated R times
alternating A, B so that clocks and thermals hit both alike:

- A, the reference: a plain loop in this process over torchvision's model, bf16 autocast,
  cudnn.benchmark on,
  SGD(momentum), zero_grad / forward / cross-entropy / backward / step, each step timed with
  CUDA events; the median after warm-up.
- B, this trainer: `torchrun --nproc-per-node 1 -m dist_sqz train --backend nccl --precision
  bf16 --channels-last --compile` (DDP with the accounting hook, fused SGD), its summary's
  median `step_time_s`.

Printed per model: both medians, the ratio A/B of each repeat, their median and range.
Goals (issue 17): squeezenet1_1 >= 1.5x (reference 18.2 ms on an H100), alexnet >= 1.2x.
The accounting hook's own overhead on the GPU is `benchmarks/overhead.py --backend nccl`.

    python benchmarks/gpu_step.py [--models squeezenet1_1,alexnet] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from dist_sqz.runs import train_command

ROOT = Path(__file__).resolve().parents[1]


def eager_bf16(name: str, batch: int, size: int, steps: int, warmup: int) -> float:
    """Median step time of torchvision's model in a plain eager bf16 loop (CUDA events)."""
    import torchvision

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True  # as the reference figure and the trainer
    model = getattr(torchvision.models, name)(num_classes=1000).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device="cuda")
    y = torch.randint(0, 1000, (batch,), device="cuda")
    times = []
    for i in range(warmup + steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        end.record()
        end.synchronize()
        if i >= warmup:
            times.append(start.elapsed_time(end) / 1e3)
    del model, opt
    torch.cuda.empty_cache()
    return statistics.median(times)


def trainer(name: str, batch: int, size: int, steps: int, warmup: int, work: Path) -> float:
    """This trainer's median step time at its best GPU settings (a real torchrun job)."""
    out = work / f"{name}-{len(list(work.iterdir()))}"
    flags = ["--backend", "nccl", "--model", name]
    flags += ["--precision", "bf16", "--channels-last", "--compile", "--batch-size", str(batch)]
    flags += ["--image-size", str(size), "--steps", str(warmup + steps)]
    flags += ["--warmup-steps", str(warmup), "--compute-probe-steps", "0", "--out", str(out)]
    proc = subprocess.run(train_command(*flags, nproc=1), capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"gpu_step: the trainer failed on {name}: {proc.stderr.strip()[-500:]}")
    return json.loads((out / "summary.json").read_text())["step_time_s"]


GOALS = {"squeezenet1_1": 1.5, "alexnet": 1.2}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="squeezenet1_1,squeezenet1_0,alexnet")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/gpu_step.json")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_step: needs a CUDA GPU; none is visible here", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name()
    print(
        f"{device}, torch {torch.__version__}: batch {args.batch_size} at {args.image_size} px, "
        f"median of {args.steps} steps after {args.warmup}, {args.repeats} alternating repeats"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            eager, ours = [], []
            for _ in range(args.repeats):
                eager.append(
                    eager_bf16(name, args.batch_size, args.image_size, args.steps, args.warmup)
                )
                ours.append(
                    trainer(
                        name, args.batch_size, args.image_size, args.steps, args.warmup, Path(tmp)
                    )
                )
            ratios = sorted(a / b for a, b in zip(eager, ours, strict=True))
            row = {
                "model": name,
                "eager_bf16_s": statistics.median(eager),
                "trainer_s": statistics.median(ours),
                "ratios": ratios,
                "ratio_median": statistics.median(ratios),
                "goal": GOALS.get(name),
            }
            rows.append(row)
            goal = f", goal >= {row['goal']}x" if row["goal"] else ""
            print(
                f"{name:<14} eager bf16 {row['eager_bf16_s'] * 1e3:7.2f} ms  trainer "
                f"{row['trainer_s'] * 1e3:7.2f} ms  speed-up {row['ratio_median']:.3f}x "
                f"(range {ratios[0]:.3f}-{ratios[-1]:.3f}, n={len(ratios)}{goal})",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"device": device, "torch": torch.__version__, "rows": rows}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
