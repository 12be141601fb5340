"""`dist-sqz deep-compress`: Deep Compression (Han, Mao & Dally, ICLR 2016) of a trained run.

The pipeline, on the run's final weights (`checkpoints/last.pt`):

1. **Prune**: keep the largest `keep` fraction of each conv/linear weight by magnitude.
   Per layer by default (`scope layer`): every layer keeps exactly that fraction, as the
   SqueezeNet paper states it ("33% of weights kept"), and thin layers (SqueezeNet's 1x1
   squeeze convs) cannot be pruned away by a global threshold set by the large ones;
   `scope global` ranks all weights together instead. Biases stay fp32. (On digits with
   the 1000-way head, a global threshold prunes the 990 unused class rows first: it kept
   0.1% of squeezenet1_1's classifier and 48-91% of each feature layer, and lost no
   accuracy; per layer is the paper's setting and the harder one.)
2. **Fine-tune with the mask fixed**: `prune_steps` SGD steps (default: the run's step
   budget) on the run's own data and recipe (augmentation, label smoothing), pruned
   weights and their gradients held at 0.
3. **Share weights** per layer and per bit width B: k-means (2^B centroids, linear
   initialisation between the layer's min and max kept weight, as the paper found best) over
   the kept weights, then `share_steps` steps fine-tuning the centroids: each centroid moves
   by the mean gradient of the weights that share it (the paper sums them; the mean is the
   same direction with a step size that does not grow with the cluster).
4. **Huffman-code** the cluster indices and the gaps between kept positions (`huffman.py`;
   a gap longer than 255 is split with filler symbols 0, each meaning "255 further"), and
   write a real file: a JSON header (model, shapes, code tables), the codebooks and the
   fp32 rest, then the two bitstreams. `decode` reads it back into a state_dict.

Sizes are in MB of 2^20 bytes, as the paper's (AlexNet 240 MB, SqueezeNet 4.8 MB).
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dist_sqz import huffman
from dist_sqz.config import TrainConfig
from dist_sqz.data import datasets_for, held_out_batches, num_classes_of, train_batches
from dist_sqz.errors import UsageError
from dist_sqz.evaluate import evaluate
from dist_sqz.models import build_model, count_params

MAGIC = b"DSQZDC1\n"
MB = 2**20
PAPER_ALEXNET_MB = 240.0  # the paper's Table 2: dense fp32 AlexNet
PAPER_SQUEEZENET = {8: 0.66, 6: 0.47}  # Table 2: squeezenet1_0, 33% kept, B-bit, Huffman
GAP_LIMIT = 255  # longest gap one symbol holds; 0 is the filler "255 further"


def prunable(model: nn.Module) -> list[str]:
    """Names of the conv and linear weights: what is pruned and shared."""
    return [n for n, p in model.named_parameters() if p.dim() > 1]


def magnitude_masks(
    weights: dict[str, torch.Tensor], keep: float, scope: str
) -> dict[str, torch.Tensor]:
    """Boolean masks keeping the `keep` fraction of largest |w|, per layer or globally."""
    if scope == "global":
        everything = torch.cat([w.abs().flatten() for w in weights.values()])
        k = max(1, round(keep * everything.numel()))
        threshold = torch.topk(everything, k).values.min()
        return {n: w.abs() >= threshold for n, w in weights.items()}
    masks = {}
    for n, w in weights.items():
        k = max(1, round(keep * w.numel()))
        flat = torch.zeros(w.numel(), dtype=torch.bool)
        flat[torch.topk(w.abs().flatten(), k).indices] = True
        masks[n] = flat.view_as(w)
    return masks


def kmeans_1d(values: torch.Tensor, k: int, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids, index of each value's centroid): Lloyd's algorithm in one dimension,
    linearly initialised over [min, max]. Empty clusters keep their place."""
    lo, hi = float(values.min()), float(values.max())
    k = max(1, min(k, values.numel()))
    centroids = torch.linspace(lo, hi, k, dtype=torch.float64)
    v = values.double()
    for _ in range(iters):
        order = torch.argsort(centroids)
        centroids = centroids[order]
        idx = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, idx, v)
        counts = torch.bincount(idx, minlength=k)
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.equal(moved, centroids):
            break
        centroids = moved
    idx = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
    return centroids.float(), idx


def held_out_accuracy(model: nn.Module, cfg: TrainConfig, held: Any) -> float:
    """`model`'s accuracy on the held-out split `held` of `cfg`'s data, in one process."""
    batches = held_out_batches(cfg, held, 0, 1, 0)
    return evaluate(model, batches, torch.device("cpu"), lambda x: [x])["accuracy"]


