"""Where the trainer's step time beyond the compiled model's own goes (issue 41, part 1).

Per model, torch.profiler over `--steps` steps after `--warmup`, twice on the same device:

- the model alone: torchvision's model, channels_last, torch.compile (unless --no-compile),
  bf16 autocast on a GPU, fused SGD with momentum, zero_grad / forward / cross-entropy /
  backward / step in a plain loop;
- the trainer: `torchrun --nproc-per-node 1 -m dist_sqz train` with the same settings and
  `--torch-profile-steps` over the same steps (DDP with the accounting hook, the per-step
  agreement, the finite check, the records).

Both write a Chrome trace (one `step N` range per step) and a table (dist_sqz's
`observe/torch_profile.py`) under OUT/<model>-model and OUT/<model>-trainer. Then, from the
traces: each side's median step (the ranges' length), the host's waits on the device per step,
and the operators, runtime calls and kernels whose time per step differs most between the two:
where the extra time goes. Written to OUT/summary.md and OUT/summary.json.

    python benchmarks/gpu_trace.py [--models squeezenet1_1,alexnet] [--out DIR]
    python benchmarks/gpu_trace.py --device cpu --no-compile --batch-size 4 --image-size 64
        (a dry run of the script itself on a machine without a GPU)
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from dist_sqz.observe.torch_profile import SYNCS, TorchProfile
from dist_sqz.runs import train_command

ROOT = Path(__file__).resolve().parents[1]


def model_alone(name: str, args: argparse.Namespace, out: Path) -> None:
    import torchvision

    cuda = args.device == "cuda"
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    model = getattr(torchvision.models, name)(num_classes=1000)
    model = model.to(args.device, memory_format=torch.channels_last)
    step_model = model if args.no_compile else torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=cuda or None)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=args.device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch_size,), device=args.device)
    prof = TorchProfile((args.warmup + 1, args.warmup + args.steps), out, 0, cuda)
    for step in range(1, args.warmup + args.steps + 1):
        prof.before(step)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(step_model(x), y)
        loss.backward()
        opt.step()
        prof.after(step)
    prof.close()


def trainer(name: str, args: argparse.Namespace, out: Path) -> None:
    a, b = args.warmup + 1, args.warmup + args.steps
    flags = ["--model", name, "--channels-last"]
    flags += ["--backend", "nccl" if args.device == "cuda" else "gloo"]
    flags += ["--precision", "bf16"] if args.device == "cuda" else []
    flags += [] if args.no_compile else ["--compile"]
    flags += ["--batch-size", str(args.batch_size), "--image-size", str(args.image_size)]
    flags += ["--steps", str(b), "--warmup-steps", str(args.warmup), "--compute-probe-steps", "0"]
    flags += ["--torch-profile-steps", f"{a}-{b}", "--out", str(out)]
    proc = subprocess.run(train_command(*flags, nproc=1), capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"gpu_trace: the trainer failed on {name}: {proc.stderr.strip()[-800:]}")


def per_step(folder: Path) -> dict:
    """Median step (the `step N` ranges), syncs per step, and time per step by event name
    (CPU operators and runtime calls, and kernels, apart)."""
    events = json.loads((folder / "torch_trace-rank0.json").read_text())["traceEvents"]
    steps = [e for e in events if str(e.get("name", "")).startswith("step ")]
    n = max(len(steps), 1)
    by_name: dict[str, float] = collections.defaultdict(float)
    syncs: dict[str, int] = collections.Counter()
    for e in events:
        cat, name = e.get("cat", ""), str(e.get("name", ""))
        if cat in ("cpu_op", "cuda_runtime", "kernel", "gpu_memcpy") and "dur" in e:
            by_name[f"{'kernel' if cat in ('kernel', 'gpu_memcpy') else cat}: {name}"] += e["dur"]
        if name in SYNCS:
            syncs[name] += 1
    return {
        "step_ms": statistics.median(e["dur"] for e in steps) / 1e3 if steps else None,
        "syncs_per_step": {k: syncs[k] / n for k in SYNCS},
        "ms_per_step": {k: v / n / 1e3 for k, v in by_name.items()},
    }


def differences(alone: dict, ours: dict, top: int = 25) -> list[tuple[str, float, float]]:
    names = set(alone["ms_per_step"]) | set(ours["ms_per_step"])
    rows = [(k, alone["ms_per_step"].get(k, 0.0), ours["ms_per_step"].get(k, 0.0)) for k in names]
    rows.sort(key=lambda r: abs(r[2] - r[1]), reverse=True)
    return rows[:top]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="squeezenet1_1,alexnet")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--out", default="benchmarks/results/gpu/trace")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_trace: needs a CUDA GPU (or --device cpu for a dry run)", file=sys.stderr)
        return 2
    out = Path(args.out)
    summary, lines = {}, [f"# Where the trainer's step goes ({args.device})", ""]
    for name in args.models.split(","):
        model_alone(name, args, out / f"{name}-model")
        trainer(name, args, out / f"{name}-trainer")
        alone, ours = per_step(out / f"{name}-model"), per_step(out / f"{name}-trainer")
        summary[name] = {"model": alone, "trainer": ours}
        section = [
            f"## {name}: model alone {alone['step_ms']:.2f} ms, trainer {ours['step_ms']:.2f} ms"
            f" a step (+{ours['step_ms'] - alone['step_ms']:.2f} ms)",
            "",
            "| host waits per step | model alone | trainer |",
            "|---|---|---|",
            *(
                f"| {k} | {alone['syncs_per_step'][k]:g} | {ours['syncs_per_step'][k]:g} |"
                for k in SYNCS
            ),
            "",
            "| where (ms per step) | model alone | trainer | difference |",
            "|---|---|---|---|",
            *(
                f"| `{k}` | {a:.3f} | {b:.3f} | {b - a:+.3f} |"
                for k, a, b in differences(alone, ours)
            ),
            "",
        ]
        lines += section
        print("\n".join(section), flush=True)
    (out / "summary.md").write_text("\n".join(lines))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out}/summary.md and summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
