"""Stage 4: the compressed file: Huffman-coded cluster indices and position gaps, a JSON
header, codebooks and the fp32 rest; `decode` reads it back into a state_dict."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dist_sqz.errors import UsageError
from dist_sqz.paper.deep_compress import huffman
from dist_sqz.paper.deep_compress.rundata import RunData
from dist_sqz.paper.deep_compress.share import Shared

MAGIC = b"DSQZDC1\n"
GAP_LIMIT = 255  # longest gap one symbol holds; 0 is the filler "255 further"


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
