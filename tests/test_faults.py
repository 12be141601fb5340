"""Faults, with real processes and real signals: SIGTERM (what Slurm and Kubernetes send
before preemption) stops every rank at the same step boundary with a checkpoint, and the
resumed run ends with the parameters of an uninterrupted one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import (
    base_env,
    cluster_leftovers,
    read_run,
    stateful_compressors,
    torchrun_cmd,
    train_torchrun,
)

pytestmark = pytest.mark.integration  # every test here starts processes

# Long enough to be stopped mid-way (lr schedule and all), short enough for CI.
RUN = (
    "--model",
    "squeezenet1_1",
    "--image-size",
    "32",
    "--batch-size",
    "4",
    "--steps",
    "40",
    "--warmup-steps",
    "1",
    "--compute-probe-steps",
    "0",
    "--data",
    "digits",
    "--lr-schedule",
    "cosine",
    "--lr-warmup-steps",
    "5",
    "--augment",
    "standard",
    "--lr",
    "0.003",
)


def _steps_done(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _stop_midway(cmd: list[str], out: Path, sig: int, after: int = 10):
    """Start `cmd`, send `sig` to it once `after` steps are recorded; its result."""
    proc = subprocess.Popen(
        cmd, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while _steps_done(out) < after:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def test_sigterm_to_torchrun_checkpoints_and_resume_matches(tmp_path):
    """With top-k's error feedback: per-rank state that must be saved at the same step on
    every rank, and bucket-wise selection that needs DDP's buckets formed as before."""
    args = [*RUN, "--compression", "topk", "--compression-density", "0.05"]
    train_torchrun(2, tmp_path / "full", *args)
    _, reference = read_run(tmp_path / "full")

    out = tmp_path / "run"
    code, stdout, stderr = _stop_midway(
        torchrun_cmd(2, "--out", str(out), *args), out, signal.SIGTERM
    )
    assert code != 0, stdout[-2000:]
    lines = [x for x in stderr.splitlines() if x.startswith("dist-sqz: stopped by SIGTERM")]
    assert len(lines) == 1, stderr[-3000:]  # rank 0 says it, once
    assert f"--resume {out}" in lines[0]
    # torchrun's agent reports the signal it got with its own traceback; the workers add none
    assert "[rank0]" not in stderr and "[rank1]" not in stderr
    assert not (out / "summary.json").exists()  # nothing faked
    stopped = _steps_done(out)
    assert 10 <= stopped < 40
    import torch

    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == stopped  # saved at the step every rank stopped after
    for rank in (0, 1):
        assert (out / "checkpoints" / f"compressor-rank{rank}-step{stopped}.pt").exists()

    train_torchrun(2, out, "--resume", str(out))
    metrics, summary = read_run(out)
    assert [m["step"] for m in metrics] == list(range(1, 41))
    assert summary["param_checksum"] == reference["param_checksum"]
    assert summary["replicas_consistent"] is True


def test_sigint_alone_stops_with_130_and_resumes(tmp_path):
    """Ctrl-C of a single worker: one line, exit 130, checkpoint; `--resume` finishes."""
    full = tmp_path / "full"
    proc = subprocess.run(
        [sys.executable, "-m", "dist_sqz", "train", *RUN, "--out", str(full)],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dist_sqz", "train", *RUN, "--out", str(out)]
    code, stdout, stderr = _stop_midway(cmd, out, signal.SIGINT)
    assert code == 130, stdout[-2000:] + stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("dist-sqz: stopped by SIGINT after step")
    assert "Traceback" not in stderr
    proc = subprocess.run(
        [sys.executable, "-m", "dist_sqz", "train", "--resume", str(out)],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, summary = read_run(out)
    _, reference = read_run(full)
    assert summary["param_checksum"] == reference["param_checksum"]


def test_checkpoint_by_the_clock(tmp_path, tiny):
    """`checkpoint_every_min`: rank 0's clock decides, every rank saves at that step."""
    out = tmp_path / "run"
    args = [*tiny, "--steps", "30", "--checkpoint-every-min", "0.0001"]
    args += ["--compression", "topk", "--compression-density", "0.05"]
    train_torchrun(2, out, *args)
    kept = {
        r: sorted(int(p.stem.rsplit("step", 1)[1]) for p in out.glob(f"checkpoints/*rank{r}-*"))
        for r in (0, 1)
    }
    # Both ranks saved at the steps rank 0's clock chose (however long a step took here):
    # a timed one before the end, and the final one; two generations kept.
    assert kept[0] == kept[1] and len(kept[1]) == 2 and kept[1][0] < kept[1][1] == 30, kept


def test_sigterm_to_compare_reaches_the_run_and_resume_continues_it(tmp_path):
    """compare forwards SIGTERM to the run on its emulated hosts, which stops with a
    checkpoint; compare records the row, tears the cluster down, exits 143 naming
    `--resume`; the resumed comparison continues that run from its checkpoint."""
    from tests.helpers import dist_sqz

    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "dist_sqz", "compare", "--models", "squeezenet1_1"]
    # A fixed D: no second try at a larger one, which would start the row over.
    cmd += ["--workers", "2", "--steps", "60", "--dilation", "2", "--out", str(out)]
    run_dir = out / "runs" / "squeezenet1_1-n2"
    code, stdout, stderr = _stop_midway(cmd, run_dir, signal.SIGTERM, after=5)
    assert code == 143, stdout[-3000:] + stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("dist-sqz: compare stopped by SIGTERM during squeezenet1_1 x 2")
    assert f"--resume {out}" in last
    assert not (run_dir / "summary.json").exists()
    stopped = _steps_done(run_dir)
    assert (run_dir / "checkpoints" / "last.pt").exists() and 5 <= stopped < 60
    assert cluster_leftovers() == []  # torn down
    import json

    [row] = json.loads((out / "results.json").read_text())["rows"]
    assert row["error"].startswith("stopped by SIGTERM")

    resumed = dist_sqz("compare", "--resume", str(out), timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    log = (out / "logs" / "squeezenet1_1-n2" / "host0.log").read_text()
    assert f"steps {stopped + 1}-60" in log, resumed.stdout[:3000]  # from the checkpoint
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))
    [row] = json.loads((out / "results.json").read_text())["rows"]
    assert "error" not in row and row["replicas_consistent"] is True


