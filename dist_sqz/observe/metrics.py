"""One metrics record per step, fanned out to sinks (progress line, metrics.jsonl, W&B).

Rank 0 owns every sink. Summaries are medians over the measured (post-warm-up) steps,
computed from `metrics.jsonl` itself, so a resumed run summarises all of its steps.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from dist_sqz.errors import UsageError

# Per-step fields whose medians the summary reports.
MEDIAN_FIELDS = (
    "step_time_s",
    "comm_time_s",
    "comm_busy_s",
    "exposed_comm_s",
    "compress_time_s",
    "data_time_s",
    "payload_bytes",
    "sent_bytes",
    "wire_bytes",
    "images_per_s",
    "loss",
    "step_time_max_s",
    "straggler_wait_s",
    "comm_overlap_frac",
)
P95_FIELDS = ("step_time_max_s", "straggler_wait_s", "comm_overlap_frac")  # also _p95


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per step, flushed at once (a crash loses at most one line)."""

    def __init__(self, path: Path, keep_below_step: int | None = None) -> None:
        self.time_so_far_s = 0.0  # the kept steps' time: a resumed run's goes on from there
        if keep_below_step is not None and path.exists():
            # Resuming: steps after the checkpoint are run again, so drop their old lines.
            kept = [r for r in read_jsonl(path) if r["step"] <= keep_below_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
            self.time_so_far_s = sum(r.get("step_time_s") or 0.0 for r in kept)
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


def _fmt_duration(s: float) -> str:
    m, sec = divmod(int(s + 0.5), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def eta_seconds(done: Iterable[tuple[Hashable, float]], todo: Iterable[Hashable]) -> float | None:
    """A long job's time left: each run of kind `todo` (e.g. its model) at the mean seconds
    of the finished runs of that kind in `done` ((kind, seconds) pairs), or of all of them
    where its kind has none; None with nothing to do or nothing finished yet."""
    times: dict[Hashable, list[float]] = {}
    for kind, seconds in done:
        times.setdefault(kind, []).append(seconds)
    every = [t for ts in times.values() for t in ts]
    todo = list(todo)
    if not todo or not every:
        return None
    return sum(statistics.mean(times.get(kind, every)) for kind in todo)


def eta_text(done: Iterable[tuple[Hashable, float]], todo: Iterable[Hashable]) -> str:
    """`eta_seconds` as "; ETA N min", or "" when there is none."""
    left = eta_seconds(done, todo)
    return "" if left is None else f"; ETA {left / 60:.0f} min"


def _fmt_loss(loss: float | None) -> str:
    return "-" if loss is None else f"{loss:.4f}"


class ProgressSink:
    """A progress bar on a terminal; plain lines every `every` steps otherwise."""

    def __init__(self, total: int, every: int = 1, stream: IO[str] | None = None) -> None:
        self.total = total
        self.every = every
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.first: int | None = None  # ETA counts from the first step this process ran
        self.t_first = 0.0

    def write(self, r: dict[str, Any]) -> None:
        step = r["step"]
        if self.first is None:
            self.first, self.t_first = step, time.perf_counter()
        left = self.total - step
        done = step - self.first
        eta = (time.perf_counter() - self.t_first) / done * left if done else None
        text = (
            f"step {step}/{self.total}  {r['images_per_s']:.1f} img/s  "
            f"{_fmt_bytes(r['payload_bytes'])}/step payload  "
            f"{_fmt_bytes(r['sent_bytes'])} sent  loss {_fmt_loss(r['loss'])}  lr {r['lr']:.3g}"
            + (f"  grad norm {r['grad_norm']:.3g}" if r.get("grad_norm") is not None else "")
            + (f"  accuracy {r['accuracy']:.4f}" if r.get("accuracy") is not None else "")
            + (f"  ETA {_fmt_duration(eta)}" if eta is not None and left else "")
            + ("  (warm-up)" if r.get("warmup") else "")
            + ("  NOT FINITE" if r.get("nonfinite") else "")
        )
        if self.tty:
            width = 24
            filled = int(width * step / self.total)
            bar = "#" * filled + "." * (width - filled)
            end = "\n" if step == self.total or r.get("accuracy") is not None else ""
            self.stream.write(f"\r[{bar}] {text}\033[K{end}")
            self.stream.flush()
        elif step % self.every == 0 or step == self.total or r.get("accuracy") is not None:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        pass


def step_record(
    cfg: Any,
    world_size: int,
    step: int,
    loss: float,
    lr: float,
    step_s: float,
    exposed_s: float | None,
    comm: Any,
    wire: int | None,
    dilation: float = 1.0,
    emulated_batch: int | None = None,
    late_s: float | None = None,
) -> dict[str, Any]:
    """One metrics.jsonl line (docs/design.md's names). Emulated compute: times are divided by
    the dilation D and throughput counts the emulated batch."""
    d = dilation
    batch = emulated_batch or cfg.batch_size
    return {
        "step": step,
        "model": cfg.model,
        "backend": cfg.backend,
        "compression": cfg.compression,
        "world_size": world_size,
        "batch_size": cfg.batch_size,
        "step_time_s": step_s / d,
        "comm_time_s": comm.comm_time_s / d,
        "comm_busy_s": comm.comm_busy_s / d,
        "exposed_comm_s": None if exposed_s is None else exposed_s / d,
        "payload_bytes": comm.payload_bytes,
        "sent_bytes": comm.sent_bytes,
        "collectives": comm.collectives,
        "images_per_s": world_size * batch / (step_s / d),
        "loss": loss,
        "lr": lr,
        "warmup": step <= cfg.warmup_steps,
        **({"dilation": d, "emulation_late_s": late_s / d} if late_s is not None else {}),
        **({"wire_bytes": wire} if wire is not None else {}),
    }


def p95(values: Iterable[float]) -> float:
    """The 95th percentile by nearest rank (summaries, collective statistics, cluster bench)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


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
    """images_per_s(N) / (N x images_per_s(1)), same per-worker batch (docs/design.md)."""
    return images_per_s / (world_size * images_per_s_1)


def build_summary(records: list[dict[str, Any]], **facts: Any) -> dict[str, Any]:
    """summary.json: the run's facts, medians of its measured steps, compression_ratio and
    final_loss (docs/design.md). `facts` must hold `params`; what it holds comes first."""
    summary: dict[str, Any] = {
        **facts,
        "uncompressed_payload_bytes": 4 * facts["params"],
        **medians(records),
    }
    if summary.get("payload_bytes"):
        summary["compression_ratio"] = 4 * facts["params"] / summary["payload_bytes"]
    measured = [r for r in records if not r.get("warmup")]
    for key in P95_FIELDS:
        vals = [r[key] for r in measured if r.get(key) is not None]
        if vals:
            summary[f"{key}_p95"] = p95(vals)
    if any("emulation_late_s" in r for r in records):
        late = [r["emulation_late_s"] for r in records if not r["warmup"]]
        summary["emulation_late_s"] = statistics.median(late) if late else None
    summary["final_loss"] = records[-1]["loss"] if records else None
    summary.update(accuracy_fields(records, summary.get("target_accuracy")))
    return summary


def accuracy_fields(records: list[dict[str, Any]], target: float | None) -> dict[str, Any]:
    """accuracy (the last evaluation's), eval_time_s, and the time-to-accuracy fields of
    docs/design.md: the first evaluation step with accuracy >= target; images = steps x world
    size x batch size; time = the sum of step_time_s up to it (training only)."""
    evals = [r for r in records if r.get("accuracy") is not None]
    out: dict[str, Any] = {
        "accuracy": evals[-1]["accuracy"] if evals else None,
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
        "eval_time_s": sum(r.get("eval_time_s", 0.0) for r in evals),
        "target_accuracy": target,
        "steps_to_accuracy": None,
        "images_to_accuracy": None,
        "time_to_accuracy_s": None,
    }
    hit = next((r for r in evals if target is not None and r["accuracy"] >= target), None)
    if hit is not None:
        out["steps_to_accuracy"] = hit["step"]
        out["images_to_accuracy"] = hit["step"] * hit["world_size"] * hit["batch_size"]
        out["time_to_accuracy_s"] = sum(
            r["step_time_s"] for r in records if r["step"] <= hit["step"]
        )
    return out


def done_line(summary: dict[str, Any], where: Path) -> str:
    """The line a finished run ends with."""
    accuracy = summary.get("accuracy")
    return (
        f"dist-sqz: done. median step {summary.get('step_time_s', float('nan')) * 1e3:.1f} ms, "
        f"payload {summary.get('payload_bytes', 0):,.0f} B/step, "
        f"sent {summary.get('sent_bytes', 0):,.0f} B/step, "
        + (f"accuracy {accuracy:.4f}, " if accuracy is not None else "")
        + f"replicas_consistent {summary['replicas_consistent']}; {where}"
    )


def tx_counter(iface: str) -> Callable[[], int] | None:
    """A reader of IFACE's kernel tx byte counter (wire_bytes), or None when none is named."""
    if not iface:
        return None
    path = Path(f"/sys/class/net/{iface}/statistics/tx_bytes")
    if not path.exists():
        raise UsageError(f"no network interface {iface!r} here (DIST_SQZ_WIRE_IFACE)")
    return lambda: int(path.read_text())


@dataclass
class Logging:
    """What the sinks read of a run's settings (train config keys of the same names)."""

    steps: int = 20
    log_every: int = 1
    wandb: str = "off"
    wandb_project: str = "dist_sqz"
    wandb_group: str = ""
    name: str = ""


def open_sinks(
    log: Logging, out: Path, keep_below_step: int | None, config: dict[str, Any]
) -> list[Sink]:
    """Rank 0's sinks of one run: metrics.jsonl (keeping the steps up to `keep_below_step`
    on a resume), the progress line, and W&B when asked for (with the run's `config`)."""
    jsonl = JsonlSink(out / "metrics.jsonl", keep_below_step=keep_below_step)
    sinks: list[Sink] = [jsonl, ProgressSink(log.steps, log.log_every)]
    if log.wandb != "off":
        from dist_sqz.observe.wandb_sink import WandbSink

        sinks.append(
            WandbSink(
                log.wandb,
                log.wandb_project,
                log.wandb_group,
                log.name,
                config,
                out,
                job_type=config.get("model", ""),
                train_time_s=jsonl.time_so_far_s,
                resume=keep_below_step is not None,
            )
        )
    return sinks
