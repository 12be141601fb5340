"""Deep Compression: pruning keeps what it says, Huffman streams are exactly their code
lengths, and a compressed file decodes to the shared-weight model bit for bit."""

import json

import numpy as np
import pytest
import torch

from dist_sqz.paper.deep_compress import (
    gap_symbols,
    huffman,
    kmeans_1d,
    magnitude_masks,
    positions_from,
)
from tests.helpers import dist_sqz, refused_here


def test_pruning_keeps_the_requested_fraction():
    g = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(64, 32, 3, 3, generator=g), "b": torch.randn(10, 7, generator=g)}
    masks = magnitude_masks(weights, 0.33, "layer")
    for n, w in weights.items():
        assert int(masks[n].sum()) == round(0.33 * w.numel())
        kept, dropped = w.abs()[masks[n]], w.abs()[~masks[n]]
        assert kept.min() >= dropped.max()  # the largest magnitudes are the ones kept
    glob = magnitude_masks(
        {k: v * (10 if k == "b" else 1) for k, v in weights.items()}, 0.33, "global"
    )
    total = sum(w.numel() for w in weights.values())
    assert sum(int(m.sum()) for m in glob.values()) == round(0.33 * total)
    assert glob["b"].float().mean() > 0.8  # one threshold: the x10 layer keeps most of it


@pytest.mark.parametrize("dist", ["geometric", "uniform", "single", "long tail"])
def test_huffman_stream_is_the_sum_of_code_lengths_and_decodes(dist):
    rng = np.random.default_rng(1)
    symbols = {
        "geometric": rng.geometric(0.3, 200_000),
        "uniform": rng.integers(0, 256, 50_000),
        "single": np.full(100, 7),
        # Fibonacci-like counts force codes past 16 bits before the length limit.
        "long tail": np.repeat(np.arange(30), [int(1.6**i) + 1 for i in range(30)][::-1]),
    }[dist]
    counts = huffman.counts_of(symbols)
    lengths = huffman.code_lengths(counts)
    assert max(lengths.values()) <= huffman.MAX_BITS
    assert sum(2.0**-n for n in lengths.values()) <= 1.0  # a prefix code (Kraft)
    data = huffman.encode(symbols, lengths)
    bits = huffman.total_bits(counts, lengths)
    assert len(data) == (bits + 7) // 8
    assert np.array_equal(huffman.decode(data, lengths, len(symbols)), symbols)


def test_gap_symbols_round_trip_past_the_filler_limit():
    positions = torch.tensor([0, 1, 5, 260, 261, 1000, 5000])
    symbols = gap_symbols(positions)
    # gaps 1, 1, 4, 255 (one symbol), 1, 739 (2 fillers + 229), 4000 (15 fillers + 175)
    assert symbols.max() == 255 and (symbols == 0).sum() == 2 + 15
    assert np.array_equal(positions_from(symbols), positions.numpy())


def test_kmeans_centroids_are_cluster_means():
    values = torch.cat([torch.full((50,), -1.0), torch.full((30,), 0.5), torch.full((20,), 2.0)])
    centroids, idx = kmeans_1d(values, 4)
    assert len(centroids) == 4 and idx.max() < 4
    assert torch.equal(centroids[idx], values)  # three distinct values, each its own centroid


@pytest.mark.integration
def test_deep_compress_round_trip_on_a_trained_run(tmp_path):
    run = tmp_path / "run"
    args = ["--data", "digits", "--image-size", "64", "--batch-size", "16", "--num-classes", "10"]
    proc = dist_sqz("train", *args, "--steps", "6", "--warmup-steps", "1", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "dc"
    proc = dist_sqz(
        "deep-compress",
        str(run),
        "--bits",
        "4",
        "--share-steps",
        "2",
        "--out",
        str(out),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "deep_compress.json").read_text())
    assert abs(result["kept_fraction"] - 0.33) < 0.001
    assert result["prune_steps"] == 6  # by default the run's own step budget
    huff = result["stages"][-1]
    assert huff["decoded_equal"] is True  # decoded weights == the shared-weight model's
    parts = huff["parts"]
    assert parts["index_stream"] == (parts["index_bits"] + 7) // 8
    assert parts["file"] == (out / "squeezenet1_1-4bit.dsqz").stat().st_size

    state_file = tmp_path / "decoded.pt"
    proc = dist_sqz("deep-compress", "--decode", huff["file"], "--save", str(state_file))
    assert proc.returncode == 0, proc.stderr
    assert f"held-out accuracy {huff['accuracy']:.4f}" in proc.stdout
    state = torch.load(state_file, weights_only=True)
    w = state["features.3.expand3x3.weight"]
    assert len(torch.unique(w[w != 0])) <= 16  # 4-bit sharing: at most 16 values
    assert abs((w != 0).float().mean().item() - 0.33) < 0.01


@pytest.mark.parametrize(
    "args,words",
    [
        (["/no/such/run"], "no checkpoint"),
        (["RUN", "--keep", "0"], "--keep must be in (0, 1]"),
        (["RUN", "--bits", "20"], "--bits takes widths from 1 to 16"),
        (["RUN", "--prune-steps", "-1"], "--prune-steps and --share-steps must be >= 0"),
        (["--decode", "/no/such.dsqz"], "no file"),
        ([], "needs RUN_DIR"),
    ],
)
def test_deep_compress_bad_input(tmp_path, cli, args, words):
    args = [str(tmp_path) if a == "RUN" else a for a in args]
    refused_here(cli, "deep-compress", *args, words=(words,))
