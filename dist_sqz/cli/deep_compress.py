"""`dist-sqz deep-compress`: prune, share and Huffman-code a trained run's weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dist_sqz.errors import UsageError

HELP = "Deep Compression of a trained run: prune, share weights, Huffman-code"


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deep-compress",
        help=HELP,
        description="Deep Compression (Han et al. 2016) of RUN_DIR's final weights: magnitude "
        "pruning to --keep (per layer, or --scope global), fine-tuning with the mask fixed on "
        "the run's data, k-means weight sharing at each of --bits with centroid fine-tuning, "
        "then Huffman coding of the indices and of the sparse-position gaps into a real file "
        "that --decode reads back. Prints and writes the size table (MB = 2^20 bytes) with "
        "held-out accuracy at each stage.",
        epilog="example: dist-sqz deep-compress runs/digits-squeezenet1_0 --bits 8,6",
    )
    p.add_argument("run_dir", nargs="?", help="a finished run directory (checkpoints/last.pt)")
    p.add_argument("--keep", type=float, default=0.33, help="fraction of weights kept (0.33)")
    p.add_argument(
        "--scope",
        choices=("layer", "global"),
        default="layer",
        help="prune each layer to --keep (default), or one threshold for all layers",
    )
    p.add_argument("--bits", default="8,6", help="weight-sharing bit widths (default 8,6)")
    p.add_argument(
        "--prune-steps",
        type=int,
        default=None,
        help="fine-tune steps with the masks fixed, over all rounds (default: the run's step "
        "budget; 300 in all lost 2.7 points on squeezenet1_1, 1500 none)",
    )
    p.add_argument(
        "--share-steps", type=int, default=200, help="centroid fine-tune steps (default 200)"
    )
    p.add_argument("--rounds", type=int, default=3, help="prune-retrain rounds (default 3)")
    p.add_argument(
        "--lr", type=float, default=None, help="fine-tune lr, cosine to 0 (default: the run's)"
    )
    p.add_argument("--out", default="", help="output folder (default RUN_DIR/deep_compress)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--decode", metavar="FILE", help="instead: decode FILE, evaluate it")
    p.add_argument("--save", metavar="PT", help="with --decode: write the state_dict here")


def run(args: argparse.Namespace) -> int:
    from dist_sqz.units import parse_counts

    if args.decode:
        return _decode(args)
    if not args.run_dir:
        raise UsageError("deep-compress needs RUN_DIR (or --decode FILE)")
    if not 0 < args.keep <= 1:
        raise UsageError(f"--keep must be in (0, 1]; got {args.keep}")
    bits = parse_counts(args.bits, "--bits")
    if max(bits) > 16:
        raise UsageError(f"--bits takes widths from 1 to 16; got {args.bits}")
    if (
        (args.prune_steps or 0) < 0
        or args.share_steps < 0
        or (args.lr is not None and args.lr <= 0)
    ):
        raise UsageError("--prune-steps and --share-steps must be >= 0 and --lr > 0")
    if args.rounds < 1:
        raise UsageError(f"--rounds must be >= 1; got {args.rounds}")
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "deep_compress"
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; choose another --out")
    from dist_sqz.paper.deep_compress import RunData, compress, format_table

    run = RunData(run_dir)  # a missing or foreign run fails here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    try:
        result = compress(
            run,
            run_dir,
            out,
            args.keep,
            args.scope,
            bits,
            args.prune_steps,
            args.share_steps,
            args.lr,
            args.rounds,
        )
    except BaseException:
        for f in out.iterdir():  # no half-written output folder
            f.unlink()
        out.rmdir()
        raise
    table = format_table(result)
    (out / "deep_compress.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "deep_compress.md").write_text(table + "\n")
    print(json.dumps(result, indent=1) if args.format == "json" else table)
    print(f"dist-sqz deep-compress: wrote {out}")
    return 0


def _decode(args: argparse.Namespace) -> int:
    import torch

    from dist_sqz.config import TrainConfig
    from dist_sqz.models import build_model
    from dist_sqz.paper.deep_compress import decode, held_out_accuracy
    from dist_sqz.training.data import datasets_for

    path = Path(args.decode)
    if not path.is_file():
        raise UsageError(f"no file {path}")
    header, state = decode(path)
    model = build_model(header["model"], header["num_classes"])
    model.load_state_dict(state)
    cfg = TrainConfig.build(
        {"model": header["model"], "data": header["data"], "image_size": header["image_size"]}
    )
    _, held = datasets_for(cfg.data, cfg.image_size)
    line = f"dist-sqz deep-compress: {path} ({path.stat().st_size:,} bytes) -> {header['model']}"
    if held is not None:
        acc = held_out_accuracy(model, cfg, held)
        line += f", held-out accuracy {acc:.4f} on {header['data']}"
    if args.save:
        torch.save(state, args.save)
        line += f"; state_dict written to {args.save}"
    print(line)
    return 0
