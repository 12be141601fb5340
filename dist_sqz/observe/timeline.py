"""What happens inside a step, across ranks: stragglers, overlap, and timeline traces.

Per step, every rank knows its own times (perf_counter): when it left the previous step's
agreement (the per-step control all-reduce that every rank passes together), its phases, and
each collective's issue and completion (the ledger). From them (docs/design.md):

- `comm_overlap_frac`: the share of the step's comm busy time (the union of its collectives'
  issue-to-completion intervals) that lies inside its compute window, from the step's start
  to the issue of its last collective (the last gradients handed over: backward is done).
  Rank 0's own.
- `step_time_max_s`: the slowest rank's step time.
- `straggler_wait_s`: how long the first rank to reach the step's first collective waits for
  the last: over ranks, max - min of (first issue - leaving the previous agreement). Ranks
  leave an agreement together (to within its latency), so it is the one clock they share.

The ranks' figures travel in the agreement itself (three more integers, microseconds, in
the element-wise max it already takes: -x for a minimum): no collective is added.

`--trace-steps A-B` keeps, on every rank, the traced steps' phases, collectives, the
compressor's encoding and emulated padding, on the rank's clock from the agreement before
step A; after step B rank 0 gathers them (one object gather, outside any timed step) and
writes `trace.json` in the Chrome trace format (Perfetto, chrome://tracing): one process per
rank, a track per kind. Times are emulated seconds (wall / D), like the metrics.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

US = 1e6
TRACKS = {"compute": 1, "padding": 2, "encode": 3, "collectives": 4}


def union(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, disjoint intervals covering the same time."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def overlap_frac(spans: Sequence[tuple[float, float]], lo: float, hi: float) -> float | None:
    """Share of the union of `spans` inside [lo, hi]; None without any time in `spans`."""
    busy = union(spans)
    total = sum(b - a for a, b in busy)
    if total <= 0:
        return None
    inside = sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in busy)
    return inside / total


def parse_steps(text: str, name: str = "trace_steps") -> tuple[int, int] | None:
    """'5-8' -> (5, 8); '3' -> (3, 3); '' -> None. Steps count from 1, as metrics.jsonl."""
    if not text:
        return None
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise ValueError(f"{name} takes A-B like 5-8 (steps from 1); got {text!r}") from None
    if a < 1 or b < a:
        raise ValueError(f"{name} takes A-B with 1 <= A <= B; got {text!r}")
    return a, b


class StepTimeline:
    """One rank's view of each step: the local figures, the agreement's payload, the record's
    fields, and the trace of the traced steps."""

    def __init__(self, rank: int, world_size: int, dilation: float, steps: tuple[int, int] | None):
        self.rank, self.world_size, self.d = rank, world_size, dilation
        self.steps = steps
        self.synced = 0.0  # when this rank left the last agreement (or started the loop)
        self.origin: float | None = None  # the trace's zero: the agreement before step A
        self.events: list[dict[str, Any]] = []
        self._local: dict[str, float | None] = {}

    def start(self, now: float) -> None:
        """The loop starts (ranks leave DDP's first broadcast together): the first sync
        point, and the trace's zero until the agreement before its first step."""
        self.synced = self.origin = now

    def traced(self, step: int) -> bool:
        """Whether step (1-based) is traced."""
        return self.steps is not None and self.steps[0] <= step <= self.steps[1]

    # -- per step ------------------------------------------------------------------------
    def measure(self, step_s: float, start_s: float, records: Sequence[Any]) -> list[int]:
        """This rank's figures for the step just run; the integers it adds to the agreement."""
        spans = [(r.start_s, r.end_s) for r in records if r.end_s is not None]
        issues = [r.start_s for r in records]
        arrival = (min(issues) - self.synced) if issues else 0.0
        self._local = {
            "overlap": overlap_frac(spans, start_s, max(issues)) if issues else None,
            "step_s": step_s,
            "arrival_s": arrival,
        }
        return [round(step_s * US), round(arrival * US), -round(arrival * US)]

    def fields(self, agreed: Sequence[int] | None) -> dict[str, Any]:
        """The record's straggler and overlap fields from the agreement's max (None at one
        rank: this rank's own)."""
        local, d = self._local, self.d
        if agreed is None:
            slowest, wait = local["step_s"], 0.0
        else:
            slowest, wait = agreed[0] / US, (agreed[1] + agreed[2]) / US
        return {
            "step_time_max_s": slowest / d,
            "straggler_wait_s": wait / d,
            "comm_overlap_frac": local["overlap"],
        }

    def synced_at(self, now: float, next_step: int) -> None:
        """The agreement after a step ended now; the trace's zero if `next_step` is its first."""
        self.synced = now
        if self.steps is not None and next_step == self.steps[0]:
            self.origin = now

    # -- the trace -----------------------------------------------------------------------
    def _ts(self, t: float) -> float:
        return (t - (self.origin or 0.0)) / self.d * US

    def span(self, track: str, name: str, a: float, b: float, **args: Any) -> None:
        self.events.append(
            {
                "name": name,
                "cat": track,
                "ph": "X",
                "ts": self._ts(a),
                "dur": max(0.0, (b - a) / self.d * US),
                "pid": self.rank,
                "tid": TRACKS[track],
                "args": args,
            }
        )

    def trace_step(
        self,
        step: int,
        marks: dict[str, float],
        records: Sequence[Any],
        pieces: Sequence[tuple[float, float]],
        pads: Sequence[tuple[float, float]],
        sent: Sequence[int],
        backend: str,
        compression: str,
    ) -> None:
        """Keep the step's phases (marks: start, forward_end, backward_end, end), its
        collectives (bytes as the ledger counted them), encoding and padding."""
        self.span("compute", f"forward {step}", marks["start"], marks["forward_end"], step=step)
        self.span(
            "compute", f"backward {step}", marks["forward_end"], marks["backward_end"], step=step
        )
        self.span("compute", f"optimizer {step}", marks["backward_end"], marks["end"], step=step)
        for a, b in pads:
            self.span("padding", "emulated compute (padding)", a, b, step=step)
        for a, b in pieces:
            self.span("encode", f"{compression} encode/decode", a, b, step=step)
        for i, (r, s) in enumerate(zip(records, sent, strict=True)):
            end = r.end_s if r.end_s is not None else marks["end"]
            self.span(
                "collectives",
                f"{r.collective} {r.payload_bytes:,} B",
                r.start_s,
                end,
                step=step,
                index=i,
                collective=r.collective,
                payload_bytes=r.payload_bytes,
                sent_bytes=s,
                backend=backend,
                compression=compression,
            )


LANE_TID = 10  # lane k of a track is tid track + 10 k


def lanes(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event on a lane of its track where it overlaps nothing: Perfetto drops a slice
    that overlaps another on its track without nesting in it (DDP's second bucket's
    all-reduce runs while the first is in flight: 3 of 20 slices were lost), so concurrent
    collectives go on a track each ("collectives", "collectives 2", ...)."""
    out, ends = [], {}
    for e in sorted(events, key=lambda e: (e["pid"], e["tid"], e["ts"])):
        free = ends.setdefault((e["pid"], e["tid"]), [])
        lane = next((k for k, end in enumerate(free) if end <= e["ts"]), len(free))
        if lane == len(free):
            free.append(0.0)
        free[lane] = e["ts"] + e["dur"]
        out.append({**e, "tid": e["tid"] + LANE_TID * lane})
    return out


def merge_trace(per_rank: Sequence[Sequence[dict[str, Any]]], meta: dict[str, Any]) -> dict:
    """All ranks' events in one Chrome trace, with process and track names; concurrent
    events of a track on lanes of their own (`lanes`), every event kept."""
    spans = lanes([e for evs in per_rank for e in evs])
    used = {(e["pid"], e["tid"]) for e in spans}
    events: list[dict[str, Any]] = []
    for rank in range(len(per_rank)):
        names = [(0, "process_name", f"rank {rank}")]
        for track, tid in TRACKS.items():
            names.append((tid, "thread_name", track))
            k = 1
            while (rank, tid + LANE_TID * k) in used:
                names.append((tid + LANE_TID * k, "thread_name", f"{track} {k + 1}"))
                k += 1
        events += [
            {"name": kind, "ph": "M", "pid": rank, "tid": tid, "args": {"name": name}}
            for tid, kind, name in names
        ]
    events += spans
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta}


def write_trace(path: Path, trace: dict) -> None:
    """Written whole, then renamed: a trace on disk is always valid JSON."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(trace) + "\n")
    tmp.replace(path)
