"""An interrupted (SIGKILLed) 2-worker run, resumed, ends where an uninterrupted one does."""

import os
import subprocess
import time

import pytest

from tests.helpers import (
    RESUME_ARGS as ARGS,
)
from tests.helpers import (
    base_env,
    checkpoint_step,
    descendants,
    kill_tree,
    read_run,
    torchrun_cmd,
    train_torchrun,
)

pytestmark = pytest.mark.integration  # every test here starts processes


def test_killed_then_resumed_matches_uninterrupted(tmp_path, shared_run):
    full = shared_run(2, *ARGS)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        torchrun_cmd(2, "--out", str(cut), *ARGS),
        env=base_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while checkpoint_step(cut) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = descendants(proc.pid)
    kill_tree(proc.pid)
    proc.wait()
    deadline = time.time() + 30
    while any(os.path.exists(f"/proc/{p}") for p in workers) and time.time() < deadline:
        time.sleep(0.05)
    killed_at = checkpoint_step(cut)
    assert 4 <= killed_at < 14, f"kill came at checkpoint step {killed_at}"
    assert not (cut / "summary.json").exists()

    train_torchrun(2, cut, "--resume", str(cut))
    metrics, summary = read_run(cut)
    _, reference = read_run(full)
    assert [m["step"] for m in metrics] == list(range(1, 15))
    assert summary["param_checksum"] == reference["param_checksum"]
    assert summary["replicas_consistent"] is True
    assert checkpoint_step(cut) == 14
