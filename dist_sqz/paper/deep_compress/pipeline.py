"""The whole pipeline on a run (prune, fine-tune, share at each bit width, code, decode and
check), and its table."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dist_sqz.models import build_model, count_params
from dist_sqz.paper.deep_compress.codec import decode, sparse_bytes, write_file
from dist_sqz.paper.deep_compress.prune import finetune_masked, magnitude_masks, prunable
from dist_sqz.paper.deep_compress.rundata import RunData
from dist_sqz.paper.deep_compress.share import finetune_centroids, share_weights

MB = 2**20
PAPER_ALEXNET_MB = 240.0  # the paper's Table 2: dense fp32 AlexNet
PAPER_SQUEEZENET = {8: 0.66, 6: 0.47}  # Table 2: squeezenet1_0, 33% kept, B-bit, Huffman


def compress(
    run: RunData,
    run_dir: Path,
    out: Path,
    keep: float,
    scope: str,
    bits_list: list[int],
    prune_steps: int | None,
    share_steps: int,
    lr: float | None,
    rounds: int = 3,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
) -> dict[str, Any]:
    model = run.model
    lr = lr if lr is not None else run.cfg.lr
    # Retraining for the run's step budget: with 300 steps in all (a fifth of its 1500),
    # squeezenet1_1 pruned per layer to 33% lost 2.7 points; with 1500, none (8 and 6 bits).
    prune_steps = run.cfg.steps if prune_steps is None else prune_steps
    params = count_params(model)
    names = prunable(model)
    rest_params = params - sum(model.get_parameter(n).numel() for n in names)
    t0 = time.perf_counter()
    dense_acc = run.accuracy(model)
    log(
        f"deep-compress: {run.cfg.model} from {run_dir} (step {run.step}), dense held-out "
        f"accuracy {dense_acc:.4f}"
    )
    # Iterative pruning (the paper's prune-retrain loop): the kept fraction falls
    # geometrically to `keep` over `rounds`, each round fine-tuned with its mask fixed.
    for r in range(1, rounds + 1):
        fraction = keep ** (r / rounds)
        weights = {n: model.get_parameter(n).detach() for n in names}
        masks = magnitude_masks(weights, fraction, scope)
        with torch.no_grad():
            for n, m in masks.items():
                model.get_parameter(n).mul_(m)
        steps = prune_steps // rounds + (prune_steps % rounds if r == rounds else 0)
        log(
            f"round {r}/{rounds}: {fraction:.3f} of conv/linear weights kept ({scope}); "
            f"fine-tuning {steps} steps from lr {lr:g}"
        )
        finetune_masked(run, model, masks, steps, lr, log, seed=run.cfg.seed + r)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    pruned_acc = run.accuracy(model)
    log(f"pruned held-out accuracy {pruned_acc:.4f}")
    pruned_state = {k: v.clone() for k, v in model.state_dict().items()}
    stages = [
        {"stage": "dense fp32", "bytes": 4 * params, "accuracy": dense_acc},
        {
            "stage": f"pruned ({keep:g} kept, {scope}), fp32 values",
            "bytes": sparse_bytes(masks, 32, rest_params),
            "accuracy": pruned_acc,
        },
    ]
    files = {}
    for bits in bits_list:
        model.load_state_dict(pruned_state)
        shared = share_weights(model, masks, bits)
        finetune_centroids(run, model, shared, share_steps, lr, log)
        shared_acc = run.accuracy(model)
        codebook_bytes = 4 * sum(len(s.centroids) for s in shared.values())
        path = out / f"{run.cfg.model}-{bits}bit.dsqz"
        parts = write_file(path, run, model, shared, bits)
        header, state = decode(path)
        same = all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        decoded = build_model(header["model"], header["num_classes"])
        decoded.load_state_dict(state)
        decoded_acc = run.accuracy(decoded)
        log(
            f"{bits}-bit: shared accuracy {shared_acc:.4f}, file {parts['file'] / MB:.3f} MB, "
            f"decoded accuracy {decoded_acc:.4f} (bit-identical weights: {same})"
        )
        stages.append(
            {
                "stage": f"+ weight sharing, {bits}-bit indices",
                "bytes": sparse_bytes(masks, bits, rest_params) + codebook_bytes,
                "accuracy": shared_acc,
            }
        )
        stages.append(
            {
                "stage": f"+ Huffman ({bits}-bit), the file",
                "bytes": parts["file"],
                "accuracy": decoded_acc,
                "file": str(path),
                "parts": parts,
                "decoded_equal": same,
                "paper_mb": PAPER_SQUEEZENET.get(bits)
                if run.cfg.model == "squeezenet1_0" and run.num_classes == 1000
                else None,
            }
        )
        files[bits] = str(path)
    for s in stages:
        s["mb"] = s["bytes"] / MB
        s["vs_dense"] = 4 * params / s["bytes"]
        s["vs_alexnet_240mb"] = PAPER_ALEXNET_MB * MB / s["bytes"]
    return {
        "run": str(run_dir),
        "model": run.cfg.model,
        "num_classes": run.num_classes,
        "params": params,
        "keep": keep,
        "scope": scope,
        "bits": bits_list,
        "prune_steps": prune_steps,
        "rounds": rounds,
        "share_steps": share_steps,
        "lr": lr,
        "kept_fraction": kept / total,
        "stages": stages,
        "files": files,
        "wall_s": time.perf_counter() - t0,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"Deep Compression of {result['model']} ({result['params']:,} params, "
        f"{result['num_classes']}-way classifier), {result['keep']:g} of conv/linear weights "
        f"kept ({result['scope']}, {result['rounds']} prune rounds), fine-tuned "
        f"{result['prune_steps']} + {result['share_steps']} steps from lr {result['lr']:g}; "
        "MB = 2^20 bytes",
        "",
        "| stage | MB | x smaller than dense | x smaller than AlexNet (240 MB) | held-out accuracy "
        "| paper |",
        "|---|---|---|---|---|---|",
    ]
    for s in result["stages"]:
        paper = f"{s['paper_mb']} MB" if s.get("paper_mb") else ""
        lines.append(
            f"| {s['stage']} | {s['mb']:.3f} | {s['vs_dense']:.1f} | "
            f"{s['vs_alexnet_240mb']:.1f} | {s['accuracy']:.4f} | {paper} |"
        )
    if result["model"] != "squeezenet1_0" or result["num_classes"] != 1000:
        lines.append(
            "\nThe paper's Table 2 (squeezenet1_0, 1000 classes, 33% kept): 0.66 MB at 8 bits, "
            "0.47 MB at 6 bits; run this on a squeezenet1_0 digits run (configs/"
            "digits_squeezenet1_0.yaml keeps the 1000-way classifier) to set these beside it."
        )
    return "\n".join(lines)
