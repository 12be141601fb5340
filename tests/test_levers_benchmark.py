"""benchmarks/levers.py's arithmetic: measured break-evens from a link sweep, and its report
from levers.json alone (no training)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("levers_bench", ROOT / "benchmarks" / "levers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    return mod


def test_crossing_interpolates_in_log_rate_and_bounds_the_rest(bench):
    # f > 0 below (compression wins), <= 0 above: crossing where f(r) = 0 on log-log
    assert bench.crossing([(1e8, 2.0), (1e9, 1.0), (1e10, -1.0)]) == (pytest.approx(10**9.5), "")
    assert bench.crossing([(1e8, 1.0), (1e10, 0.5)]) == (1e10, ">")  # wins everywhere swept
    assert bench.crossing([(1e8, -0.2), (1e10, -0.5)]) == (1e8, "<")  # never wins
    assert bench.crossing([]) == (None, "")


def test_break_even_and_report_from_sweep_rows(bench, tmp_path):
    def row(arm, link, step):
        return {
            "arm": arm,
            "link": link,
            "step_time_s": step,
            "sent_bytes": 1000,
            "compress_time_s": 0.1 if "+" in arm else 0.0,
        }

    links = ["100mbit", "1gbit", "10gbit"]
    steps = {"alexnet": [30.0, 3.0, 0.5], "alexnet+topk": [1.0, 0.9, 0.9]}
    data = {
        "n": 4,
        "links": links,
        "sweep": [row(a, link, s[i]) for a, s in steps.items() for i, link in enumerate(links)],
        "tta": [],
        "profile": None,
    }
    (m,) = [x for x in bench.measured_break_even(data) if x["arm"] == "alexnet+topk"]
    # f(1g) = 3.0/0.9 - 1.01 > 0, f(10g) = 0.5/0.9 - 1.01 < 0: between 1 and 10 Gbit/s
    assert m["bound"] == "" and 1e9 < m["rate_bps"] < 1e10
    bench.write(data, tmp_path)
    md = (tmp_path / "levers.md").read_text()
    assert "| alexnet+topk | 1000 [100] | 900 [100] | 900 [100] |" in md
    assert json.loads((tmp_path / "levers.json").read_text())["links"] == links
