"""`dist-sqz models`: the model zoo with the bytes one uncompressed step exchanges."""

from __future__ import annotations

import argparse
import json

HELP = "the model zoo: params, size, GFLOPs, bytes exchanged per step"


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help=HELP,
        description="Parameters, fp32 size, GFLOPs at 224x224 (multiply-adds, torchvision's "
        "convention), the buffers (BatchNorm statistics) broadcast before each forward and, "
        "for uncompressed fp32 ring all-reduce at --workers N with those broadcasts, the "
        "payload_bytes and sent_bytes of one step.",
    )
    p.add_argument("--workers", default="2", help="world size N (default 2)")
    p.add_argument("--models", help="comma-separated subset (default: all)")
    p.add_argument(
        "--layers",
        metavar="MODEL",
        help="instead: MODEL layer by layer, as the SqueezeNet paper's Table 1 (output size, "
        "filter/stride, squeeze 1x1 / expand 1x1 / expand 3x3 filters, params, bytes per step)",
    )
    p.add_argument(
        "--image-size", type=int, default=224, help="input size for --layers (paper: 224)"
    )
    p.add_argument("--format", choices=("table", "json"), default="table")


def run(args: argparse.Namespace) -> int:
    if args.layers:
        return _layers(args)
    from dist_sqz.units import csv, parse_counts

    (workers,) = parse_counts(args.workers, "--workers")[:1]
    names = csv(args.models) if args.models else None
    from dist_sqz.models_cache import facts_for
    from dist_sqz.registry import shipped_zoo

    # The registered models' counts ship with the package, and a torchvision or timm model
    # counted once is cached: no model is built, and neither torch nor torchvision is
    # imported (23.7 s before, building every model). Others (the user's own, a family
    # member's settings) are counted from the model, on the meta device.
    facts = facts_for(names) if names else shipped_zoo()
    rows = [fact_row(n, f, workers) for n, f in facts.items()]
    print(json.dumps(rows, indent=2) if args.format == "json" else format_zoo_table(rows, workers))
    return 0


def fact_row(name: str, fact: dict[str, float], workers: int) -> dict:
    from dist_sqz.comm.accounting import sent_bytes

    grads = 4 * int(fact["params"])
    buffers = [int(b) for b in fact["buffer_bytes"]]
    return {
        "model": name,
        "params": int(fact["params"]),
        "fp32_mb": grads / 1e6,
        "gflops": fact["gflops"],
        "world_size": workers,
        "buffer_bytes": buffers,
        "payload_bytes": grads + (sum(buffers) if workers > 1 else 0),  # alone: none sent
        "sent_bytes": sent_bytes("allreduce", grads, workers)
        + sum(sent_bytes("broadcast", b, workers) for b in buffers),
    }


def format_zoo_table(rows: list[dict], workers: int) -> str:
    lines = [
        f"{'model':<20}{'params':>14}{'fp32 MB':>10}{'GFLOPs':>8}{'buffers B':>11}"
        f"{'payload B/step':>16}{'sent B/step':>15}   (N={workers}, ring all-reduce, "
        "buffers broadcast)"
    ]
    for r in rows:
        lines.append(
            f"{r['model']:<20}{r['params']:>14,}{r['fp32_mb']:>10.2f}{r['gflops']:>8.2f}"
            f"{sum(r['buffer_bytes']):>11,}{r['payload_bytes']:>16,}{r['sent_bytes']:>15,}"
        )
    return "\n".join(lines)


def _layers(args: argparse.Namespace) -> int:
    from dist_sqz.models import build_model, check_input_size
    from dist_sqz.models.layers import format_layer_table, layer_table

    check_input_size(args.layers, args.image_size)  # unknown model or too small: exit 2
    rows = layer_table(build_model(args.layers), args.image_size)
    if args.format == "json":
        total = sum(r["params"] for r in rows)
        print(
            json.dumps(
                {
                    "model": args.layers,
                    "image_size": args.image_size,
                    "layers": rows,
                    "params": total,
                    "payload_bytes": 4 * total,
                },
                indent=2,
            )
        )
    else:
        print(format_layer_table(args.layers, rows, args.image_size))
    return 0
