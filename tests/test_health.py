"""Training health: a diverging run stops at its first non-finite step on every backend and
keeps its last good checkpoint; bad steps can be skipped, a bounded number; a dead network is
reported as stalled; CIFAR-format folders in either layout, and their recipes."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from dist_sqz.training import checkpoint
from dist_sqz.training.health import StallWatch
from dist_sqz.training.recipes import recipe
from tests.helpers import (
    base_env,
    dist_sqz,
    horovodrun,
    mpirun,
    read_run,
    refused,
    run,
    torchrun_cmd,
    train_torchrun,
    write_cifar,
)

# SqueezeNet 1.1 on digits at lr 50: loss 2.3, then ~1e16, then nan at step 3 (a checkpoint
# after every step, so the last good one is the step before).
DIVERGE = ["--model", "squeezenet1_1", "--data", "digits", "--image-size", "32"]
DIVERGE += ["--batch-size", "4", "--steps", "12", "--lr", "50", "--warmup-steps", "1"]
DIVERGE += ["--compute-probe-steps", "0", "--checkpoint-every", "1"]


def _diverged_at(stderr: str) -> int:
    lines = [x for x in stderr.splitlines() if "training diverged" in x]
    assert len(lines) == 1, stderr[-3000:]  # one line, from rank 0 alone
    frames = [x for x in stderr.splitlines() if x.strip().startswith('File "')]
    assert not any("dist_sqz" in x for x in frames), stderr[-3000:]  # no traceback of ours
    return int(re.search(r"training diverged at step (\d+)", lines[0]).group(1))


def _check_kept(out, step: int) -> dict[str, torch.Tensor]:
    """last.pt is the step before the divergence, loads with weights_only, holds finite
    weights; no summary was written; the bad step's record is valid JSON."""
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == step - 1
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert not (out / "summary.json").exists()
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == step and last["nonfinite"] is True
    return ckpt["model"]


@pytest.mark.integration
@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun"])
def test_divergence_stops_every_rank_on_mpi_and_horovod(tmp_path, launcher):
    out = tmp_path / "run"
    go = mpirun if launcher == "mpirun" else horovodrun
    proc = go(2, out, *DIVERGE, expect=1)
    step = _diverged_at(proc.stderr)
    assert step < 12 and "dist-sqz: done" not in proc.stdout
    _check_kept(out, step)
    # from scratch at lr 50 every kept checkpoint's next step blew up: none is known good
    assert "no kept checkpoint is known good" in proc.stderr and "start afresh" in proc.stderr


