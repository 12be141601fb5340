"""Helpers the tests share: launching real worker processes (torchrun over gloo on CPU),
reading run directories, killing process trees, and the quick-run flags."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from dist_sqz.cluster.launch import descendants, kill_tree  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parents[1]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE"))}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(nproc: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "dist_sqz",
        "train",
        *args,
    ]


def run(cmd: list[str], timeout: float = 300, env: dict[str, str] | None = None, **kw):
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or base_env(),
        cwd=kw.pop("cwd", None),
        **kw,
    )


def dist_sqz(*args: str, timeout: float = 120, env: dict[str, str] | None = None, cwd=None):
    return run([sys.executable, "-m", "dist_sqz", *args], timeout=timeout, env=env, cwd=cwd)


def train_torchrun(nproc: int, out: Path, *args: str, timeout: float = 300):
    proc = run(torchrun_cmd(nproc, "--out", str(out), *args), timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def read_run(out: Path) -> tuple[list[dict], dict]:
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    summary = json.loads((out / "summary.json").read_text())
    return metrics, summary


# Flags for a quick SqueezeNet 1.1 run (a later `--steps N` overrides).
TINY = (
    "--model",
    "squeezenet1_1",
    "--image-size",
    "32",
    "--batch-size",
    "2",
    "--steps",
    "4",
    "--warmup-steps",
    "1",
    "--compute-probe-steps",
    "1",
)

# A 2-worker run with checkpoints every 2 steps, long enough to be interrupted mid-way.
RESUME_ARGS = (
    "--model",
    "squeezenet1_1",
    "--image-size",
    "96",
    "--batch-size",
    "4",
    "--steps",
    "14",
    "--warmup-steps",
    "1",
    "--checkpoint-every",
    "2",
    "--compute-probe-steps",
    "1",
)


def write_images(root: Path, classes: int = 3, per_class: int = 6, size: int = 40) -> None:
    """An ImageFolder of random JPEGs: one sub-folder per class."""
    import torch
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            arr = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(d / f"{i}.jpg")


def checkpoint_step(out: Path) -> int:
    """The step of OUT/checkpoints/last.pt, 0 while there is none (or it is being replaced)."""
    import torch

    try:
        return torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0
