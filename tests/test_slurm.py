"""`compare --launcher slurm` on a real Slurm cluster (Slurm's own daemons) whose 4 nodes are
emulated hosts at 1 Gbit/s: rows as jobs, faults (a cancelled job, SIGTERM to compare),
bad input before any job, and `compare --collect` of the rows' train runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import base_env, dist_sqz, read_run

pytestmark = pytest.mark.integration

# No --socket-ifname: each node finds the interface of its NodeAddr (wire bytes included).
ROW = ["--models", "squeezenet1_1", "--launcher", "slurm"]
ROW += ["--dilation", "3"]  # fixed: no row measured again at a larger D (this machine's 2 cores)


@pytest.fixture(scope="module")
def slurm_env():
    from dist_sqz.cluster import namespaces_permitted
    from dist_sqz.cluster.slurm import missing_daemons

    ok, why = namespaces_permitted()
    lack = missing_daemons()
    if not ok or lack:
        reason = why or f"Slurm not installed ({', '.join(lack)}): launch/install_slurm.sh"
        if os.environ.get("DIST_SQZ_REQUIRE_NETNS"):
            pytest.fail(reason)
        pytest.skip(reason)
    up = dist_sqz("cluster", "up", "--hosts", "4", "--link", "1gbit", "--slurm", timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    conf = next(x for x in up.stdout.splitlines() if x.startswith("export SLURM_CONF="))
    env = base_env(SLURM_CONF=conf.split("=", 1)[1])
    assert "4   idle" in up.stdout or "idle" in up.stdout
    yield env
    down = dist_sqz("cluster", "down", timeout=120)
    assert down.returncode == 0, down.stderr
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"dsqz{_slot(env)}-" not in names, names  # others' clusters may be up


def _slot(env) -> int:
    """The Slurm test cluster's slot (its state folder, /run/dist_sqz/slurm<k>)."""
    return int(Path(env["SLURM_CONF"]).parent.name[len("slurm") :])


