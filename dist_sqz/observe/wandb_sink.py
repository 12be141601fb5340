"""Weights & Biases: rank 0 logs the resolved config, every step's metrics and the summary.

`--wandb offline` needs no account and writes a syncable run under RUN_DIR/wandb/
(`wandb sync RUN_DIR/wandb/offline-run-*`); `online` uses the standard W&B environment
(WANDB_API_KEY, WANDB_ENTITY, ...). Keys are never printed or written by dist_sqz. Runs of
one sweep share `wandb_group`. `read_offline_run` reads an offline run's `.wandb` file back
(the LevelDB-style record log W&B writes), for tests and reports.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from dist_sqz.errors import UsageError


def import_wandb():
    try:
        import wandb
    except ImportError:
        raise UsageError("--wandb needs the wandb package: pip install -e '.[wandb]'") from None
    return wandb


def _numeric(record: dict[str, Any]) -> dict[str, float]:
    return {
        k: v
        for k, v in record.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"
    }


RUN_ID_FILE = "wandb_run_id"


class WandbSink:
    """A metrics sink that forwards each step record to one W&B run."""

    def __init__(
        self,
        mode: str,
        project: str,
        group: str,
        name: str,
        config: dict,
        run_dir: Path,
        job_type: str = "",
        train_time_s: float = 0.0,
        resume: bool | None = None,
    ) -> None:
        """`train_time_s`: the training time before the first step logged here (a resumed
        run's kept steps), so accuracy against training time goes on where it stopped.
        `resume` (a train run's): False starts a W&B run and keeps its id in
        RUN_DIR/wandb_run_id, True continues the W&B run of that id (offline, a second run
        directory of the same id, which `wandb sync` uploads into the one run); None keeps
        no id."""
        wandb = import_wandb()
        run_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        id_file = run_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if resume and id_file.exists() else None
        self.run = wandb.init(
            id=run_id,
            resume="allow" if run_id else None,
            mode=mode,
            project=project,
            group=group or None,
            name=name,
            job_type=job_type or None,  # a train run's: its model (compare's report groups by it)
            config=config,
            dir=str(run_dir),
            reinit="finish_previous",
        )
        if resume is not None and run_id is None:
            id_file.write_text(self.run.id + "\n")
        self.train_time_s = train_time_s  # the steps' time so far: accuracy against it

    def write(self, record: dict[str, Any]) -> None:
        self.train_time_s += record.get("step_time_s") or 0.0
        values = _numeric(record) | {"train_time_s": self.train_time_s}
        self.run.log(values, step=int(record["step"]))

    def summary(self, summary: dict[str, Any]) -> None:
        """The run's summary.json under `summary/` (W&B's own summary keeps each metric's
        last value; ours are medians over measured steps)."""
        for k, v in summary.items():
            if k != "config" and (isinstance(v, (int, float, str, bool)) or v is None):
                self.run.summary[f"summary/{k}"] = v

    def log_curves(self, rows: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
        """A comparison's figures against N: one step per worker count, each key per arm
        (`scaling_efficiency/alexnet`), with `world_size` to plot them against."""
        for i, n in enumerate(sorted({r["world_size"] for r in rows})):
            values: dict[str, Any] = {"world_size": n}
            for r in rows:
                if r["world_size"] == n and not r.get("error"):
                    arm = r.get("arm") or r["model"]
                    values |= {f"{k}/{arm}": r[k] for k in keys if r.get(k) is not None}
            self.run.log(values, step=i)

    def log_table(self, key: str, rows: list[dict[str, Any]]) -> None:
        wandb = import_wandb()
        cols = list(rows[0]) if rows else []
        data = [[r.get(c) for c in cols] for r in rows]
        self.run.log({key: wandb.Table(columns=cols, data=data)})

    def log_images(self, paths: list[Path]) -> None:
        wandb = import_wandb()
        self.run.log({p.stem: wandb.Image(str(p)) for p in paths})

    def close(self) -> None:
        self.run.finish()


# -- reading an offline run back ----------------------------------------------------------

_BLOCK = 32768
_HEADER = struct.Struct("<IHB")  # crc32c, length, type
_FILE_HEADER = struct.Struct("<4sHB")  # ":W&B", 0xBEE1, version
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(data: bytes) -> list[bytes]:
    ident, magic, _ = _FILE_HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError("not a W&B run log")
    out, pos, parts = [], _FILE_HEADER.size, b""
    while pos + _HEADER.size <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER.size:  # block trailer: zero padding
            pos += room
            continue
        _, length, kind = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size
        chunk = data[pos : pos + length]
        pos += length
        if kind == _FULL:
            out.append(chunk)
        elif kind == _FIRST:
            parts = chunk
        elif kind == _MIDDLE:
            parts += chunk
        elif kind == _LAST:
            out.append(parts + chunk)
            parts = b""
        elif kind == 0 and length == 0:
            break
    return out


def read_offline_run(wandb_file: Path) -> dict[str, Any]:
    """{"config": {...}, "history": [{key: value} per logged step], "summary": {...},
    "run_id": ...}."""
    from wandb.proto import wandb_internal_pb2 as pb

    result: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "run_id": None}
    for raw in _records(Path(wandb_file).read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row = {}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            result["history"].append(row)
        elif kind == "config":
            for item in rec.config.update:
                key = item.key or "/".join(item.nested_key)
                result["config"][key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in rec.summary.update:
                key = item.key or "/".join(item.nested_key)
                result["summary"][key] = json.loads(item.value_json)
        elif kind == "run":
            result["run_id"] = rec.run.run_id
            cfg = rec.run.config
            for item in cfg.update:
                result["config"][item.key] = json.loads(item.value_json)
    return result
