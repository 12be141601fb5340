"""Real training: learning-rate schedules, evaluation, target accuracy, datasets, and exact
resumption through the DataLoader with augmentation."""

from __future__ import annotations

import math
import pickle
import subprocess
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dist_sqz.config import TrainConfig
from dist_sqz.models import build_model
from dist_sqz.training.data import StepSampler, datasets_for, held_out_batches
from dist_sqz.training.evaluate import evaluate
from dist_sqz.training.optim import lr_at
from tests.helpers import (
    base_env,
    checkpoint_step,
    free_port,
    held_out_accuracy,
    kill_tree,
    read_run,
    torchrun_cmd,
    train_torchrun,
    write_images,
)

QUICK = ["--model", "squeezenet1_1", "--image-size", "32", "--batch-size", "4"]
QUICK += ["--warmup-steps", "1", "--compute-probe-steps", "0"]


def test_schedule_values_at_known_steps():
    cfg = TrainConfig(lr=0.1, steps=110, lr_warmup_steps=10, lr_schedule="cosine")
    assert lr_at(cfg, 0, 1) == pytest.approx(0.01)  # warm-up: lr x (step+1)/10
    assert lr_at(cfg, 9, 1) == pytest.approx(0.1)
    assert lr_at(cfg, 10, 1) == pytest.approx(0.1)  # cosine starts at the base lr
    assert lr_at(cfg, 60, 1) == pytest.approx(0.05)  # half way: half the lr
    assert lr_at(cfg, 109, 1) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.99)))
    step = TrainConfig(lr=0.1, steps=100, lr_schedule="step")
    assert [lr_at(step, s, 1) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    const = TrainConfig(lr=0.1, steps=100, lr_scaling="linear")
    assert lr_at(const, 50, 4) == pytest.approx(0.4)
    assert lr_at(const.model_copy(update={"lr_scaling": "sqrt"}), 50, 4) == pytest.approx(0.2)
    # lr_max caps the scaled lr (warm-up and schedule follow the capped value)
    capped = TrainConfig(
        lr=0.1, steps=110, lr_warmup_steps=10, lr_schedule="cosine", lr_scaling="sqrt", lr_max=0.2
    )
    assert lr_at(capped, 9, 4) == pytest.approx(0.2) and lr_at(capped, 9, 2) == pytest.approx(
        0.1 * math.sqrt(2)
    )
    assert lr_at(capped, 9, 8) == pytest.approx(0.2) and lr_at(capped, 4, 8) == pytest.approx(0.1)
    assert lr_at(capped, 60, 8) == pytest.approx(0.1)  # half way down the cosine from 0.2


def test_step_sampler_is_a_function_of_the_step():
    """The batches of steps 7..11 are the same whether the run started at 0 or at 7; ranks
    see disjoint images within an epoch; augmentation seeds differ by step and position."""
    full = list(StepSampler(50, 4, 1, 2, seed=3, start=0, steps=12, augment=True))
    resumed = list(StepSampler(50, 4, 1, 2, seed=3, start=7, steps=12, augment=True))
    assert resumed == full[7:]
    other = list(StepSampler(50, 4, 0, 2, seed=3, start=0, steps=6, augment=False))
    epoch0 = {i for b in full[:6] for i, _ in b}
    assert epoch0.isdisjoint({i for b in other for i, _ in b})
    seeds = [s for b in full for _, s in b]
    assert len(set(seeds)) == len(seeds) and all(s is None for b in other for _, s in b)


def _eval_worker(rank: int, world: int, port: int, q) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.manual_seed(0)
    model = build_model("squeezenet1_1", 10)
    cfg = TrainConfig(data="digits", image_size=32, eval_batch_size=40)

    def gather(obj):
        out = [None] * world
        dist.all_gather_object(out, obj)
        return out

    held = datasets_for(cfg.data, cfg.image_size)[1]
    batches = held_out_batches(cfg, held, rank, world, 0)
    result = evaluate(model, batches, torch.device("cpu"), gather)
    q.put((rank, result))
    dist.destroy_process_group()


def _evaluate_on(world: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    q, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_eval_worker, args=(r, world, port, q)) for r in range(world)]
    for p in procs:
        p.start()
    got = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    return [got[r] for r in range(world)]


