"""One metrics record per step, fanned out to sinks (progress line, metrics.jsonl, W&B).

Rank 0 owns every sink. Summaries are medians over the measured (post-warm-up) steps,
computed from `metrics.jsonl` itself, so a resumed run summarises all of its steps.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from dist_sqz.errors import UsageError

# Per-step fields whose medians the summary reports.
MEDIAN_FIELDS = (
    "step_time_s",
    "comm_time_s",
    "comm_busy_s",
    "exposed_comm_s",
    "payload_bytes",
    "sent_bytes",
    "wire_bytes",
    "images_per_s",
    "loss",
)


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per step, flushed at once (a crash loses at most one line)."""

    def __init__(self, path: Path, keep_below_step: int | None = None) -> None:
        if keep_below_step is not None and path.exists():
            # Resuming: steps after the checkpoint are run again, so drop their old lines.
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= keep_below_step
            ]
            path.write_text("".join(line + "\n" for line in kept))
        self.f = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.1f} GB"


class ProgressSink:
    """A progress bar on a terminal; plain lines every `every` steps otherwise."""

    def __init__(self, total: int, every: int = 1, stream: IO[str] | None = None) -> None:
        self.total = total
        self.every = every
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()

    def write(self, r: dict[str, Any]) -> None:
        step = r["step"]
        text = (
            f"step {step}/{self.total}  {r['images_per_s']:.1f} img/s  "
            f"{_fmt_bytes(r['payload_bytes'])}/step payload  "
            f"{_fmt_bytes(r['sent_bytes'])} sent  loss {r['loss']:.4f}"
            + ("  (warm-up)" if r.get("warmup") else "")
        )
        if self.tty:
            width = 24
            done = int(width * step / self.total)
            bar = "#" * done + "." * (width - done)
            end = "\n" if step == self.total else ""
            self.stream.write(f"\r[{bar}] {text}\033[K{end}")
            self.stream.flush()
        elif step % self.every == 0 or step == self.total:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        pass


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def medians(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of MEDIAN_FIELDS over the non-warm-up records (fields absent stay absent)."""
    measured = [r for r in records if not r.get("warmup")]
    out: dict[str, Any] = {"steps_measured": len(measured)}
    for key in MEDIAN_FIELDS:
        vals = [r[key] for r in measured if r.get(key) is not None]
        if vals:
            m = statistics.median(vals)
            out[key] = (
                int(m) if isinstance(m, float) and m.is_integer() and key.endswith("_bytes") else m
            )
    if out.get("wire_bytes") and out.get("sent_bytes"):
        out["wire_over_sent"] = out["wire_bytes"] / out["sent_bytes"]
    if out.get("comm_time_s"):
        out["algbw"] = out["payload_bytes"] / out["comm_time_s"]
        out["busbw"] = out["sent_bytes"] / out["comm_time_s"]
    return out


def scaling_efficiency(images_per_s: float, world_size: int, images_per_s_1: float) -> float:
    """images_per_s(N) / (N x images_per_s(1)), same per-worker batch (DESIGN.md)."""
    return images_per_s / (world_size * images_per_s_1)


def build_summary(records: list[dict[str, Any]], **facts: Any) -> dict[str, Any]:
    """summary.json: the run's facts, medians of its measured steps, compression_ratio and
    final_loss (DESIGN.md). `facts` must hold `params`; what it holds comes first."""
    summary: dict[str, Any] = {
        **facts,
        "uncompressed_payload_bytes": 4 * facts["params"],
        **medians(records),
    }
    if summary.get("payload_bytes"):
        summary["compression_ratio"] = 4 * facts["params"] / summary["payload_bytes"]
    if any("emulation_late_s" in r for r in records):
        late = [r["emulation_late_s"] for r in records if not r["warmup"]]
        summary["emulation_late_s"] = statistics.median(late) if late else None
    summary["final_loss"] = records[-1]["loss"] if records else None
    return summary


def tx_counter(iface: str) -> Callable[[], int] | None:
    """A reader of IFACE's kernel tx byte counter (wire_bytes), or None when none is named."""
    if not iface:
        return None
    path = Path(f"/sys/class/net/{iface}/statistics/tx_bytes")
    if not path.exists():
        raise UsageError(f"no network interface {iface!r} here (DIST_SQZ_WIRE_IFACE)")
    return lambda: int(path.read_text())