class RunData:
    """A finished run's model, recipe and data: what every stage trains and evaluates on."""

    def __init__(self, run_dir: Path) -> None:
        from dist_sqz import checkpoint

        ckpt = checkpoint.load(run_dir)
        self.cfg = TrainConfig.build(ckpt["config"])
        self.train_set, self.held_set = datasets_for(self.cfg.data, self.cfg.image_size)
        if self.held_set is None:
            raise UsageError(
                f"deep-compress evaluates held-out accuracy; {self.cfg.data} has no held-out split"
            )
        self.num_classes = self.cfg.num_classes or num_classes_of(self.train_set)
        self.model = build_model(self.cfg.model, self.num_classes)
        self.model.load_state_dict(ckpt["model"])
        self.step = int(ckpt["step"])

    def accuracy(self, model: nn.Module) -> float:
        return held_out_accuracy(model, self.cfg, self.held_set)

    def batches(self, steps: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg = TrainConfig.build(
            self.cfg.to_dict(),
            {"steps": steps, "seed": seed, "warmup_steps": 0, "lr_warmup_steps": 0},
        )
        return train_batches(cfg, self.train_set, self.num_classes, 0, 1, 0, 0)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)


def finetune_masked(
    run: RunData,
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    steps: int,
    lr: float,
    log: Callable[[str], None],
    seed: int,
) -> None:
    """`steps` of SGD (the run's momentum and weight decay, lr decaying to 0 on a cosine)
    with pruned weights and their gradients held at 0."""
    if steps == 0:
        return
    params = dict(model.named_parameters())
    opt = torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=run.cfg.momentum,
        nesterov=run.cfg.nesterov,
        weight_decay=run.cfg.weight_decay,
    )
    model.train()
    for step, (x, y) in enumerate(run.batches(steps, seed=seed)):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        loss = run.loss(model(x), y)
        loss.backward()
        for n, m in masks.items():
            params[n].grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for n, m in masks.items():
                params[n].mul_(m)
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log(f"  masked fine-tune {step + 1}/{steps}: loss {loss.item():.4f}")


class Shared:
    """One layer's shared weights: sorted kept positions, their centroid indices, codebook."""

    def __init__(self, shape: torch.Size, positions: torch.Tensor, idx: torch.Tensor, c):
        self.shape, self.positions, self.idx = tuple(shape), positions, idx
        self.centroids = c

    def dense(self, centroids: torch.Tensor | None = None) -> torch.Tensor:
        c = self.centroids if centroids is None else centroids
        flat = torch.zeros(math.prod(self.shape), dtype=c.dtype)
        return flat.index_put((self.positions,), c[self.idx]).view(self.shape)


def share_weights(model: nn.Module, masks: dict[str, torch.Tensor], bits: int) -> dict[str, Shared]:
    out = {}
    state = model.state_dict()
    for n, m in masks.items():
        positions = torch.nonzero(m.flatten()).flatten()
        values = state[n].flatten()[positions]
        centroids, idx = kmeans_1d(values, 2**bits)
        out[n] = Shared(m.shape, positions, idx, centroids)
    return out


def finetune_centroids(
    run: RunData, model: nn.Module, shared: dict[str, Shared], steps: int, lr: float, log
) -> None:
    """`steps` of SGD on the centroids (mean gradient of their weights) and the fp32 rest;
    the model then holds the shared weights."""
    centroids = {n: nn.Parameter(s.centroids.clone()) for n, s in shared.items()}
    sizes = {
        n: torch.bincount(s.idx, minlength=len(s.centroids)).clamp(min=1) for n, s in shared.items()
    }
    rest = {n: p for n, p in model.named_parameters() if n not in shared}
    opt = torch.optim.SGD([*centroids.values(), *rest.values()], lr=lr, momentum=run.cfg.momentum)
    model.train()
    batches = run.batches(steps, seed=run.cfg.seed + 1000) if steps else []
    for step, (x, y) in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        weights = {n: s.dense(centroids[n]) for n, s in shared.items()}
        loss = run.loss(functional_call(model, {**rest, **weights}, (x,)), y)
        loss.backward()
        for n, c in centroids.items():
            c.grad.div_(sizes[n])
        opt.step()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log(f"  centroid fine-tune {step + 1}/{steps}: loss {loss.item():.4f}")
    with torch.no_grad():
        for n, s in shared.items():
            s.centroids = centroids[n].detach().clone()
            model.get_parameter(n).copy_(s.dense())


def gap_symbols(positions: torch.Tensor) -> np.ndarray:
    """Kept positions as gaps from the previous one (the first from -1), each gap > 255
    written as fillers 0 (255 each) then the remainder 1..255."""
    gaps = np.diff(positions.numpy(), prepend=-1)
    fillers = (gaps - 1) // GAP_LIMIT
    out = np.zeros(len(gaps) + int(fillers.sum()), np.int64)
    out[np.cumsum(fillers + 1) - 1] = gaps - fillers * GAP_LIMIT
    return out


def positions_from(symbols: np.ndarray) -> np.ndarray:
    real = symbols > 0
    advance = np.where(real, symbols, GAP_LIMIT)
    return (np.cumsum(advance) - 1)[real]