@pytest.mark.integration
def test_divergence_keeps_the_last_good_checkpoint_and_the_run_resumes(tmp_path):
    """DDP: 4 sane steps, then the run resumed at lr 50 diverges; it stops at the first
    non-finite step with one line, last.pt is the step before (finite, loadable), and the
    checkpoint kept before it (step 4) resumes at the sane lr to exactly the run that never
    went wrong."""
    sane = [*DIVERGE, "--lr", "0.001"]
    train_torchrun(2, tmp_path / "ref", *sane)
    out = tmp_path / "run"
    train_torchrun(2, out, *sane, "--steps", "4")
    lr50 = ["--lr", "50", "--steps", "12", "--keep-checkpoints", "8"]
    proc = run(torchrun_cmd(2, "--resume", str(out), *lr50))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    step = _diverged_at(proc.stderr)
    assert 5 <= step < 12 and "dist-sqz: done" not in proc.stdout
    _check_kept(out, step)
    kept = [s for s, _ in checkpoint.kept(out)]  # (at step 5 last.pt itself is step 4's)
    assert kept[-1] == step - 2 and (step == 5 or 4 in kept)
    # the line names the newest checkpoint whose next step was sane: step 4's, the last
    # one written at the sane lr (step 5's weights already came from an lr-50 update)
    advised = re.search(r"known good .*: --resume (\S+), with a lower", proc.stderr).group(1)
    assert advised == str(out / "checkpoints" / "step4.pt" if step > 5 else out)
    proc = run(torchrun_cmd(2, "--resume", advised, "--lr", "0.001", "--steps", "12"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming from " in proc.stdout and "(step 4)" in proc.stdout
    metrics, summary = read_run(out)
    assert [m["step"] for m in metrics] == list(range(1, 13))
    assert not any(m.get("nonfinite") for m in metrics)
    assert summary["param_checksum"] == read_run(tmp_path / "ref")[1]["param_checksum"]


@pytest.mark.integration
def test_a_bounded_number_of_bad_steps_is_skipped(tmp_path):
    """Skipped steps apply no update (the checkpoints after them hold the last good step's
    weights), each is one line, and the run stops at the first bad step past the bound."""
    out = tmp_path / "skip"
    proc = dist_sqz("train", "--out", str(out), *DIVERGE, "--skip-nonfinite-steps", "2")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    skipped = [x for x in proc.stdout.splitlines() if "skipped without an update" in x]
    assert len(skipped) == 2
    step = _diverged_at(proc.stderr)
    assert "after skipping 2" in proc.stderr
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    bad = [m["step"] for m in metrics if m.get("nonfinite")]
    assert bad == [step - 2, step - 1, step]
    assert all(m["loss"] is None or math.isfinite(m["loss"]) for m in metrics)
    # keep_checkpoints 2: last.pt (step - 1) and the one before it (step - 2); both were
    # written after skipped steps, so both hold the weights of the last good step.
    kept = checkpoint.kept(out)
    assert [s for s, _ in kept] == [step - 2]
    good = torch.load(kept[0][1], weights_only=True)["model"]
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(good[k], last[k]) for k in good)


def test_keep_checkpoints_keeps_the_newest(tmp_path):
    path = checkpoint.checkpoint_path(tmp_path)
    for step in range(1, 6):
        checkpoint.save_atomic({"step": step, "x": torch.full((3,), float(step))}, path, keep=3)
    assert torch.load(path, weights_only=True)["step"] == 5
    kept = checkpoint.kept(tmp_path)
    assert [s for s, _ in kept] == [3, 4]
    assert [torch.load(p, weights_only=True)["x"][0].item() for _, p in kept] == [3.0, 4.0]
    checkpoint.save_atomic({"step": 6}, path, keep=1)  # fewer now: the older ones go
    assert checkpoint.kept(tmp_path) == []


def _feed(watch: StallWatch, losses, start=1):
    for i, loss in enumerate(losses, start):
        watch.loss(i, loss)


def test_stall_watch():
    ln10 = math.log(10)
    dead = StallWatch(50, 30, 10, 10, "squeezenet1_1", 0.003, "cifar10:/x")
    _feed(dead, [2.2] * 30 + [ln10] * 49)
    assert not dead.stalled  # 49 steps after the warm-up are not yet 50
    dead.loss(80, ln10)
    assert dead.stalled_at == 80
    line = dead.warning()
    assert "10-way head" in line and "configs/cifar10_squeezenet1_1.yaml" in line
    # a network still learning crosses ln(10) now and then: no stall
    live = StallWatch(50, 0, 10, 10, "alexnet", 0.01, "digits")
    _feed(live, [ln10 + (0.05 if i % 7 == 0 else 0.001) for i in range(200)])
    assert not live.stalled
    # the 1000-way head sitting at uniform over its 1000 outputs is chance too
    wide = StallWatch(10, 0, 10, 1000, "squeezenet1_1", 0.003, "digits")
    _feed(wide, [math.log(1000)] * 10)
    assert wide.stalled and "the network predicts the same" in wide.warning()
    # held-out accuracy at chance three evaluations in a row
    acc = StallWatch(50, 0, 10, 10, "alexnet", 0.01, "digits")
    for step, a in [(100, 0.11), (200, 0.3), (300, 0.1), (400, 0.09)]:
        acc.accuracy(step, a)
    assert not acc.stalled
    acc.accuracy(500, 0.12)
    assert acc.stalled_at == 500 and "at chance at 3 evaluations" in acc.warning()
    # synthetic data (no data classes) and window 0 never stall
    for off in (StallWatch(50, 0, None, 1000, "alexnet", 0.01), StallWatch(0, 0, 10, 10, "a", 1)):
        _feed(off, [math.log(1000)] * 100)
        assert not off.stalled


def test_a_slow_learner_at_chance_is_not_stalled_a_dead_one_is():
    """Held-out accuracy at chance three times in a row is a stall only while the training
    loss does not fall; a stall that recovers is cleared, with when and why."""
    slow = StallWatch(50, 0, 10, 1000, "squeezenet1_1", 0.003, "cifar10:/x")
    dead = StallWatch(50, 0, 10, 1000, "squeezenet1_1", 1e-9, "cifar10:/x")
    step = 0
    for accuracy in (0.117, 0.105, 0.092):  # the issue's evaluations
        for _ in range(200):
            step += 1
            slow.loss(step, 2.40 - 0.0004 * step)  # 2.40 -> 2.16 over 600 steps
            dead.loss(step, 2.3026 + (0.03 if step % 2 else -0.03))  # noisy, not falling
        slow.accuracy(step, accuracy)
        dead.accuracy(step, accuracy)
    assert not slow.stalled and dead.stalled_at == 600
    assert "training loss did not fall" in dead.warning()
    dead.accuracy(800, 0.158)
    assert not dead.stalled and dead.cleared == (800, "held-out accuracy 0.158 is above chance")
    assert "cleared at step 800" in dead.cleared_line()


def test_stall_advice_never_names_what_the_run_uses():
    from dist_sqz.training.recipes import recipe, uses_recipe

    settings = {**recipe("cifar10", "squeezenet1_1"), "data": "cifar10:/mine", "steps": 1600}
    assert uses_recipe(settings) and not uses_recipe({**settings, "lr": 0.1})
    on = StallWatch(50, 0, 10, 10, "squeezenet1_1", 0.003, "cifar10:/mine", on_recipe=True)
    _feed(on, [math.log(10)] * 50)
    assert on.stalled and "configs/cifar10_squeezenet1_1.yaml" not in on.warning()


ISSUE_CIFAR = ["--model", "squeezenet1_1", "--image-size", "32", "--batch-size", "32"]
ISSUE_CIFAR += ["--steps", "300", "--lr", "0.003", "--nesterov", "--lr-schedule", "cosine"]
ISSUE_CIFAR += ["--lr-warmup-steps", "30", "--label-smoothing", "0.1", "--eval-every", "100"]


@pytest.mark.integration
def test_dead_network_on_cifar_warns_and_stops_when_asked(tmp_path):
    """The issue's run: SqueezeNet 1.1 with a 10-way head on a CIFAR-format folder dies
    (loss ln 10) and is reported within 100 steps of the lr warm-up; --stop-when-stalled
    ends it there with exit 1, its summary marked."""
    data = write_cifar(tmp_path / "cifar", 1000, 200, learnable=False)
    common = [*ISSUE_CIFAR, "--data", f"cifar10:{data}", "--log-every", "50"]
    proc = dist_sqz("train", "--out", str(tmp_path / "warn"), *common, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    warned = [x for x in proc.stdout.splitlines() if "training has stalled" in x]
    assert len(warned) == 1 and "configs/cifar10_squeezenet1_1.yaml" in warned[0]
    at = int(re.search(r"stalled at step (\d+)", warned[0]).group(1))
    assert 30 < at <= 130
    _, summary = read_run(tmp_path / "warn")
    assert summary["stalled"] is True and summary["stalled_at_step"] == at

    stop = tmp_path / "stop"
    proc = dist_sqz("train", "--out", str(stop), *common, "--stop-when-stalled", timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("dist-sqz: error: stopped at step")
    metrics, summary = read_run(stop)
    assert summary["stalled"] and metrics[-1]["step"] == at < 300
    assert torch.load(stop / "checkpoints" / "last.pt", weights_only=True)["step"] == at


@pytest.mark.integration
def test_cifar_recipe_trains_squeezenet_past_chance_in_either_layout(tmp_path):
    """The batches directly in PATH (as the docstring promises) or in
    PATH/cifar-10-batches-py; the shipped recipe (1000-way head) learns the generated
    classes and does not stall."""
    flat = write_cifar(tmp_path / "flat", 1600, 300)
    write_cifar(tmp_path / "nested" / "cifar-10-batches-py", 40, 20)
    keys = recipe(f"cifar10:{flat}", "squeezenet1_1")
    assert keys["data"] == f"cifar10:{flat}" and keys["num_classes"] == 1000
    out = tmp_path / "run"
    proc = dist_sqz(
        "train",
        "--config",
        "configs/cifar10_squeezenet1_1.yaml",
        "--data",
        f"cifar10:{flat}",
        "--steps",
        "300",
        "--lr-warmup-steps",
        "30",
        "--eval-every",
        "150",
        "--out",
        str(out),
        timeout=600,
        cwd=str(_root()),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _, summary = read_run(out)
    assert summary["accuracy"] > 0.3 and not summary["stalled"]  # chance: 0.1
    nested = tmp_path / "n"
    data = f"cifar10:{tmp_path / 'nested'}"
    quick = ["--image-size", "32", "--batch-size", "8", "--steps", "4", "--warmup-steps", "1"]
    train_torchrun(1, nested, *quick, "--data", data, "--eval-every", "2")
    assert read_run(nested)[1]["accuracy"] is not None


@pytest.mark.integration
def test_cifar_folder_errors_name_the_missing_batches(tmp_path):
    folder = write_cifar(tmp_path / "c", 40, 20)
    (folder / "data_batch_3").unlink()
    (folder / "test_batch").unlink()
    line = refused("train", "--data", f"cifar10:{folder}", "--steps", "2")
    assert f"{folder} lacks data_batch_3, test_batch;" in line


def _root():
    from tests.helpers import ROOT

    return ROOT


@pytest.mark.integration
def test_compare_picks_up_the_cifar_recipes(tmp_path):
    data = write_cifar(tmp_path / "c", 40, 20)
    proc = dist_sqz(
        "compare",
        "--data",
        f"cifar10:{data}",
        "--target-accuracy",
        "0.5",
        "--models",
        "squeezenet1_1",
        "--workers",
        "1",
        "--estimate",
        env=base_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "squeezenet1_1" in proc.stdout and "15000" in proc.stdout.replace(",", "")


def _history(run, losses: dict[int, float | None], kept_steps: list[int]) -> None:
    (run / "checkpoints").mkdir(parents=True)
    for s in kept_steps:
        (run / "checkpoints" / f"step{s}.pt").write_bytes(b"")
    lines = [
        {"step": s, "loss": x, **({} if x is not None else {"nonfinite": True})}
        for s, x in losses.items()
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


@pytest.mark.parametrize(
    ("losses", "kept_steps", "saved", "bad", "says"),
    [
        # last.pt (step 5) gave a sane step 6: resume the run itself
        ({1: 2.3, 2: 2.2, 3: 2.1, 4: 2.0, 5: 1.9, 6: 1.9}, [3, 4], 5, 7, "(step 5) is known good"),
        # step 5's weights gave 1e4 at step 6: back to step 4's, whose step 5 was sane
        (
            {1: 2.3, 2: 2.2, 3: 2.1, 4: 2.0, 5: 1.9, 6: 1e4},
            [3, 4],
            5,
            7,
            "is {run}/checkpoints/step4.pt",
        ),
        # the loss grew past 2x the first and stayed: nothing kept is known good
        ({1: 2.3, 2: 9.0, 3: 50.0, 4: 1e3}, [2], 3, 5, "no kept checkpoint is known good"),
        # a skipped (non-finite) step judges the checkpoint before it bad
        ({1: 2.3, 2: 2.2, 3: None, 4: 2.1}, [], 2, 5, "no kept checkpoint is known good"),
        ({1: 2.3}, [], None, 2, "no checkpoint was written yet"),
    ],
)
def test_resume_advice_names_the_newest_known_good_checkpoint(
    tmp_path, losses, kept_steps, saved, bad, says
):
    run = tmp_path / "run"
    _history(run, losses, kept_steps)
    line = checkpoint.resume_advice(run, saved, bad)
    assert says.format(run=run) in line, line
    assert line.endswith("start afresh") or f"--resume {run}" in line