def _squeue(env) -> list[str]:
    proc = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, env=env)
    return proc.stdout.split("\n") if proc.stdout.strip() else []


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _wait_for(pred, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _steps(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def test_a_cancelled_row_is_recorded_the_others_finish_resume_continues_it(tmp_path, slurm_env):
    """Rows run as Slurm jobs. scancel of a running row's job: the row is recorded with
    Slurm's state, the other row finishes; --resume (with a time limit now: how the rest is
    scheduled may change) keeps the finished row and continues the cancelled one from its
    checkpoint, not from step 0. `compare --collect` of the rows' train runs gives the same
    table; runs whose settings differ are refused in one line."""
    out = tmp_path / "cmp"
    args = [*ROW, "--workers", "2,1", "--steps", "40", "--out", str(out)]
    cmd = [sys.executable, "-m", "dist_sqz", "compare", *args]
    proc = subprocess.Popen(
        cmd, env=slurm_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    run = out / "runs" / "squeezenet1_1-n2"
    _wait_for(lambda: _steps(run) >= 5, 300, "the 2-node row to take 5 steps")
    job = _wait_for(
        lambda: [x.split()[0] for x in _squeue(slurm_env) if "RUNNING" in x], 30, "its job"
    )[0]
    subprocess.run(["scancel", job], env=slurm_env, check=True)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 1, stdout[-3000:] + stderr[-3000:]  # a row failed
    assert "queued" in stdout and (out / "slurm" / "squeezenet1_1-n2.sbatch").is_file()
    rows = {r["world_size"]: r for r in _results(out)["rows"]}
    assert rows[2]["slurm"]["job_id"] == job and rows[2]["slurm"]["state"] == "CANCELLED"
    assert "CANCELLED" in rows[2]["error"] and not rows[1].get("error")
    stopped_at = _steps(run)
    assert (run / "checkpoints" / "last.pt").exists() and 5 <= stopped_at < 40

    again = ["--resume", str(out), "--time-limit", "10", "--signal-s", "90"]
    proc = dist_sqz("compare", *again, env=slurm_env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--time=10 --signal=TERM@90" in (out / "slurm" / "squeezenet1_1-n2.sbatch").read_text()
    saved = yaml.safe_load((out / "compare.yaml").read_text())
    assert (saved["time_limit"], saved["signal_s"]) == ("10", 90)
    log = (out / "logs" / "squeezenet1_1-n2" / "host0.log").read_text()
    assert f"(step {stopped_at})" in log
    metrics, _ = read_run(run)
    assert [m["step"] for m in metrics] == list(range(1, 41))  # continued, not restarted
    rows = _results(out)["rows"]
    assert [r["world_size"] for r in rows] == [2, 1] and not any(r.get("error") for r in rows)
    for r in rows:
        job = r["slurm"]
        assert job["state"] == "COMPLETED" and job["job_id"].isdigit()
        assert job["nodes"].startswith("d") and job["queue_s"] is not None
    two = rows[0]
    assert two["sent_bytes"] == 4_941_984 and two["wire_bytes"] >= two["sent_bytes"]
    assert 0 < two["scaling_efficiency"] <= 1.05

    runs = sorted(str(p) for p in (out / "runs").iterdir())
    again = tmp_path / "collected"
    proc = dist_sqz("compare", "--collect", ",".join(runs), "--out", str(again), env=slurm_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = (
        "world_size",
        "images_per_s",
        "scaling_efficiency",
        "simulated_efficiency",
        "sent_bytes",
        "wire_bytes",
        "analytic_efficiency",
    )
    assert [{k: r[k] for k in keys} for r in _results(again)["rows"]] == [
        {k: r[k] for k in keys}
        for r in rows[::-1]  # collect orders rows by N
    ]

    odd = tmp_path / "odd"
    shutil.copytree(runs[1], odd)
    cfg = yaml.safe_load((odd / "config.yaml").read_text())
    (odd / "config.yaml").write_text(yaml.safe_dump({**cfg, "batch_size": 16}))
    proc = dist_sqz("compare", "--collect", f"{runs[0]},{odd}", "--out", str(tmp_path / "x"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "differ in batch_size" in lines[0]
    assert not (tmp_path / "x").exists()


def test_sigterm_to_compare_cancels_its_job(tmp_path, slurm_env):
    """With a torchvision model, named as torchvision names it, as the row's job."""
    out = tmp_path / "cmp"
    cmd = [
        sys.executable,
        "-m",
        "dist_sqz",
        "compare",
        *ROW,
        "--models",
        "mobilenet_v3_small",
        "--workers",
        "2",
        "--steps",
        "400",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd, env=slurm_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: _steps(out / "runs" / "mobilenet_v3_small-n2") >= 3, 300, "steps")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 143, stdout[-3000:] + stderr[-3000:]
    assert "cancelled" in stderr and _squeue(slurm_env) == []
    assert _results(out)["rows"][0]["error"].startswith("stopped by SIGTERM")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--partition", "gpu"], ["partition gpu"]),
        (["--workers", "8"], ["needs 8 nodes", "has 4"]),
        (["--workers", "2", "--gpus-per-node", "4"], ["not a whole number of nodes"]),
        (["--sbatch-args=--constraint=nosuchfeature"], ["sbatch --test-only"]),
        (["--cluster", "BAD"], ["cluster spec"]),
    ],
)
def test_bad_input_is_one_line_before_any_job(tmp_path, slurm_env, args, words):
    if args[:2] == ["--cluster", "BAD"]:
        bad = tmp_path / "bad.yaml"
        bad.write_text("name: mine\ninter:\n  nic_rate: 100gbit\n  bogus: 1\n")
        args = ["--cluster", str(bad)]
    before = _squeue(slurm_env)
    out = tmp_path / "cmp"
    proc = dist_sqz("compare", *ROW, *args, "--out", str(out), env=slurm_env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert not out.exists() and _squeue(slurm_env) == before


def test_no_sbatch_on_path_is_one_line(tmp_path, slurm_env):
    env = {**slurm_env, "PATH": str(tmp_path)}  # no Slurm client anywhere on it
    proc = dist_sqz("compare", *ROW, "--out", str(tmp_path / "c"), env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "sbatch" in lines[0], proc.stderr


def test_a_time_limit_and_a_dead_slurmd_each_end_their_row_in_one_line(tmp_path, slurm_env):
    """Two comparisons at once, on nodes of their own (they wait on Slurm, not on this
    machine's cores).

    A row near its time limit (--time-limit 2 minutes, SIGTERM 60 s before it) stops at a
    step boundary with a checkpoint and is recorded with Slurm's state and the run's line
    (--resume from such a checkpoint: the cancelled row above). Slurm checks time limits
    every 30 s and may signal up to 60 s early (sbatch --signal): here 30-60 s into the job,
    never before the first step.

    slurmd of one of a row's nodes killed: Slurm takes the node down and ends the job; the
    row is recorded with Slurm's state, nothing hangs past the collective timeout, and the
    node comes back once its slurmd is started again."""
    from dist_sqz.cluster.slurm import start_slurmd, state_dir

    slot = _slot(slurm_env)
    nodes = lambda *k: "--sbatch-args=--nodelist=" + ",".join(f"d{slot}n{i}" for i in k)  # noqa: E731
    limited, dying = tmp_path / "limit", tmp_path / "dies"
    started = []
    for out, extra in (
        (limited, ["--time-limit", "2", "--signal-s", "60", nodes(2, 3)]),
        (dying, [nodes(0, 1)]),
    ):
        cmd = [sys.executable, "-m", "dist_sqz", "compare", *ROW, "--workers", "2"]
        cmd += ["--steps", "3000", *extra, "--out", str(out)]
        started.append(
            subprocess.Popen(
                cmd, env=slurm_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    limit_proc, dies_proc = started

    run = dying / "runs" / "squeezenet1_1-n2"
    _wait_for(lambda: _steps(run) >= 5, 300, "the row to take 5 steps")
    victim = f"d{slot}n1"
    pid = int((state_dir(slot) / f"slurmd.{victim}.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = dies_proc.communicate(timeout=600)
    assert dies_proc.returncode == 1, stdout[-3000:] + stderr[-3000:]
    row = _results(dying)["rows"][0]
    assert row["slurm"]["state"] in ("NODE_FAIL", "FAILED", "CANCELLED"), row
    assert row["slurm"]["nodes"] == f"d{slot}n[0-1]", row
    assert row["error"].startswith(f"Slurm job {row['slurm']['job_id']} ")
    assert _steps(run) < 3000  # ended by the fault (communicate's timeout: not forever)
    start_slurmd(slot, 1)
    sinfo = ["sinfo", "-h", "-N", "-n", victim, "-o", "%T"]

    def back() -> bool:
        state = subprocess.run(sinfo, capture_output=True, text=True, env=slurm_env).stdout
        return state.strip().startswith("idle")

    stdout, stderr = limit_proc.communicate(timeout=600)
    assert limit_proc.returncode == 1, stdout[-3000:] + stderr[-3000:]
    row = _results(limited)["rows"][0]
    assert "stopped by SIGTERM" in row["error"] and row["slurm"]["state"] != "COMPLETED"
    assert row["slurm"]["nodes"] == f"d{slot}n[2-3]", row
    run = limited / "runs" / "squeezenet1_1-n2"
    stopped = _steps(run)
    assert 0 < stopped < 3000 and f"after step {stopped} of 3000" in row["error"]
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == stopped
    assert _squeue(slurm_env) == []
    _wait_for(back, 120, f"{victim} back")


def test_a_controller_restart_is_waited_out_and_one_gone_too_long_is_one_line(tmp_path, slurm_env):
    """slurmctld stopped (SIGTERM, as a restart does) while two comparisons' 2-node rows run
    on nodes of their own, started again 20 s later. The one that may wait 600 s says so
    and ends with exit 0, both its rows measured, the 1-node row's job submitted only once
    Slurm said the 2-node row's had left the queue (the interface of each node's NodeAddr
    found without --socket-ifname); the one that may wait 8 s ends in one line, exit 1, its
    job left running and named, nothing recorded as failed; its --resume waits for the job
    or takes its outcome, never running the row twice."""
    from dist_sqz.cluster.slurm import start_controller, stop_controller

    slot = _slot(slurm_env)
    but = lambda *k: "--sbatch-args=--exclude=" + ",".join(f"d{slot}n{i}" for i in k)  # noqa: E731
    patient, brief = tmp_path / "patient", tmp_path / "brief"
    started = []
    for out, extra in ((patient, [but(2, 3), "--workers", "2,1"]), (brief, [but(0, 1)])):
        cmd = [sys.executable, "-m", "dist_sqz", "compare", *ROW, "--steps", "100"]
        if out == brief:
            extra = [*extra, "--workers", "2", "--steps", "150", "--controller-wait-s", "8"]
        started.append(
            subprocess.Popen(
                [*cmd, *extra, "--out", str(out)],
                env=slurm_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for out in (patient, brief):
        _wait_for(lambda o=out: _steps(o / "runs" / "squeezenet1_1-n2") >= 5, 300, "5 steps")
    job = (brief / "slurm" / "squeezenet1_1-n2.job").read_text().strip()
    stop_controller(slot)
    try:
        stdout, stderr = started[1].communicate(timeout=120)
        time.sleep(max(0.0, 20 - 8))
    finally:
        start_controller(slot)
    lines = stderr.strip().splitlines()
    assert started[1].returncode == 1 and len(lines) == 1, stdout[-2000:] + stderr[-2000:]
    assert f"job {job} is left as it is" in lines[0] and "--resume" in lines[0], lines[0]
    assert not (brief / "results.json").exists() or not _results(brief)["rows"]

    stdout, stderr = started[0].communicate(timeout=600)
    assert started[0].returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "controller not answering" in stdout and "answering again" in stdout, stdout
    two, one = _results(patient)["rows"]
    for row in (two, one):
        assert row["slurm"]["state"] == "COMPLETED" and not row.get("error")
    assert two["wire_bytes"] >= two["sent_bytes"] == 4_941_984  # the interface was found
    assert two["slurm"]["nodes"] == f"d{slot}n[0-1]" and one["slurm"]["queue_s"] is not None

    def responding() -> bool:  # the restarted controller has heard from every slurmd
        states = ["sinfo", "-h", "-N", "-o", "%t"]
        out = subprocess.run(states, capture_output=True, text=True, env=slurm_env).stdout
        return bool(out.split()) and not any(s.endswith("*") or "unk" in s for s in out.split())

    _wait_for(responding, 120, "every node responding")  # else sbatch --test-only refuses
    proc = dist_sqz("compare", "--resume", str(brief), env=slurm_env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # still listed: waited for ("picking up job"); else its outcome taken ("ended while")
    assert f"job {job}" in proc.stdout
    (row,) = _results(brief)["rows"]
    assert row["slurm"]["job_id"] == job and row["slurm"]["state"] == "COMPLETED"
    assert [m["step"] for m in read_run(brief / "runs" / "squeezenet1_1-n2")[0]] == list(
        range(1, 151)
    )
    assert _squeue(slurm_env) == []
