"""benchmarks/emulated_network.py: the emulated rows predicted on a measured network."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dist_sqz.costmodel.spec import TCP_FRAMING
from dist_sqz.units import parse_rate

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "emulated_network", ROOT / "benchmarks" / "emulated_network.py"
)
emu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(emu)


def bench(link: str, n: int, scale: float, dilation: float) -> dict:
    """A cluster bench record of what the nominal spec (TCP framing, 5 us a hop) predicts
    for the link as shaped, its bandwidth x `scale`: every power of two from 1 KB."""
    busbw = parse_rate(link) / 8 * TCP_FRAMING * scale
    hop = 5e-6 * dilation  # emulated seconds are real ones / D
    points = []
    for size in (2**k for k in range(10, 29)):
        t = 2 * (n - 1) * hop + 2 * (n - 1) / n * size / busbw
        points.append(
            {"world_size": n, "bytes": size, "time_s": t, "time_median_s": t, "busbw_Bps": 0}
        )
    return {"link": link, "points": points}


def networks(scale: float) -> dict:
    return {
        emu.key(emu.shaped(r), r["world_size"]): bench(
            emu.shaped(r), r["world_size"], scale, r["dilation"]
        )
        for r in emu.runs()
    }


def test_the_committed_rows_are_all_there():
    rows = emu.runs()
    assert {r["source"] for r in rows} == {
        "compare (default run)",
        "compare (time_to_accuracy)",
        "compare (D = 12)",
        "validate_simulator",
    }
    assert all(r["world_size"] >= 2 and r["dilation"] >= 1 for r in rows)
    # The link as shaped is the emulated link slowed by the run's dilation.
    r = next(r for r in rows if r["source"] == "validate_simulator" and r["world_size"] == 8)
    assert parse_rate(emu.shaped(r)) == pytest.approx(parse_rate(r["link"]) / r["dilation"], 1e-9)


def test_a_network_measured_at_the_nominal_rate_predicts_what_the_nominal_link_does():
    same = emu.emulated_rows(networks(1.0))
    for e in same:
        # The curve carries the latency; between its sizes it is interpolated.
        assert e["measured_error"] == pytest.approx(e["error"], abs=1e-3)
        # The emulator's lateness as compute never makes a prediction faster.
        assert e["late_as_compute_error"] <= e["measured_error"] + 1e-12
        if e["late_share"] == 0:
            assert e["late_as_compute_error"] == pytest.approx(e["measured_error"])
    # A network half as fast: every prediction slower, so every error lower (throughput
    # predicted / measured falls; for validate's rows measured / predicted step falls).
    slow = emu.emulated_rows(networks(0.5))
    assert all(s["measured_error"] < e["measured_error"] for s, e in zip(slow, same, strict=True))


def test_rows_without_a_measured_network_say_so():
    rows = emu.emulated_rows({})
    assert rows and all(e["measured_error"] is None for e in rows)