def test_full_disk_keeps_the_last_checkpoint(tmp_path):
    """The run directory on an 8 MiB tmpfs: the first checkpoint (~6 MB) fits, the next
    cannot be written beside it. Both ranks stop, one line says why, and the first
    checkpoint stays loadable (and resumable elsewhere)."""
    import torch

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = disk / "run"
        args = [*RUN, "--steps", "20", "--checkpoint-every", "4", "--out", str(out)]
        proc = subprocess.run(
            torchrun_cmd(2, *args), env=base_env(), capture_output=True, text=True, timeout=300
        )
        assert proc.returncode != 0
        errors = [x for x in proc.stderr.splitlines() if x.startswith("dist-sqz: error:")]
        assert len(errors) == 1, proc.stderr[-3000:]
        assert "checkpoint of step 8: could not write" in errors[0]
        assert "No space left on device" in errors[0] and "the previous one is kept" in errors[0]
        assert "[rank0]" not in proc.stderr and "[rank1]" not in proc.stderr
        ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
        assert ckpt["step"] == 4
        assert not list((out / "checkpoints").glob(".*.tmp"))  # no half-written file left
        assert not (out / "summary.json").exists()
    finally:
        subprocess.run(["umount", str(disk)])


def _launch(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, env=base_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _stopped_then_resumed(launcher: list[str], args: list[str], tmp_path: Path):
    """Under `launcher`: an uninterrupted run, then one stopped by SIGTERM to the launcher
    mid-way and resumed. Returns the stopped run's (exit code, stdout, stderr) for the caller to
    check, after checking that the resumed run ends with the uninterrupted parameters."""
    _launch([*launcher, *args, "--out", str(tmp_path / "full")])
    _, reference = read_run(tmp_path / "full")
    out = tmp_path / "run"
    code, stdout, stderr = _stop_midway([*launcher, *args, "--out", str(out)], out, signal.SIGTERM)
    assert not (out / "summary.json").exists()
    stopped = _steps_done(out)
    assert 10 <= stopped < 40
    import torch

    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == stopped
    _launch([*launcher, "--resume", str(out)])
    metrics, summary = read_run(out)
    assert [m["step"] for m in metrics] == list(range(1, 41))
    assert summary["param_checksum"] == reference["param_checksum"]
    return code, stdout, stderr


def test_sigterm_to_the_mpirun_script_checkpoints_and_resume_matches(tmp_path):
    """mpirun kills its ranks right after forwarding SIGTERM; launch/mpirun.sh hands it
    SIGUSR1 instead, which every rank stops on after its step. PowerSGD's per-rank error
    feedback and warm-started factors must come back exactly."""
    from tests.helpers import need_launcher

    need_launcher("mpi4py", "mpirun")
    script = ["bash", str(Path(__file__).resolve().parents[1] / "launch" / "mpirun.sh")]
    args = [*RUN, "--compression", "powersgd", "--powersgd-start-step", "3"]
    code, _, stderr = _stopped_then_resumed(script, args, tmp_path)
    assert code == 128 + signal.SIGUSR1, stderr[-3000:]
    assert "dist-sqz: stopped by SIGUSR1" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr


def test_sigterm_to_horovodrun_checkpoints_and_resume_matches(tmp_path):
    """horovodrun forwards SIGTERM (gloo controller); int8 compression on Horovod."""
    from tests.helpers import need_launcher

    need_launcher("horovod.torch", "horovodrun")
    hvd = ["horovodrun", "-np", "2", "--gloo", "--gloo-timeout-seconds", "120"]
    hvd += [sys.executable, "-m", "dist_sqz", "train"]
    args = [*RUN, "--backend", "horovod", "--compression", "int8"]
    code, stdout, stderr = _stopped_then_resumed(hvd, args, tmp_path)
    assert code != 0
    assert "stopped by SIGTERM" in stdout + stderr, (stdout + stderr)[-3000:]


@pytest.mark.parametrize("compression", stateful_compressors(but=("topk",)))
def test_sigterm_and_resume_under_every_stateful_compressor(tmp_path, compression):
    """Each compressor's state (error feedback, momentum correction, warm-started factors)
    saved at the step every rank stopped after, and restored exactly (topk: above; the
    stateless ones resume as an uncompressed run, int8 under horovodrun below)."""
    args = [*RUN, "--compression", compression, "--steps", "24"]
    train_torchrun(2, tmp_path / "full", *args)
    _, reference = read_run(tmp_path / "full")
    out = tmp_path / "run"
    code, _, stderr = _stop_midway(
        torchrun_cmd(2, "--out", str(out), *args), out, signal.SIGTERM, after=8
    )
    assert code != 0 and "stopped by SIGTERM" in stderr, stderr[-3000:]
    assert 8 <= _steps_done(out) < 24
    train_torchrun(2, out, "--resume", str(out))
    metrics, summary = read_run(out)
    assert [m["step"] for m in metrics] == list(range(1, 25))
    assert summary["param_checksum"] == reference["param_checksum"]
