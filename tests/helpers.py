"""Helpers the tests share: launching real worker processes (torchrun over gloo on CPU),
reading run directories, killing process trees, and the quick-run flags."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dist_sqz.cluster.launch import descendants, kill_tree  # noqa: F401 (re-exported)
from dist_sqz.runs import train_command

ROOT = Path(__file__).resolve().parents[1]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE"))}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def compressors(but: tuple[str, ...] = ("none",)) -> list[str]:
    """Every registered compressor except `but`: tests that exercise compressors take them
    from the registry, so a new one is covered with no edit to a test."""
    from dist_sqz.comm.compression import COMPRESSORS

    return [n for n in COMPRESSORS.names() if n not in but]


def stateful_compressors(but: tuple[str, ...] = ()) -> list[str]:
    """The registered compressors that keep per-rank state a checkpoint must carry (their
    class has its own `state_dict`: error feedback, momentum correction, warm-started
    factors); a stateless one resumes as an uncompressed run does."""
    from dist_sqz.comm.compression import COMPRESSORS, Compressor

    own = Compressor.state_dict
    return [n for n in compressors(but) if COMPRESSORS.get(n).state_dict is not own]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(nproc: int, *args: str) -> list[str]:
    return train_command(*args, nproc=nproc)


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


def refused(
    *args: str, words: tuple[str, ...] = (), timeout: float = 120, env: dict[str, str] | None = None
) -> str:
    """Run `dist-sqz ARGS` as its own process expecting bad input: exit 2 and one line
    naming the fault (each of `words`), no traceback. The line."""
    proc = dist_sqz(*args, timeout=timeout, env=env)
    assert_usage_error(proc, *words)
    return proc.stderr.strip().splitlines()[-1]


def refused_here(cli, *args: str, words: tuple[str, ...] = ()) -> str:
    """`refused` in this process, through the `cli` fixture (no interpreter to start)."""
    proc = cli(*args)
    assert_usage_error(proc, *words)
    return proc.stderr.strip().splitlines()[-1]


def need_launcher(module: str, exe: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a submodule's parent (horovod of horovod.torch) is absent
        found = False
    if found and shutil.which(exe):
        return
    why = f"{module} / {exe} not installed (run launch/install_horovod.sh)"
    if os.environ.get("DIST_SQZ_REQUIRE_LAUNCHERS") == "1":
        pytest.fail(why)
    pytest.skip(why)


def mpirun(n: int, out, *args: str, backend: str = "mpi", expect: int | None = 0):
    """`dist-sqz train` under mpirun; asserts its exit status unless `expect` is None."""
    need_launcher("mpi4py", "mpirun")
    env = base_env(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.pop("OMP_NUM_THREADS")  # the trainer must share the cores out itself
    cmd = ["mpirun", "-np", str(n), "--oversubscribe", "-x", f"MASTER_PORT={free_port()}"]
    cmd += train_command("--backend", backend)
    proc = run([*cmd, "--out", str(out), *args], env=env, timeout=300)
    if expect is not None:
        assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def horovodrun(n: int, out, *args: str, expect: int | None = 0):
    """`dist-sqz train` under horovodrun; asserts its exit status unless `expect` is None."""
    need_launcher("horovod.torch", "horovodrun")
    env = base_env()
    env.pop("OMP_NUM_THREADS")
    cmd = ["horovodrun", "-np", str(n), "--gloo", "--gloo-timeout-seconds", "120"]
    cmd += train_command("--backend", "horovod")
    proc = run([*cmd, "--out", str(out), *args], env=env, timeout=300)
    if expect is not None:
        assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


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


def held_out_accuracy(out: Path) -> float:
    """The held-out accuracy of run `out`'s final checkpoint, scored again here in one
    process (the figure the run's own evaluation, sharded over its ranks, must give)."""
    import torch

    from dist_sqz.config import TrainConfig
    from dist_sqz.models import build_model
    from dist_sqz.training.data import datasets_for, held_out_batches
    from dist_sqz.training.evaluate import evaluate

    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    cfg = TrainConfig(**state["config"])
    model = build_model(cfg.model, cfg.num_classes)
    model.load_state_dict(state["model"])
    _, held = datasets_for(cfg.data, cfg.image_size, check=False)
    batches = held_out_batches(cfg, held, 0, 1, 0)
    return evaluate(model, batches, torch.device("cpu"), lambda x: [x])["accuracy"]


def checkpoint_step(out: Path) -> int:
    """The step of OUT/checkpoints/last.pt, 0 while there is none (or it is being replaced)."""
    import torch

    try:
        return torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def write_cifar(
    folder: Path, n_train: int = 500, n_test: int = 200, learnable: bool = True, seed: int = 0
) -> Path:
    """CIFAR-10's python layout in `folder` itself: pickled dicts of uint8 rows (3072 =
    3 x 32 x 32, channel-major) and labels, `data_batch_1..5` (n_train in all) and
    `test_batch`. Learnable: each class is its own coarse 4 x 4 colour pattern, upsampled,
    under heavy pixel noise, so a network that learns beats chance on the test batch;
    otherwise pixels and labels are independent noise."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    patterns = rng.uniform(40, 215, (10, 3, 4, 4)).repeat(8, axis=2).repeat(8, axis=3)
    folder.mkdir(parents=True, exist_ok=True)
    parts = [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in parts:
        labels = rng.integers(0, 10, n)
        if learnable:
            noise = rng.normal(0, 50, (n, 3, 32, 32))
            images = np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)
        else:
            images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        batch = {b"data": images.reshape(n, 3072), b"labels": [int(x) for x in labels]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return folder


def cluster_leftovers() -> list[str]:
    """Namespaces and links of emulated clusters whose owner is gone (a cluster a live
    process owns, a benchmark's beside the tests, is not a leftover)."""
    from dist_sqz.cluster.netns import slot_in_use

    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found = [(x, re.match(r"dsqz(\d+)-", x)) for x in (ns + links).split()]
    return [x for x, m in found if m and not slot_in_use(int(m.group(1)))]


def assert_usage_error(proc, *words):
    """Bad input's answer: exit 2, one line naming it (with each of `words`), no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip() and not x.startswith("W")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("dist-sqz: error: ") or "dist-sqz" in lines[0]
    for w in words:
        assert w in lines[0], lines[0]