# -- the file ----------------------------------------------------------------------------
def write_file(
    path: Path, run: RunData, model: nn.Module, shared: dict[str, Shared], bits: int
) -> dict[str, int]:
    """Write the compressed model; return its parts' sizes in bytes."""
    names = list(shared)
    idx = np.concatenate([shared[n].idx.numpy() for n in names])
    layer_gaps = [gap_symbols(shared[n].positions) for n in names]
    gaps = np.concatenate(layer_gaps)
    idx_counts, gap_counts = huffman.counts_of(idx), huffman.counts_of(gaps)
    idx_len, gap_len = huffman.code_lengths(idx_counts), huffman.code_lengths(gap_counts)
    idx_stream = huffman.encode(idx, idx_len)
    gap_stream = huffman.encode(gaps, gap_len)
    rest = {n: p.detach() for n, p in model.state_dict().items() if n not in shared}
    codebooks = np.concatenate([shared[n].centroids.numpy() for n in names]).astype("<f4")
    fp32 = np.concatenate([t.flatten().numpy() for t in rest.values()]).astype("<f4")
    header = {
        "model": run.cfg.model,
        "num_classes": run.num_classes,
        "data": run.cfg.data,
        "image_size": run.cfg.image_size,
        "bits": bits,
        "shared": [  # name, shape, centroids, kept weights, gap symbols
            [n, list(shared[n].shape), len(shared[n].centroids), len(shared[n].idx), len(g)]
            for n, g in zip(names, layer_gaps, strict=True)
        ],
        "rest": [[n, list(t.shape)] for n, t in rest.items()],
        "index_code": sorted(idx_len.items()),
        "gap_code": sorted(gap_len.items()),
        "streams": [len(idx_stream), len(gap_stream)],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(head)) + head)
        f.write(codebooks.tobytes() + fp32.tobytes() + idx_stream + gap_stream)
    return {
        "header": len(MAGIC) + 4 + len(head),
        "codebooks": codebooks.nbytes,
        "fp32_rest": fp32.nbytes,
        "index_stream": len(idx_stream),
        "gap_stream": len(gap_stream),
        "index_bits": huffman.total_bits(idx_counts, idx_len),
        "gap_bits": huffman.total_bits(gap_counts, gap_len),
        "file": path.stat().st_size,
    }


def decode(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(header, state_dict) of a file `write_file` wrote."""
    blob = Path(path).read_bytes()
    if not blob.startswith(MAGIC):
        raise UsageError(f"{path} is not a dist-sqz deep-compress file")
    (n,) = struct.unpack("<I", blob[len(MAGIC) : len(MAGIC) + 4])
    at = len(MAGIC) + 4
    header = json.loads(blob[at : at + n])
    at += n
    n_codebook = sum(k for _, _, k, _, _ in header["shared"])
    n_fp32 = sum(math.prod(s) for _, s in header["rest"])
    codebooks = np.frombuffer(blob, "<f4", n_codebook, at)
    at += 4 * n_codebook
    fp32 = np.frombuffer(blob, "<f4", n_fp32, at)
    at += 4 * n_fp32
    idx_bytes, gap_bytes = header["streams"]
    n_idx = sum(c for *_, c, _ in header["shared"])
    n_gap = sum(g for *_, g in header["shared"])
    idx = huffman.decode(blob[at : at + idx_bytes], dict(header["index_code"]), n_idx)
    gaps = huffman.decode(
        blob[at + idx_bytes : at + idx_bytes + gap_bytes], dict(header["gap_code"]), n_gap
    )
    state: dict[str, torch.Tensor] = {}
    c_at = i_at = g_at = 0
    for name, shape, k, count, n_sym in header["shared"]:
        book = torch.from_numpy(codebooks[c_at : c_at + k].copy())
        positions = torch.from_numpy(positions_from(gaps[g_at : g_at + n_sym]))
        layer_idx = torch.from_numpy(idx[i_at : i_at + count])
        state[name] = Shared(torch.Size(shape), positions, layer_idx, book).dense()
        c_at, i_at, g_at = c_at + k, i_at + count, g_at + n_sym
    f_at = 0
    for name, shape in header["rest"]:
        size = math.prod(shape)
        state[name] = torch.from_numpy(fp32[f_at : f_at + size].copy()).view(shape)
        f_at += size
    return header, state


# -- the pipeline ------------------------------------------------------------------------
def sparse_bytes(masks: dict[str, torch.Tensor], value_bits: float, rest_params: int) -> int:
    """Size of a pruned model stored as kept values of `value_bits` plus fixed-width gaps
    (per layer, as wide as its longest gap needs) plus the fp32 rest: the stages before
    Huffman coding, counted the same way for each."""
    total_bits = 32 * rest_params
    for m in masks.values():
        positions = torch.nonzero(m.flatten()).flatten()
        gaps = torch.diff(positions, prepend=torch.tensor([-1]))
        width = max(1, int(gaps.max()).bit_length())
        total_bits += positions.numel() * (value_bits + width)
    return math.ceil(total_bits / 8)


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