@pytest.mark.integration
def test_eval_is_the_same_at_1_and_2_workers():
    one = _evaluate_on(1)[0]
    two = _evaluate_on(2)
    assert two[0] == two[1]  # every rank holds the reduced result
    assert two[0]["accuracy"] == one["accuracy"]
    assert two[0]["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)


@pytest.mark.integration
def test_target_accuracy_stops_and_fills_the_fields(tmp_path):
    """Chance on digits is 0.1: a target of 0.05 is met at the first evaluation."""
    out = tmp_path / "t"
    train_torchrun(
        2,
        out,
        *QUICK,
        "--data",
        "digits",
        "--steps",
        "30",
        "--eval-every",
        "5",
        "--target-accuracy",
        "0.05",
    )
    metrics, s = read_run(out)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    assert all("lr" in m for m in metrics)
    assert [m["step"] for m in metrics if "accuracy" in m] == [5]
    assert s["steps_to_accuracy"] == 5 and s["images_to_accuracy"] == 5 * 2 * 4
    assert s["time_to_accuracy_s"] == pytest.approx(sum(m["step_time_s"] for m in metrics))
    assert s["accuracy"] >= 0.05 and s["eval_time_s"] > 0
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 5


@pytest.mark.integration
def test_interrupted_mid_schedule_resumes_exactly(tmp_path):
    """Cosine schedule with warm-up, digits with augmentation through 1 loader worker per
    rank: SIGKILL mid-run, resume, and end with the uninterrupted run's parameters."""
    args = [
        *QUICK,
        "--data",
        "digits",
        "--augment",
        "standard",
        "--data-workers",
        "1",
        "--lr-schedule",
        "cosine",
        "--lr-warmup-steps",
        "4",
        "--nesterov",
        "--label-smoothing",
        "0.1",
        "--steps",
        "40",
        "--checkpoint-every",
        "4",
        "--eval-every",
        "20",
    ]
    train_torchrun(2, tmp_path / "full", *args)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        torchrun_cmd(2, "--out", str(cut), *args),
        env=base_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while checkpoint_step(cut) < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    step = checkpoint_step(cut)
    kill_tree(proc.pid)
    proc.wait()
    assert 8 <= step < 40, step
    train_torchrun(2, cut, "--resume", str(cut))
    full_metrics, full = read_run(tmp_path / "full")
    metrics, resumed = read_run(cut)
    assert [m["step"] for m in metrics] == list(range(1, 41))
    assert [m["lr"] for m in metrics] == [m["lr"] for m in full_metrics]
    assert resumed["param_checksum"] == full["param_checksum"]
    assert resumed["accuracy"] == full["accuracy"]


def _write_cifar(root, n_train=40, n_test=20):
    """CIFAR-10's python layout: pickled dicts of uint8 rows (3072 = 3x32x32) and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [
        ("test_batch", n_test)
    ]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(x) for x in rng.integers(0, 10, n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)


@pytest.mark.integration
def test_cifar10_and_imagefolder_train_val(tmp_path):
    _write_cifar(tmp_path / "cifar")
    write_images(tmp_path / "imgs" / "train")
    write_images(tmp_path / "imgs" / "val", per_class=2)
    common = [*QUICK, "--batch-size", "2", "--steps", "4", "--augment", "standard"]
    for name, data in [
        ("c", f"cifar10:{tmp_path / 'cifar'}"),
        ("i", f"imagefolder:{tmp_path / 'imgs'}"),
    ]:
        train_torchrun(2, tmp_path / name, *common, "--data", data, "--data-workers", "1")
        metrics, s = read_run(tmp_path / name)
        assert s["replicas_consistent"] and "accuracy" in metrics[-1]
        assert s["accuracy"] == pytest.approx(held_out_accuracy(tmp_path / name), abs=1e-9)
    _, s = read_run(tmp_path / "i")
    assert s["config"]["num_classes"] == 3
