"""`dist-sqz profile`: forward, backward and optimizer time per model on this device."""

from __future__ import annotations

import argparse
from pathlib import Path

from dist_sqz.errors import UsageError

HELP = "measure forward/backward/optimizer time per model on this device"


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help=HELP,
        description="Times forward, backward and the optimizer step for each model, batch "
        "size and precision on this device (GPU if present) and writes a profile JSON for "
        "`dist-sqz simulate --profile FILE` and `--compute-profile FILE`.",
    )
    p.add_argument("--models", default="alexnet,squeezenet1_0,squeezenet1_1")
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--precisions", default="", help="default fp32,bf16_cl on GPU, fp32 on CPU")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--compile",
        action="store_true",
        help="also profile each precision under torch.compile (keyed <precision>+compile)",
    )
    p.add_argument(
        "--compression",
        default="",
        metavar="VARIANTS",
        help="also time each compressor's encoding and decoding of the model's gradients "
        "(per step, into the profile's compress_s), e.g. topk:density=0.001,powersgd:rank=2",
    )
    p.add_argument("--out", required=True, help="JSON file to write")
    g = p.add_argument_group(
        "from published numbers (no measurement)",
        "dist-sqz profile --published resnet50=367 --batch-size 128 --precision fp32 "
        "--device V100-SXM2 --out v100.json: step = batch / images_per_s, shared among "
        "forward, backward, optimizer by --split",
    )
    g.add_argument("--published", default="", metavar="MODEL=IMAGES_PER_S,...")
    g.add_argument("--batch-size", type=int, default=0, help="the published run's batch/GPU")
    g.add_argument("--precision", default="", help="a name for its precision (fp32, amp, ...)")
    g.add_argument("--device", default="", help="the GPU it ran on")
    g.add_argument("--split", default="1:2", help="forward:backward[:optimizer] (default 1:2)")
    g.add_argument("--source", default="", help="where the figure is published")


def run(args: argparse.Namespace) -> int:
    import torch

    from dist_sqz.compute.profiler import PRECISIONS, profile, write
    from dist_sqz.config.variants import parse_variants
    from dist_sqz.models import model_spec
    from dist_sqz.units import csv, parse_counts

    if args.published:
        return _published(args)
    models = csv(args.models)
    for m in models:
        model_spec(m)
    if args.steps < 1 or args.warmup < 0 or args.image_size < 1:
        raise UsageError("--steps and --image-size must be >= 1, --warmup >= 0")
    default = "fp32,bf16_cl" if torch.cuda.is_available() else "fp32"
    precisions = csv(args.precisions or default)
    for p in precisions:
        if p not in PRECISIONS:
            raise UsageError(f"--precisions takes {', '.join(PRECISIONS)}; got {p!r}")
    out = Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists; choose another --out")
    batches = parse_counts(args.batch_sizes, "--batch-sizes")
    variants = parse_variants(csv(args.compression)) if args.compression else []
    result = profile(
        models, batches, precisions, args.image_size, args.steps, args.warmup, args.compile
    )
    if variants:
        from dist_sqz.compute.profile_compress import measure_compression, merge

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        merge(result, measure_compression(models, variants, device, args.steps, args.warmup))
    write(result, out)
    print(f"dist-sqz profile: wrote {out}")
    return 0


def _published(args: argparse.Namespace) -> int:
    import json

    from dist_sqz.compute.profiles import published_profile
    from dist_sqz.models import model_spec
    from dist_sqz.units import csv

    if args.batch_size < 1 or not args.precision or not args.device:
        raise UsageError("--published needs --batch-size (>= 1), --precision and --device")
    throughputs: dict[str, float] = {}
    for item in csv(args.published):
        model, eq, value = item.partition("=")
        try:
            throughputs[model.strip()] = float(value)
        except ValueError:
            eq = ""
        if not eq:
            raise UsageError(f"--published takes MODEL=IMAGES_PER_S,...; got {item!r}")
        model_spec(model.strip())
    out = Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists; choose another --out")
    prof = published_profile(
        throughputs, args.batch_size, args.precision, args.device, args.split, args.source
    )
    out.write_text(json.dumps(prof, indent=1) + "\n")
    print(f"dist-sqz profile: wrote {out} (derived from published throughput, split {args.split})")
    return 0
