"""Stragglers, overlap and traces (`observe/timeline.py`): the interval arithmetic on known
spans, and a 2-worker traced run whose trace holds every rank's phases and collectives on one
clock."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from dist_sqz.observe.step_view import collective_stats
from dist_sqz.observe.timeline import StepTimeline, merge_trace, overlap_frac, parse_steps, union
from tests.helpers import TINY, dist_sqz, read_run, train_torchrun


@dataclass
class Rec:
    collective: str
    payload_bytes: int
    start_s: float
    end_s: float | None


def test_union_and_overlap_on_known_spans():
    assert union([(3, 4), (0, 1), (0.5, 2)]) == [(0, 2), (3, 4)]
    # busy 0-2 and 3-4 (3 s); compute window 1-3.5: 1 s + 0.5 s inside
    assert overlap_frac([(0, 1), (0.5, 2), (3, 4)], 1, 3.5) == pytest.approx(0.5)
    assert overlap_frac([], 0, 1) is None
    assert overlap_frac([(5, 6)], 0, 1) == 0.0


def test_trace_steps_parse_and_refuse():
    assert parse_steps("5-8") == (5, 8) and parse_steps("3") == (3, 3) and parse_steps("") is None
    assert parse_steps("2-") == (2, 2)
    for bad in ("0-2", "4-3", "a-b"):
        with pytest.raises(ValueError, match="trace_steps"):
            parse_steps(bad)


def test_straggler_figures_ride_the_agreements_max():
    tl = StepTimeline(rank=0, world_size=2, dilation=2.0, steps=None)
    tl.start(10.0)
    records = [Rec("allreduce", 100, 10.5, 11.5), Rec("allreduce", 50, 11.0, 12.0)]
    extra = tl.measure(step_s=2.4, start_s=10.2, records=records)
    assert extra == [2_400_000, 500_000, -500_000]  # step, arrival, -arrival (us)
    # the other rank: step 3.0 s, first collective 0.9 s after the agreement
    other = [3_000_000, 900_000, -900_000]
    agreed = [max(a, b) for a, b in zip(extra, other, strict=True)]
    f = tl.fields(agreed)
    assert f["step_time_max_s"] == pytest.approx(1.5)  # 3.0 s / D
    assert f["straggler_wait_s"] == pytest.approx(0.2)  # (0.9 - 0.5) / D
    # busy 10.5-12.0; compute window 10.2 to the last issue (11.0): 0.5 of 1.5 s
    assert f["comm_overlap_frac"] == pytest.approx(1 / 3)
    one = StepTimeline(0, 1, 1.0, None)
    one.start(0.0)
    one.measure(1.0, 0.0, [])
    assert one.fields(None) == {
        "step_time_max_s": 1.0,
        "straggler_wait_s": 0.0,
        "comm_overlap_frac": None,
    }


def test_merged_trace_names_every_rank_and_track():
    tl = StepTimeline(1, 2, 1.0, (1, 1))
    tl.synced_at(5.0, 1)
    marks = {"start": 5.1, "forward_end": 5.2, "backward_end": 5.5, "end": 5.6}
    tl.trace_step(1, marks, [Rec("allreduce", 8, 5.3, 5.4)], [(5.25, 5.3)], [], [8], "gloo", "x")
    trace = merge_trace([[], tl.events], {"k": "v"})
    json.loads(json.dumps(trace))
    names = {(e["pid"], e["args"]["name"]) for e in trace["traceEvents"] if e["ph"] == "M"}
    assert (0, "rank 0") in names and (1, "collectives") in names
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["name"] for e in spans} == {
        "forward 1",
        "backward 1",
        "optimizer 1",
        "x encode/decode",
        "allreduce 8 B",
    }
    fwd = next(e for e in spans if e["name"] == "forward 1")
    assert fwd["ts"] == pytest.approx(0.1e6) and fwd["dur"] == pytest.approx(0.1e6)


def test_collective_stats_use_nccl_tests_definitions():
    lines = [
        {"step": 1, "warmup": True, "world_size": 4, "c": [["allreduce", 1000, 9.0]]},
        *(
            {
                "step": k,
                "warmup": False,
                "world_size": 4,
                "c": [["allreduce", 1000, 0.001 * k], ["allgather", 3000, 0.002]],
            }
            for k in range(2, 22)
        ),
    ]
    rows = {r["collective"]: r for r in collective_stats(lines)}
    ar, ag = rows["allreduce"], rows["allgather"]
    assert ar["count"] == 20 and ar["size_class_bytes"] == 1024  # the warm-up step left out
    assert ar["time_median_s"] == pytest.approx(0.0115) and ar["time_p95_s"] == pytest.approx(0.020)
    assert ar["algbw_Bps"] == pytest.approx(1000 / 0.0115)
    assert ar["busbw_Bps"] == pytest.approx(ar["algbw_Bps"] * 1.5)  # 2(N-1)/N at N = 4
    assert ag["algbw_Bps"] == pytest.approx(4 * 3000 / 0.002)  # S: the gathered buffer
    assert ag["busbw_Bps"] == pytest.approx(ag["algbw_Bps"] * 0.75)  # (N-1)/N


def perfetto_drops(trace: dict) -> int:
    """How many complete events Perfetto's importer would drop: on one track (pid, tid) a
    slice must end before the next begins or hold it whole (its
    `slice_drop_overlapping_complete_event` rule); this counts the others."""
    tracks: dict[tuple[int, int], list[dict]] = {}
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            tracks.setdefault((e["pid"], e["tid"]), []).append(e)
    dropped = 0
    for evs in tracks.values():
        open_ends: list[float] = []
        for e in sorted(evs, key=lambda e: (e["ts"], -e["dur"])):
            end = e["ts"] + e["dur"]
            while open_ends and open_ends[-1] <= e["ts"]:
                open_ends.pop()
            if open_ends and end > open_ends[-1]:
                dropped += 1
                continue
            open_ends.append(end)
    return dropped


def test_concurrent_collectives_get_tracks_of_their_own():
    tl = StepTimeline(0, 1, 1.0, (1, 1))
    tl.start(5.0)
    marks = {"start": 5.0, "forward_end": 5.1, "backward_end": 5.5, "end": 5.6}
    recs = [
        Rec("allreduce", 8, 5.2, 5.45),
        Rec("allreduce", 8, 5.3, 5.5),
        Rec("allreduce", 8, 5.5, 5.55),
    ]
    tl.trace_step(1, marks, recs, [], [], [8, 8, 8], "gloo", "none")
    overlapping = {"traceEvents": tl.events}
    assert perfetto_drops(overlapping) == 1  # what Perfetto lost before
    trace = merge_trace([tl.events], {})
    assert perfetto_drops(trace) == 0
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == len(tl.events)  # every event kept
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert {"collectives", "collectives 2"} <= names


def check_trace(out: Path, steps: range, world_size: int = 2) -> dict:
    """trace.json loads; every rank has forward, backward and optimizer of every traced step
    and its collectives, whose bytes sum to that step's payload in metrics.jsonl; an
    all-reduce completes on no rank before every rank issued it (one clock, to within the
    agreement's latency)."""
    trace = json.loads((out / "trace.json").read_text())
    metrics, _ = read_run(out)
    payload = {m["step"]: m["payload_bytes"] for m in metrics}
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert perfetto_drops(trace) == 0  # Perfetto loads every event
    for e in events:
        assert {"name", "ts", "dur", "pid", "tid", "args"} <= set(e) and e["dur"] >= 0
    assert {e["pid"] for e in events} == set(range(world_size))
    for step in steps:
        for rank in range(world_size):
            mine = [e for e in events if e["pid"] == rank and e["args"]["step"] == step]
            phases = {e["name"] for e in mine if e["cat"] == "compute"}
            assert phases == {f"forward {step}", f"backward {step}", f"optimizer {step}"}
            coll = [e for e in mine if e["cat"] == "collectives"]
            assert sum(e["args"]["payload_bytes"] for e in coll) == payload[step]
        by_index: dict[int, list[dict]] = {}
        for e in events:
            if e["cat"] == "collectives" and e["args"]["step"] == step:
                by_index.setdefault(e["args"]["index"], []).append(e)
        for same in by_index.values():
            assert len(same) == world_size
            last_issue = max(e["ts"] for e in same)
            first_done = min(e["ts"] + e["dur"] for e in same)
            assert last_issue <= first_done + 50e3  # us: the clocks' alignment
    return trace


@pytest.mark.integration
def test_two_worker_trace_with_encoding_and_padding(tmp_path):
    """Emulated compute (h100 profile, D=100) pads each phase; topk encodes each bucket."""
    out = tmp_path / "run"
    train_torchrun(
        2,
        out,
        *TINY,
        "--steps",
        "5",
        "--trace-steps",
        "3-4",
        "--compression",
        "topk",
        "--compute-profile",
        "h100",
        "--dilation",
        "100",
    )
    trace = check_trace(out, range(3, 5))
    cats = {e.get("cat") for e in trace["traceEvents"]}
    assert {"padding", "encode"} <= cats
    assert trace["otherData"]["world_size"] == 2 and trace["otherData"]["dilation"] == 100
    metrics, summary = read_run(out)
    for m in metrics:
        assert m["step_time_max_s"] >= m["step_time_s"] - 1e-5
        assert m["straggler_wait_s"] >= 0 and 0 <= m["comm_overlap_frac"] <= 1
    for key in ("step_time_max_s", "straggler_wait_s", "comm_overlap_frac"):
        assert summary[key] is not None and summary[f"{key}_p95"] >= summary[key] - 1e-9
    # nccl-tests' columns from collectives.jsonl, and the report's traced step
    proc = dist_sqz("report", str(out), "--collectives", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (rows,) = json.loads(proc.stdout).values()
    assert sum(r["count"] for r in rows) == 2 * 4  # a bucket a step, 4 measured steps
    assert {"time_median_s", "time_p95_s", "algbw_Bps", "busbw_Bps"} <= set(rows[0])
    proc = dist_sqz("report", str(out), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    assert "## Inside the step" in (tmp_path / "rep" / "report.md").read_text()
    assert (tmp_path / "rep" / "gantt-run.png").stat().st_size > 0


@pytest.mark.integration
def test_torch_profile_of_chosen_steps(tmp_path):
    """--torch-profile-steps 2-3: torch.profiler's Chrome trace with one range per step, and
    the table of operators with the host's reads of device scalars counted per step."""
    out = tmp_path / "run"
    proc = dist_sqz(
        "train", *TINY, "--steps", "4", "--torch-profile-steps", "2-3", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trace = json.loads((out / "torch_trace-rank0.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"step 2", "step 3"} <= names and "step 1" not in names and "step 4" not in names
    assert any(str(n).startswith("aten::convolution") for n in names)
    table = (out / "torch_profile-rank0.txt").read_text()
    assert "steps 2-3 (2)" in table
    reads = re.search(r"aten::_local_scalar_dense: ([\d.]+)", table)
    assert reads and float(reads.group(1)) >= 1  # the loss is read every step, at least
    assert len(read_run(out)[0]) == 4
