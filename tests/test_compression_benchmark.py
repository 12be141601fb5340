"""benchmarks/compression.py's arithmetic: thresholds, steps to them, curves (no training)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "compression_bench", ROOT / "benchmarks" / "compression.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    return mod


def run(variant: str, seed: int, curve: list[tuple[int, float]], ratio: float) -> dict:
    return {
        "model": "squeezenet1_1",
        "variant": variant,
        "seed": seed,
        "wall_s": 1.0,
        "compression_ratio": ratio,
        "payload_bytes": 1,
        "accuracy": curve[-1][1],
        "replicas_consistent": True,
        "curve": curve,
    }


def test_threshold_and_steps_to_it(bench):
    rows = [
        run("none", 0, [(100, 0.5), (200, 0.90), (300, 0.94)], 1.0),
        run("none", 1, [(100, 0.6), (200, 0.95), (300, 0.96)], 1.0),
        run("none", 2, [(100, 0.4), (200, 0.80), (300, 0.90)], 1.0),
        run("topk", 0, [(100, 0.2), (200, 0.50), (300, 0.93)], 500.0),
        run("topk", 1, [(100, 0.2), (200, 0.40), (300, 0.60)], 500.0),
        {"model": "squeezenet1_1", "variant": "topk", "seed": 2, "wall_s": 1.0, "error": "x"},
    ]
    none, topk = bench.summarize(rows)
    # median final accuracy of the uncompressed runs (0.94) minus 1 point
    assert none["threshold"] == pytest.approx(0.93)
    assert none["reached"] == 2 and none["steps_to_accuracy_median"] == 250
    assert topk["reached"] == 1 and topk["steps_to_accuracy_median"] == 300
    assert topk["runs"] == 3 and topk["failed"] == ["x"]
    assert topk["accuracy_vs_none"] == pytest.approx((0.93 + 0.60) / 2 - 0.94)
    assert topk["compression_ratio"] == 500.0


def test_report_rewrites_tables_and_curves_from_json(bench, tmp_path, monkeypatch):
    curve = [(s, s / 1000) for s in range(100, 1100, 100)]
    rows = [run("none", s, curve, 1.0) for s in range(3)]
    rows += [run("dgc", s, [(st, a / 2) for st, a in curve], 499.8) for s in range(3)]
    bench.write(rows, 0.001)
    (tmp_path / "compression.md").unlink()
    monkeypatch.setattr("sys.argv", ["compression.py", "--report"])
    bench.main()
    md = (tmp_path / "compression.md").read_text()
    # five evaluations spread over the budget, median over seeds at each
    assert "| squeezenet1_1 | step 200 | step 400 | step 600 | step 800 | step 1000 |" in md
    assert "| none | 0.200 | 0.400 | 0.600 | 0.800 | 1.000 |" in md
    assert "| dgc | 0.100 | 0.200 | 0.300 | 0.400 | 0.500 |" in md
    assert json.loads((tmp_path / "compression.json").read_text())["density"] == 0.001
    assert (tmp_path / "compression_curves.png").stat().st_size > 0
